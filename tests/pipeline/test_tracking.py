"""Trackers with the real libraries: Weights & Biases offline (no network), and TensorBoard."""

import json

import pytest

from pipeline.classic.bandit import BanditConfig, train_bandit
from pipeline.tracking import RunTracker


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # no writes to the home folder
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # where TRL/transformers put it (ours: the run folder)
    yield
    import wandb

    wandb.teardown()  # wandb keeps process-wide settings (its directory among them) until torn down


def offline_run_log(run_dir) -> bytes:
    """The binary record log of the one offline run under ``run_dir`` (its keys are stored as text)."""
    (log,) = list(run_dir.glob("**/offline-run-*/run-*.wandb"))
    return log.read_bytes()


def test_the_bandit_logs_to_wandb_offline(tmp_path, wandb_offline):
    train_bandit(BanditConfig(output_dir=str(tmp_path / "bandit"), steps=5, report_to="wandb"))
    record = offline_run_log(tmp_path / "bandit")
    assert b"best_arm_probability" in record and b"return" in record


def test_the_bandit_logs_to_tensorboard_the_values_of_its_metrics_file(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_bandit(BanditConfig(output_dir=str(tmp_path / "bandit"), steps=5, report_to="tensorboard"))
    events = EventAccumulator(str(tmp_path / "bandit" / "tensorboard"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("best_arm_probability")]
    rows = [json.loads(line) for line in (tmp_path / "bandit" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [(r["step"], pytest.approx(r["best_arm_probability"])) for r in rows]


def test_an_unknown_tracker_is_named(tmp_path):
    with pytest.raises(ValueError, match="report_to must be one of none, tensorboard, wandb, got 'mlflow'"):
        RunTracker("mlflow", tmp_path, "p", {})


def test_grpo_logs_to_wandb_offline(tiny_model_dir, tmp_path, wandb_offline):
    from pipeline.arguments import DataArguments, ModelArguments
    from pipeline.data import load_gsm8k
    from pipeline.grpo.config import GRPOArguments
    from pipeline.grpo.trainer import train

    examples = load_gsm8k(split="train").examples[:4]
    args = GRPOArguments(output_dir=str(tmp_path / "grpo"), max_steps=1, prompts_per_step=2, num_generations=2,
                         micro_batch_size=4, max_completion_length=4, report_to="wandb", save_steps=0)
    train(args, ModelArguments(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=2, lora_alpha=4),
          DataArguments(), examples)
    record = offline_run_log(tmp_path / "grpo")
    assert b"completion_length" in record and b"frac_reward_zero_std" in record


def test_sft_logs_to_wandb_offline(tiny_model_dir, tmp_path, wandb_offline):
    from trl import SFTConfig

    from pipeline.arguments import DataArguments, ModelArguments
    from pipeline.sft import SFTScriptArguments, run_sft

    config = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=2, per_device_train_batch_size=2, logging_steps=1,
                       use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="wandb", max_length=256,
                       save_steps=2, disable_tqdm=True)
    run_sft(SFTScriptArguments(eval_limit=0), config,
            ModelArguments(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=2, lora_alpha=4),
            DataArguments(max_train_samples=4, grpo_holdout_size=1000))
    import wandb

    wandb.finish()  # transformers leaves the run open; a process would close it at exit
    assert b"train/loss" in offline_run_log(tmp_path)
