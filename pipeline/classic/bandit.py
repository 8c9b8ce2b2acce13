"""GRPO on a multi-armed Bernoulli bandit: the smallest case of the same advantage and loss functions.

One "prompt" (the bandit has no state); a group is G arm pulls sampled from the policy's softmax;
each pull's reward is a Bernoulli draw with that arm's success probability.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.config import ValidatedConfig, field_with_help, require
from pipeline.grpo.advantages import group_advantages
from pipeline.grpo.loss import LossNormalizer, grpo_loss
from pipeline.tracking import TRACKERS, RunTracker


@dataclass
class BanditConfig(ValidatedConfig):
    output_dir: str = field_with_help("runs/bandit", "Run folder: metrics.jsonl, summary.json, plots/.")
    arm_probabilities: list[float] = field_with_help([0.2, 0.5, 0.55, 0.7, 0.3], "Success probability of each arm.")
    seed: int = field_with_help(0, "Seed of the pulls and rewards.")
    steps: int = field_with_help(200, "Training steps (one group of pulls each).")
    group_size: int = field_with_help(16, "G: pulls per step.")
    learning_rate: float = field_with_help(0.05, "Adam learning rate on the arm logits.")
    epsilon: float = field_with_help(0.2, "Clipping range.")
    report_to: str = field_with_help("none", "Tracker (wandb works offline with WANDB_MODE=offline).", choices=TRACKERS)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.arm_probabilities) >= 2, "arm_probabilities", "needs at least two arms")
        require(all(0 <= p <= 1 for p in self.arm_probabilities), "arm_probabilities", "each must be in [0, 1]")
        require(self.group_size >= 2, "group_size", f"must be >= 2, got {self.group_size}")
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")


def train_bandit(config: BanditConfig) -> dict:
    """Returns the final arm probabilities; writes metrics.jsonl (and plots) into output_dir."""
    generator = torch.Generator().manual_seed(config.seed)
    arms = torch.tensor(config.arm_probabilities)
    logits = torch.zeros(len(arms), requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=config.learning_rate)
    best = int(arms.argmax())
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for step in range(1, config.steps + 1):
        with torch.no_grad():
            probs = torch.softmax(logits, 0)
            pulls = torch.multinomial(probs, config.group_size, replacement=True, generator=generator)  # [G]
            rewards = torch.bernoulli(arms[pulls], generator=generator)  # [G]
        advantages = group_advantages(rewards, config.group_size).advantages  # [G]
        logps = torch.log_softmax(logits, 0)[pulls].unsqueeze(1)  # [G, 1]: one "token" per completion
        out = grpo_loss(logps, None, None, advantages, torch.ones_like(logps), beta=0.0, epsilon_low=config.epsilon,
                        epsilon_high=config.epsilon, loss_type="grpo", normalizer=LossNormalizer())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        rows.append({"step": step, "return": rewards.mean().item(),
                     "best_arm_probability": torch.softmax(logits, 0)[best].item()})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tracker = RunTracker(config.report_to, run_dir, "grpo-pipeline-bandit", config.to_dict())
    for row in rows:
        tracker.log(row, step=row["step"])
    tracker.close()
    final = torch.softmax(logits.detach(), 0).tolist()
    summary = {"arm_probabilities_learned": final, "best_arm": best, "best_arm_probability": final[best],
               "config": config.to_dict()}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    from pipeline.plots import plot_run

    plot_run(run_dir)
    return summary
