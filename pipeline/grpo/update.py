"""The optimizer updates on one generation batch: mu passes, each cut into ``steps_per_generation`` updates,
each update accumulated over micro-batches; and the adaptive entropy controller."""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from dataclasses import dataclass, replace

import torch

from pipeline.grpo.config import policy_objective
from pipeline.grpo.logprobs import completion_logps
from pipeline.grpo.loss import LossNormalizer, grpo_loss, high_entropy_mask, sequence_denominators
from pipeline.grpo.vllm_engine import sampling_importance_weights
from pipeline.runtime import free_memory

logger = logging.getLogger(__name__)


@dataclass
class EntropyController:
    """TRL's adaptive entropy coefficient (Skywork-OR1): after each optimizer update, ``coef`` moves by
    ``delta`` toward keeping the update's token entropy at ``target``, within [``low``, ``high``]; the bonus
    applies only while the last measured entropy is at or below ``target`` (none before the first update).

    >>> c = EntropyController(coef=0.25, target=0.5, delta=0.125, low=0.0, high=0.5)
    >>> c.applied(), c.update(0.4), c.applied(), c.update(0.4), c.update(0.4), c.update(0.9), c.applied()
    (0.0, 0.375, 0.375, 0.5, 0.5, 0.375, 0.0)
    """

    coef: float
    target: float
    delta: float
    low: float
    high: float
    last_entropy: float = math.inf

    def applied(self) -> float:
        """The coefficient this update's loss uses."""
        return self.coef if self.last_entropy <= self.target else 0.0

    def update(self, entropy: float) -> float:
        """Record an update's token entropy (its token-weighted mean over every process); returns the new coef."""
        # Clamped on the side it moves toward only, as TRL does: a coefficient that starts outside
        # [low, high] comes back a delta at a time instead of jumping to the bound.
        if entropy <= self.target:
            self.coef = min(self.coef + self.delta, self.high)
        else:
            self.coef = max(self.coef - self.delta, self.low)
        self.last_entropy = entropy
        return self.coef

    def state_dict(self) -> dict[str, float]:
        return {"entropy_coef": self.coef, "last_world_entropy": self.last_entropy}

    def load_state_dict(self, saved: dict[str, float]) -> None:
        self.coef, self.last_entropy = float(saved["entropy_coef"]), float(saved["last_world_entropy"])


def entropy_controller(args) -> EntropyController | None:
    if not args.use_adaptive_entropy:
        return None
    return EntropyController(args.entropy_coef, args.entropy_target, args.entropy_coef_delta, args.entropy_coef_min,
                             args.entropy_coef_max)


def _micro_batches(rows: range | torch.Tensor, size: int) -> list[slice] | list[torch.Tensor]:
    """Consecutive micro-batches of ``rows``: slices of a range, or chunks of a tensor of row indices."""
    if isinstance(rows, torch.Tensor):
        return list(rows.split(size))
    return [slice(start, min(start + size, rows.stop)) for start in range(rows.start, rows.stop, size)]


def _trained_rows(rows: range, advantages: torch.Tensor, skip_zero_advantage: bool) -> range | torch.Tensor:
    """The update's rows that go through the forward/backward: all of them, or (skip_zero_advantage) the
    indices of those with a non-zero advantage. At least one row is kept, so that every trainable parameter
    still gets a (zero) gradient and AdamW's step, momentum included, is the one the full update makes.

    >>> _trained_rows(range(2, 6), torch.tensor([9.0, 9.0, 0.0, 0.5, 0.0, -0.5]), True).tolist()
    [3, 5]
    >>> _trained_rows(range(0, 2), torch.tensor([0.0, 0.0, 1.0]), True).tolist()
    [0]
    """
    if not skip_zero_advantage:
        return rows
    part = advantages[rows.start : rows.stop]  # [n] or [n, T]
    kept = part.reshape(len(rows), -1).ne(0).any(dim=1).nonzero().flatten() + rows.start  # [k]
    return kept if kept.numel() else torch.tensor([rows.start])


def _entropy_mask(acc, entropy: torch.Tensor, mask: torch.Tensor, objective) -> torch.Tensor | None:
    """top_entropy_quantile's token mask, its threshold taken over every process's micro-batch (as TRL does)."""
    if objective.top_entropy_quantile >= 1.0:
        return None
    local = entropy[mask.bool()].float()  # [n]
    if acc.num_processes > 1:  # -1 pads the shorter processes' lists: no entropy is negative
        gathered = acc.gather(acc.pad_across_processes(local.to(acc.device), dim=0, pad_index=-1.0)).cpu()
        local = gathered[gathered >= 0]
    return high_entropy_mask(entropy, mask, objective.top_entropy_quantile, all_entropies=local)


def _global_mean(acc, total: float, count: float) -> float:
    totals = acc.reduce(torch.tensor([total, count], dtype=torch.float64, device=acc.device), reduction="sum")
    return (totals[0] / totals[1].clamp(min=1.0)).item()


def _cut_into_updates(acc, args, mask: torch.Tensor) -> tuple[list[range], float, torch.Tensor]:
    """The generation batch's rows cut into ``steps_per_generation`` consecutive updates, the completion tokens
    per update and process, and each completion's loss denominator ([N])."""
    parts = args.steps_per_generation
    rows_per_update = mask.size(0) // parts
    updates = [range(i * rows_per_update, (i + 1) * rows_per_update) for i in range(parts)]
    tokens_total = acc.gather(mask.sum().reshape(1).to(acc.device)).sum().item()
    tokens_per_update = tokens_total / acc.num_processes / parts
    # Per-completion denominators make each update independent of the micro-batch cut (uneven slices and the
    # out-of-memory retry's finer cut included); bnpo keeps the configured micro-batches' token counts.
    denominators = torch.cat([sequence_denominators(mask[r.start : r.stop], args.loss_type,
                                                    micro_batch_size=args.micro_batch_size,
                                                    max_completion_length=args.max_completion_length,
                                                    tokens_per_process=tokens_per_update) for r in updates])
    return updates, tokens_per_update, denominators


def train_on_rollout(state, rollout, advantages: torch.Tensor, old: torch.Tensor | None,
                     ref: torch.Tensor | None) -> dict[str, float]:
    """mu passes over one generation batch, each ``steps_per_generation`` optimizer updates on equal, consecutive
    parts of it (whole groups when the part size is a multiple of G); returns this process's training metrics.

    Each update is normalised as TRL normalises one optimizer step: per-completion denominators over the
    update's rows (grpo, sapo, luspo, dr_grpo, bnpo), and for dapo / cispo / vespo the generation batch's
    tokens per process divided by ``steps_per_generation`` (TRL's ``num_items_in_batch`` rescaling)."""
    args, acc, model = state.args, state.accelerator, state.model
    input_ids, attention_mask = rollout.input_ids(), rollout.attention_mask()
    mask, T = rollout.completion_mask, rollout.completion_ids.size(1)
    updates, tokens_per_update, denominators = _cut_into_updates(acc, args, mask)
    base_objective = policy_objective(args)
    sampling_logps = rollout.sampling_logps  # vLLM's log-probs of the samples, or None
    sampling_ratio = None
    if sampling_logps is not None and args.vllm_importance_sampling_correction:
        sampling_ratio = sampling_importance_weights(
            old, sampling_logps.to(old.dtype), mask, args.vllm_importance_sampling_mode,
            args.vllm_importance_sampling_clip_min, args.vllm_importance_sampling_clip_max)
    total_updates = args.num_iterations * len(updates)
    sums: dict[str, float] = {"loss": 0.0, "kl": 0.0, "clip_low": 0.0, "clip_high": 0.0, "entropy": 0.0,
                              "grad_norm": 0.0, "skipped_updates": 0.0}
    model.train()
    for iteration in range(args.num_iterations):
        for part, update_rows in enumerate(updates):
            state.show_phase(f"update {iteration * len(updates) + part + 1}/{total_updates}")
            objective = base_objective
            if state.entropy_controller is not None:
                objective = replace(base_objective, entropy_coef=state.entropy_controller.applied())
            slices = _micro_batches(_trained_rows(update_rows, advantages, args.skip_zero_advantage),
                                    state.micro_batch_size)
            normalizer = LossNormalizer(len(slices), tokens_per_update, args.max_completion_length)
            window = [0.0, 0.0]  # entropy sum and token count over the update's (selected) tokens
            update_loss = 0.0  # this update's own loss: whether it is finite decides this update alone
            for index, rows in enumerate(slices):
                # The update's last micro-batch syncs: DDP reduces the gradients there, DeepSpeed steps there.
                sync = index == len(slices) - 1
                acc.sync_gradients = sync
                context = acc.no_sync(model) if not sync and acc.num_processes > 1 else contextlib.nullcontext()
                with context:
                    logps, entropy = completion_logps(model, input_ids[rows], attention_mask[rows], T,
                                                      temperature=args.temperature, with_entropy=True,
                                                      entropy_grad=objective.entropy_coef != 0.0)
                    entropy_mask = _entropy_mask(acc, entropy.detach(), mask[rows], objective)
                    out = grpo_loss(logps, None if old is None else old[rows], None if ref is None else ref[rows],
                                    advantages[rows].to(logps.dtype), mask[rows], beta=args.beta,
                                    epsilon_low=args.epsilon_low, epsilon_high=args.epsilon_high,
                                    loss_type=args.loss_type, normalizer=normalizer,
                                    kl_importance_correction=args.kl_importance_correction,
                                    denominators=denominators[rows], objective=objective, entropy=entropy,
                                    entropy_mask=entropy_mask,
                                    sampling_ratio=None if sampling_ratio is None else sampling_ratio[rows],
                                    sampling_logps=None if sampling_logps is None else sampling_logps[rows])
                    acc.backward(out.loss)
                    entropy = entropy.detach()
                if state.entropy_controller is not None:  # the update's entropy over the tokens it acts on
                    selected = mask[rows] if entropy_mask is None else mask[rows] * entropy_mask
                    window[0] += (entropy * selected).sum().item()
                    window[1] += selected.sum().item()
                weight = 1.0 / (len(slices) * total_updates)
                # The backpropagated micro-batch losses add up to the update's loss; logged: the mean update's.
                update_loss += out.loss.item()
                sums["loss"] += out.loss.item() / total_updates
                sums["kl"] += (out.kl.item() if out.kl is not None else 0.0) * weight
                sums["clip_low"] += out.clip_low.item() * weight
                sums["clip_high"] += out.clip_high.item() * weight
                sums["entropy"] += ((entropy * mask[rows]).sum() / mask[rows].sum().clamp(min=1)).item() * weight
            _optimizer_step(state, sums, update_loss, total_updates)
            if state.entropy_controller is not None:
                state.entropy_controller.update(_global_mean(acc, *window))
    if state.entropy_controller is not None:
        sums["entropy_coef"] = state.entropy_controller.coef
    if sampling_ratio is not None:  # how far vLLM's sampling probabilities were from the trainer's
        kept = sampling_ratio.expand_as(mask)[mask.bool()]
        sums["vllm_importance_ratio_mean"] = kept.mean().item() if kept.numel() else 1.0
        sums["vllm_importance_ratio_min"] = kept.min().item() if kept.numel() else 1.0
    return sums


def train_with_retry(state, rollout, advantages: torch.Tensor, old: torch.Tensor | None,
                     ref: torch.Tensor | None) -> dict[str, float]:
    """train_on_rollout; an out-of-memory error before any update of this step retries it with half the
    micro-batch (per-completion denominators fixed from the configured micro-batch make the update the same,
    for bnpo too)."""
    while True:
        state.updates_this_step = 0
        try:
            train = train_on_rollout(state, rollout, advantages, old, ref)
            train["micro_batch_size"] = float(state.micro_batch_size)
            return train
        except torch.OutOfMemoryError:
            if state.micro_batch_size == 1 or state.updates_this_step or state.accelerator.num_processes > 1:
                raise  # nothing smaller to try, or part of the step already applied, or peers mid-step
            state.optimizer.zero_grad(set_to_none=True)
            state.micro_batch_size = max(1, state.micro_batch_size // 2)
            free_memory()
            logger.warning("out of memory in the training forward: retrying the step with micro_batch_size %d",
                           state.micro_batch_size)


def _optimizer_step(state, sums: dict[str, float], update_loss: float, total_updates: int) -> None:
    """Clip, step unless this update's loss or gradient is not finite (the update is skipped), zero the gradients.

    With fp16's GradScaler the optimizer step is always called: the scaler skips an overflowing step itself
    and lowers its scale, and it must see every step (else the next ``unscale_`` raises). An overflow at the
    scaler's first scales is normal in fp16.
    """
    args, acc, model = state.args, state.accelerator, state.model
    grad_norm = acc.clip_grad_norm_(model.parameters(), args.max_grad_norm if args.max_grad_norm > 0 else math.inf)
    if hasattr(grad_norm, "full_tensor"):  # FSDP2: a replicated DTensor
        grad_norm = grad_norm.full_tensor()
    finite = math.isfinite(float(grad_norm)) and math.isfinite(update_loss)
    if getattr(acc, "deepspeed_engine_wrapped", None) is not None:  # DeepSpeed clipped and stepped in the last backward
        applied = model.was_step_applied()
    elif acc.scaler is not None:
        state.optimizer.step()
        applied = not acc.optimizer_step_was_skipped
    else:
        if acc.num_processes > 1:  # one decision for all: DDP replicas must never drift apart
            votes = acc.reduce(torch.tensor([float(finite)], device=acc.device), reduction="sum")
            finite = votes.item() == acc.num_processes
        applied = finite
        if applied:
            state.optimizer.step()
    if applied:
        state.updates_this_step += 1
        with warnings.catch_warnings():  # after an fp16 overflow GradScaler skipped: torch reads it as out of order
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            state.scheduler.step()
    else:  # a NaN/inf loss or gradient: skip this update, keep the last good weights
        sums["skipped_updates"] += 1
        logger.warning("step %d: non-finite loss or gradient norm (%s); update skipped", state.step + 1, grad_norm)
    state.optimizer.zero_grad(set_to_none=True)
    sums["grad_norm"] += float(grad_norm) / total_updates
