import math

import pytest
import torch

from pipeline.grpo.advantages import group_advantages, nanstd, normalize_then_sum_advantages


def test_group_normalisation_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 4.0, 6.0, 8.0])
    out = group_advantages(rewards, 4)
    std1 = math.sqrt(0.25 * 4 / 3 * 0.75)  # sample std of [1, 0, 0, 0] = 0.5
    expected1 = [(r - 0.25) / (0.5 + 1e-4) for r in (1, 0, 0, 0)]
    std2 = torch.tensor([2.0, 4.0, 6.0, 8.0]).std().item()
    expected2 = [(r - 5) / (std2 + 1e-4) for r in (2, 4, 6, 8)]
    torch.testing.assert_close(out.advantages, torch.tensor(expected1 + expected2))
    assert std1 == pytest.approx(0.5)
    torch.testing.assert_close(out.group_mean, torch.tensor([0.25, 5.0]))


def test_equal_rewards_give_zero_advantage_and_are_counted():
    out = group_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.5, 1.0]), 2)
    assert out.advantages[[0, 1, 4, 5]].abs().max() == 0
    assert out.advantages[2] > 0 > out.advantages[3]
    assert out.zero_std_groups.tolist() == [True, False, True, False]
    assert out.frac_zero_std == 0.5


def test_group_of_two():
    out = group_advantages(torch.tensor([3.0, 1.0]), 2)
    std = math.sqrt(2.0)
    torch.testing.assert_close(out.advantages, torch.tensor([1 / (std + 1e-4), -1 / (std + 1e-4)]))


def test_nan_rewards_are_left_out_and_get_zero_advantage():
    rewards = torch.tensor([1.0, float("nan"), 0.0, 1.0, float("nan"), float("nan"), float("nan"), 2.0])
    out = group_advantages(rewards, 4)
    first = torch.tensor([1.0, 0.0, 1.0])
    expected = (first - first.mean()) / (first.std() + 1e-4)
    torch.testing.assert_close(out.advantages[[0, 2, 3]], expected)
    assert out.advantages[1] == 0
    assert (out.advantages[4:] == 0).all()  # one scorable sample: no comparison, no signal
    assert not torch.isnan(out.advantages).any()


def test_scale_modes():
    rewards = torch.tensor([0.0, 1.0, 0.0, 3.0])
    none = group_advantages(rewards, 2, "none").advantages
    torch.testing.assert_close(none, torch.tensor([-0.5, 0.5, -1.5, 1.5]))
    batch = group_advantages(rewards, 2, "batch").advantages
    torch.testing.assert_close(batch, none / (rewards.std() + 1e-4))


def test_matches_trl_nanstd():
    from trl.trainer.utils import nanstd as trl_nanstd

    values = torch.tensor([[1.0, float("nan"), 3.0, 7.0], [2.0, 2.0, float("nan"), float("nan")]])
    torch.testing.assert_close(nanstd(values, dim=1), trl_nanstd(values, dim=1))


@pytest.mark.parametrize("rewards, G, message", [
    (torch.ones(4), 1, "group_size must be >= 2"),
    (torch.ones(5), 2, "do not split into groups of 2"),
    (torch.ones(2, 2), 2, "must be 1-D"),
])
def test_bad_input(rewards, G, message):
    with pytest.raises(ValueError, match=message):
        group_advantages(rewards, G)


def test_normalize_then_sum_by_hand():
    """Two groups of 2, two functions (weights 1 and 2). Group 1: f1 = (1, 0) -> (+a, -a) with
    a = 0.5 / (std 0.7071 + 1e-4); f2 = (0, 0) -> 0. Group 2: f1 = (1, 1) -> 0; f2 = (1, 0) -> (+a, -a).
    Weighted sums: (a, -a, 2a, -2a); over the batch: mean 0, std sqrt((1 + 1 + 4 + 4) a^2 / 3)."""
    rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    out = normalize_then_sum_advantages(rewards, torch.tensor([1.0, 2.0]), 2)
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    sums = torch.tensor([a, -a, 2 * a, -2 * a])
    std = math.sqrt(10 * a * a / 3)
    torch.testing.assert_close(out.advantages, sums / (std + 1e-4))
    assert not out.zero_std_groups.any()
    # The plain weighted sum (1, 0 | 3, 1) gives both groups +-0.707 (up to the 1e-4 in the std);
    # here the second function's larger weight makes group 2's advantages twice group 1's.
    plain = group_advantages(rewards @ torch.tensor([1.0, 2.0]), 2).advantages
    torch.testing.assert_close(plain[:2], plain[2:], atol=1e-3, rtol=0)


def test_normalize_then_sum_abstentions_and_errors():
    nan = float("nan")
    rewards = torch.tensor([[1.0, nan], [0.0, nan], [nan, nan], [1.0, 1.0]])
    out = normalize_then_sum_advantages(rewards, torch.tensor([1.0, 1.0]), 2)
    assert out.advantages[2] == 0  # every function abstained: no signal
    assert out.advantages[0] > 0 > out.advantages[1]
    assert not torch.isnan(out.advantages).any()
    with pytest.raises(ValueError, match=r"must be \[N, 3\]"):
        normalize_then_sum_advantages(rewards, torch.ones(3), 2)
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        normalize_then_sum_advantages(rewards, torch.ones(2), 3)
