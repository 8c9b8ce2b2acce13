"""The policy-gradient objectives of GRPO and its variants, with a per-token KL penalty, in each
aggregation they use. Definitions follow TRL 1.16's ``GRPOTrainer._compute_loss`` (checked by
``scripts/crosscheck_trl.py``):

- grpo / bnpo / dr_grpo / dapo / luspo: the PPO clipped surrogate ``-min(r A, clip(r, 1-eps_low, 1+eps_high) A)``,
  optionally with two-sided clipping (``delta``, INTELLECT-2); they differ in how token losses are averaged;
- cispo (MiniMax-M1 / ScaleRL): ``-sg(min(r, eps_high)) A log p``, the clipped ratio as a stopped weight;
- sapo (Soft Adaptive Policy Optimization): ``-sigmoid(tau (r - 1)) 4 / tau A``, a smooth gate instead of a clip;
- vespo (Variational Sequence-Level Soft Policy Optimization): ``-sg(phi(w)) A log p`` with ``w`` the sequence's
  ratio (the product over its tokens) and the Gamma weight ``phi(w) = e^lambda w^k e^(-lambda w)`` (phi(1) = 1);
- the ratio ``r`` per token, or per sequence (``importance_sampling_level: sequence``, GSPO): the exponential
  of the mean log-ratio over the sequence's tokens;
- ``off_policy_mask_threshold`` (DeepSeek-V3.2): the policy term dropped for negative-advantage completions
  that drifted too far from the sampling policy;
- ``top_entropy_quantile`` (Wang et al. 2025, "80/20"): the policy term only on the micro-batch's
  highest-entropy tokens; ``entropy_coef``: an entropy bonus, ``loss - coef * mean token entropy``.

Shapes: B completions in a micro-batch, T completion positions (padded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
# How each loss type averages its token losses (see sequence_denominators).
_SEQUENCE_MEAN = ("grpo", "sapo")  # mean over each sequence, then over sequences
_TOKEN_MEAN = ("dapo", "cispo", "vespo")  # mean over the generation batch's tokens


@dataclass(frozen=True)
class PolicyObjective:
    """The variant options of the policy term beyond ``loss_type`` (TRL 1.16's names).

    importance_sampling_level: "token" (one ratio per token) or "sequence" (GSPO: one per completion).
    delta: two-sided clipping, the ratio is also capped at ``delta`` (None: off).
    sapo_temperature_pos / sapo_temperature_neg: sapo's gate temperature for A > 0 / A <= 0.
    top_entropy_quantile: the fraction of tokens (highest entropy first) the policy term trains on; 1.0: all.
    entropy_coef: weight of the entropy bonus subtracted from the loss; 0.0: none.
    vespo_k_pos / vespo_lambda_pos, vespo_k_neg / vespo_lambda_neg: vespo's Gamma weight exponent k and
        decay lambda for A >= 0 / A < 0.
    off_policy_mask_threshold: drop the policy term of a completion with a negative advantage whose mean
        token KL(pi_old || pi), ``mean(log pi_old - log pi)``, exceeds this (DeepSeek-V3.2's off-policy
        sequence mask); None: off.
    """

    importance_sampling_level: str = "token"
    delta: float | None = None
    sapo_temperature_pos: float = 1.0
    sapo_temperature_neg: float = 1.05
    top_entropy_quantile: float = 1.0
    entropy_coef: float = 0.0
    off_policy_mask_threshold: float | None = None
    vespo_k_pos: float = 2.0
    vespo_lambda_pos: float = 3.0
    vespo_k_neg: float = 3.0
    vespo_lambda_neg: float = 2.0


def per_token_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(policy || reference): ``exp(ref - logp) - (ref - logp) - 1`` (>= 0).

    >>> per_token_kl(torch.tensor([-1.0]), torch.tensor([-1.0])).item()
    0.0
    """
    delta = ref_logps - logps  # [B, T]
    return torch.exp(delta) - delta - 1


@dataclass
class LossNormalizer:
    """What a micro-batch's loss is divided by, so that accumulated micro-batches (and DDP's mean over
    processes) add up to the loss of the whole generation batch.

    num_micro_batches: micro-batches accumulated into one optimizer step on this process.
    tokens_per_process: (dapo) completion tokens of the whole generation batch over all processes,
        divided by the number of processes (DDP averages gradients over processes).
    max_completion_length: (dr_grpo) the generation cap L.
    """

    num_micro_batches: int = 1
    tokens_per_process: float | None = None
    max_completion_length: int | None = None


def sequence_denominators(mask: torch.Tensor, loss_type: str, *, micro_batch_size: int,
                          max_completion_length: int, tokens_per_process: float) -> torch.Tensor:
    """What each completion's summed token loss is divided by, so that the generation batch's loss is a sum
    over completions and does not depend on how a step is cut into micro-batches.

    mask: ``[N, T]`` completion mask of this process's whole generation batch. Returns ``[N]``.

    - grpo, sapo: ``len_i * N`` (mean over each sequence, then over the N sequences); luspo: ``N``;
    - dr_grpo: ``N * L``; dapo, cispo: the generation batch's tokens per process;
    - bnpo: the token count of the configured micro-batch the completion belongs to, times the number of
      micro-batches: bnpo is defined per micro-batch (as TRL defines it), and fixing the denominators
      from the configured ``micro_batch_size`` keeps that objective when an out-of-memory retry cuts finer.

    >>> mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]])
    >>> sequence_denominators(mask, "grpo", micro_batch_size=2, max_completion_length=3, tokens_per_process=6).tolist()
    [6.0, 9.0, 3.0]
    >>> sequence_denominators(mask, "bnpo", micro_batch_size=2, max_completion_length=3, tokens_per_process=6).tolist()
    [10.0, 10.0, 2.0]
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    lengths = mask.sum(-1).to(torch.float64).clamp(min=1.0)  # [N]
    n = mask.size(0)
    if loss_type in _SEQUENCE_MEAN:
        return lengths * n
    if loss_type == "luspo":  # sum over each sequence, mean over sequences
        return torch.full((n,), float(n), dtype=torch.float64, device=mask.device)
    if loss_type == "dr_grpo":
        return torch.full((n,), float(n * max_completion_length), dtype=torch.float64, device=mask.device)
    if loss_type in _TOKEN_MEAN:
        return torch.full((n,), max(float(tokens_per_process), 1.0), dtype=torch.float64, device=mask.device)
    blocks = torch.arange(n, device=mask.device) // micro_batch_size  # [N] configured micro-batch of each row
    block_tokens = torch.zeros(int(blocks.max()) + 1, dtype=torch.float64, device=mask.device)
    block_tokens.index_add_(0, blocks, mask.sum(-1).to(torch.float64))
    return block_tokens.clamp(min=1.0)[blocks] * block_tokens.numel()


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, already divided for accumulation
    policy_loss: torch.Tensor  # scalar, the micro-batch's own loss (before the accumulation divide)
    kl: torch.Tensor | None  # scalar mean per-token KL over the mask
    clip_low: torch.Tensor  # fraction of tokens whose ratio was clipped below (negative advantage)
    clip_high: torch.Tensor  # fraction clipped above (positive advantage)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def importance_ratio(logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, level: str) -> torch.Tensor:
    """``pi / pi_old``: [B, T] per token, or [B, 1] per sequence (exp of the mean log-ratio over its tokens).

    >>> importance_ratio(torch.log(torch.tensor([[2.0, 8.0]])), torch.zeros(1, 2), torch.ones(1, 2), "sequence")
    tensor([[4.]])
    """
    log_ratio = logps - old_logps  # [B, T]
    if level == "token":
        return torch.exp(log_ratio)
    if level == "sequence":
        return torch.exp((log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0))
    raise ValueError(f"importance_sampling_level must be one of {', '.join(IMPORTANCE_SAMPLING_LEVELS)}, got {level!r}")


def off_policy_sequence_mask(logps: torch.Tensor, old_logps: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                             threshold: float) -> torch.Tensor:
    """``[B, 1]``: 1 to keep a completion's policy term, 0 to drop it (negative advantage and a mean token
    KL from the sampling policy above ``threshold``). adv: ``[B, 1]``.

    >>> off_policy_sequence_mask(torch.zeros(2, 2), torch.ones(2, 2), torch.tensor([[1.0], [-1.0]]), torch.ones(2, 2), 0.5)
    tensor([[1.],
            [0.]])
    """
    kl = (old_logps - logps.detach()) * mask  # [B, T]
    mean_kl = kl.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)  # [B, 1]
    return ((adv >= 0) | (mean_kl <= threshold)).to(mask.dtype)


@torch.no_grad()
def gamma_weights(log_ratio: torch.Tensor, mask: torch.Tensor, adv: torch.Tensor, objective: PolicyObjective,
                  sampling_ratio: torch.Tensor | None = None) -> torch.Tensor:
    """vespo's ``[B, 1]`` weight ``phi(w) = exp(lambda + k log w - lambda w)`` of each sequence's ratio
    ``w = exp(sum_t log_ratio)`` (log w clamped to [log 1e-8, 20] as TRL does); k, lambda by the sign of A.

    log_ratio, mask: ``[B, T]``; adv: ``[B, 1]``. phi(1) = 1, and phi peaks at w = k / lambda.
    sampling_ratio: ``[B, T]`` vLLM importance weights (token modes), multiplied into w as TRL does.

    >>> w = torch.log(torch.tensor([[1.0], [2.0]]))  # one token each: w = 1 and w = 2
    >>> [round(x, 6) for x in gamma_weights(w, torch.ones(2, 1), torch.ones(2, 1), PolicyObjective()).squeeze(1).tolist()]
    [1.0, 0.199148]
    """
    lower = math.log(1e-8)
    log_w = (torch.clamp(log_ratio, -20.0, 20.0) * mask).sum(-1, keepdim=True)  # [B, 1]
    if sampling_ratio is not None:
        log_w = log_w + torch.clamp(torch.log(sampling_ratio), lower, 20.0).sum(-1, keepdim=True)
    log_w = torch.clamp(log_w, lower, 20.0)
    positive = adv >= 0
    k = torch.where(positive, objective.vespo_k_pos, objective.vespo_k_neg)  # [B, 1]
    lam = torch.where(positive, objective.vespo_lambda_pos, objective.vespo_lambda_neg).clamp(min=1e-4)  # [B, 1]
    return torch.exp(lam + k * log_w - lam * torch.exp(log_w)).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def high_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, quantile: float,
                      all_entropies: torch.Tensor | None = None) -> torch.Tensor:
    """The tokens whose entropy is at least the ``1 - quantile`` quantile of the batch's token entropies.

    entropy, mask: ``[B, T]``. all_entropies: the completion tokens' entropies the threshold is taken over
    (every process's, gathered); default: this batch's. Returns a ``[B, T]`` bool mask, False on padding.

    >>> high_entropy_mask(torch.tensor([[0.1, 0.9, 0.5, 0.7]]), torch.tensor([[1, 1, 1, 0]]), 0.5).tolist()
    [[False, True, True, False]]
    """
    mask = mask.bool()
    values = entropy[mask].float() if all_entropies is None else all_entropies.float()
    if values.numel() == 0:
        return torch.zeros_like(mask)
    threshold = torch.quantile(values, 1 - quantile)
    return ((entropy * mask) >= threshold) & mask


def policy_token_loss(logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, ratio: torch.Tensor,
                      adv: torch.Tensor, loss_type: str, epsilon_low: float, epsilon_high: float,
                      objective: PolicyObjective, sampling_ratio: torch.Tensor | None = None) -> torch.Tensor:
    """The policy term per token, [B, T] (or [B, 1] before broadcasting). logps, old_logps, mask: [B, T];
    ratio: [B, T] or [B, 1]; adv: [B, 1]."""
    if loss_type == "cispo":
        return -torch.clamp(ratio, max=epsilon_high).detach() * adv * logps
    if loss_type == "vespo":
        return -gamma_weights(logps - old_logps, mask, adv, objective, sampling_ratio) * adv * logps
    if loss_type == "sapo":
        tau = torch.where(adv > 0, objective.sapo_temperature_pos, objective.sapo_temperature_neg)  # [B, 1]
        return -torch.sigmoid(tau * (ratio - 1)) * 4 / tau * adv
    clipped_ratio = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    if objective.delta is not None:
        ratio = torch.clamp(ratio, max=objective.delta)
    return -torch.min(ratio * adv, clipped_ratio * adv)


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float,
    epsilon_low: float,
    epsilon_high: float,
    loss_type: str,
    normalizer: LossNormalizer,
    kl_importance_correction: bool = False,
    denominators: torch.Tensor | None = None,
    objective: PolicyObjective = PolicyObjective(),
    entropy: torch.Tensor | None = None,
    entropy_mask: torch.Tensor | None = None,
    sampling_ratio: torch.Tensor | None = None,
    sampling_logps: torch.Tensor | None = None,
) -> LossOutput:
    """Clipped surrogate + ``beta`` * per-token KL, aggregated by ``loss_type``.

    Args:
        logps: ``[B, T]`` log-probs of the sampled tokens under the policy being trained (with grad).
        old_logps: ``[B, T]`` log-probs under the policy that sampled them; ``None`` when mu = 1 (the
            ratio is then exactly 1 in value, and only its gradient matters).
        ref_logps: ``[B, T]`` log-probs under the frozen reference; needed when ``beta > 0``.
        advantages: ``[B]`` one advantage per completion (GRPO), or ``[B, T]`` one per token (PPO's GAE).
        mask: ``[B, T]`` 1 for completion tokens up to and including the first EOS.
        beta: KL coefficient.
        epsilon_low, epsilon_high: the ratio is clipped to ``[1 - epsilon_low, 1 + epsilon_high]``.
        loss_type: ``grpo``/``sapo`` (mean over each sequence, then over sequences), ``bnpo`` (token mean
            over the micro-batch), ``dr_grpo`` (sum / (B * L)), ``dapo``/``cispo`` (token mean over the
            generation batch), ``luspo`` (sum over each sequence, mean over sequences), ``vespo`` (as dapo).
        normalizer: accumulation and process counts, see LossNormalizer.
        kl_importance_correction: multiply the per-token KL by the importance ratio (TRL's
            ``use_bias_correction_kl``, on by default there): the KL is then estimated under the
            sampling policy. Off: the plain k3 term of the GRPO paper.
        denominators: ``[B]`` from ``sequence_denominators`` for these rows: the loss is then
            ``sum_i sum_t loss_it / denominators_i``, a term of the generation batch's loss whatever the
            micro-batch cut (``normalizer`` is not used). ``None``: this batch alone, aggregated by
            ``loss_type`` and divided by ``normalizer.num_micro_batches`` (TRL's accumulation).
        objective: the variant options (sequence-level ratio, two-sided clipping, sapo temperatures, entropy).
        entropy: ``[B, T]`` token entropies of the policy, with grad; needed when ``objective.entropy_coef``
            is not 0. The bonus is their mean over the micro-batch's (selected) tokens, divided by the number
            of micro-batches, as TRL computes it.
        entropy_mask: ``[B, T]`` from ``high_entropy_mask`` when ``objective.top_entropy_quantile < 1``:
            the policy term is kept only there (the KL term stays on every token).
        sampling_ratio: ``[B, T]`` or ``[B, 1]`` from ``sampling_importance_weights`` (vLLM rollouts): the
            policy term is multiplied by it (vespo folds it into its sequence ratio), as TRL does.
        sampling_logps: ``[B, T]`` the sampler's own log-probs (vLLM); the off-policy mask measures the
            drift from them instead of from ``old_logps``, as TRL does.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    mask = mask.to(logps.dtype)  # [B, T]
    old_logps = logps.detach() if old_logps is None else old_logps  # [B, T]
    ratio = importance_ratio(logps, old_logps, mask, objective.importance_sampling_level)  # [B, T] or [B, 1]
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # [B, 1], or [B, T] per token (PPO)
    per_token_loss = policy_token_loss(logps, old_logps, mask, ratio, adv, loss_type, epsilon_low, epsilon_high,
                                       objective, sampling_ratio)
    if objective.off_policy_mask_threshold is not None:
        drift_from = old_logps if sampling_logps is None else sampling_logps
        per_token_loss = per_token_loss * off_policy_sequence_mask(logps, drift_from, adv, mask,
                                                                   objective.off_policy_mask_threshold)
    if entropy_mask is not None:
        per_token_loss = per_token_loss * entropy_mask.to(per_token_loss.dtype)  # [B, T]
    if sampling_ratio is not None and loss_type != "vespo":
        per_token_loss = per_token_loss * sampling_ratio.to(per_token_loss.dtype)  # [B, T] or [B, 1]

    kl = None
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs ref_logps")
        token_kl = per_token_kl(logps, ref_logps)  # [B, T]
        kl = _masked_mean(token_kl.detach(), mask)
        if kl_importance_correction:
            token_kl = token_kl * ratio
        per_token_loss = per_token_loss + beta * token_kl

    if denominators is not None:
        loss = ((per_token_loss * mask).sum(-1) / denominators.to(per_token_loss.dtype)).sum()
    elif loss_type in _SEQUENCE_MEAN:
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "luspo":
        loss = (per_token_loss * mask).sum(-1).mean()
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        if normalizer.max_completion_length is None:
            raise ValueError("dr_grpo needs normalizer.max_completion_length")
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * normalizer.max_completion_length)
    else:  # dapo, cispo, vespo: already normalised by the whole generation batch's token count
        if normalizer.tokens_per_process is None:
            raise ValueError(f"{loss_type} needs normalizer.tokens_per_process")
        loss = (per_token_loss * mask).sum() / max(normalizer.tokens_per_process, 1.0)
    policy_loss = loss.detach()
    if loss_type not in _TOKEN_MEAN and denominators is None:
        loss = loss / normalizer.num_micro_batches
    if objective.entropy_coef != 0.0:
        if entropy is None:
            raise ValueError("entropy_coef != 0 needs the policy's token entropies (entropy=)")
        selected = mask if entropy_mask is None else mask * entropy_mask.to(mask.dtype)  # [B, T]
        loss = loss - objective.entropy_coef * _masked_mean(entropy, selected) / normalizer.num_micro_batches

    with torch.no_grad():
        clip_low = _masked_mean(((ratio < 1 - epsilon_low) & (adv < 0)).to(mask.dtype), mask)
        clip_high = _masked_mean(((ratio > 1 + epsilon_high) & (adv > 0)).to(mask.dtype), mask)
    return LossOutput(loss, policy_loss, kl, clip_low, clip_high)
