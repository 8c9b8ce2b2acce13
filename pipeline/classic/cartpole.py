"""GRPO (or PPO, for comparison) on CartPole-v1 with pipeline.grpo's own advantage and clipped-loss functions.

A group is G episodes from one start state (the same reset seed). The reward of an episode is its
return (the number of steps the pole stayed up), and every action of the episode gets the episode's
group-relative advantage: the outcome-reward form GRPO uses for language models, where a whole
completion gets one score. (Per-step discounted returns would credit actions more precisely, but
then the advantages would no longer be GRPO's; the point here is to run the very same functions.)
``algorithm: ppo`` trains the same policy on the same number of episodes per iteration, each from its own
start state, with per-step GAE advantages from a learned critic (``pipeline.classic.ppo``) in the same loss.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline.classic.ppo import gae_advantages, make_value_function, normalised, value_loss
from pipeline.config import ValidatedConfig, field_with_help, require
from pipeline.grpo.advantages import group_advantages
from pipeline.grpo.loss import LOSS_TYPES, LossNormalizer, grpo_loss
from pipeline.tracking import TRACKERS, RunTracker

MAX_EPISODE_STEPS = 500
ALGORITHMS = ("grpo", "ppo")


@dataclass
class CartPoleConfig(ValidatedConfig):
    output_dir: str = field_with_help("runs/cartpole", "Run folder: metrics.jsonl, summary.json, policy.pt, plots/.")
    algorithm: str = field_with_help(
        "grpo", "grpo: group-relative advantages over G episodes per start state; ppo: GAE advantages from a "
        "learned critic, as many episodes per iteration, each from its own start state.", choices=ALGORITHMS)
    seed: int = field_with_help(0, "Seed of the policy's initialisation, the start states and the sampling.")
    iterations: int = field_with_help(40, "Training iterations (each: rollout, then num_updates clipped updates).")
    groups_per_iteration: int = field_with_help(4, "Start states (groups) per iteration.")
    group_size: int = field_with_help(8, "G: episodes per start state.")
    num_updates: int = field_with_help(4, "mu: clipped updates on each batch of episodes.")
    learning_rate: float = field_with_help(1e-2, "Adam learning rate.")
    hidden_size: int = field_with_help(64, "Width of the policy MLP.")
    epsilon_low: float = field_with_help(0.2, "Ratio clipped below at 1 - epsilon_low.")
    epsilon_high: float = field_with_help(0.2, "Ratio clipped above at 1 + epsilon_high.")
    loss_type: str = field_with_help("grpo", "Loss aggregation over an episode's steps.", choices=LOSS_TYPES)
    gamma: float = field_with_help(0.99, "(ppo) Discount of the GAE advantages.")
    gae_lambda: float = field_with_help(0.95, "(ppo) GAE's lambda.")
    value_learning_rate: float = field_with_help(1e-2, "(ppo) Adam learning rate of the critic.")
    eval_seed_start: int = field_with_help(10_000, "First of the fixed evaluation seeds.")
    num_eval_seeds: int = field_with_help(20, "Evaluation episodes (seeds eval_seed_start, +1, ...).")
    report_to: str = field_with_help("none", "Tracker (wandb works offline with WANDB_MODE=offline).", choices=TRACKERS)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("iterations", "groups_per_iteration", "num_updates", "hidden_size", "num_eval_seeds"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(self.group_size >= 2, "group_size", f"must be >= 2, got {self.group_size}")

    @property
    def eval_seeds(self) -> list[int]:
        return list(range(self.eval_seed_start, self.eval_seed_start + self.num_eval_seeds))


def make_policy(hidden_size: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 2))


def hand_crafted_action(observation) -> int:
    """The classic rule: push toward the side the pole is falling to."""
    return 1 if observation[2] > 0 else 0


def make_env():
    import gymnasium as gym

    return gym.make("CartPole-v1", max_episode_steps=MAX_EPISODE_STEPS)


@torch.no_grad()
def rollout(policy: nn.Module, start_seeds: list[int], group_size: int, generator: torch.Generator):
    """G sampled episodes per start seed, run in lockstep. Returns padded tensors and returns.

    observations [N, T, 4], actions [N, T], mask [N, T], returns [N]  (N = len(start_seeds) * G)
    """
    envs = [make_env() for _ in range(len(start_seeds) * group_size)]
    obs = [env.reset(seed=start_seeds[i // group_size])[0] for i, env in enumerate(envs)]  # a group shares its start
    alive = [True] * len(envs)
    observations, actions, masks = [], [], []
    returns = torch.zeros(len(envs))
    while any(alive):
        state = torch.from_numpy(np.stack(obs)).float()  # [N, 4]
        probs = torch.softmax(policy(state), dim=-1)  # [N, 2]
        action = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # [N]
        observations.append(state)
        actions.append(action)
        masks.append(torch.tensor(alive, dtype=torch.float32))
        for i, env in enumerate(envs):
            if not alive[i]:
                continue
            obs[i], reward, terminated, truncated, _ = env.step(int(action[i]))
            returns[i] += reward
            alive[i] = not (terminated or truncated)
    return torch.stack(observations, 1), torch.stack(actions, 1), torch.stack(masks, 1), returns


def action_logps(policy: nn.Module, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    logits = policy(observations)  # [N, T, 2]
    return torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # [N, T]


def episode_states(policy: nn.Module | None, seed: int) -> list[list[float]]:
    """Every state ``[x, x_dot, theta, theta_dot]`` of one deterministic episode: argmax of the policy, or
    the hand-crafted rule if ``policy`` is None."""
    env = make_env()
    obs, _ = env.reset(seed=seed)
    states, done = [obs.tolist()], False
    while not done:
        if policy is None:
            action = hand_crafted_action(obs)
        else:
            with torch.no_grad():
                action = int(policy(torch.tensor(obs, dtype=torch.float32)).argmax())
        obs, _, terminated, truncated, _ = env.step(action)
        states.append(obs.tolist())
        done = terminated or truncated
    return states


def greedy_return(policy: nn.Module | None, seed: int) -> float:
    """Return of one deterministic episode (CartPole pays 1 per step survived)."""
    return float(len(episode_states(policy, seed)) - 1)


def mean_greedy_return(policy: nn.Module | None, seeds) -> float:
    return sum(greedy_return(policy, s) for s in seeds) / len(seeds)


def iteration_advantages(config: CartPoleConfig, policy: nn.Module, critic: nn.Module | None,
                         seed_stream: random.Random, generator: torch.Generator):
    """One iteration's episodes and advantages: GRPO's per episode [N], or PPO's per step [N, T] (with the
    critic's targets). Both sample groups_per_iteration x group_size episodes."""
    episodes = config.groups_per_iteration * config.group_size
    if config.algorithm == "grpo":
        starts = [seed_stream.randrange(1_000_000) for _ in range(config.groups_per_iteration)]
        observations, actions, mask, returns = rollout(policy, starts, config.group_size, generator)
        return observations, actions, mask, returns, group_advantages(returns, config.group_size).advantages, None
    starts = [seed_stream.randrange(1_000_000) for _ in range(episodes)]
    observations, actions, mask, returns = rollout(policy, starts, 1, generator)
    with torch.no_grad():
        values = critic(observations).squeeze(-1)  # [N, T]
    advantages, targets = gae_advantages(mask, values, mask, config.gamma, config.gae_lambda)  # reward 1 per step
    return observations, actions, mask, returns, normalised(advantages, mask), targets


def train_cartpole(config: CartPoleConfig) -> dict:
    """Train with group-relative advantages and the clipped surrogate; writes metrics.jsonl and plots."""
    policy = make_policy(config.hidden_size, config.seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    critic = make_value_function(config.hidden_size, config.seed) if config.algorithm == "ppo" else None
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=config.value_learning_rate) if critic else None
    generator = torch.Generator().manual_seed(config.seed)
    seed_stream = random.Random(config.seed)
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("")
    baseline = mean_greedy_return(None, config.eval_seeds)
    tracker = RunTracker(config.report_to, run_dir, "grpo-pipeline-cartpole", config.to_dict())
    history = []
    progress = tqdm(range(1, config.iterations + 1), desc="CartPole", unit="iteration")
    for iteration in progress:
        started = time.perf_counter()
        observations, actions, mask, returns, advantages, targets = iteration_advantages(
            config, policy, critic, seed_stream, generator)  # advantages: [N] (grpo) or [N, T] (ppo)
        with torch.no_grad():
            old = action_logps(policy, observations, actions)  # [N, T]
        for _ in range(config.num_updates):
            logps = action_logps(policy, observations, actions)
            out = grpo_loss(logps, old, None, advantages, mask, beta=0.0, epsilon_low=config.epsilon_low,
                            epsilon_high=config.epsilon_high, loss_type=config.loss_type,
                            normalizer=LossNormalizer(1, mask.sum().item(), MAX_EPISODE_STEPS))
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            if critic is not None:
                critic_optimizer.zero_grad()
                value_loss(critic, observations, targets, mask).backward()
                critic_optimizer.step()
        row = {"step": iteration, "episodes": iteration * config.groups_per_iteration * config.group_size,
               "return": returns.mean().item(), "baseline_return": baseline,
               "loss": out.loss.item(), "clip_low": out.clip_low.item(), "clip_high": out.clip_high.item(),
               "time/train": time.perf_counter() - started}
        if iteration % 10 == 0 or iteration == config.iterations:
            row["greedy_return"] = mean_greedy_return(policy, config.eval_seeds)
        history.append(row)
        progress.set_postfix({"return": f"{row['return']:.1f}"})
        with (run_dir / "metrics.jsonl").open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        tracker.log(row, step=iteration)
    final = mean_greedy_return(policy, config.eval_seeds)
    tracker.log({"final_greedy_return": final}, step=config.iterations)
    tracker.close()
    torch.save(policy.state_dict(), run_dir / "policy.pt")
    summary = {"greedy_return": final, "hand_crafted_return": baseline, "config": config.to_dict(), "history": history}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    from pipeline.plots import plot_run

    plot_run(run_dir)
    return summary
