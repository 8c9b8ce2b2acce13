"""Group-relative advantages: each reward is compared with the other samples of its own prompt.

Generic over what a "completion" is: the same functions train the LLM and the classic-control
examples (a group is then G episodes from one start state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCALE_REWARDS = ("group", "batch", "none")
# How several reward functions become one advantage (TRL 1.16's multi_objective_aggregation).
MULTI_OBJECTIVE_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
STD_EPS = 1e-4  # as in TRL's GRPOTrainer


def nanstd(values: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """Bessel-corrected standard deviation ignoring NaNs (NaN where fewer than 2 values).

    >>> nanstd(torch.tensor([1.0, float("nan"), 3.0])).item()
    1.4142135381698608
    """
    mean = torch.nanmean(values, dim=dim, keepdim=True)
    count = (~torch.isnan(values)).sum(dim=dim, keepdim=True)
    variance = torch.nanmean((values - mean) ** 2, dim=dim, keepdim=True)
    variance = variance * torch.where(count > 1, count / (count - 1).clamp(min=1), torch.full_like(variance, torch.nan))
    std = variance.sqrt()
    if keepdim:
        return std
    return std.squeeze(dim) if dim is not None else std.reshape(())


@dataclass
class Advantages:
    """Per-completion advantages and the group statistics behind them."""

    advantages: torch.Tensor  # [N]
    group_mean: torch.Tensor  # [N/G]
    group_std: torch.Tensor  # [N/G]
    zero_std_groups: torch.Tensor  # [N/G] bool: every sample of the prompt got the same reward

    @property
    def frac_zero_std(self) -> float:
        return self.zero_std_groups.float().mean().item()


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale_rewards: str = "group", eps: float = STD_EPS
) -> Advantages:
    """``A_i = (r_i - mean_g) / (std_g + eps)`` within each group of ``group_size`` consecutive rewards.

    Args:
        rewards: ``[N]`` total reward per completion, groups contiguous; NaN means "unscorable"
            (every reward function abstained): left out of the group statistics, advantage 0.
        group_size: G, samples per prompt (>= 2).
        scale_rewards: ``group`` (divide by the group's std), ``batch`` (by the whole batch's std,
            still centred per group) or ``none`` (Dr. GRPO: centre only).
        eps: Added to the std, so a zero-spread group gets advantage 0, not NaN.

    >>> group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2).advantages
    tensor([ 0.7070, -0.7070,  0.0000,  0.0000])
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for group-relative advantages, got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, got {scale_rewards!r}")
    grouped = rewards.view(-1, group_size)  # [N/G, G]
    group_mean = torch.nanmean(grouped, dim=1)  # [N/G]
    group_std = nanstd(grouped, dim=1)  # [N/G]
    advantages = (grouped - group_mean[:, None]).reshape(-1)  # [N]
    if scale_rewards == "group":
        advantages = advantages / (group_std.repeat_interleave(group_size) + eps)
    elif scale_rewards == "batch":
        advantages = advantages / (nanstd(rewards) + eps)
    # Unscorable completions, and groups with a single scorable one, carry no signal.
    advantages = torch.nan_to_num(advantages, nan=0.0)
    zero_std = torch.isclose(torch.nan_to_num(group_std, nan=0.0), torch.zeros_like(group_std))
    return Advantages(advantages, group_mean, group_std, zero_std)


def normalize_then_sum_advantages(per_function: torch.Tensor, weights: torch.Tensor, group_size: int,
                                  eps: float = STD_EPS) -> Advantages:
    """Advantages when each reward function is normalised in its group before the weighted sum (GDPO-style,
    TRL's ``multi_objective_aggregation: normalize_then_sum``), so that a function with a large spread does not
    drown the others; the sum is then centred and scaled over the whole batch.

    Args:
        per_function: ``[N, F]`` rewards of each function, groups contiguous; NaN where a function abstained
            (left out of its group statistics, counted as 0 in the sum). A row where every function abstained
            gets advantage 0 and is left out of the batch statistics.
        weights: ``[F]`` reward weights.
        group_size: G.

    ``zero_std_groups`` flags every group when the batch's summed rewards have no spread (TRL logs it so).

    >>> rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    >>> normalize_then_sum_advantages(rewards, torch.tensor([1.0, 1.0]), 2).advantages
    tensor([ 0.8659, -0.8659,  0.8659, -0.8659])
    """
    if per_function.dim() != 2 or per_function.size(1) != weights.numel():
        raise ValueError(f"per_function must be [N, {weights.numel()}] (one column per weight), "
                         f"got shape {tuple(per_function.shape)}")
    if group_size < 2 or per_function.size(0) % group_size:
        raise ValueError(f"{per_function.size(0)} rows do not split into groups of {group_size} (>= 2)")
    unscorable = torch.isnan(per_function).all(dim=1)  # [N]
    grouped = per_function.view(-1, group_size, per_function.size(1))  # [N/G, G, F]
    mean_k = torch.nanmean(grouped, dim=1, keepdim=True)  # [N/G, 1, F]
    std_k = nanstd(grouped, dim=1, keepdim=True)  # [N/G, 1, F]
    normalised = ((grouped - mean_k) / (std_k + eps)).view(-1, per_function.size(1))  # [N, F]
    total = (normalised * weights.to(normalised.dtype)).nansum(dim=1)  # [N]
    total[unscorable] = torch.nan
    batch_std = nanstd(total)
    advantages = torch.nan_to_num((total - torch.nanmean(total)) / (batch_std + eps), nan=0.0)
    zero_std = torch.isclose(torch.nan_to_num(batch_std, nan=0.0), batch_std.new_zeros(()))
    groups = per_function.size(0) // group_size
    return Advantages(advantages, torch.nanmean(total.view(-1, group_size), dim=1),
                      nanstd(total.view(-1, group_size), dim=1), zero_std.expand(groups).clone())


def per_function_rewards(breakdown, device: torch.device | str) -> torch.Tensor:
    """``[N, F]`` float32 rewards of each reward function from a RewardBreakdown; NaN where one abstained."""
    return torch.tensor([[math.nan if v is None else v for v in values] for values in breakdown.per_function],
                        dtype=torch.float32, device=device).T


def process_advantages(acc, args, rewards: torch.Tensor, breakdown, group_size: int) -> Advantages:
    """Group-relative advantages of this process's completions, by ``args.multi_objective_aggregation``.

    acc: the accelerator; rewards: ``[N]`` this process's totals; breakdown: their RewardBreakdown.
    As TRL does, the rewards of every process are gathered first and the advantages computed over the whole
    batch, so that batch statistics (``scale_rewards: batch``, ``normalize_then_sum``) do not depend on the
    process count; each process keeps its own rows (processes hold whole groups, in process order).
    """
    per_function = per_function_rewards(breakdown, rewards.device)  # [N, F]
    everything = acc.gather(torch.cat([rewards[:, None], per_function], dim=1))  # [N_all, 1 + F]
    if args.multi_objective_aggregation == "sum_then_normalize":
        result = group_advantages(everything[:, 0], group_size, args.scale_rewards)
    else:
        weights = torch.tensor(args.weights, dtype=torch.float32, device=rewards.device)  # [F]
        result = normalize_then_sum_advantages(everything[:, 1:], weights, group_size)
    n, groups = rewards.size(0), rewards.size(0) // group_size
    rows = slice(acc.process_index * n, (acc.process_index + 1) * n)
    group_rows = slice(acc.process_index * groups, (acc.process_index + 1) * groups)
    return Advantages(result.advantages[rows], result.group_mean[group_rows], result.group_std[group_rows],
                      result.zero_std_groups[group_rows])
