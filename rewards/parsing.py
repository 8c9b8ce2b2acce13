"""Answer extraction and numeric normalisation shared by the rewards and the evaluation.

Everything here is total: any input string (empty, huge, binary, hostile) returns a value or
``None`` and never raises, because a reward function that raises costs a training step.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "answers_match",
    "extract_flexible_answer",
    "extract_marked_answer",
    "extract_strict_answer",
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


def _marked_value(span: str) -> Fraction | None:
    span = _latex_frac_to_slash(span)
    # Inside an answer span the final number is the answer ("5 + 3 = 8" gives 8).
    return parse_number(span, last=True)


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


def parse_gold_answer(gold: str) -> Fraction | None:
    """Parse a gold answer: a bare number, or a full GSM8K solution ending in ``#### N``.

    >>> parse_gold_answer("She pays 3*4 = 12 dollars.\\n#### 1,200")
    Fraction(1200, 1)
    """
    if isinstance(gold, (int, float)) and not isinstance(gold, bool):
        try:
            return Fraction(gold)
        except (ValueError, OverflowError):
            return None
    if not isinstance(gold, str):
        return None
    if "####" in gold:
        gold = gold.rsplit("####", 1)[1]
    return parse_number(gold)


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
