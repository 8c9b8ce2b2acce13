"""Format rewards: does the completion follow the prompt template's reasoning/answer tags?"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from rewards.text import completion_to_text

RewardFunction = Callable[..., list[float | None]]


def _strict_pattern(reasoning_tag: str | None, answer_tag: str) -> re.Pattern:
    a = re.escape(answer_tag)
    if reasoning_tag is None:  # answer only
        return re.compile(rf"\A\s*<{a}>\n(?:(?!</?{a}>).)*?\n</{a}>\s*\Z", re.DOTALL)
    r = re.escape(reasoning_tag)
    return re.compile(rf"\A\s*<{r}>\n(?:(?!</?{r}>).)*?\n</{r}>\n<{a}>\n(?:(?!</?{a}>).)*?\n</{a}>\s*\Z", re.DOTALL)


def _soft_pattern(reasoning_tag: str | None, answer_tag: str) -> re.Pattern:
    a = re.escape(answer_tag)
    if reasoning_tag is None:
        return re.compile(rf"<{a}>.*?</{a}>", re.DOTALL)
    r = re.escape(reasoning_tag)
    return re.compile(rf"<{r}>.*?</{r}>\s*<{a}>.*?</{a}>", re.DOTALL)


def make_format_reward(
    reasoning_tag: str | None = "reasoning", answer_tag: str = "answer", strict: bool = True
) -> RewardFunction:
    """Build a reward that is 1.0 when a completion uses the template's tags, else 0.0.

    Args:
        reasoning_tag: Name of the tag around the reasoning (``reasoning`` or ``think``); None for a template
            whose completion is the answer block alone.
        answer_tag: Name of the tag around the final answer.
        strict: Strict form requires exactly ``<r>\\n...\\n</r>\\n<a>\\n...\\n</a>`` and nothing
            else; the soft form accepts the two tagged blocks anywhere, in order.

    Example:
    >>> strict = make_format_reward(strict=True)
    >>> soft = make_format_reward(strict=False)
    >>> text = "<reasoning> 2+2 </reasoning> <answer>4</answer>"
    >>> strict(prompts=[""], completions=[text]), soft(prompts=[""], completions=[text])
    ([0.0], [1.0])
    >>> make_format_reward(None)(prompts=["", ""], completions=["<answer>\\n4\\n</answer>", "4"])
    [1.0, 0.0]
    """
    pattern = (_strict_pattern if strict else _soft_pattern)(reasoning_tag, answer_tag)
    finder = pattern.match if strict else pattern.search

    def format_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return [1.0 if finder(completion_to_text(c)) else 0.0 for c in completions]

    format_reward.__name__ = f"{'strict' if strict else 'soft'}_format_reward"
    return format_reward


def make_hash_format_reward() -> RewardFunction:
    """Format reward for the plain GSM8K template: reasoning, then a last line ``#### N``.

    >>> make_hash_format_reward()(prompts=[""], completions=["3*4=12\\n#### 12", "12"])
    [1.0, 0.0]
    """
    pattern = re.compile(r"\S.*\n####\s*[-+]?\$?[\d.,/]+\s*\Z", re.DOTALL)

    def hash_format_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return [1.0 if pattern.search(completion_to_text(c)) else 0.0 for c in completions]

    return hash_format_reward
