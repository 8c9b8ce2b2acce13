"""The Python entry: SFT and GRPO from rows in memory with reward closures, twice in one process, no files first."""

import json

import pytest
from datasets import Dataset

from pipeline.api import train_grpo, train_sft
from pipeline.config import ConfigError
from pipeline.data import DataError

ROWS = [{"prompt": f"Say {word}.", "answer": word, "level": i % 2}
        for i, word in enumerate(["cat", "dog", "sun", "sea", "sky", "red", "tea", "owl", "fox", "ice"])]
TINY = dict(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, seed=5)


def test_sft_then_grpo_with_a_closure_on_rows_in_memory_twice_in_one_process(tiny_model_dir, tmp_path):
    sft = train_sft(ROWS, model_name_or_path=str(tiny_model_dir), output_dir=str(tmp_path / "sft"), max_steps=2,
                    per_device_train_batch_size=4, report_to="none", save_strategy="no", **TINY)
    assert sft["train"]["global_step"] == 2 and sft["train_examples"] == 9  # one row of ten held out
    split = json.loads((tmp_path / "sft" / "data_split.json").read_text())
    assert split["sources"][0].startswith("python:dataset:row ")

    calls = []

    def longer_than(n):  # a closure: what --reward_funcs cannot name
        def reward(prompts, completions, answer, level, **kwargs):
            calls.append((prompts[0], completions[0], answer[0], level[0]))
            return [float(len(c) > n) for c in completions]
        return reward

    def run(out):
        return train_grpo(Dataset.from_list(ROWS), [longer_than(3), lambda completions, **kw: [0.5] * len(completions)],
                          model_name_or_path=str(tmp_path / "sft" / "merged"), output_dir=str(tmp_path / out),
                          max_steps=2, prompts_per_step=2, num_generations=2, micro_batch_size=4,
                          max_completion_length=6, max_prompt_length=64, beta=0.0, save_steps=0, eval_limit=0, **TINY)

    first, second = run("grpo_1"), run("grpo_2")
    assert [m["step"] for m in first["history"]] == [1, 2]
    assert "reward/reward" in first["history"][0] and first["history"][0]["reward/reward_1"] == 0.5
    assert [m["reward"] for m in first["history"]] == [m["reward"] for m in second["history"]]  # seeded, in one process
    prompt, completion, answer, level = calls[0]
    assert isinstance(prompt, str) and prompt.startswith("Say ") and isinstance(completion, str)  # TRL's standard row
    assert answer == prompt[4:-1] and level in (0, 1)  # the row's own columns, one value per completion
    assert (tmp_path / "grpo_1" / "merged" / "config.json").is_file()


def test_bad_options_and_rows_are_one_line_before_any_model_loads(tmp_path):
    with pytest.raises(ConfigError, match="'max_step' is unknown; did you mean 'max_steps'"):
        train_grpo(ROWS, [len], max_step=3)
    with pytest.raises(ConfigError, match="reward_funcs must be a non-empty list"):
        train_grpo(ROWS, [])
    with pytest.raises(ConfigError, match=r"reward_funcs\[1\] is a int"):
        train_grpo(ROWS, [len, 3])
    with pytest.raises(DataError, match="dataset:row 2: a str, expected a dict"):
        train_sft([{"prompt": "a", "answer": "b"}, "oops"], output_dir=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="either rows"):
        train_sft(ROWS, dataset_name="bundled")
