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


def digit_match_reward(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any],
                       **kwargs: Any) -> list[float | None]:
    """Partial credit: the fraction of digit places (aligned from the right, as in column addition) where the
    completion agrees with the answer, over the longer of the two; 1.0 only for an exact match.

    Args:
        prompts: The prompts (unused).
        completions: Completions as strings or chat messages.
        answer: The expected answers (digit strings).

    >>> digit_match_reward(["57+1="] * 4, ["58", "59", "48", "158"], ["58"] * 4)
    [1.0, 0.5, 0.5, 0.6666666666666666]
    >>> digit_match_reward(["1+1="] * 2, ["", "x"], ["2", "2"])
    [0.0, 0.0]
    """
    scores: list[float | None] = []
    for completion, expected in zip(completions, answer):
        guess, target = completion_to_text(completion).strip(), str(expected).strip()
        places = max(len(guess), len(target))
        same = sum(g == t for g, t in zip(reversed(guess), reversed(target)))
        scores.append(same / places if places else 1.0)
    return scores
