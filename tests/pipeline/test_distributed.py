"""Distributed engines engaged and checked on CPU: two gloo processes under DeepSpeed ZeRO-2 and ZeRO-3 (its
CPU accelerator) and FSDP2 (accelerate's FSDP2 path on a CPU mesh), launched with the repository's own
accelerate configs, reach the one-process weights; each run's config.json records what really ran (stage,
optimizer, the share of the parameters each process holds), so a silent fallback to DDP fails the test."""

import pytest
import runs

from pipeline.distributed import launched_engine


@pytest.fixture(scope="module")
def one_process_run(tiny_model_dir, mini_gsm8k, tmp_path_factory):
    run = tmp_path_factory.mktemp("one-process")
    runs.run_one(runs.grpo_command(tiny_model_dir, mini_gsm8k, run), run.parent / "one-process.log")
    return run


def test_the_launched_engine_is_read_from_accelerates_environment():
    assert launched_engine({"ACCELERATE_USE_FSDP": "true"}) == "fsdp"
    assert launched_engine({"ACCELERATE_USE_DEEPSPEED": "false"}) is None


ENGINES = {  # the launch config: what its run's config.json must record
    "zero2": {"distributed_type": "DEEPSPEED", "zero_stage": 2, "optimizer": "DeepSpeedZeroOptimizer",
              "local_parameter_fraction": 1.0},  # ZeRO-2 shards optimizer state and gradients, not parameters
    "zero3": {"distributed_type": "DEEPSPEED", "zero_stage": 3, "optimizer": "DeepSpeedZeroOptimizer_Stage3",
              "local_parameter_fraction": pytest.approx(0.5, abs=0.01)},  # half of every parameter, up to padding
    "fsdp": {"distributed_type": "FSDP", "local_parameter_fraction": 0.5},  # FSDP2: DTensors, half the elements
}


@pytest.mark.slow
@pytest.mark.parametrize("config", list(ENGINES))
def test_a_sharding_engine_on_two_cpu_processes_reaches_the_one_process_weights(one_process_run, tiny_model_dir,
                                                                                mini_gsm8k, tmp_path, config):
    run = tmp_path / config
    runs.launch_two(f"configs/accelerate/{config}.yaml", runs.grpo_command(tiny_model_dir, mini_gsm8k, run),
                    tmp_path / "log")
    engine = runs.engine(run)
    assert {key: engine.get(key) for key in ENGINES[config]} == ENGINES[config]
    assert engine["processes"] == 2
    runs.assert_same_training(run, one_process_run)
    # DeepSpeed's shared-memory inference kernel is not compiled at start (it cost ~50 s, and a compiler)
    assert "shm_comm_op built" not in (tmp_path / "log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("config, extra, message", [
    ("zero2", ["--resume_from_checkpoint", "latest"], "error: option --resume_from_checkpoint: not under deepspeed yet"),
    ("zero3", ["--use_peft", "false"], "error: option --beta: ZeRO-3 with full fine-tuning needs a sharded reference"),
])
def test_what_deepspeed_runs_do_not_offer_yet_stops_before_any_weights_load(tiny_model_dir, mini_gsm8k, tmp_path,
                                                                          config, extra, message):
    output = runs.launch_two_failing(f"configs/accelerate/{config}.yaml",
                                     runs.grpo_command(tiny_model_dir, mini_gsm8k, tmp_path / "run", *extra),
                                     tmp_path / "log")
    assert message in output and "Loading weights" not in output


@pytest.mark.slow
def test_an_engine_accelerate_does_not_run_stops_the_launch_in_one_line(tiny_model_dir, mini_gsm8k, tmp_path):
    """zero2.yaml launched with ACCELERATE_USE_CPU=true in the environment: accelerate then builds no DeepSpeed
    and would train plain DDP without a word; the run must say so before any weights load."""
    output = runs.launch_two_failing("configs/accelerate/zero2.yaml",
                                     runs.grpo_command(tiny_model_dir, mini_gsm8k, tmp_path / "run"), tmp_path / "log",
                                     env={"ACCELERATE_USE_CPU": "true"})
    assert "error: the launch config asks for deepspeed, but accelerate runs MULTI_CPU" in output
    assert "Loading weights" not in output and not (tmp_path / "run" / "metrics.jsonl").exists()
