"""Intervals for evaluation rates, so that a table shows its own noise.

A rate over n problems is a binomial proportion: its 95% interval is Wilson's score interval, which
stays inside [0, 1] and is sensible at 0 or n successes. Two models scored on the same problems are
compared per problem (paired): the change's interval comes from the per-problem differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    >>> [round(x, 4) for x in wilson_interval(5, 10)]
    [0.2366, 0.7634]
    >>> [round(x, 4) for x in wilson_interval(0, 64)]
    [0.0, 0.0566]
    >>> wilson_interval(0, 200)[0], wilson_interval(200, 200)[1]  # exactly the rate: float rounding cannot pass it
    (0.0, 1.0)
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n and n >= 1, got {successes}/{n}")
    p, z2 = successes / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, min(center - half, p)), min(1.0, max(center + half, p))


def paired_difference(before: Sequence[float], after: Sequence[float], z: float = Z_95) -> tuple[float, float, float]:
    """Mean per-problem change ``after - before`` and its normal-approximation 95% interval.

    Differences [1, 1, 0, -1]: mean 0.25, sample variance 11/12, half-width 1.96 * sqrt(11/48) = 0.938.

    >>> [round(x, 3) for x in paired_difference([0, 0, 1, 1], [1, 1, 1, 0])]
    [0.25, -0.688, 1.188]
    """
    if len(before) != len(after) or not before:
        raise ValueError(f"paired_difference needs two equal, non-empty lists, got {len(before)} and {len(after)}")
    diffs = [a - b for a, b in zip(after, before)]
    n = len(diffs)
    mean = sum(diffs) / n
    variance = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(variance / n)
    return mean, mean - half, mean + half


def format_rate(outcomes: Sequence[int]) -> str:
    """``rate [low, high]`` of 0/1 outcomes with the 95% Wilson interval.

    >>> format_rate([1, 0, 0, 0])
    '0.250 [0.046, 0.699]'
    """
    low, high = wilson_interval(sum(outcomes), len(outcomes))
    return f"{sum(outcomes) / len(outcomes):.3f} [{low:.3f}, {high:.3f}]"


def format_change(before: Sequence[int], after: Sequence[int]) -> str:
    """``+change [low, high]`` of paired 0/1 outcomes (interval clipped to [-1, 1]), with `` *`` when the 95% interval excludes 0.

    >>> format_change([0] * 10, [1] * 8 + [0] * 2)
    '+0.800 [+0.539, +1.000] *'
    """
    mean, low, high = paired_difference(before, after)
    low, high = max(low, -1.0), min(high, 1.0)  # a change of 0/1 outcomes lies in [-1, 1]
    mark = " *" if low > 0 or high < 0 else ""
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]{mark}"
