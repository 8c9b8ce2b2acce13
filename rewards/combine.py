"""Weighted combination of several reward functions, with the parts kept for logging."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rewards.guard import AsyncRewardLoop, RewardFaults, call_async_rewards, call_reward, is_async_reward

logger = logging.getLogger(__name__)


@dataclass
class RewardBreakdown:
    """Scores of one batch: each function's raw rewards and the weighted total."""

    names: list[str]
    per_function: list[list[float | None]]  # [F][N]; None = the function has no opinion
    total: list[float]  # [N]

    def means(self) -> dict[str, float | None]:
        """Mean of each function over the completions it scored (``None`` if it scored none)."""
        out: dict[str, float | None] = {}
        for name, values in zip(self.names, self.per_function):
            scored = [v for v in values if v is not None]
            out[name] = sum(scored) / len(scored) if scored else None
        return out


def combine_rewards(
    reward_funcs: Sequence[Callable[..., list[float | None]]],
    names: Sequence[str],
    weights: Sequence[float],
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    timeout: float | None = None,
    faults: RewardFaults | None = None,
    async_loop: AsyncRewardLoop | None = None,
    **columns: Any,
) -> RewardBreakdown:
    """Call each reward function once on the batch and add the rewards with their weights.

    As in TRL's GRPOTrainer, ``None`` ("no opinion") contributes nothing to the total. Each function
    is called through ``rewards.guard.call_reward``: one that raises, hangs past ``timeout``, returns
    the wrong length or non-finite values loses those values (``None``) and is counted in ``faults``.
    ``async def`` functions run concurrently with each other (``call_async_rewards``), under the same guard,
    on ``async_loop`` (a run's one persistent event loop, as TRL keeps) or on a loop for this call only.

    >>> one = lambda prompts, completions, **kw: [1.0] * len(completions)
    >>> half = lambda prompts, completions, **kw: [0.5, None]
    >>> combine_rewards([one, half], ["one", "half"], [1.0, 2.0], ["p", "p"], ["a", "b"]).total
    [2.0, 1.0]
    """
    if not (len(reward_funcs) == len(names) == len(weights)):
        raise ValueError(
            f"got {len(reward_funcs)} reward functions, {len(names)} names and {len(weights)} weights; "
            "reward_weights needs one weight per reward function"
        )
    results: dict[int, Any] = {}
    async_indices = [i for i, fn in enumerate(reward_funcs) if is_async_reward(fn)]
    if async_indices:  # all async functions at once, concurrently, before the synchronous ones
        batch = call_async_rewards([(reward_funcs[i], names[i]) for i in async_indices], timeout, prompts,
                                   completions, reward_loop=async_loop, **columns)
        results.update(zip(async_indices, batch))
    per_function: list[list[float | None]] = []
    for i, (fn, name) in enumerate(zip(reward_funcs, names)):
        result = results[i] if i in results else call_reward(fn, name, timeout, prompts, completions, **columns)
        if result.problem:
            logger.warning("%s (%d of %d values lost)", result.problem, result.bad, len(completions))
        if faults is not None:
            faults.add(name, result, len(completions))
        per_function.append(result.values)
    total = [
        sum(w * v[i] for w, v in zip(weights, per_function) if v[i] is not None) for i in range(len(completions))
    ]
    return RewardBreakdown(list(names), per_function, [float(t) for t in total])
