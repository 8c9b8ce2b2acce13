"""`--dataset_name reasoning_gym:<task>` runs SFT, GRPO and evaluation through the scripts, as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ["--dataset_name", "reasoning_gym:chain_sum", "--dataset_options", '{"max_terms": 2, "max_digits": 1}',
        "--dataset_size", "24", "--eval_holdout_size", "4", "--prompt_template", "answer"]


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, f"scripts/{script}", *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_sft_grpo_and_evaluation_on_a_reasoning_gym_task(tiny_model_dir, tmp_path):
    run("train_sft.py", "--model_name_or_path", str(tiny_model_dir), *DATA, "--use_peft", "true", "--lora_r", "4",
        "--max_steps", "2", "--per_device_train_batch_size", "4", "--use_cpu", "true", "--bf16", "false",
        "--gradient_checkpointing", "false", "--report_to", "none", "--save_steps", "10", "--eval_limit", "4",
        "--eval_max_new_tokens", "4", "--output_dir", str(tmp_path / "sft"))
    split = json.loads((tmp_path / "sft" / "data_split.json").read_text())
    assert split["used"] == 24 and split["evaluation_label"] == "reasoning_gym:chain_sum, held out"
    summary = json.loads((tmp_path / "sft" / "sft_summary.json").read_text())
    assert summary["after"]["num_problems"] == 4

    merged = tmp_path / "sft" / "merged"
    run("train_grpo.py", "--model_name_or_path", str(merged), *DATA, "--reward_funcs", "reasoning_gym", "format",
        "--reward_weights", "1", "0.5", "--max_steps", "2", "--prompts_per_step", "2", "--num_generations", "2",
        "--micro_batch_size", "4", "--max_completion_length", "6", "--save_steps", "0", "--eval_limit", "4",
        "--eval_max_new_tokens", "4", "--output_dir", str(tmp_path / "grpo"))
    metrics = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all("reward/reasoning_gym" in m for m in metrics)
    samples = [json.loads(line) for line in (tmp_path / "grpo" / "samples.jsonl").read_text().splitlines()]
    assert "reasoning_gym_answer" in samples[0]  # the reward's log_extra column
    assert_model_card(tmp_path / "grpo", merged)
    for stage in ("sft", "grpo"):  # one layout: the next stage takes <output_dir>/merged from either
        assert (tmp_path / stage / "merged" / "config.json").is_file() and not (tmp_path / stage / "final").exists()

    done = run("evaluate.py", "--model_name_or_path", str(merged), *DATA, "--limit", "4", "--max_new_tokens", "4",
               "--output_dir", str(tmp_path / "eval"))
    assert "reasoning_gym:chain_sum, held out · 4 problems" in done.stdout
    records = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    sft_records = [json.loads(line) for line in
                   (tmp_path / "sft" / "eval_after" / "predictions.jsonl").read_text().splitlines()]
    assert [r["question"] for r in records] == [r["question"] for r in sft_records]  # the same held-out problems
    assert [r["completion"] for r in records] == [r["completion"] for r in sft_records]  # the same greedy model


def assert_model_card(run: Path, base: Path) -> None:
    """The run's merged/ carries a model card (base model, data, rewards, the before/after table) and a config that
    parses back into this run's options: `--config grpo_config.yaml` reproduces it."""
    from pipeline.arguments import DataArguments, ModelArguments
    from pipeline.config import parse_config
    from pipeline.grpo.config import GRPOArguments

    card = (run / "merged" / "README.md").read_text()
    # a local start model and a reasoning-gym task are no hub ids: the metadata leaves them out, the text names them
    assert card.startswith("---\nlibrary_name: transformers\ntags:\n") and "base_model" not in card.split("---")[1]
    assert f"Trained from `{base}`" in card and "Data: `reasoning_gym:chain_sum`" in card
    assert "Rewards: `reasoning_gym` × 1, `format` × 0.5" in card and "2 steps" in card
    table = card.split("```")[1]
    assert "reasoning_gym:chain_sum, held out, 4 problems" in table
    assert "before GRPO" in table and "after GRPO" in table
    grpo, model, data = parse_config([GRPOArguments, ModelArguments, DataArguments],
                                     ["--config", str(run / "merged" / "grpo_config.yaml")])
    ran = json.loads((run / "config.json").read_text())
    ran["grpo"] |= {"resume_from_checkpoint": None, "push_to_hub": False}  # a re-run neither resumes nor uploads
    assert (grpo.to_dict(), model.to_dict(), data.to_dict()) == (ran["grpo"], ran["model"], ran["data"])
