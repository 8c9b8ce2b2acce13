"""One GRPO step's metrics, gathered over every process."""

from __future__ import annotations

import math

import torch

from pipeline.grpo.advantages import per_function_rewards
from pipeline.grpo.rollout import Rollout
from pipeline.grpo.state import GRPOState
from rewards import RewardBreakdown


def _mean_over_processes(acc, values: dict[str, float]) -> dict[str, float]:
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=acc.device)
    return dict(zip(keys, (acc.reduce(tensor, reduction="mean")).tolist()))


def step_metrics(state: GRPOState, rollout: Rollout, rewards: torch.Tensor, breakdown: RewardBreakdown,
                 advantages, train: dict[str, float], timing: dict[str, float]) -> dict[str, float]:
    """Metrics of one step over all processes (rewards and lengths gathered, the rest averaged)."""
    acc, args = state.accelerator, state.args
    per_function = per_function_rewards(breakdown, rewards.device)  # [N, F]
    lengths = rollout.completion_mask.sum(1).float()  # [N]
    local = torch.cat([rewards[:, None], per_function, lengths[:, None], rollout.is_truncated.float()[:, None]], 1)
    everything = acc.gather(local.to(acc.device)).cpu()  # [N_all, F + 3]
    metrics = {"step": state.step + 1, "reward": torch.nanmean(everything[:, 0]).item()}
    for i, name in enumerate(args.reward_funcs):
        metrics[f"reward/{name}"] = torch.nanmean(everything[:, 1 + i]).item()
    if "accuracy" in args.reward_funcs:
        metrics["accuracy"] = metrics["reward/accuracy"]
    metrics["completion_length"] = everything[:, -2].mean().item()
    metrics["truncated_rate"] = everything[:, -1].mean().item()
    zero_std = acc.gather(advantages.zero_std_groups.float().to(acc.device)).mean().item()
    metrics["frac_reward_zero_std"] = zero_std
    metrics.update(_mean_over_processes(acc, train))
    metrics["learning_rate"] = state.scheduler.get_last_lr()[0]
    generated = acc.reduce(lengths.sum().to(acc.device), reduction="sum").item()
    metrics["generate_tokens_per_second"] = generated / max(timing["generate"], 1e-9)
    trained = rollout.attention_mask().sum().item() * acc.num_processes * args.num_iterations
    metrics["train_tokens"] = trained  # prompt + completion tokens through the training passes
    metrics["train_tokens_per_second"] = trained / max(timing["train"], 1e-9)
    metrics.update({f"time/{k}": v for k, v in timing.items()})
    metrics.update(state.reward_log.take_metrics())  # rewards' log_metric, this process's (as TRL, unprefixed)
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
