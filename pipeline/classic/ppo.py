"""PPO's advantages for the CartPole comparison: a learned value function and GAE.

PPO and GRPO share the clipped surrogate (``pipeline.grpo.loss.grpo_loss``); only the advantage
differs. GRPO compares an episode's return with the other episodes of its group and gives every action
that one number; PPO credits each action with ``A_t = sum_k (gamma lambda)^k delta_{t+k}``, where
``delta_t = r_t + gamma V(s_{t+1}) - V(s_t)`` needs a critic ``V`` trained alongside the policy.
"""

from __future__ import annotations

import torch
from torch import nn


def make_value_function(hidden_size: int, seed: int) -> nn.Module:
    """The critic: the policy's MLP shape with one output."""
    torch.manual_seed(seed + 1)  # not the policy's initialisation
    return nn.Sequential(nn.Linear(4, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 1))


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
                   gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and the critic's targets.

    rewards, values, mask: ``[N, T]``; each mask row is a prefix (the episode's steps). The step after
    an episode's last is valued 0: CartPole's end is a fall, or the 500-step cap, which this treats as a
    fall too (a small bias at the cap, where the last state is not kept). Returns ``(A [N, T], A + V)``,
    both 0 outside the mask.

    >>> adv, _ = gae_advantages(torch.ones(1, 2), torch.tensor([[0.5, 0.25]]), torch.ones(1, 2), 0.9, 0.8)
    >>> [round(a, 4) for a in adv[0].tolist()]
    [1.265, 0.75]
    """
    mask = mask.to(values.dtype)
    values = values * mask  # [N, T]
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # [N, T]
    deltas = (rewards + gamma * next_values - values) * mask  # [N, T]
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])  # [N]
    for t in reversed(range(values.size(1))):
        running = deltas[:, t] + gamma * gae_lambda * running * mask[:, t]
        advantages[:, t] = running
    return advantages * mask, (advantages + values) * mask


def normalised(advantages: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """PPO's usual per-batch normalisation over the real steps: mean 0, std 1, 0 on padding."""
    real = advantages[mask.bool()]
    return (advantages - real.mean()) / (real.std() + eps) * mask


def value_loss(value_fn: nn.Module, observations: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the critic on the real steps. observations [N, T, 4]; targets, mask [N, T]."""
    predictions = value_fn(observations).squeeze(-1)  # [N, T]
    return (((predictions - targets) ** 2) * mask).sum() / mask.sum().clamp(min=1.0)
