"""What a reward function receives, through scripts/train_grpo.py and through --backend trl (TRL's GRPOTrainer
itself): for the same completions, the same types, texts, columns and ids. A model forced to fixed tokens makes
both backends write the same completions: after "x" it writes "12" and stops; after "y" it cycles "5678956..."
until the length cap (a truncated completion)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.tiny import build_forced_llama

ROOT = Path(__file__).resolve().parents[2]
CHAIN = {"x": "1", "1": "2", "y": "5", "5": "6", "6": "7", "7": "8", "8": "9", "9": "5"}

# The reward examples of TRL's GRPOTrainer docs, as written there, and a recorder of every argument.
REWARDS = r'''
import json, os, re


def reward_len(completions, **kwargs):
    return [-abs(20 - len(completion)) for completion in completions]


def format_reward_func(completions, **kwargs):
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    matches = [re.match(pattern, content) for content in completions]
    return [1.0 if match else 0.0 for match in matches]


def record(prompts, completions, completion_ids, trainer_state, **kwargs):
    with open(os.environ["REWARD_RECORD"], "a") as f:
        f.write(json.dumps({"prompts": prompts, "completions": completions, "completion_ids": completion_ids,
                            "columns": {k: v for k, v in kwargs.items() if k not in ("log_extra", "log_metric")},
                            "keys": sorted(kwargs), "step": trainer_state.global_step,
                            "max_steps": trainer_state.max_steps}) + "\n")
    return [0.0] * len(completions)
'''


@pytest.fixture(scope="module")
def forced_model(tmp_path_factory):
    return build_forced_llama(tmp_path_factory.mktemp("forced"), "abxyz ?0123456789", CHAIN)


def run_both_backends(model: Path, folder: Path, rows: list[dict], rewards: list[str]) -> dict[str, list[dict]]:
    """Each backend's recorded reward calls; the reward file lies in the folder the command runs from."""
    (folder / "my_rewards.py").write_text(REWARDS)
    (folder / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "held.jsonl").write_text(json.dumps({**rows[0], "prompt": "ba x"}) + "\n")
    calls = {}
    for backend in ("ours", "trl"):
        record = folder / f"{backend}.jsonl"
        command = [sys.executable, str(ROOT / "scripts" / "train_grpo.py"), "--model_name_or_path", str(model),
                   "--dataset_name", "mine.jsonl", "--eval_dataset_name", "held.jsonl", "--reward_funcs", *rewards,
                   "--max_steps", "1", "--prompts_per_step", "2", "--num_generations", "2", "--micro_batch_size", "4",
                   "--max_completion_length", "6", "--max_prompt_length", "32", "--mask_truncated_completions", "true", "--beta", "0.0",
                   "--save_steps", "0", "--eval_limit", "0", "--output_dir", f"run_{backend}",
                   *(["--backend", "trl"] if backend == "trl" else [])]
        env = dict(os.environ, REWARD_RECORD=str(record), OMP_NUM_THREADS="1")
        env.pop("PYTHONPATH", None)
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "reward 'my_rewards" not in done.stderr and "trl.rewards" not in done.stderr  # no reward fault
        calls[backend] = [json.loads(line) for line in record.read_text().splitlines()]
    return calls


def by_completion(call: dict) -> list[tuple]:
    """The call's completions with what came with each, in a fixed order (the backends order groups differently)."""
    rows = zip(call["prompts"], call["completions"], call["completion_ids"],
               *(call["columns"][k] for k in sorted(call["columns"])))
    return sorted((json.dumps(r) for r in rows))


def test_a_plain_text_dataset_gives_rewards_strings_and_generated_ids_as_trl_does(forced_model, tmp_path):
    rows = [{"prompt": "ab x", "ground_truth": "12", "difficulty": 1},
            {"prompt": "ab y", "ground_truth": "7", "difficulty": 2}]
    calls = run_both_backends(forced_model, tmp_path, rows,
                              ["my_rewards:record", "my_rewards:reward_len", "my_rewards:format_reward_func"])
    (ours,), (theirs,) = calls["ours"], calls["trl"]
    assert sorted(zip(ours["prompts"], ours["completions"])) == [("ab x", "12"), ("ab x", "12"),
                                                                ("ab y", "567895"), ("ab y", "567895")]
    lengths = {c: len(ids) for c, ids in zip(ours["completions"], ours["completion_ids"])}
    assert lengths == {"12": 3, "567895": 6}  # "12" and its EOS; the truncated one's six ids, though its loss is masked
    assert sorted(ours["keys"]) == ["difficulty", "ground_truth", "log_extra", "log_metric"]
    assert ours["keys"] == theirs["keys"]
    assert by_completion(ours) == by_completion(theirs)  # same prompts, texts, ids and columns, value by value
    assert (ours["step"], ours["max_steps"]) == (theirs["step"], theirs["max_steps"]) == (0, 1)
    metrics = json.loads((tmp_path / "run_ours" / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["reward/my_rewards:reward_len"] == pytest.approx(-16.0)  # (-18 - 18 - 14 - 14) / 4, by hand


def test_trls_own_rewards_get_messages_on_a_conversational_dataset(forced_model, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "ab x"}], "difficulty": 1},
            {"prompt": [{"role": "user", "content": "ab y"}], "difficulty": 2}]
    calls = run_both_backends(forced_model, tmp_path, rows, ["my_rewards:record", "trl.rewards:think_format_reward"])
    (ours,), (theirs,) = calls["ours"], calls["trl"]
    assert {json.dumps(c) for c in ours["completions"]} == {
        json.dumps([{"role": "assistant", "content": "12"}]), json.dumps([{"role": "assistant", "content": "567895"}])}
    assert ours["prompts"][0] in ([{"role": "user", "content": "ab x"}], [{"role": "user", "content": "ab y"}])
    assert by_completion(ours) == by_completion(theirs)
    assert ours["keys"] == theirs["keys"]
    metrics = json.loads((tmp_path / "run_ours" / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["reward/trl.rewards:think_format_reward"] == 0.0  # scored (no <think> block), not a fault
