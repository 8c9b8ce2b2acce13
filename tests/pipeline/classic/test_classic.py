import json

import pytest
import torch

from pipeline.classic.bandit import BanditConfig, train_bandit
from pipeline.classic.cartpole import CartPoleConfig, mean_greedy_return, train_cartpole
from pipeline.config import ConfigError


@pytest.mark.slow
def test_cartpole_grpo_beats_the_hand_crafted_rule(tmp_path):
    # 20 iterations (the config's 40 take twice as long): measured 500.0 at 20, as at 40 on all 20 seeds
    summary = train_cartpole(CartPoleConfig(output_dir=str(tmp_path), iterations=20))
    assert summary["greedy_return"] >= 475, summary["greedy_return"]
    assert summary["greedy_return"] > summary["hand_crafted_return"]  # the rule: 46.5
    assert summary["hand_crafted_return"] == pytest.approx(mean_greedy_return(None, CartPoleConfig().eval_seeds))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and rows[-1]["return"] > rows[0]["return"]
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


def test_gae_by_hand():
    """Two episodes of 3 and 1 steps, reward 1 per step, gamma 0.5, lambda 0.5, V = 1 everywhere:
    deltas (3-step episode) 1 + 0.5 - 1 = 0.5, 0.5, 1 + 0 - 1 = 0; A_2 = 0, A_1 = 0.5, A_0 = 0.5 + 0.25 * 0.5.
    The 1-step episode: delta 0, A 0; padding stays 0."""
    from pipeline.classic.ppo import gae_advantages

    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    advantages, targets = gae_advantages(mask, torch.ones(2, 3), mask, gamma=0.5, gae_lambda=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[0.625, 0.5, 0.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(targets, torch.tensor([[1.625, 1.5, 1.0], [1.0, 0.0, 0.0]]))


def test_ppo_runs_on_the_shared_loss_and_its_critic_learns(tmp_path, capsys):
    """A short PPO run: same episodes per iteration as GRPO, per-step advantages through grpo_loss, and a
    critic whose error on the first iteration's episodes falls."""
    from pipeline.classic.cartpole import iteration_advantages, make_policy
    from pipeline.classic.ppo import make_value_function, value_loss

    config = CartPoleConfig(output_dir=str(tmp_path / "ppo"), algorithm="ppo", iterations=3, groups_per_iteration=2,
                            group_size=4, num_eval_seeds=2)
    policy, critic = make_policy(16, 0), make_value_function(16, 0)
    import random

    obs, actions, mask, returns, advantages, targets = iteration_advantages(
        config, policy, critic, random.Random(0), torch.Generator().manual_seed(0))
    assert obs.shape[0] == 8 and advantages.shape == mask.shape  # 8 episodes, one advantage per step
    assert (advantages[mask == 0] == 0).all()
    assert advantages[mask.bool()].mean().abs() < 1e-5  # normalised over the real steps
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    first = value_loss(critic, obs, targets, mask).item()
    for _ in range(50):
        optimizer.zero_grad()
        value_loss(critic, obs, targets, mask).backward()
        optimizer.step()
    assert value_loss(critic, obs, targets, mask).item() < 0.5 * first

    summary = train_cartpole(config)
    rows = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["episodes"] for r in rows] == [8, 16, 24]
    shown = capsys.readouterr().err  # a progress bar, not minutes of silence
    assert "CartPole: 100%" in shown and "3/3" in shown and f"return={rows[-1]['return']:.1f}" in shown
    assert summary["config"]["algorithm"] == "ppo"


def test_render_writes_a_side_by_side_gif(tmp_path):
    import importlib.util
    from pathlib import Path

    from PIL import Image

    config = CartPoleConfig(output_dir=str(tmp_path / "run"), iterations=1, groups_per_iteration=1, group_size=2,
                            num_eval_seeds=1, hidden_size=8)
    train_cartpole(config)
    spec = importlib.util.spec_from_file_location(
        "render_cartpole", Path(__file__).resolve().parents[3] / "scripts" / "render_cartpole.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    steps = script.main([str(tmp_path / "run"), "--output", str(tmp_path / "cp.gif"), "--seed", "10000",
                         "--frame_step", "1"])
    rule_steps = steps["hand-crafted rule: push toward the lean"]
    assert rule_steps == mean_greedy_return(None, [10000])  # the rule's episode, as the evaluation counts it
    with Image.open(tmp_path / "cp.gif") as gif:
        assert gif.size == (720, 220)
        assert gif.n_frames == max(steps.values()) + 1  # every step, the start state included
    committed = Path(__file__).resolve().parents[3] / "docs" / "figures" / "cartpole.gif"
    before = committed.stat().st_mtime_ns if committed.exists() else None
    script.main([str(tmp_path / "run"), "--frame_step", "50"])  # no --output: into the run folder
    assert (tmp_path / "run" / "cartpole.gif").is_file()
    assert (committed.stat().st_mtime_ns if committed.exists() else None) == before  # the docs' figure untouched
