"""Distributed engines engaged and checked on CPU: two gloo processes under DeepSpeed ZeRO-2 and ZeRO-3 (its
CPU accelerator), launched with the repository's own accelerate configs, reach the one-process weights; each
run's config.json records what really ran (stage, optimizer, the share of the parameters each process holds),
so a silent fallback to DDP fails the test."""

import pytest
import runs
import torch

from pipeline.distributed import launched_engine


@pytest.fixture(scope="module")
def one_process_run(tiny_model_dir, mini_gsm8k, tmp_path_factory):
    run = tmp_path_factory.mktemp("one-process")
    runs.run_one(runs.grpo_command(tiny_model_dir, mini_gsm8k, run), run.parent / "one-process.log")
    return run


def test_the_launched_engine_is_read_from_accelerates_environment():
    assert launched_engine({"ACCELERATE_USE_FSDP": "true"}) == "fsdp"
    assert launched_engine({"ACCELERATE_USE_DEEPSPEED": "false"}) is None


@pytest.mark.slow
@pytest.mark.parametrize("stage, optimizer", [(2, "DeepSpeedZeroOptimizer"), (3, "DeepSpeedZeroOptimizer_Stage3")])
def test_deepspeed_zero_on_two_cpu_processes_reaches_the_one_process_weights(one_process_run, tiny_model_dir,
                                                                              mini_gsm8k, tmp_path, stage, optimizer):
    run = tmp_path / f"zero{stage}"
    runs.launch_two(f"configs/accelerate/zero{stage}.yaml", runs.grpo_command(tiny_model_dir, mini_gsm8k, run),
                    tmp_path / "log")
    engine = runs.engine(run)
    assert (engine["distributed_type"], engine["zero_stage"], engine["optimizer"]) == ("DEEPSPEED", stage, optimizer)
    if stage == 3:  # parameters partitioned: each process holds about half of every parameter's elements
        assert engine["local_parameter_fraction"] == pytest.approx(0.5, abs=0.01)
    else:
        assert engine["local_parameter_fraction"] == 1.0
    runs.assert_same_training(run, one_process_run)


@pytest.mark.slow
@pytest.mark.parametrize("config, extra, message", [
    ("zero2", ["--resume_from_checkpoint", "latest"], "error: option --resume_from_checkpoint: not under DeepSpeed yet"),
    ("zero3", ["--use_peft", "false"], "error: option --beta: ZeRO-3 with full fine-tuning needs a sharded reference"),
])
def test_what_deepspeed_runs_do_not_offer_yet_stops_before_any_weights_load(tiny_model_dir, mini_gsm8k, tmp_path,
                                                                          config, extra, message):
    output = runs.launch_two_failing(f"configs/accelerate/{config}.yaml",
                                     runs.grpo_command(tiny_model_dir, mini_gsm8k, tmp_path / "run", *extra),
                                     tmp_path / "log")
    assert message in output and "Loading weights" not in output


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA, accelerate builds FSDP: this is the CPU case")
def test_an_engine_accelerate_does_not_run_stops_the_launch_in_one_line(tiny_model_dir, mini_gsm8k, tmp_path):
    """fsdp.yaml on a machine without CUDA: accelerate builds no FSDP there (it runs no engine at all); the run
    must say so instead of training without the sharding it was asked for."""
    output = runs.launch_two_failing("configs/accelerate/fsdp.yaml",
                                     runs.grpo_command(tiny_model_dir, mini_gsm8k, tmp_path / "run"), tmp_path / "log")
    assert "error: the launch config asks for fsdp, but accelerate runs NO" in output
    assert "Loading weights" not in output and not (tmp_path / "run" / "metrics.jsonl").exists()
