import json
import math
from pathlib import Path

import pytest
import torch

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.data import load_gsm8k
from pipeline.grpo.advantages import process_advantages
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.crosscheck import trl_trainer_for_loss
from pipeline.grpo.inputs import local_prompts
from pipeline.grpo.trainer import generate, reference_logps, score, setup
from pipeline.grpo.update import EntropyController, train_on_rollout
from pipeline.models import load_model

HERE = Path(__file__).resolve().parent
REWARD = "toy_rewards:digit_fraction"  # a module:function plug-in from this folder


@pytest.fixture(autouse=True)
def plugin_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_steps_per_generation_takes_trls_optimizer_steps_on_one_generation_batch(tiny_model_dir, mini_gsm8k, tmp_path,
                                                                               loss_type):
    """8 completions, steps_per_generation 2: two AdamW updates on the halves, the second off-policy (ratio to the
    sampling policy's log-probs). The same two updates by hand with TRL's _compute_loss (its num_items_in_batch
    rescaling for dapo) must reach the same weights; ours cuts each half 3 + 1 into micro-batches. Plain SGD on
    both sides: Adam's first steps would hide a wrong loss scale."""
    args = GRPOArguments(output_dir=str(tmp_path / "ours"), max_steps=1, prompts_per_step=2, num_generations=4,
                         micro_batch_size=3, steps_per_generation=2, max_completion_length=8, reward_funcs=[REWARD],
                         beta=0.0, learning_rate=5e-3, loss_type=loss_type, temperature=0.9, save_steps=0, seed=0)
    data = DataArguments(dataset_name=str(mini_gsm8k), grpo_holdout_size=8)
    model_args = ModelArguments(model_name_or_path=str(tiny_model_dir))
    state = setup(args, model_args, data, load_gsm8k(str(mini_gsm8k), "train").examples)
    initial = {n: p.detach().clone() for n, p in state.policy.named_parameters()}
    state.optimizer = torch.optim.SGD(state.policy.parameters(), lr=0.5)
    batch = local_prompts(state, 0)
    rollout = generate(state, batch)
    rewards, breakdown = score(state, rollout, batch)
    advantages = process_advantages(state.accelerator, args, rewards, breakdown, rollout.group_size).advantages
    old, _ = reference_logps(state, rollout)
    assert old is not None and advantages[:4].abs().sum() > 0 and advantages[4:].abs().sum() > 0
    metrics = train_on_rollout(state, rollout, advantages, old, None)
    assert state.updates_this_step == 2 and metrics["skipped_updates"] == 0

    model = load_model(model_args)
    trainer = trl_trainer_for_loss(model, state.tokenizer, tmp_path / "trl", loss_type, 0.0, 1, 0.9, False,
                                   {"steps_per_generation": 2})
    model = trainer.model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    mask = rollout.completion_mask
    for half in (slice(0, 4), slice(4, 8)):
        inputs = {"prompt_ids": rollout.prompt_ids[half], "prompt_mask": rollout.prompt_mask[half],
                  "completion_ids": rollout.completion_ids[half], "completion_mask": mask[half],
                  "advantages": advantages[half], "old_per_token_logps": old[half], "num_items_in_batch": mask.sum()}
        trainer._compute_loss(model, inputs).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
    theirs = dict(model.named_parameters())
    for name, ours in state.policy.named_parameters():
        torch.testing.assert_close(ours.detach(), theirs[name].detach(), rtol=1e-5, atol=1e-7)
    assert max((p.detach() - initial[n]).abs().max().item() for n, p in state.policy.named_parameters()) > 1e-4


def test_entropy_controller_state_survives_a_json_checkpoint():
    controller = EntropyController(coef=0.1, target=0.3, delta=0.05, low=0.0, high=1.0)
    fresh = EntropyController(coef=0.1, target=0.3, delta=0.05, low=0.0, high=1.0)
    fresh.load_state_dict(json.loads(json.dumps(controller.state_dict())))
    assert fresh.last_entropy == math.inf and fresh.applied() == 0.0  # no measurement yet: no bonus
    controller.update(0.2)
    fresh.load_state_dict(json.loads(json.dumps(controller.state_dict())))
    assert (fresh.coef, fresh.last_entropy, fresh.applied()) == pytest.approx((0.15, 0.2, 0.15))
