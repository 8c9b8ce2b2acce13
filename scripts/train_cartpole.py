"""GRPO on CartPole-v1 with the same advantage and clipped-loss functions that train the LLM.

    python scripts/train_cartpole.py --config configs/cartpole.yaml
    python scripts/train_cartpole.py --iterations 60 --group_size 16

Prints the trained policy's greedy mean return over fixed evaluation seeds next to the hand-crafted
rule's (push toward the falling side), and writes metrics.jsonl, summary.json and plots/.
"""

from __future__ import annotations

from pipeline.classic.cartpole import CartPoleConfig, train_cartpole
from pipeline.config import parse_or_exit
from pipeline.runtime import setup_logging

CONFIG_TYPES = [CartPoleConfig]


def main(config: CartPoleConfig) -> dict:
    summary = train_cartpole(config)
    print(f"CartPole-v1, greedy mean return over {config.num_eval_seeds} evaluation seeds")
    print(f"{'GRPO policy':<22} {summary['greedy_return']:>7.1f}")
    print(f"{'hand-crafted rule':<22} {summary['hand_crafted_return']:>7.1f}")
    return summary


if __name__ == "__main__":
    setup_logging()
    main(*parse_or_exit(CONFIG_TYPES, description=__doc__))
