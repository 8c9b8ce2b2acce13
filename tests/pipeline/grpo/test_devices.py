"""Device discipline without a GPU: with torch's default device set to ``meta``, a tensor made without an
explicit device is a meta tensor, and meeting a model tensor (on the CPU here, on ``cuda`` on a GPU machine)
raises. A GRPO step, the evaluation and the rewards' advantages must therefore place every tensor on the
accelerator's device themselves, as they must on a GPU."""

from pathlib import Path

import pytest
import torch

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.data import load_gsm8k
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.trainer import run_step, setup

HERE = Path(__file__).resolve().parent
REWARD = "toy_rewards:text_length"


def step_args(output_dir, **overrides) -> GRPOArguments:
    values = dict(output_dir=str(output_dir), max_steps=2, prompts_per_step=2, num_generations=4, micro_batch_size=2,
                  max_completion_length=6, reward_funcs=[REWARD, "accuracy"], beta=0.04, learning_rate=5e-3,
                  save_steps=0, logging_steps=1, seed=3)
    return GRPOArguments(**(values | overrides))


@pytest.mark.parametrize("overrides", [
    {},  # LoRA, the reference through the disabled adapter
    {"num_iterations": 2, "multi_objective_aggregation": "normalize_then_sum", "scale_rewards": "batch"},
    {"dynamic_sampling": True, "top_entropy_quantile": 0.5, "use_adaptive_entropy": True},
    {"loss_type": "vespo", "num_iterations": 2},
], ids=["default", "normalize_then_sum", "dynamic_sampling", "vespo"])
def test_a_grpo_step_places_every_tensor_on_the_model_device(tiny_model_dir, mini_gsm8k, tmp_path, monkeypatch,
                                                             meta_default_device, overrides):
    monkeypatch.syspath_prepend(str(HERE))
    examples = load_gsm8k(str(mini_gsm8k), "train").examples
    model_args = ModelArguments(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4, lora_alpha=8)
    state = setup(step_args(tmp_path, **overrides), model_args, DataArguments(dataset_name=str(mini_gsm8k)), examples)
    before = {n: p.detach().clone() for n, p in state.policy.named_parameters() if p.requires_grad}
    phases = []
    state.show_phase = phases.append  # what the progress bar shows during the step
    metrics = run_step(state)
    updates = state.args.num_iterations
    assert phases == ["generating", "scoring", "reference log-probs", *(f"update {i}/{updates}" for i in range(1, updates + 1))]
    assert all(p.device.type == "cpu" for p in state.policy.parameters())
    changed = [n for n, p in state.policy.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed and metrics["skipped_updates"] == 0
