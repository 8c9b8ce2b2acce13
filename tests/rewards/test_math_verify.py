"""The math_verify reward (HF's math-verify, the checker behind TRL's accuracy reward) against our numeric
accuracy reward on every numeric case of test_accuracy.py, and where only an expression checker can judge."""

import pytest
from numeric_cases import CORRECT, WRONG

from rewards import accuracy_reward, load_reward

# Where the two readings differ, and why. The test fails if this list is incomplete or out of date.
DIFFERENCES = {
    # math-verify reads "1.5e3" as the expression 1.5 * e * 3 (Euler's e), not as scientific notation.
    ("<answer>1.5e3</answer>", "1500"): (1.0, 0.0),
}


@pytest.mark.parametrize("completion, gold", CORRECT + WRONG)
def test_math_verify_agrees_with_the_numeric_reader_except_where_listed(completion, gold):
    ours = accuracy_reward(prompts=["q"], completions=[completion], answer=[gold])[0]
    theirs = load_reward("math_verify")(prompts=["q"], completions=[completion], answer=[gold])[0]
    assert (ours, theirs) == DIFFERENCES.get((str(completion), gold), (ours, ours))


@pytest.mark.parametrize("completion, gold, expected", [
    (r"<answer>\frac{2}{6}</answer>", r"\frac{1}{3}", 1.0),
    (r"<answer>2\sqrt{2}</answer>", r"\sqrt{8}", 1.0),
    (r"<answer>x^2 + 2x + 1</answer>", r"(x+1)^2", 1.0),
    (r"<answer>x^2 + 1</answer>", r"(x+1)^2", 0.0),
    (r"The final answer is \boxed{\pi}", r"\pi", 1.0),
    ([{"role": "assistant", "content": r"\boxed{\frac{1}{2}}"}], "0.5", 1.0),
])
def test_symbolic_answers(completion, gold, expected):
    assert load_reward("math_verify")(prompts=["q"], completions=[completion], answer=[gold]) == [expected]


def test_trl_column_name_and_unparseable_gold():
    reward = load_reward("math_verify")
    assert reward(prompts=["q"], completions=[r"\boxed{3}"], solution=["3"]) == [1.0]  # TRL's column name
    assert reward(prompts=["q"], completions=["<answer>3</answer>"], answer=["no math here"]) == [None]
