import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from numeric_cases import CORRECT, WRONG

from rewards import accuracy_reward
from rewards.guard import call_reward
from rewards.parsing import GoldAnswerError


def score(completion, gold):
    return accuracy_reward(prompts=["q"], completions=[completion], answer=[gold])[0]


@pytest.mark.parametrize("completion, gold", CORRECT)
def test_correct_answers_score_one(completion, gold):
    assert score(completion, gold) == 1.0


@pytest.mark.parametrize("completion, gold", WRONG)
def test_wrong_answers_score_zero(completion, gold):
    assert score(completion, gold) == 0.0


HOSTILE = [
    "",
    " ",
    "\x00\x01\xff\ufffd",
    "nan",
    "<answer>nan</answer>",
    "<answer>inf</answer>",
    "<answer>-inf</answer>",
    "<answer>1e400</answer>",
    "<answer>1e999999</answer>",
    "<answer>x/0</answer>",
    "<answer>5/0</answer>",
    "<answer>" + "9" * 100_000 + "</answer>",
    "<answer>" * 10_000,
    "\\boxed{" * 5_000,
    "The answer is " * 10_000,
    "a" * 2_000_000,
    "<answer></answer>",
    "</answer><answer>",
    "#### ",
    "\\boxed{}",
    None,
    12,
    b"<answer>5</answer>",
    [{"role": "assistant"}],
]


@pytest.mark.parametrize("completion", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_completions_score_zero_and_never_raise(completion):
    assert score(completion, "0") == 0.0


def test_x_over_zero_is_not_read_as_zero():
    assert score("<answer>x/0</answer>", "0") == 0.0
    assert score("<answer>0</answer>", "0") == 1.0


@pytest.mark.parametrize("gold", ["", "no number", None, "#### abc", float("nan"), float("inf"), True, "3 + 15 = 18"])
def test_unparsable_gold_is_an_error_naming_the_row(gold):
    with pytest.raises(GoldAnswerError, match=r"row 1 of the batch: gold answer"):
        accuracy_reward(prompts=["q", "q"], completions=["<answer>1</answer>"] * 2, answer=["1", gold])


def test_unparsable_gold_is_counted_as_a_fault_by_the_guard():
    result = call_reward(accuracy_reward, "accuracy", 5.0, ["q"] * 2, ["<answer>1</answer>"] * 2, answer=["1", "n/a"])
    assert result.values == [None, None] and result.bad == 2
    assert "GoldAnswerError" in result.problem and "'n/a'" in result.problem


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("#### 0.1", 0.1),  # Fraction(0.1) would be 3602879701896397/36028797018963968
        ("#### 2.3", 2.3),
        ("<answer>2.3</answer>", np.float64(2.3)),
        ("<answer>0.1</answer>", np.float32(0.1)),
        ("<answer>1200</answer>", np.int64(1200)),  # a pandas integer column
        ("<answer>0.25</answer>", Decimal("0.25")),
        ("<answer>1/3</answer>", Fraction(1, 3)),
        ("<answer>-5</answer>", -5),
    ],
)
def test_numeric_gold_types_are_exact(completion, gold):
    assert score(completion, gold) == 1.0


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("#### - 5", "-5"),  # a sign written apart from its number
        ("<answer>- 5</answer>", "-5"),
        ("\\boxed{1{,}234}", "1234"),  # LaTeX thousands separator
        ("\\boxed{1\\,234}", "1234"),  # LaTeX thin space
        ("<answer>1 234</answer>", "1234"),  # space-grouped thousands
        ("<answer>12\u202f345\u202f678</answer>", "12345678"),
        ("<answer>It is 18, not 17</answer>", "18"),  # the first number of the span
        ("<answer>4 * 5 = 20, so 20</answer>", "20"),  # the result of the equation
        ("<answer>The total is 3 + 4 = 7 apples</answer>", "7"),
    ],
)
def test_answer_span_rules(completion, gold):
    assert score(completion, gold) == 1.0


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("<answer>It is 18, not 17</answer>", "17"),
        ("#### 5", "-5"),
        ("<answer>3 4</answer>", "34"),  # a single-digit group is not a thousands group
        ("<answer>1 23</answer>", "123"),
    ],
)
def test_answer_span_rules_reject(completion, gold):
    assert score(completion, gold) == 0.0


def test_batch_with_trl_keyword_arguments():
    """TRL's GRPOTrainer passes every dataset column plus these keywords; the function must accept them."""
    logged = {}
    rewards = accuracy_reward(
        prompts=[[{"role": "user", "content": "q"}]] * 3,
        completions=[[{"role": "assistant", "content": c}] for c in ["<answer>4</answer>", "<answer>5</answer>", ""]],
        answer=["4", "4", "4"],
        question=["q", "q", "q"],
        completion_ids=[[1, 2], [3], []],
        trainer_state=object(),
        log_extra=lambda name, values: logged.__setitem__(name, values),
        log_metric=lambda name, value: None,
    )
    assert rewards == [1.0, 0.0, 0.0]
    assert logged == {"extracted_answer": ["4", "5", None]}


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        accuracy_reward(prompts=["a", "b"], completions=["1", "2"], answer=["1"])


def test_results_are_finite_floats():
    rewards = accuracy_reward(prompts=[""] * len(HOSTILE), completions=HOSTILE, answer=["1"] * len(HOSTILE))
    assert all(isinstance(r, float) and math.isfinite(r) for r in rewards)
