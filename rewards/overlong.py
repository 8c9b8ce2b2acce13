"""DAPO's soft overlong penalty (Yu et al., 2025, eq. 13)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def make_overlong_reward(max_completion_length: int, overlong_buffer_length: int) -> Callable[..., list[float | None]]:
    """Build DAPO's soft overlong penalty on completion length in tokens.

    0 up to ``max_completion_length - overlong_buffer_length`` tokens, then falling linearly to
    -1 at ``max_completion_length``, and -1 beyond. Lengths come from the ``completion_ids``
    keyword that TRL's GRPOTrainer and our loop both pass.

    Args:
        max_completion_length: The generation cap L_max, in tokens.
        overlong_buffer_length: The buffer L_cache before the cap where the penalty grows.

    Example:
    >>> penalty = make_overlong_reward(max_completion_length=100, overlong_buffer_length=20)
    >>> penalty(prompts=["", "", ""], completions=["", "", ""], completion_ids=[[1] * 80, [1] * 90, [1] * 100])
    [0.0, -0.5, -1.0]
    """
    if max_completion_length <= 0:
        raise ValueError(f"max_completion_length must be positive, got {max_completion_length}")
    if not 0 < overlong_buffer_length <= max_completion_length:
        raise ValueError(
            f"overlong_buffer_length must be in (0, max_completion_length={max_completion_length}], "
            f"got {overlong_buffer_length}"
        )
    expected_length = max_completion_length - overlong_buffer_length

    def overlong_reward(
        prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None, **kwargs: Any
    ) -> list[float | None]:
        if completion_ids is None:
            raise ValueError(
                "overlong_reward needs the `completion_ids` keyword (token ids of each completion); "
                "TRL's GRPOTrainer and grpo-pipeline pass it, so call it with completion_ids=..."
            )
        rewards: list[float | None] = []
        for ids in completion_ids:
            length = len(ids)
            if length <= expected_length:
                rewards.append(0.0)
            elif length <= max_completion_length:
                rewards.append((expected_length - length) / overlong_buffer_length)
            else:
                rewards.append(-1.0)
        return rewards

    return overlong_reward
