"""Verifiable-answer accuracy reward for GSM8K-style numeric problems."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rewards.parsing import GoldAnswerError, answers_match, extract_strict_answer, format_fraction, parse_gold_answer
from rewards.text import completion_to_text


def accuracy_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    answer: Sequence[Any],
    log_extra: Callable[[str, list], None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    r"""1.0 when the completion's marked final answer equals the gold number, else 0.0.

    The answer is taken from the last ``<answer>...</answer>``, ``\boxed{...}``, ``#### ...`` or
    "The (final) answer is ..." in the completion and compared exactly as a fraction, so
    ``$1,200.00`` equals ``1200`` and ``3/4`` equals ``0.75``. Inside the marked span the first number
    counts, or the number after the last ``=`` ("5 + 3 = 8"); see ``rewards.parsing``. Hostile or
    unparsable completions score 0.0. A gold answer that is not a number raises
    :class:`~rewards.parsing.GoldAnswerError` naming its row: a data error must not pass silently as
    "no opinion" (our loop's reward guard counts it as a fault of this function and logs the message).

    Args:
        prompts: The prompts (unused; part of TRL's reward signature).
        completions: Completions as strings, or as chat messages (``[{"role", "content"}]``).
        answer: Gold answers, one per completion: a number of any numeric type (``int``, ``float``,
            ``numpy``, ``Decimal``, ``Fraction``), a numeric string, or a GSM8K solution ending in ``#### N``.
        log_extra: Optional callback (given by TRL's GRPOTrainer and by our loop) that logs the
            extracted answers as an extra column.
        **kwargs: Other dataset columns; ignored.

    Returns:
        One reward per completion.

    Example:
    >>> accuracy_reward(
    ...     prompts=["q1", "q2", "q3"],
    ...     completions=["<answer>1,200</answer>", [{"role": "assistant", "content": "The answer is 7"}], "no idea"],
    ...     answer=["1200", "#### 8", "3"],
    ... )
    [1.0, 0.0, 0.0]
    """
    if len(answer) != len(completions):
        raise ValueError(f"accuracy_reward got {len(completions)} completions but {len(answer)} answers")
    gold_values = []
    for row, gold in enumerate(answer):
        try:
            gold_values.append(parse_gold_answer(gold))
        except GoldAnswerError as error:
            raise GoldAnswerError(f"accuracy_reward: row {row} of the batch: {error}") from None
    rewards: list[float | None] = []
    extracted: list[str | None] = []
    for completion, gold_value in zip(completions, gold_values):
        predicted = extract_strict_answer(completion_to_text(completion))
        extracted.append(format_fraction(predicted))
        rewards.append(float(answers_match(predicted, gold_value)))
    if log_extra is not None:
        log_extra("extracted_answer", extracted)
    return rewards
