"""GRPO's effect, shown on a CPU in under a minute: char-level 2-digit addition.

The SFT start point answers ``sum + 1`` by greedy decoding but samples the true sum about a third
of the time; only the verifiable reward separates the two.
"""

import pytest

from pipeline.toy import build_start_point, held_out_outcomes, run_grpo


@pytest.fixture(scope="module")
def start_point(tmp_path_factory):
    # 500 SFT steps rather than the demo's 1500 (25 s rather than 65 s): the same contrast, measured below
    return build_start_point(tmp_path_factory.mktemp("toy"), sft_steps=500)


def rate(outcomes):
    return sum(outcomes) / len(outcomes)


# Measured on 2026-12-07, AMD EPYC (AVX-512), torch 2.13.0, 2 threads, over GRPO seeds (the test runs seed 42;
# another float rounding gives another trajectory, as another seed does). The start point itself depends on the
# kernels: 500 SFT steps at lr 3e-3 amplify rounding, so each dispatch has its own.
#   AVX-512 kernels (default there), start point 0.300 held-out exact match, sampled reward about 0.27 at first:
#     seed 42: held-out 0.300 -> 0.525 (+0.225), training reward (first 10 -> last 10 steps) 0.264 -> 0.364 (+0.100)
#     seed  0:          0.300 -> 0.520 (+0.220),                                          0.274 -> 0.355 (+0.081)
#     seed  1:          0.300 -> 0.445 (+0.145),                                          0.284 -> 0.365 (+0.080)
#     seed  2:          0.300 -> 0.455 (+0.155),                                          0.288 -> 0.376 (+0.088)
#     flipped, seed 42: 0.300 -> 0.000, its weighted reward -0.162 -> -0.003
#   ATEN_CPU_CAPABILITY=avx2, start point 0.280, sampled reward about 0.4 at first:
#     seed 42: 0.280 -> 0.835 (+0.555), reward 0.391 -> 0.656 (+0.265)
#     seed  0: 0.280 -> 0.890 (+0.610), reward 0.430 -> 0.624 (+0.195)
#     flipped, seed 42: 0.280 -> 0.000, its weighted reward -0.130 -> 0.000
# The thresholds sit well below the smallest of these: the held-out rise at half the smallest (0.145), the
# training reward's rise at a quarter of the smallest (0.080; the sampled reward of a 10-step window varies by
# about 0.02-0.03 from the sampling alone), the trained-to-flipped gap at about half the smallest (0.445).
HELD_OUT_RISE = 0.07
REWARD_RISE = 0.02
TRAINED_OVER_FLIPPED = 0.25


@pytest.mark.slow
@pytest.mark.dispatch
def test_grpo_raises_held_out_exact_match_and_flipped_advantages_do_not(start_point, tmp_path):
    before = rate(held_out_outcomes(start_point.model_dir, start_point))
    assert before < 0.5, f"the start point should mostly answer sum+1, got {before}"

    summary, trained = run_grpo(start_point, tmp_path / "grpo")
    after = rate(held_out_outcomes(trained, start_point))
    rewards = [h["reward"] for h in summary["history"]]
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert after >= before + HELD_OUT_RISE, (before, after)  # 200 held-out problems, greedy
    assert last > first + REWARD_RISE, (first, last)  # the training reward (sampled exact match) climbs

    flipped_summary, flipped = run_grpo(start_point, tmp_path / "flipped", reward_weight=-1.0)
    flipped_score = rate(held_out_outcomes(flipped, start_point))
    assert flipped_score <= before, (before, flipped_score)  # the same run, advantages negated: no rise
    assert after - flipped_score >= TRAINED_OVER_FLIPPED, (after, flipped_score)
    # The control's logged reward is the weighted one: minus the exact-match rate, which falls towards -0.
    assert all(h["reward"] <= 0 for h in flipped_summary["history"])
