"""Exact-match reward for tasks whose whole answer is a short string."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.text import completion_to_text


def exact_match_reward(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 when the completion, stripped of surrounding whitespace, is exactly the answer.

    Args:
        prompts: The prompts (unused).
        completions: Completions as strings or chat messages.
        answer: The expected answers.

    >>> exact_match_reward(["1+1="] * 2, ["2", " 3"], ["2", "2"])
    [1.0, 0.0]
    """
    return [float(completion_to_text(c).strip() == str(a).strip()) for c, a in zip(completions, answer)]
