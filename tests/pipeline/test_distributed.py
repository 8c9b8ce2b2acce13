"""Distributed engines engaged and checked on CPU: two gloo processes under DeepSpeed ZeRO-2 and ZeRO-3 (its
CPU accelerator), launched with the repository's own accelerate configs, reach the one-process weights; each
run's config.json records what really ran (stage, optimizer, the share of the parameters each process holds),
so a silent fallback to DDP fails the test."""

import json
import os
import socket
import sys
from pathlib import Path

import processes
import pytest
import torch
from safetensors.torch import load_file

from pipeline.distributed import launched_engine

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "tests" / "pipeline" / "grpo"  # toy_rewards


def grpo_command(model_dir: Path, data: Path, output_dir: Path, *extra: str) -> list[str]:
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


def launch(config: str, command: list[str], log: Path) -> None:
    """accelerate launch with a repository config on 2 processes, in full precision; must exit 0."""
    code, output = processes.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", config,
                                  "--num_processes", "2", "--mixed_precision", "no",
                                  "--main_process_port", str(free_port()), *command],
                                 cwd=ROOT, env=environment(), log=log, timeout=600)
    assert code == 0, output[-4000:]


def adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "adapter" / "adapter_model.safetensors")


def rewards(run: Path) -> list[float]:
    return [json.loads(line)["reward"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process_run(tiny_model_dir, mini_gsm8k, tmp_path_factory):
    run = tmp_path_factory.mktemp("one-process")
    code, output = processes.run([sys.executable, *grpo_command(tiny_model_dir, mini_gsm8k, run)], cwd=ROOT,
                                 env=environment(), log=run.parent / "one-process.log", timeout=600)
    assert code == 0, output[-4000:]
    assert any((v != 0).any() for k, v in adapter(run).items() if "lora_B" in k)  # it trained
    return run


def test_the_launched_engine_is_read_from_accelerates_environment():
    assert launched_engine({"ACCELERATE_USE_FSDP": "true"}) == "fsdp"
    assert launched_engine({"ACCELERATE_USE_DEEPSPEED": "false"}) is None


@pytest.mark.slow
@pytest.mark.parametrize("stage, optimizer", [(2, "DeepSpeedZeroOptimizer"), (3, "DeepSpeedZeroOptimizer_Stage3")])
def test_deepspeed_zero_on_two_cpu_processes_reaches_the_one_process_weights(one_process_run, tiny_model_dir,
                                                                              mini_gsm8k, tmp_path, stage, optimizer):
    pytest.importorskip("deepspeed", reason="the deepspeed extra (make install installs it)")
    run = tmp_path / f"zero{stage}"
    launch(f"configs/accelerate/zero{stage}.yaml", grpo_command(tiny_model_dir, mini_gsm8k, run), tmp_path / "log")
    engine = json.loads((run / "config.json").read_text())["engine"]
    assert (engine["distributed_type"], engine["zero_stage"], engine["optimizer"]) == ("DEEPSPEED", stage, optimizer)
    if stage == 3:  # parameters partitioned: each process holds about half of every parameter's elements
        assert engine["local_parameter_fraction"] == pytest.approx(0.5, abs=0.01)
    else:
        assert engine["local_parameter_fraction"] == 1.0
    assert rewards(run) == pytest.approx(rewards(one_process_run))  # same samples, in step
    ours, one = adapter(run), adapter(one_process_run)
    assert ours.keys() == one.keys()
    for key, value in one.items():  # AdamW: the DDP test's tolerance
        torch.testing.assert_close(ours[key], value, rtol=1e-3, atol=1e-5, msg=lambda m, key=key: f"{key}: {m}")
