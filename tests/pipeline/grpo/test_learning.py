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


@pytest.mark.slow
def test_grpo_raises_held_out_exact_match_and_flipped_advantages_do_not(start_point, tmp_path):
    before = rate(held_out_outcomes(start_point.model_dir, start_point))
    assert before < 0.5, f"the start point should mostly answer sum+1, got {before}"

    summary, trained = run_grpo(start_point, tmp_path / "grpo")
    after = rate(held_out_outcomes(trained, start_point))
    rewards = [h["reward"] for h in summary["history"]]
    assert sum(rewards[-10:]) / 10 > sum(rewards[:10]) / 10 + 0.2  # training reward climbs; measured 0.391 -> 0.656
    assert after >= before + 0.2, (before, after)  # measured: 0.280 -> 0.835 (200 held-out problems)

    flipped_summary, flipped = run_grpo(start_point, tmp_path / "flipped", reward_weight=-1.0)
    flipped_score = rate(held_out_outcomes(flipped, start_point))
    assert flipped_score <= before + 0.05, (before, flipped_score)  # measured: 0.280 -> 0.0
    assert after - flipped_score >= 0.5
    # The control's logged reward is the weighted one: minus the exact-match rate, which falls towards -0.
    assert all(h["reward"] <= 0 for h in flipped_summary["history"])
