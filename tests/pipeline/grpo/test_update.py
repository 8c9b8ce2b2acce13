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
from tolerances import sgd_weight_tolerance

HERE = Path(__file__).resolve().parent
REWARD = "toy_rewards:digit_fraction"  # a module:function plug-in from this folder


@pytest.fixture(autouse=True)
def plugin_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


@pytest.mark.dispatch
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
    largest = largest_gradients(state.optimizer)
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
    # The same two SGD steps of exact values; the gradients differ in rounding only (micro-batches 3 + 1 against
    # TRL's 4, its loss arithmetic): each element a float32 sum over one update's 4 rows of prompt + completion.
    rtol, atol = sgd_weight_tolerance(lr=0.5, updates=2, tokens=4 * rollout.input_ids().size(1),
                                      grad_scale=max(largest))
    # atol follows this run's own largest gradient: the update itself must stay far above it, or a tolerance that
    # swallowed the whole step (no update, a wrong loss scale) would pass.
    moved = max((p.detach() - initial[n]).abs().max().item() for n, p in state.policy.named_parameters())
    assert moved > 1e3 * atol, (moved, atol)  # training moved the weights far beyond the rounding allowed
    for name, ours in state.policy.named_parameters():
        torch.testing.assert_close(ours.detach(), theirs[name].detach(), rtol=rtol, atol=atol)


def test_entropy_controller_state_survives_a_json_checkpoint():
    controller = EntropyController(coef=0.1, target=0.3, delta=0.05, low=0.0, high=1.0)
    fresh = EntropyController(coef=0.1, target=0.3, delta=0.05, low=0.0, high=1.0)
    fresh.load_state_dict(json.loads(json.dumps(controller.state_dict())))
    assert fresh.last_entropy == math.inf and fresh.applied() == 0.0  # no measurement yet: no bonus
    controller.update(0.2)
    fresh.load_state_dict(json.loads(json.dumps(controller.state_dict())))
    assert (fresh.coef, fresh.last_entropy, fresh.applied()) == pytest.approx((0.15, 0.2, 0.15))


def largest_gradients(optimizer) -> list[float]:
    """The largest gradient element of each step the optimizer takes, in a list that fills as it steps."""
    seen = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(
        max(p.grad.abs().max().item() for group in opt.param_groups for p in group["params"] if p.grad is not None)))
    return seen


def poison_update(monkeypatch, factor: float, poisoned_calls: set[int]):
    """grpo_loss as it is, but its loss times ``factor`` on the given calls (1-based): a fault injection."""
    import pipeline.grpo.update as update

    real_loss, calls = update.grpo_loss, {"n": 0}

    def poisoned(*a, **kw):
        out = real_loss(*a, **kw)
        calls["n"] += 1
        if calls["n"] in poisoned_calls:
            out.loss = out.loss * factor
        return out

    monkeypatch.setattr(update, "grpo_loss", poisoned)


def two_update_state(tmp_path, tiny_model_dir, mini_gsm8k, lora_dropout=0.05, **overrides):
    """A LoRA run whose one generation batch of 8 completions makes two optimizer updates of 2 micro-batches."""
    args = GRPOArguments(**{"output_dir": str(tmp_path), "max_steps": 1, "prompts_per_step": 2, "num_generations": 4,
                            "micro_batch_size": 2, "steps_per_generation": 2, "max_completion_length": 8,
                            "reward_funcs": ["toy_rewards:text_length"], "beta": 0.0, "learning_rate": 5e-3,
                            "save_steps": 0, "seed": 0, **overrides})
    model_args = ModelArguments(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4, lora_alpha=8,
                               lora_dropout=lora_dropout)
    state = setup(args, model_args, DataArguments(dataset_name=str(mini_gsm8k)),
                  load_gsm8k(str(mini_gsm8k), "train").examples)
    batch = local_prompts(state, 0)
    rollout = generate(state, batch)
    rewards, breakdown = score(state, rollout, batch)
    advantages = process_advantages(state.accelerator, args, rewards, breakdown, rollout.group_size).advantages
    old, _ = reference_logps(state, rollout)
    return state, (rollout, advantages, old, None)


def test_a_nan_update_skips_itself_only(tiny_model_dir, mini_gsm8k, tmp_path, monkeypatch):
    """The first of two updates has a NaN loss (its 2 micro-batches); the second's own loss is finite and applies."""
    poison_update(monkeypatch, math.nan, {1, 2})
    state, inputs = two_update_state(tmp_path, tiny_model_dir, mini_gsm8k)
    before = {n: p.detach().clone() for n, p in state.policy.named_parameters() if p.requires_grad}
    metrics = train_on_rollout(state, *inputs)
    assert metrics["skipped_updates"] == 1 and state.updates_this_step == 1
    after = dict(state.policy.named_parameters())
    assert all(torch.isfinite(after[n]).all() for n in before)
    assert any(not torch.equal(after[n], before[n]) for n in before)


def test_fp16_grad_scaler_survives_an_overflowing_update(tiny_model_dir, mini_gsm8k, tmp_path, monkeypatch,
                                                         fresh_accelerate_state):
    """accelerate's fp16 path (a real GradScaler, here on CPU): the first update overflows (inf loss), so the
    scaler skips it and halves its scale; the second update must then be unscaled and applied, not crash with
    "unscale_() has already been called"."""
    import accelerate

    class ScalingAccelerator(accelerate.Accelerator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)  # as accelerate makes it on a GPU
            self.native_amp = True

    monkeypatch.setattr(accelerate, "Accelerator", ScalingAccelerator)
    poison_update(monkeypatch, math.inf, {1, 2})
    state, inputs = two_update_state(tmp_path, tiny_model_dir, mini_gsm8k, mixed_precision="fp16")
    assert state.optimizer.scaler is state.accelerator.scaler  # the prepared optimizer steps through the scaler
    before = {n: p.detach().clone() for n, p in state.policy.named_parameters() if p.requires_grad}
    metrics = train_on_rollout(state, *inputs)
    assert metrics["skipped_updates"] == 1 and state.updates_this_step == 1
    assert state.accelerator.scaler.get_scale() == 2.0**15  # one overflow seen by the scaler: halved once
    after = dict(state.policy.named_parameters())
    assert any(not torch.equal(after[n], before[n]) for n in before)


def test_an_entropy_coefficient_outside_its_bounds_is_clamped_on_the_side_it_moves_to():
    """TRL: up is min(coef + delta, max), down is max(coef - delta, min); a coefficient that starts outside
    [min, max] is not pulled to the far bound (worked by hand from TRL's two lines)."""
    above = EntropyController(coef=0.9, target=0.5, delta=0.1, low=0.0, high=0.5)
    assert above.update(0.8) == pytest.approx(0.8)  # entropy above target, down: max(0.9 - 0.1, 0.0)
    assert above.update(0.2) == pytest.approx(0.5)  # below target, up: min(0.8 + 0.1, 0.5)
    below = EntropyController(coef=-0.3, target=0.5, delta=0.1, low=0.0, high=0.5)
    assert below.update(0.2) == pytest.approx(-0.2)  # up: min(-0.3 + 0.1, 0.5)
    assert below.update(0.9) == pytest.approx(0.0)  # down: max(-0.2 - 0.1, 0.0)


@pytest.mark.parametrize("option, launch, expected", [(None, "bf16", "bf16"), ("no", "bf16", "no"), (None, None, "no")])
def test_mixed_precision_follows_the_launch_config_unless_set(tiny_model_dir, mini_gsm8k, tmp_path, monkeypatch,
                                                              fresh_accelerate_state, option, launch, expected):
    """`accelerate launch` with a config of mixed_precision: bf16 exports ACCELERATE_MIXED_PRECISION; the run
    uses it unless --mixed_precision says otherwise."""
    if launch is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launch)
    args = GRPOArguments(output_dir=str(tmp_path), max_steps=1, mixed_precision=option, reward_funcs=[REWARD])
    state = setup(args, ModelArguments(model_name_or_path=str(tiny_model_dir)), DataArguments(),
                  load_gsm8k(str(mini_gsm8k), "train").examples)
    assert state.accelerator.mixed_precision == expected


@pytest.mark.parametrize("options", [{"loss_type": "dapo"},
                                     {"loss_type": "bnpo", "importance_sampling_level": "sequence", "num_iterations": 2}],
                         ids=["dapo", "bnpo-sequence-mu2"])
@pytest.mark.dispatch
def test_skip_zero_advantage_trains_fewer_rows_to_the_same_weights(tiny_model_dir, mini_gsm8k, tmp_path, monkeypatch,
                                                                   options):
    """Two updates of 4 completions. Row 1 has advantage 0 and the whole second update has: skipping them must
    train 3 rows, then 1 (a zero-gradient row, so that the optimizer still takes its momentum step), and reach
    the weights of the full 8-row update. No LoRA dropout: its random masks would depend on the rows trained.

    SGD with momentum rather than the run's AdamW: AdamW divides each gradient element by its own RMS + 1e-8,
    so the rounding of a gradient element near 0 comes out times up to lr / 1e-8 (no float32 tolerance covers
    that), and its first step depends on the loss's scale only through such elements, so a wrong denominator
    for the rows kept would show only there. Momentum still moves the weights on the all-zero update."""
    import pipeline.grpo.update as update

    real_logps, trained = update.completion_logps, []

    def counting(model, input_ids, *a, **kw):
        trained.append(input_ids.size(0))
        return real_logps(model, input_ids, *a, **kw)

    monkeypatch.setattr(update, "completion_logps", counting)
    lr, momentum, initial, weights, largest = 1.0, 0.9, {}, {}, {}
    for skip in (False, True):
        state, (rollout, advantages, old, ref) = two_update_state(tmp_path / str(skip), tiny_model_dir, mini_gsm8k,
                                                                  skip_zero_advantage=skip, micro_batch_size=4,
                                                                  lora_dropout=0.0, **options)
        initial[skip] = {n: p.detach().clone() for n, p in state.policy.named_parameters() if p.requires_grad}
        state.optimizer = torch.optim.SGD([p for p in state.policy.parameters() if p.requires_grad], lr=lr,
                                          momentum=momentum)
        largest[skip] = largest_gradients(state.optimizer)
        advantages = advantages.clone()
        advantages[1] = 0.0
        advantages[4:] = 0.0
        assert advantages[[0, 2, 3]].ne(0).all()  # text_length gives the first group a spread
        trained.clear()
        train_on_rollout(state, rollout, advantages, old, ref)
        weights[skip] = {n: p.detach().clone() for n, p in state.policy.named_parameters() if p.requires_grad}
        passes = options.get("num_iterations", 1)
        assert trained == ([3, 1] if skip else [4, 4]) * passes
        assert len(largest[skip]) == 2 * passes  # every update stepped, the all-zero ones included
    # Each gradient element: a float32 sum over an update's 4 rows of prompt + completion tokens.
    rtol, atol = sgd_weight_tolerance(lr, updates=len(largest[False]), tokens=4 * rollout.input_ids().size(1),
                                      grad_scale=max(largest[False]), momentum=momentum)
    moved = max((full - initial[False][name]).abs().max().item() for name, full in weights[False].items())
    assert moved > 1e3 * atol, (moved, atol)  # training moved the weights far beyond the rounding allowed
    for name, full in weights[False].items():
        torch.testing.assert_close(weights[True][name], full, rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("options, reason", [({"beta": 0.04}, "needs beta 0"),
                                             ({"entropy_coef": 0.01}, "entropy bonus"),
                                             ({"use_adaptive_entropy": True}, "entropy bonus"),
                                             ({"top_entropy_quantile": 0.5}, "top_entropy_quantile")])
def test_skip_zero_advantage_refuses_what_acts_on_every_completion(options, reason):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=f"option --skip_zero_advantage: .*{reason}"):
        GRPOArguments(skip_zero_advantage=True, **({"beta": 0.0} | options))
    with pytest.raises(ConfigError, match="option --skip_zero_advantage: runs in a single training process"):
        GRPOArguments(skip_zero_advantage=True, beta=0.0).check_processes(2)
