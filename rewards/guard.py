"""Calling untrusted reward plug-ins so that a bad one cannot crash or hang a training step.

A reward that raises, hangs past its timeout, returns the wrong number of values, or returns values
that are not finite numbers gives "no opinion" (``None``) for the affected completions; every such
event is counted with the plug-in's name and a sample, so the trainer can log it and stop the run
past an error-rate threshold.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import math
import numbers
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GuardedResult:
    values: list[float | None]  # one per completion; None = no opinion (or a bad value)
    bad: int = 0  # completions whose value was lost to a fault
    problem: str | None = None  # a sample of what went wrong


@dataclass
class RewardFaults:
    """Running count of bad values per reward function, for the error-rate threshold."""

    bad: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    last_problem: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, result: GuardedResult, n: int) -> None:
        self.bad[name] = self.bad.get(name, 0) + result.bad
        self.total[name] = self.total.get(name, 0) + n
        if result.problem:
            self.last_problem[name] = result.problem

    def rate(self, name: str) -> float:
        return self.bad.get(name, 0) / max(self.total.get(name, 0), 1)


def _finite(value: Any) -> float | None:
    if value is None or not isinstance(value, numbers.Real):
        return None
    try:
        value = float(value)
    except (OverflowError, ValueError):
        return None
    return value if math.isfinite(value) else None


def is_async_reward(fn: Callable[..., Any]) -> bool:
    """An ``async def`` reward function (or a callable object whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def call_reward(fn: Callable[..., Any], name: str, timeout: float | None, prompts: Sequence[Any],
                completions: Sequence[Any], **columns: Any) -> GuardedResult:
    """Call one reward function defensively; never raises, returns within ``timeout`` seconds."""
    n = len(completions)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["values"] = fn(prompts=list(prompts), completions=list(completions), **columns)
        except BaseException as exc:  # the plug-in's fault, whatever it is
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    # A daemon thread: a plug-in that never returns is abandoned, not waited for.
    worker = threading.Thread(target=target, name=f"reward-{name}", daemon=True)
    worker.start()
    worker.join(timeout)
    return _checked(outcome, name, timeout, n)


class AsyncRewardLoop:
    """One event loop, in a daemon thread, for every async reward call of a run (TRL keeps one too): a reward
    that keeps asyncio state between calls (a lock, a semaphore, an HTTP client pool) finds its loop again.

    A call whose coroutines block the loop itself past their timeout (a sync sleep inside) abandons it: the
    next call gets a fresh loop, as the blocked one may never come back.
    """

    def __init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=_serve, args=(self.loop,), name="async-rewards", daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float | None) -> None:
        """Run ``coroutine`` on the loop; wait ``timeout`` + 1 s at most (its own timeouts come first)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            future.result(None if timeout is None else timeout + 1.0)
        except concurrent.futures.TimeoutError:
            self.loop.call_soon_threadsafe(self.loop.stop)  # if it ever unblocks
            self._start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=1.0)  # a loop blocked by a coroutine is left to its daemon thread


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """Run ``loop`` until stopped, then cancel what is still pending on it (an abandoned call) and close it."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


def call_async_rewards(funcs: Sequence[tuple[Callable[..., Any], str]], timeout: float | None,
                       prompts: Sequence[Any], completions: Sequence[Any], *, reward_loop: AsyncRewardLoop | None = None,
                       **columns: Any) -> list[GuardedResult]:
    """Run ``async def`` reward functions concurrently on ``reward_loop`` (a run's persistent loop; without one, a
    loop for this call only), each under the same guard as ``call_reward``: its own ``timeout``, errors and
    bad values turned into ``None``."""
    n = len(completions)
    outcomes: list[dict[str, Any]] = [{} for _ in funcs]

    async def guarded(fn: Callable[..., Any], outcome: dict[str, Any]) -> None:
        try:
            outcome["values"] = await asyncio.wait_for(
                fn(prompts=list(prompts), completions=list(completions), **columns), timeout)
        except asyncio.TimeoutError:
            pass  # no outcome: reported as a timeout below
        except BaseException as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    async def gather() -> None:
        await asyncio.gather(*(guarded(fn, outcome) for (fn, _), outcome in zip(funcs, outcomes)))

    loop = reward_loop or AsyncRewardLoop()
    loop.run(gather(), timeout)
    if reward_loop is None:
        loop.close()
    return [_checked(dict(outcome), name, timeout, n) for (_, name), outcome in zip(funcs, outcomes)]


def _checked(outcome: dict[str, Any], name: str, timeout: float | None, n: int) -> GuardedResult:
    """A plug-in's outcome (``values`` or ``error``; neither: it did not return in time) as checked values."""
    if "error" in outcome:
        return GuardedResult([None] * n, n, f"reward {name!r} raised {outcome['error']}")
    if "values" not in outcome:
        return GuardedResult([None] * n, n, f"reward {name!r} did not return within {timeout} s")
    raw = outcome["values"]
    try:
        raw = list(raw)
    except TypeError:
        return GuardedResult([None] * n, n, f"reward {name!r} returned {type(raw).__name__}, not a list")
    if len(raw) != n:
        return GuardedResult([None] * n, n, f"reward {name!r} returned {len(raw)} values for {n} completions")
    values = [_finite(v) for v in raw]
    bad = [v for v, clean in zip(raw, values) if clean is None and v is not None]
    problem = f"reward {name!r} returned non-finite or non-numeric values, e.g. {bad[0]!r}" if bad else None
    return GuardedResult(values, len(bad), problem)
