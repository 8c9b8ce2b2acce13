import math

import pytest

from rewards import combine_rewards, load_reward


def test_weighted_total_and_means():
    accuracy = load_reward("accuracy")
    fmt = load_reward("format")
    completions = [
        "<reasoning>\n1+1\n</reasoning>\n<answer>\n2\n</answer>",
        "<answer>2</answer>",
        "<answer>3</answer>",
    ]
    out = combine_rewards([accuracy, fmt], ["accuracy", "format"], [1.0, 0.5], ["p"] * 3, completions, answer=["2"] * 3)
    assert out.per_function == [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    assert out.total == [1.5, 1.0, 0.0]
    assert out.means() == {"accuracy": pytest.approx(2 / 3), "format": pytest.approx(1 / 3)}


def test_none_and_non_finite_values_do_not_count():
    def odd(prompts, completions, **kwargs):
        return [None, math.nan, math.inf, "1", 2]

    out = combine_rewards([odd], ["odd"], [3.0], [""] * 5, [""] * 5)
    assert out.per_function == [[None, None, None, None, 2.0]]
    assert out.total == [0.0, 0.0, 0.0, 0.0, 6.0]
    assert out.means() == {"odd": 2.0}


def test_all_none_mean_is_none():
    out = combine_rewards([lambda prompts, completions, **kw: [None]], ["x"], [1.0], [""], [""])
    assert out.means() == {"x": None}


def test_mismatched_weights_and_lengths():
    one = lambda prompts, completions, **kw: [1.0]  # noqa: E731
    with pytest.raises(ValueError, match="one weight per reward function"):
        combine_rewards([one], ["one"], [1.0, 2.0], [""], [""])
    out = combine_rewards([one], ["one"], [1.0], ["", ""], ["", ""])  # wrong length: a fault, not a crash
    assert out.per_function == [[None, None]] and out.total == [0.0, 0.0]
