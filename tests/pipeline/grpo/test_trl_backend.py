"""--backend trl runs the same configuration through TRL's GRPOTrainer, or refuses in one line."""

from pathlib import Path

import pytest

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.config import ConfigError
from pipeline.data import load_gsm8k
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.trl_backend import train_with_trl, trl_config

HERE = Path(__file__).resolve().parent


def args(tmp_path, **overrides) -> GRPOArguments:
    values = dict(output_dir=str(tmp_path), max_steps=1, prompts_per_step=2, num_generations=4, micro_batch_size=4,
                  max_completion_length=6, reward_funcs=["toy_rewards:text_length"], learning_rate=5e-3, save_steps=0,
                  seed=0)
    return GRPOArguments(**(values | overrides))


def test_max_steps_counts_our_steps_whatever_the_updates_per_step(tiny_model_dir, mini_gsm8k, tmp_path, monkeypatch):
    """One of our steps is one generation batch; with num_iterations 2 it makes 2 optimizer steps, which is
    what TRL's max_steps counts: TRL must run 2, not 1 (half the run)."""
    monkeypatch.syspath_prepend(str(HERE))
    summary = train_with_trl(args(tmp_path, num_iterations=2), ModelArguments(model_name_or_path=str(tiny_model_dir)),
                             DataArguments(), load_gsm8k(str(mini_gsm8k), "train").examples)
    assert summary["steps"] == 2


@pytest.mark.parametrize("overrides, message", [
    ({"dynamic_sampling": True}, "option --dynamic_sampling: is this project's (TRL 1.16 has none)"),
    ({"prompts_per_step": 3, "steps_per_generation": 5},
     "option --prompts_per_step: --backend trl: the 12 completions of a step do not split over 1 processes"),
    ({"micro_batch_size": 3}, "option --micro_batch_size: --backend trl needs it (3) to divide the 8 completions"),
])
def test_what_trl_cannot_run_the_same_is_refused_not_dropped(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        trl_config(args(tmp_path, **overrides), num_processes=1)


def test_use_vllm_maps_to_trls_colocated_vllm(tmp_path):
    config = trl_config(args(tmp_path, use_vllm=True, vllm_importance_sampling_mode="token_truncate",
                             vllm_importance_sampling_clip_max=2.5), num_processes=1)
    assert (config.use_vllm, config.vllm_mode) == (True, "colocate")
    assert (config.vllm_importance_sampling_mode, config.vllm_importance_sampling_clip_max) == ("token_truncate", 2.5)
