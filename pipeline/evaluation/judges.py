"""How an evaluation judges a completion's answer against the gold one (``--answer_match``).

Each judge reads two answers from a completion, a **strict** one (the marked answer) and a **flexible**
one (a fallback reading), and says whether each equals the gold answer:

- ``numeric``: numbers compared exactly (``rewards.parsing``): strict is the first number of the marked
  answer (``<answer>``, ``\\boxed{}``, ``####``, "the answer is"), flexible the last number in the text.
  GSM8K's reading, unchanged; lm-eval's protocols (``protocols.py``) keep their own filters.
- ``text``: normalised exact match (``TextJudge``), for answers such as ``Paris`` or ``B``.
- ``math_verify``: HF math-verify's equivalence (``\\frac{1}{2}`` = ``0.5``), through the project's
  ``math_verify`` reward (``rewards/math_verify_reward.py``).
- ``reasoning_gym`` (chosen by ``auto`` only): a reasoning-gym task's own verifier, full marks only.

``auto``: reasoning-gym's verifier for reasoning-gym rows; ``numeric`` when every gold answer reads as one
number (GSM8K); ``text`` otherwise. The choice is made on the problems evaluated and kept in the summary.
"""

from __future__ import annotations

import importlib.util
import unicodedata
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from pipeline.arguments import ANSWER_MATCHES
from pipeline.config import ConfigError
from pipeline.data import DataError, Example
from pipeline.data.examples import answer_text
from rewards.parsing import (
    GoldAnswerError,
    NUMBER_RE,
    answers_match,
    extract_flexible_answer,
    extract_marked_answer,
    extract_strict_answer,
    format_fraction,
    parse_gold_answer,
)
from rewards.reasoning_gym_reward import extract_tagged_answer


class NumericJudge:
    """Numbers compared exactly: the marked answer (strict) or the last number (flexible) against the gold."""

    name = "numeric"

    def gold(self, example: Example) -> Fraction:
        return parse_gold_answer(example.answer)

    def extract(self, text: str) -> tuple[Any, Any]:
        return extract_strict_answer(text), extract_flexible_answer(text)

    def matches(self, value: Any, gold: Any) -> bool:
        return answers_match(value, gold)

    def show(self, value: Any) -> str | None:
        return format_fraction(value)


class ReasoningGymJudge:
    """A reasoning-gym task's own verifier (full marks only): the ``<answer>`` block (strict) or, without one,
    the last number, else the last non-empty line (flexible)."""

    name = "reasoning_gym"

    def gold(self, example: Example) -> dict[str, Any]:
        return {"question": example.question, "answer": example.answer, "metadata": example.columns["metadata"]}

    def extract(self, text: str) -> tuple[Any, Any]:
        tagged = extract_tagged_answer(text)
        if tagged is not None:
            return tagged, tagged
        numbers = [m.group("num").replace(",", "").replace("$", "").replace("−", "-") for m in NUMBER_RE.finditer(text)]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return None, numbers[-1] if numbers else (lines[-1] if lines else None)

    def matches(self, value: Any, gold: Any) -> bool:
        from reasoning_gym import get_score_answer_fn

        score = get_score_answer_fn(gold["metadata"]["source_dataset"])
        return value is not None and score(value, gold) >= 1.0 - 1e-6

    def show(self, value: Any) -> str | None:
        return value


def normalize_text_answer(text: Any) -> str:
    """The form two text answers are compared in: Unicode NFKC, casefolded, every run of whitespace made one
    space, then punctuation (Unicode categories P*: ``. , ; : ! ? ( ) [ ] " ' * -`` ...) and whitespace
    stripped from both ends. Inner punctuation stays (``u.s`` is not ``us``) and so do articles: SQuAD's
    ``normalize_answer`` drops "a", "an" and "the", which would turn the choice ``A`` into nothing.

    >>> normalize_text_answer("  **Paris.** "), normalize_text_answer("(B)"), normalize_text_answer("New\\n York")
    ('paris', 'b', 'new york')
    """
    text = " ".join(unicodedata.normalize("NFKC", str(text)).casefold().split())
    start, end = 0, len(text)
    while start < end and (text[start].isspace() or unicodedata.category(text[start]).startswith("P")):
        start += 1
    while end > start and (text[end - 1].isspace() or unicodedata.category(text[end - 1]).startswith("P")):
        end -= 1
    return text[start:end]


def _last_line(text: str) -> str | None:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


class TextJudge:
    """Normalised exact match (``normalize_text_answer`` on both sides): equal strings after normalisation.

    Strict reads the marked answer (the last ``<answer>...</answer>``, ``\\boxed{...}``, ``#### ...`` or "the
    (final) answer is ..." of the completion, ``rewards.parsing.extract_marked_answer``); flexible reads the
    marked answer too when there is one, else the completion's last non-empty line. A reading that is empty
    once normalised counts as no answer. The gold is text or a number (``7.0`` reads as ``7``), or a list of
    such: any of them is right. maj@k votes on the normalised readings.
    """

    name = "text"

    def gold(self, example: Example) -> tuple[str, ...]:
        answer = example.answer
        options = list(answer) if isinstance(answer, (list, tuple)) else [answer]
        if not options or not all(isinstance(o, (str, int, float)) for o in options):
            raise GoldAnswerError(f"gold answer {answer!r} is not text, a number, or a list of them")
        golds = tuple(normalize_text_answer(answer_text(o)) for o in options)
        if not all(golds):
            raise GoldAnswerError(f"gold answer {answer!r} is empty once normalised (case, spaces and punctuation "
                                  "at the ends dropped)")
        return golds

    def extract(self, text: str) -> tuple[Any, Any]:
        marked = extract_marked_answer(text)
        strict = normalize_text_answer(marked) if marked is not None else None
        if strict:
            return strict, strict
        line = _last_line(text) if isinstance(text, str) else None
        return None, (normalize_text_answer(line) or None) if line is not None else None

    def matches(self, value: Any, gold: Any) -> bool:
        return value is not None and value in gold

    def show(self, value: Any) -> str | None:
        return value


class MathVerifyJudge:
    """HF math-verify's equivalence, through the project's ``math_verify`` reward: strict reads the marked
    answer (as ``TextJudge`` does), flexible the marked answer else the last non-empty line; the reading is
    handed to the reward as the completion's ``<answer>`` block, which math-verify parses as LaTeX or a plain
    expression and compares with the gold (a ``#### N`` solution: N). maj@k votes on the readings as written."""

    name = "math_verify"

    def gold(self, example: Example) -> Any:
        if self._score("", example.answer) is None:
            raise GoldAnswerError(f"gold answer {str(example.answer)[:80]!r}: math-verify cannot parse it")
        return example.answer

    def extract(self, text: str) -> tuple[Any, Any]:
        marked = extract_marked_answer(text)
        strict = marked if marked else None
        if strict is not None:
            return strict, strict
        line = _last_line(text) if isinstance(text, str) else None
        return None, line.strip() if line is not None else None

    def matches(self, value: Any, gold: Any) -> bool:
        return value is not None and self._score(f"<answer>{value}</answer>", gold) == 1.0

    @staticmethod
    def _score(completion: str, gold: Any) -> float | None:
        from rewards.math_verify_reward import math_verify_reward

        return math_verify_reward([""], [completion], answer=[gold])[0]

    def show(self, value: Any) -> str | None:
        return value


Judge = NumericJudge | ReasoningGymJudge | TextJudge | MathVerifyJudge


def _reads_as_number(answer: Any) -> bool:
    try:
        parse_gold_answer(answer)
    except GoldAnswerError:
        return False
    return True


def judge_for(examples: Sequence[Example], answer_match: str = "auto") -> Judge:
    """The judge ``answer_match`` names; ``auto``: reasoning-gym's verifier for its problems, exact numbers when
    every gold answer reads as one, normalised text otherwise (see the module's docstring)."""
    if answer_match not in ANSWER_MATCHES:
        raise ConfigError(f"option --answer_match: {answer_match!r} is not one of {', '.join(ANSWER_MATCHES)}")
    if answer_match == "math_verify" and importlib.util.find_spec("math_verify") is None:
        raise ConfigError("option --answer_match: math_verify needs the math-verify package: pip install -e "
                          "'.[reasoning]' (make install does)")
    chosen = {"numeric": NumericJudge, "text": TextJudge, "math_verify": MathVerifyJudge}.get(answer_match)
    if chosen is not None:
        return chosen()
    meta = examples[0].columns.get("metadata") if examples else None
    if isinstance(meta, dict) and "source_dataset" in meta:
        return ReasoningGymJudge()
    golds = [e.answer for e in examples if e.answer is not None]  # a missing one is refused by check_gold_answers
    return NumericJudge() if all(_reads_as_number(g) for g in golds) else TextJudge()


def check_gold_answers(examples: Sequence[Example], answer_match: str = "auto",
                       option: str = "--answer_match") -> Judge:
    """Every problem's gold answer can be judged: checked before any model loads, one line naming the row.
    Returns the judge; ``option``: the stage's name for the choice, named in the fix."""
    judge = judge_for(examples, answer_match)
    for example in examples:
        if example.answer is None:
            raise DataError(f"{example.source}: missing field 'answer': evaluation compares the model's answer with "
                            "it; name the gold column with --answer_field")
        try:
            judge.gold(example)
        except GoldAnswerError as error:
            fix = "fix the row" if judge.name == "text" else f"fix the row, or judge answers as text with {option} text"
            raise DataError(f"{example.source}: {error}; {fix}") from None
    return judge
