"""Tolerances for comparing two float32 computations of the same quantity, derived from float32's precision.

Two computations of one exact value that differ only in rounding (a sum split into other blocks or micro-batches,
rows in another order, another CPU kernel: AVX-512 or AVX2 dispatch) agree to within their rounding errors.
Each float32 addition rounds to the nearest float32, an error of at most eps32 / 2 of the partial sum; over a
sum of n terms those errors add up like a random walk, about eps32 * scale * sqrt(n) in all, where scale is the
size of the partial sums (Higham and Mary, "A new approach to probabilistic rounding error analysis", SIAM J.
Sci. Comput. 41(5), 2019). ``k`` is the safety factor on that typical size. A tolerance from these functions
follows from what is computed (how many terms, how large), not from what one machine's kernels happened to give.
"""

from __future__ import annotations

import math

import torch

EPS32 = torch.finfo(torch.float32).eps  # 2**-23, about 1.19e-7: the gap between 1.0 and the next float32


def float32_sum_atol(terms: int, scale: float, k: float = 4.0) -> float:
    """Absolute tolerance between two float32 evaluations, in different orders or blocks, of one sum of
    ``terms`` terms whose partial sums are of size ``scale``: ``k * eps32 * scale * sqrt(terms)``.

    >>> round(float32_sum_atol(100, 1.0) / EPS32, 6)
    40.0
    """
    return k * EPS32 * scale * math.sqrt(terms)


def sgd_weight_tolerance(lr: float, updates: int, tokens: int, grad_scale: float, momentum: float = 0.0,
                         k: float = 4.0) -> tuple[float, float]:
    """(rtol, atol) between the weights of two float32 runs of ``updates`` SGD steps (with ``momentum``) whose
    gradients are the same exact values, each element a sum over ``tokens`` token positions, computed in
    different orders or micro-batches.

    atol: each update's gradient element is off by at most ``float32_sum_atol(tokens, grad_scale, k)``
    (``grad_scale``: the largest gradient element, standing for the size of the summed per-token terms); the
    momentum buffer carries that error, times ``momentum ** j``, into the j-th later step too, so the weights
    take it ``lr * carry`` times in all, carry = sum over each update s of sum_{t=s}^{updates} momentum**(t - s)
    (``updates`` without momentum, ``updates**2`` at most).
    rtol: each step also rounds the weight itself, at most eps32 / 2 of it, ``updates`` times: updates * eps32.

    >>> rtol, atol = sgd_weight_tolerance(lr=1.0, updates=2, tokens=100, grad_scale=1.0)
    >>> rtol == 2 * EPS32, atol == 2 * float32_sum_atol(100, 1.0)
    (True, True)
    """
    carry = sum(momentum ** (t - s) for s in range(updates) for t in range(s, updates))
    return updates * EPS32, lr * carry * float32_sum_atol(tokens, grad_scale, k)
