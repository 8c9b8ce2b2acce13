from fractions import Fraction

import pytest

from rewards.parsing import (
    GoldAnswerError,
    extract_flexible_answer,
    extract_marked_answer,
    extract_strict_answer,
    format_fraction,
    parse_gold_answer,
    parse_number,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("18", Fraction(18)),
        ("18.00", Fraction(18)),
        (".5", Fraction(1, 2)),
        ("-3", Fraction(-3)),
        ("−3", Fraction(-3)),  # unicode minus
        ("$1,234,567.5", Fraction(2469135, 2)),
        ("3/4", Fraction(3, 4)),
        ("3 / 4", Fraction(3, 4)),
        ("2.5e2", Fraction(250)),
        ("about 12 apples and 3 pears", Fraction(12)),
        ("no digits here", None),
        ("1e101", None),  # exponent beyond the bound: not built
        ("7/0", None),
        ("", None),
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


def test_parse_number_last():
    assert parse_number("3 then 4 then 5", last=True) == 5


def test_marked_answer_prefers_the_last_marker():
    text = "\\boxed{1} then #### 2 then The answer is 3 <answer>4</answer>"
    assert extract_marked_answer(text) == "4"
    assert extract_strict_answer("<answer>4</answer> ... #### 5") == 5


def test_nested_boxed():
    assert extract_marked_answer("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_strict_answer("\\boxed{\\frac{1}{2}}") == Fraction(1, 2)


def test_flexible_is_last_number_anywhere():
    assert extract_flexible_answer("I think 5, no wait, 6") == 6
    assert extract_strict_answer("I think 5, no wait, 6") is None


def test_gold_parsing():
    assert parse_gold_answer("reasoning 2+2=4\n#### 1,004") == 1004
    assert parse_gold_answer(7) == 7
    assert parse_gold_answer(0.25) == Fraction(1, 4)
    assert parse_gold_answer(0.1) == Fraction(1, 10)
    assert parse_gold_answer(" $18 ") == 18
    assert parse_gold_answer("-3") == -3


@pytest.mark.parametrize("gold", [True, None, "3 + 15 = 18", "18 or 19", "", "#### none", [18]])
def test_gold_that_is_not_one_number_is_rejected(gold):
    with pytest.raises(GoldAnswerError):
        parse_gold_answer(gold)


@pytest.mark.parametrize("value, text", [(Fraction(18), "18"), (Fraction(3, 4), "0.75"), (Fraction(1, 3), "1/3"), (None, None)])
def test_format_fraction(value, text):
    assert format_fraction(value) == text
