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


def test_async_rewards_run_concurrently_and_mix_with_sync_ones():
    """Each async reward waits for the other to start: run one after the other, both would time out.
    No clock is read; only concurrency lets them finish."""
    import asyncio

    started = {"judge": None, "checker": None}

    def rendezvous(me: str, other: str, value: float):
        async def reward(prompts, completions, **kwargs):
            loop_event = started[me] = started[me] or asyncio.Event()
            loop_event.set()
            while started[other] is None or not started[other].is_set():
                await asyncio.sleep(0.01)
            return [value] * len(completions)
        return reward

    def sync(prompts, completions, **kwargs):
        return [10.0] * len(completions)

    out = combine_rewards([rendezvous("judge", "checker", 1.0), sync, rendezvous("checker", "judge", 2.0)],
                          ["judge", "sync", "checker"], [1.0, 1.0, 1.0], ["p"] * 2, ["a", "b"], timeout=5.0)
    assert out.per_function == [[1.0, 1.0], [10.0, 10.0], [2.0, 2.0]]  # in the order given
    assert out.total == [13.0, 13.0]


def test_async_rewards_are_guarded_like_sync_ones():
    import asyncio

    from rewards.guard import RewardFaults

    async def hangs(prompts, completions, **kwargs):
        await asyncio.sleep(60)

    async def raises(prompts, completions, **kwargs):
        raise RuntimeError("judge unreachable")

    async def wrong_length(prompts, completions, **kwargs):
        return [1.0]

    async def fine(prompts, completions, **kwargs):
        return [0.5] * len(completions)

    faults = RewardFaults()
    out = combine_rewards([hangs, raises, wrong_length, fine], ["hangs", "raises", "wrong_length", "fine"],
                          [1.0] * 4, ["p"] * 2, ["a", "b"], timeout=0.2, faults=faults)
    assert out.per_function == [[None, None], [None, None], [None, None], [0.5, 0.5]]
    assert faults.rate("hangs") == faults.rate("raises") == faults.rate("wrong_length") == 1.0
    assert faults.rate("fine") == 0.0
    assert "did not return within 0.2 s" in faults.last_problem["hangs"]
    assert "RuntimeError: judge unreachable" in faults.last_problem["raises"]
    assert "returned 1 values for 2 completions" in faults.last_problem["wrong_length"]


def test_an_async_reward_that_blocks_its_loop_is_abandoned():
    import time

    async def blocks(prompts, completions, **kwargs):
        time.sleep(30)  # a sync sleep inside async code: the event loop itself is stuck
        return [1.0] * len(completions)

    out = combine_rewards([blocks], ["blocks"], [1.0], ["p"], ["a"], timeout=0.1)
    assert out.per_function == [[None]]


def test_a_runs_async_rewards_share_one_event_loop_across_calls():
    """A reward holding a resource bound to the loop of its first call (as aiohttp's ClientSession or an
    asyncio.Lock are) keeps working from the second call on when the run keeps one loop, as TRL does."""
    import asyncio

    from rewards.guard import AsyncRewardLoop, RewardFaults

    class PooledJudge:
        def __init__(self):
            self.bound_loop = None

        async def __call__(self, prompts, completions, **kwargs):
            loop = asyncio.get_running_loop()
            self.bound_loop = self.bound_loop or loop
            if loop is not self.bound_loop:
                raise RuntimeError("the pool is attached to a different event loop")
            await asyncio.sleep(0)
            return [1.0] * len(completions)

    judge, faults, loop = PooledJudge(), RewardFaults(), AsyncRewardLoop()
    try:
        totals = [combine_rewards([judge], ["judge"], [1.0], ["p"], ["a"], timeout=5, faults=faults,
                                  async_loop=loop).total for _ in range(3)]
    finally:
        loop.close()
    assert totals == [[1.0], [1.0], [1.0]] and faults.rate("judge") == 0.0


def test_a_loop_blocked_past_the_timeout_is_replaced_for_the_next_call():
    import time

    from rewards.guard import AsyncRewardLoop

    async def blocks(prompts, completions, **kwargs):
        time.sleep(2)  # the event loop itself is stuck for 2 s
        return [1.0] * len(completions)

    async def fine(prompts, completions, **kwargs):
        return [0.5] * len(completions)

    loop = AsyncRewardLoop()
    try:
        first = combine_rewards([blocks], ["blocks"], [1.0], ["p"], ["a"], timeout=0.1, async_loop=loop)
        second = combine_rewards([fine], ["fine"], [1.0], ["p"], ["a"], timeout=0.1, async_loop=loop)
    finally:
        loop.close()
    # Queued behind the blocked loop, `fine` would time out too (None): a fresh loop served it.
    assert first.per_function == [[None]] and second.per_function == [[0.5]]
