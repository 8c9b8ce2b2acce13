"""Answer extraction and numeric normalisation shared by the rewards and the evaluation.

Everything here is total: any input string (empty, huge, binary, hostile) returns a value or
``None`` and never raises, because a reward function that raises costs a training step.
"""

from __future__ import annotations

import numbers
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any

__all__ = [
    "answers_match",
    "extract_flexible_answer",
    "extract_marked_answer",
    "extract_strict_answer",
    "GoldAnswerError",
    "format_fraction",
    "parse_gold_answer",
    "parse_number",
]

# Only the tail of a completion can hold its final answer; bounding the scanned text keeps
# extraction linear and cheap even for multi-megabyte completions.
MAX_SCANNED_CHARS = 20_000
# Exponents beyond this would make Fraction build astronomically large integers.
MAX_EXPONENT = 100
MAX_DIGITS = 200

# A number token: optional sign and currency, thousands separators, decimals, exponent, and an
# optional "/ denominator" so that 3/4 is read as one value.
NUMBER_RE = re.compile(
    r"(?<![\w./])(?P<num>[-+−]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+−]?\$?\.\d+)"
    r"(?:[eE](?P<exp>[-+]?\d{1,6}))?"
    r"(?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?"
)

_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_HASH_RE = re.compile(r"####\s*([^\n]*)")
_PHRASE_RE = re.compile(r"(?:the\s+)?(?:final\s+)?answer\s+is\s*:?\s*([^\n]*)", re.IGNORECASE)
_BOXED_START_RE = re.compile(r"\\boxed\s*\{")


def _to_fraction(match: re.Match) -> Fraction | None:
    num = match.group("num").replace(",", "").replace("$", "").replace("−", "-")
    digits = sum(ch.isdigit() for ch in num)
    if digits > MAX_DIGITS:
        return None
    try:
        value = Fraction(num)
        exp = match.group("exp")
        if exp is not None:
            exp_value = int(exp)
            if abs(exp_value) > MAX_EXPONENT:
                return None
            value *= Fraction(10) ** exp_value
        den = match.group("den")
        if den is not None:
            if len(den) > MAX_DIGITS:
                return None
            value /= Fraction(den)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value


def parse_number(text: str, *, last: bool = False) -> Fraction | None:
    """Read the first (or last) number in ``text`` as an exact fraction.

    Handles ``$``, thousands separators, decimals (``18.00`` equals ``18``, ``.5``), fractions
    (``3/4``), signs and bounded exponents. Anything else returns ``None``.

    >>> parse_number("$1,234.50 dollars")
    Fraction(2469, 2)
    >>> parse_number("3/4") == parse_number("0.75")
    True
    >>> parse_number("x/0") is None
    True
    """
    if not isinstance(text, str) or not text:
        return None
    text = text[-MAX_SCANNED_CHARS:] if last else text[:MAX_SCANNED_CHARS]
    matches = list(NUMBER_RE.finditer(text))
    for match in reversed(matches) if last else matches:
        value = _to_fraction(match)
        if value is not None:
            return value
        # A malformed number (x/0, 1e400) is the answer the model gave: do not fall back to
        # some other number in the same span.
        return None
    return None


def _boxed_spans(text: str) -> list[tuple[int, str]]:
    spans = []
    for match in _BOXED_START_RE.finditer(text):
        depth, start = 1, match.end()
        for pos in range(start, min(len(text), start + 1_000)):
            if text[pos] == "{":
                depth += 1
            elif text[pos] == "}":
                depth -= 1
                if depth == 0:
                    spans.append((match.start(), text[start:pos]))
                    break
    return spans


def extract_marked_answer(text: str) -> str | None:
    """Return the text of the last explicitly marked answer, or ``None``.

    Markers: ``<answer>...</answer>``, ``\\boxed{...}``, ``#### ...`` and
    "The (final) answer is ...". When several appear, the one that starts last wins.

    >>> extract_marked_answer("<reasoning>2+2</reasoning>\\n<answer>\\n4\\n</answer>")
    '4'
    >>> extract_marked_answer("so \\\\boxed{\\\\frac{1}{2}} hmm") is None
    False
    """
    if not isinstance(text, str) or not text:
        return None
    text = text[-MAX_SCANNED_CHARS:]
    candidates: list[tuple[int, str]] = []
    candidates += [(m.start(), m.group(1)) for m in _ANSWER_TAG_RE.finditer(text)]
    candidates += [(m.start(), m.group(1)) for m in _HASH_RE.finditer(text)]
    candidates += [(m.start(), m.group(1)) for m in _PHRASE_RE.finditer(text)]
    candidates += _boxed_spans(text)
    if not candidates:
        return None
    _, span = max(candidates, key=lambda item: item[0])
    return span.strip()


def _latex_frac_to_slash(text: str) -> str:
    return re.sub(r"\\d?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"\1/\2", text)


# Thousands grouped by spaces ("1 234", also no-break and thin spaces) or LaTeX ("1{,}234", "1\\,234").
_LATEX_COMMA_RE = re.compile(r"\{,\}")
_LATEX_THIN_SPACE_RE = re.compile(r"(?<=\d)\\[,!;: ](?=\d)")
_SPACE_GROUPED_RE = re.compile(r"(?<![\d.,])\d{1,3}(?:[ \u00a0\u2009\u202f]\d{3})+(?!\d)")
# A sign written apart from its number at the start of the answer ("#### - 5").
_DETACHED_SIGN_RE = re.compile(r"^\s*([-+\u2212])\s+(?=[$\d.])")


def _normalise_marked_span(span: str) -> str:
    span = _LATEX_COMMA_RE.sub(",", _latex_frac_to_slash(span))
    span = _LATEX_THIN_SPACE_RE.sub(" ", span)
    span = _SPACE_GROUPED_RE.sub(lambda m: re.sub(r"\s", "", m.group(0)), span)
    return span


def _marked_value(span: str) -> Fraction | None:
    """The value of a marked answer span.

    Rule (lm-evaluation-harness's strict-match takes the first number after ``####``; we extend it to
    every marker): the first number of the span, except that when the span holds an equation the
    number after its last ``=`` is the result ("5 + 3 = 8" gives 8; "It is 18, not 17" gives 18).
    """
    span = _normalise_marked_span(span)
    head, equals, result = span.rpartition("=")
    if equals:
        value = parse_number(_DETACHED_SIGN_RE.sub(r"\1", result))
        if value is not None or NUMBER_RE.search(result):
            return value
        span = head
    return parse_number(_DETACHED_SIGN_RE.sub(r"\1", span))


def extract_flexible_answer(text: str) -> Fraction | None:
    """The last number anywhere in the text (lm-evaluation-harness "flexible-extract").

    >>> extract_flexible_answer("First 3 apples, then 5 more: 8 apples.")
    Fraction(8, 1)
    """
    if not isinstance(text, str):
        return None
    return parse_number(_latex_frac_to_slash(text[-MAX_SCANNED_CHARS:]), last=True)


def extract_strict_answer(text: str) -> Fraction | None:
    """The numeric value of the last marked answer (lm-evaluation-harness "strict-match" analogue).

    >>> extract_strict_answer("The final answer is $18.00.")
    Fraction(18, 1)
    """
    span = extract_marked_answer(text)
    return None if span is None else _marked_value(span)


class GoldAnswerError(ValueError):
    """A gold answer that is not a number: a data error, never scored as "no opinion"."""


def parse_gold_answer(gold: Any) -> Fraction:
    """Parse a gold answer exactly: a number of any numeric type, a numeric string, or a GSM8K solution
    ending in ``#### N``. Anything else raises :class:`GoldAnswerError`.

    Floats are read by their shortest decimal form (``0.1`` is 1/10, not the binary 0.1000000000000000055...);
    ``int``, ``numpy`` integers and floats, ``Decimal`` and ``Fraction`` are exact. A string without a
    ``####`` line must be a single number: a raw solution such as ``"3 + 15 = 18"`` is ambiguous and rejected.

    >>> parse_gold_answer("She pays 3*4 = 12 dollars.\\n#### 1,200")
    Fraction(1200, 1)
    >>> parse_gold_answer(0.1)
    Fraction(1, 10)
    >>> parse_gold_answer("3 + 15 = 18")
    Traceback (most recent call last):
    ...
    rewards.parsing.GoldAnswerError: gold answer '3 + 15 = 18' is not one number and has no '#### N' line; pass the final number (e.g. '18') or the full GSM8K solution
    """
    if isinstance(gold, bool) or type(gold).__name__ == "bool_":
        raise GoldAnswerError(f"gold answer {gold!r} is a boolean, not a number")
    if isinstance(gold, (numbers.Real, Decimal)):
        value = _real_to_fraction(gold)
        if value is None:
            raise GoldAnswerError(f"gold answer {gold!r} is not a finite number")
        return value
    if not isinstance(gold, str):
        raise GoldAnswerError(f"gold answer {gold!r} has type {type(gold).__name__}; expected a number or a string")
    text = gold.rsplit("####", 1)[1] if "####" in gold else gold
    value = _marked_value(text) if "####" in gold else _whole_number(text)
    if value is None:
        hint = "the text after '####' holds no number" if "####" in gold else (
            "is not one number and has no '#### N' line; pass the final number (e.g. '18') or the full GSM8K solution")
        raise GoldAnswerError(f"gold answer {_short(gold)!r} {hint}")
    return value


def _real_to_fraction(value: Any) -> Fraction | None:
    try:
        if isinstance(value, (numbers.Rational, Decimal)):
            return Fraction(value)
        # Shortest round-tripping decimal, so 0.1 means 1/10 (numpy floats print theirs the same way).
        return Fraction(str(value))
    except (ValueError, OverflowError, TypeError):
        return None


def _whole_number(text: str) -> Fraction | None:
    """The value of a string that is one number and nothing else but spacing, a sign, ``$`` or ``%``."""
    matches = list(NUMBER_RE.finditer(text))
    if len(matches) != 1:
        return None
    rest = (text[: matches[0].start()] + text[matches[0].end() :]).strip().strip("%").strip()
    return _to_fraction(matches[0]) if not rest else None


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def answers_match(predicted: Fraction | None, gold: Fraction | None) -> bool:
    """Exact numeric equality; a missing side never matches."""
    return predicted is not None and gold is not None and predicted == gold


def format_fraction(value: Fraction | None) -> str | None:
    """Render an extracted value for logs and JSONL: ``18``, ``0.75`` or ``1/3``."""
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    if Fraction(repr(as_float)) == value:
        return repr(as_float)
    return f"{value.numerator}/{value.denominator}"
