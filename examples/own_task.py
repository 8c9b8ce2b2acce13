# %% [markdown]
# # Your own task, from Python
#
# A few rows of your own data, SFT, a reward function of your own (here a closure), GRPO, then the evaluation
# before and after: the same stages and loop as `scripts/train_sft.py` and `scripts/train_grpo.py`, called from
# Python. Every keyword option is the scripts' option of the same name.
#
# The task: name a country's capital, one word. The rows are plain text (a `prompt` and an `answer` column), so
# the model is prompted with no system turn, and reward functions get the prompt and completions as strings.

# %% tags=["parameters"]
MODEL = "embedded:SmolLM2-135M-Instruct"  # a hub id or a folder works too
OUT = "runs/own_task"
SFT_STEPS = 24
GRPO_STEPS = 8

# %%
CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Egypt": "Cairo", "Peru": "Lima", "Kenya": "Nairobi", "Norway": "Oslo", "Greece": "Athens",
    "Cuba": "Havana", "Chile": "Santiago", "Poland": "Warsaw", "Austria": "Vienna", "Ireland": "Dublin",
    "Portugal": "Lisbon", "Russia": "Moscow", "Thailand": "Bangkok", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Hungary": "Budapest", "Argentina": "Buenos Aires", "Belgium": "Brussels", "Denmark": "Copenhagen",
    "Iran": "Tehran", "Iraq": "Baghdad", "Mexico": "Mexico City", "Colombia": "Bogota", "Vietnam": "Hanoi",
    "Ghana": "Accra", "Senegal": "Dakar", "Nepal": "Kathmandu", "Canada": "Ottawa", "Australia": "Canberra",
    "Turkey": "Ankara", "Brazil": "Brasilia", "Nigeria": "Abuja", "Morocco": "Rabat", "Switzerland": "Bern",
    "Pakistan": "Islamabad",
}
rows = [{"prompt": f"What is the capital of {country}? Answer with the city's name only.", "answer": city}
        for country, city in CAPITALS.items()]
train_rows, eval_rows = rows[:30], rows[30:]  # the last ten are held out (most of them harder)

# %% [markdown]
# ## SFT: teach the answer's form
# LoRA on the 30 training rows; the completion is the `answer` column as written. The evaluation before and after
# reads the model's last line and compares it with the answer (normalised exact match).

# %%
from pipeline.api import train_grpo, train_sft
from pipeline.runtime import setup_logging

setup_logging()  # as the scripts do: the run's log lines, the libraries' chatter quieted
sft = train_sft(train_rows, eval_dataset=eval_rows, model_name_or_path=MODEL, output_dir=f"{OUT}/sft",
                use_peft=True, max_steps=SFT_STEPS, per_device_train_batch_size=8, learning_rate=5e-4,
                lr_scheduler_type="cosine", eval_limit=len(eval_rows), eval_max_new_tokens=8, logging_steps=4,
                save_strategy="no", report_to="none", seed=42)

# %% [markdown]
# ## GRPO with a reward of your own
# A reward function has TRL's signature. A closure carries its own settings: full marks for the exact name, part
# marks for a completion that contains it.


# %%
def capital_reward(partial_credit: float):
    def reward(prompts, completions, answer, **kwargs):
        scores = []
        for completion, city in zip(completions, answer):
            said = completion.strip().strip(".").lower()
            scores.append(1.0 if said == city.lower() else partial_credit * (city.lower() in said))
        return scores
    return reward


grpo = train_grpo(train_rows, [capital_reward(0.5)], eval_dataset=eval_rows,
                  model_name_or_path=sft["output"]["merged"], output_dir=f"{OUT}/grpo", use_peft=True,
                  max_steps=GRPO_STEPS, prompts_per_step=6, num_generations=6, micro_batch_size=36,
                  max_prompt_length=96, max_completion_length=8, temperature=1.0, learning_rate=2e-4,
                  beta=0.0, loss_type="dapo", eval_limit=len(eval_rows), eval_max_new_tokens=8, eval_before=False,
                  save_steps=0, seed=42)

# %% [markdown]
# ## What happened
# The mean training reward at each GRPO step, and exact-match accuracy on the ten held-out rows at each stage.
# Ten rows make a coarse measure (one row is 0.1): this example shows the mechanics in a few CPU minutes, not a
# measured gain. Measured runs, with intervals: docs/results.md.

# %%
import matplotlib.pyplot as plt

greedy = "pass@1 (greedy)"
stages = {"base": sft["before"], "SFT": sft["after"], "GRPO": grpo["eval_after"]}
accuracy = {name: summary["metrics"][greedy]["flexible"] for name, summary in stages.items()}
figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
left.plot([m["step"] for m in grpo["history"]], [m["reward"] for m in grpo["history"]], marker="o")
left.set(xlabel="GRPO step", ylabel="mean reward", title="training reward")
right.bar(list(accuracy), list(accuracy.values()))
right.set(ylim=(0, 1), ylabel="exact match", title=f"{len(eval_rows)} held-out rows")
figure.tight_layout()
print({name: round(value, 3) for name, value in accuracy.items()})
