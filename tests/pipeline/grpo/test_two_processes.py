"""Every option that reduces across processes, on two gloo processes (configs/accelerate/ddp_cpu_2proc.yaml)
against one process with the same global batch: the same rewards and the same trained weights. The
statistics are over the whole batch, gathered from every process as TRL gathers them, so the result does
not depend on the process count."""

import pytest
import runs

CASES = {
    # option: (extra arguments of both runs, of the one-process run only, of the two-process run only)
    "scale_rewards_batch": (["--scale_rewards", "batch", "--loss_type", "grpo"], [], []),
    "normalize_then_sum": (["--multi_objective_aggregation", "normalize_then_sum", "--reward_funcs",
                            "toy_rewards:text_length", "toy_rewards:even_length", "--reward_weights", "1", "2"], [], []),
    # The entropy threshold is taken over one micro-batch of every process: 4 rows each here, 8 in one process.
    "top_entropy_quantile": (["--top_entropy_quantile", "0.5"], ["--micro_batch_size", "8"], ["--micro_batch_size", "4"]),
    "adaptive_entropy": (["--use_adaptive_entropy", "true", "--entropy_coef", "0.01", "--entropy_coef_delta", "0.01",
                          "--entropy_target", "5.0"], [], []),
    "cispo": (["--loss_type", "cispo", "--num_iterations", "2"], [], []),
    "vespo": (["--loss_type", "vespo", "--num_iterations", "2"], [], []),
}


@pytest.mark.slow
@pytest.mark.parametrize("option", list(CASES))
def test_two_processes_reach_the_one_process_weights(tiny_model_dir, mini_gsm8k, tmp_path, option):
    both, one_only, two_only = CASES[option]
    one, two = tmp_path / "one", tmp_path / "two"
    runs.run_one(runs.grpo_command(tiny_model_dir, mini_gsm8k, one, *both, *one_only), tmp_path / "one.log")
    runs.launch_two("configs/accelerate/ddp_cpu_2proc.yaml",
                    runs.grpo_command(tiny_model_dir, mini_gsm8k, two, *both, *two_only), tmp_path / "two.log")
    assert runs.engine(two)["processes"] == 2
    runs.assert_same_training(two, one)
