"""GRPO runs of scripts/train_grpo.py as a user starts them, for the multi-process tests: one process, or
`accelerate launch` with a repository config on two gloo processes; and what the runs wrote."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import processes
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "tests" / "pipeline" / "grpo"  # toy_rewards


def grpo_command(model_dir: Path, data: Path, output_dir: Path, *extra: str) -> list[str]:
    """A 3-step LoRA run on the tiny model: 2 prompts x 4 samples a step, micro-batches of 2."""
    return ["scripts/train_grpo.py", "--model_name_or_path", str(model_dir), "--use_peft", "true", "--lora_r", "4",
            "--lora_alpha", "8", "--lora_dropout", "0.0", "--dataset_name", str(data), "--grpo_holdout_size", "12",
            "--max_steps", "3", "--prompts_per_step", "2", "--num_generations", "4", "--micro_batch_size", "2",
            "--max_completion_length", "8", "--reward_funcs", "toy_rewards:text_length", "--beta", "0.04",
            "--learning_rate", "5e-3", "--loss_type", "dapo", "--save_steps", "0", "--seed", "3",
            "--output_dir", str(output_dir), *extra]


def environment() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_one(command: list[str], log: Path) -> None:
    code, output = processes.run([sys.executable, *command], cwd=ROOT, env=environment(), log=log, timeout=600)
    assert code == 0, output[-4000:]


def _launch_command(config: str, command: list[str]) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", "2",
            "--mixed_precision", "no", "--main_process_port", str(free_port()), *command]


def _launch(config: str, command: list[str], log: Path, env: dict | None = None) -> tuple[int | None, str]:
    return processes.run(_launch_command(config, command), cwd=ROOT, env=environment() | (env or {}), log=log,
                         timeout=600)


def launch_two(config: str, command: list[str], log: Path) -> None:
    """accelerate launch with a repository config on 2 processes, in full precision; must exit 0."""
    code, output = _launch(config, command, log)
    assert code == 0, output[-4000:]


def run_one_beside_two(one: list[str], config: str, two: list[str], logs: Path) -> None:
    """``run_one(one)`` and ``launch_two(config, two)`` at the same time (one thread each: three processes
    on two cores beat two runs in a row, which mostly wait on imports); both must exit 0."""
    started = [processes.start([sys.executable, *one], cwd=ROOT, env=environment(), log=logs / "one.log"),
               processes.start(_launch_command(config, two), cwd=ROOT, env=environment(), log=logs / "two.log")]
    codes = processes.wait_all(started, timeout=600)
    for code, name in zip(codes, ("one.log", "two.log")):
        assert code == 0, (logs / name).read_text()[-4000:]


def adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def rewards(run: Path) -> list[float]:
    return [json.loads(line)["reward"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def engine(run: Path) -> dict:
    """What really ran, as the run's config.json records it (pipeline.distributed.engine_summary)."""
    return json.loads((run / "config.json").read_text())["engine"]


def assert_same_training(run: Path, reference: Path) -> None:
    """Same rewards at every step, and the same trained adapter within the DDP test's AdamW tolerance."""
    import pytest

    assert rewards(run) == pytest.approx(rewards(reference))
    ours, theirs = adapter(run), adapter(reference)
    assert any((v != 0).any() for k, v in theirs.items() if "lora_B" in k)  # it trained
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=1e-3, atol=1e-5, msg=lambda m, key=key: f"{key}: {m}")


def launch_two_failing(config: str, command: list[str], log: Path, env: dict | None = None) -> str:
    """Like launch_two (``env`` added to the environment) for a run that must stop; returns its output."""
    code, output = _launch(config, command, log, env)
    assert code not in (0, None), output[-4000:]
    return output
