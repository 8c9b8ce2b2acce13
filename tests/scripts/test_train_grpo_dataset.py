"""A user's own TRL-style dataset and a reward written for TRL's GRPOTrainer run unchanged through
scripts/train_grpo.py, and the reward receives what TRL hands it (checked against TRL itself)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TRL_STYLE_REWARD = '''
import json, os

def concise(completions, difficulty, trainer_state, log_metric, **kwargs):
    """Written as TRL's docs write rewards for a conversational dataset: c[0]["content"]."""
    with open(os.environ["REWARD_RECORD"], "a") as f:
        f.write(json.dumps({"completion": completions[0], "difficulty": difficulty, "answer": kwargs.get("answer"),
                            "n": len(completions), "step": trainer_state.global_step,
                            "keys": sorted(k for k in kwargs if k not in ("completion_ids",))}) + "\\n")
    log_metric("mean_difficulty", sum(difficulty) / len(difficulty))
    return [1.0 / (1 + len(c[0]["content"])) + d for c, d in zip(completions, difficulty)]
'''


@pytest.fixture
def user_dataset(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}], "answer": 2 * i, "difficulty": i % 3}
            for i in range(30)]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "my_rewards.py").write_text(TRL_STYLE_REWARD)
    return path


def run_grpo(tiny_model_dir, data: Path, out: Path, record: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(data.parent), os.environ.get("PYTHONPATH", "")]),
               REWARD_RECORD=str(record), OMP_NUM_THREADS="1")
    command = [sys.executable, "scripts/train_grpo.py", "--model_name_or_path", str(tiny_model_dir),
               "--dataset_name", str(data), "--reward_funcs", "my_rewards:concise", "--max_steps", "2",
               "--prompts_per_step", "2", "--num_generations", "2", "--micro_batch_size", "4",
               "--max_completion_length", "6", "--beta", "0.0", "--save_steps", "0", "--eval_limit", "0",
               "--output_dir", str(out), *extra]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_trl_style_dataset_and_reward_run_unchanged_and_see_what_trl_passes(tiny_model_dir, user_dataset, tmp_path):
    ours, theirs = tmp_path / "ours.jsonl", tmp_path / "theirs.jsonl"
    done = run_grpo(tiny_model_dir, user_dataset, tmp_path / "run", ours)
    assert done.returncode == 0, done.stderr[-3000:]
    calls = [json.loads(line) for line in ours.read_text().splitlines()]
    assert [c["step"] for c in calls] == [0, 1]
    for call in calls:
        assert call["completion"][0]["role"] == "assistant" and isinstance(call["completion"][0]["content"], str)
        assert len(call["difficulty"]) == call["n"] == 4 and len(call["answer"]) == 4
        assert call["difficulty"][0] == call["difficulty"][1]  # one value per completion: a group shares its row's
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("mean_difficulty" in m for m in metrics)  # log_metric reached the step's metrics
    assert "reward 'my_rewards:concise'" not in done.stderr  # no value of the plug-in was lost to a fault
    assert "step 1: reward" in done.stderr and ", kl " not in done.stderr and "kl=" not in done.stderr  # beta 0

    done = run_grpo(tiny_model_dir, user_dataset, tmp_path / "trl", theirs, "--backend", "trl")
    assert done.returncode == 0, done.stderr[-3000:]
    trl_calls = [json.loads(line) for line in theirs.read_text().splitlines()]
    assert trl_calls[0]["keys"] == calls[0]["keys"]  # the same keyword arguments as TRL's GRPOTrainer gives
    assert type(trl_calls[0]["completion"]) is type(calls[0]["completion"])
    assert type(trl_calls[0]["answer"][0]) is type(calls[0]["answer"][0]) is int  # the column's own type
