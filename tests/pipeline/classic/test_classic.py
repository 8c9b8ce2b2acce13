import json

import pytest

from pipeline.classic.bandit import BanditConfig, train_bandit
from pipeline.classic.cartpole import CartPoleConfig, mean_greedy_return, train_cartpole
from pipeline.config import ConfigError


@pytest.mark.slow
def test_cartpole_grpo_beats_the_hand_crafted_rule(tmp_path):
    summary = train_cartpole(CartPoleConfig(output_dir=str(tmp_path)))  # 40 iterations, ~1 min here
    assert summary["greedy_return"] >= 475, summary["greedy_return"]  # measured: 500.0 on all 20 seeds
    assert summary["greedy_return"] > summary["hand_crafted_return"]  # the rule: 46.5
    assert summary["hand_crafted_return"] == pytest.approx(mean_greedy_return(None, CartPoleConfig().eval_seeds))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and rows[-1]["return"] > rows[0]["return"]
    assert (tmp_path / "plots" / "return.png").is_file()


def test_bandit_finds_the_best_arm(tmp_path):
    summary = train_bandit(BanditConfig(output_dir=str(tmp_path)))
    probs = summary["arm_probabilities_learned"]
    assert summary["best_arm"] == 3 and probs[3] > 0.9  # measured: 0.983
    assert (tmp_path / "plots" / "best_arm_probability.png").is_file()


def test_hand_crafted_rule_is_deterministic():
    seeds = CartPoleConfig().eval_seeds
    assert mean_greedy_return(None, seeds) == mean_greedy_return(None, seeds) < 100


@pytest.mark.parametrize("kwargs, option", [({"group_size": 1}, "group_size"), ({"loss_type": "ppo"}, "loss_type"),
                                            ({"iterations": 0}, "iterations")])
def test_bad_cartpole_options(kwargs, option):
    with pytest.raises(ConfigError, match=f"--{option}"):
        CartPoleConfig(**kwargs)


def test_bad_bandit_options():
    with pytest.raises(ConfigError, match="--arm_probabilities"):
        BanditConfig(arm_probabilities=[0.5])
