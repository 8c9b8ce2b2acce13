import math
import time

import pytest

from rewards import combine_rewards
from rewards.guard import RewardFaults, call_reward

N = 4


def good(prompts, completions, **kwargs):
    return [1.0] * len(completions)


def raises(prompts, completions, **kwargs):
    raise RuntimeError("database unreachable")


def hangs(prompts, completions, **kwargs):
    time.sleep(30)
    return [1.0] * len(completions)


def wrong_length(prompts, completions, **kwargs):
    return [1.0]


def junk(prompts, completions, **kwargs):
    return [math.nan, math.inf, "1.0", 0.5]


def not_a_list(prompts, completions, **kwargs):
    return 3.0


@pytest.mark.parametrize("fn, bad, message", [
    (raises, N, "reward 'f' raised RuntimeError: database unreachable"),
    (wrong_length, N, "reward 'f' returned 1 values for 4 completions"),
    (junk, 3, "non-finite or non-numeric values, e.g. nan"),
    (not_a_list, N, "returned float, not a list"),
])
def test_faults_become_no_opinion_and_are_counted(fn, bad, message):
    result = call_reward(fn, "f", 5.0, [""] * N, [""] * N)
    assert result.bad == bad and message in result.problem
    assert all(v is None for v in result.values[:bad if fn is not junk else 3])


def test_a_hanging_reward_is_abandoned_after_its_timeout():
    started = time.perf_counter()
    result = call_reward(hangs, "slow", 0.5, [""] * N, [""] * N)
    assert time.perf_counter() - started < 5
    assert result.values == [None] * N and "did not return within 0.5 s" in result.problem


def test_combine_keeps_going_and_tallies_fault_rates(caplog):
    faults = RewardFaults()
    for _ in range(2):
        out = combine_rewards([good, raises], ["good", "bad"], [1.0, 1.0], [""] * N, [""] * N, faults=faults)
        assert out.total == [1.0] * N
    assert faults.rate("good") == 0 and faults.rate("bad") == 1.0
    assert "database unreachable" in faults.last_problem["bad"]
    assert "reward 'bad' raised RuntimeError" in caplog.text
