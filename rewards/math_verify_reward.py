"""HF math-verify as a reward: symbolic and LaTeX answers (``\\frac{1}{3}``, ``2\\sqrt{2}``, ``x^2+1``).

The checker behind TRL's and open-r1's ``accuracy_reward``. Our ``accuracy`` reward compares numbers
exactly; this one compares expressions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from rewards.parsing import extract_marked_answer
from rewards.text import completion_to_text


def _gold_text(gold: Any) -> str:
    text = str(gold)
    return text.rsplit("####", 1)[1].strip() if "####" in text else text.strip()


def _parse_bare(text: str, parse, **kwargs) -> list:
    """math-verify reads LaTeX inside math delimiters: a bare answer with LaTeX markup (``\\sqrt{8}``, ``x^2``)
    is read inside ``$...$``; plain text (``18 dollars``, ``$1,234``) as it stands, as TRL reads a solution."""
    if "$" not in text and any(mark in text for mark in ("\\", "^", "{")):
        parsed = parse(f"${text}$", **kwargs)
        if parsed:
            return parsed
    return parse(text, **kwargs)


def math_verify_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    answer: Sequence[Any] | None = None,
    solution: Sequence[Any] | None = None,
    log_extra: Callable[[str, list], None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    r"""1.0 when math-verify finds the completion's answer equal to the gold one, else 0.0.

    The completion's answer is its marked span (the last ``<answer>...</answer>``, ``\boxed{}``, ``#### ``
    or "the answer is"), read as LaTeX or a plain expression; without one, TRL's rule: a LaTeX answer
    with an anchor (``\boxed{}``, "final answer is $...$"). A gold answer math-verify cannot parse gives
    ``None`` (no opinion), as in TRL.

    Args:
        prompts: Unused (TRL's signature).
        completions: Strings or chat messages.
        answer: Gold answers (our column name): LaTeX, an expression, a number, or ``... #### N``.
        solution: Gold answers under TRL's column name, used when ``answer`` is not given.
        log_extra: Logs the parsed gold and predicted answers as extra columns.

    >>> math_verify_reward(["", "", ""], [r"<answer>\frac{1}{2}</answer>", r"so \boxed{0.5}", "<answer>1/3</answer>"],
    ...                    answer=["0.5", r"$\frac{1}{2}$", "#### 0.5"])
    [1.0, 1.0, 0.0]
    """
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    golds = answer if answer is not None else solution
    if golds is None or len(golds) != len(completions):
        raise ValueError("math_verify_reward needs an 'answer' (or 'solution') column, one value per completion")
    main_thread = threading.current_thread() is threading.main_thread()  # math-verify's timeouts use SIGALRM
    timeouts = {"parsing_timeout": 10 if main_thread else None}
    if not main_thread:
        logging.getLogger("math_verify").setLevel(logging.ERROR)
    anchored = [LatexExtractionConfig(normalization_config=NormalizationConfig(units=True), boxed_match_priority=0,
                                      try_extract_without_anchor=False)]
    rewards: list[float | None] = []
    parsed: list[str] = []
    for completion, gold in zip(completions, golds):
        gold_parsed = _parse_bare(_gold_text(gold), parse, **timeouts)
        if not gold_parsed:
            rewards.append(None)
            parsed.append("[gold unparseable]")
            continue
        text = completion_to_text(completion)
        marked = extract_marked_answer(text)
        if marked is not None:
            predicted = _parse_bare(marked, parse, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                                    **timeouts)
        else:
            predicted = parse(text, extraction_config=anchored, extraction_mode="first_match", **timeouts)
        rewards.append(float(verify(gold_parsed, predicted, timeout_seconds=5 if main_thread else None)))
        parsed.append(str(predicted) if predicted else "[unparseable]")
    if log_extra is not None:
        log_extra("math_verify_parsed", parsed)
    return rewards
