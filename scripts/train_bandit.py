"""GRPO on a multi-armed Bernoulli bandit with the shared advantage and loss functions.

    python scripts/train_bandit.py --config configs/bandit.yaml
"""

from __future__ import annotations

from pipeline.classic.bandit import BanditConfig, train_bandit
from pipeline.config import parse_or_exit
from pipeline.runtime import setup_logging

CONFIG_TYPES = [BanditConfig]


def main(config: BanditConfig) -> dict:
    summary = train_bandit(config)
    print(f"{'arm':>3} {'success p':>9} {'policy p':>9}")
    for i, (p, q) in enumerate(zip(config.arm_probabilities, summary["arm_probabilities_learned"])):
        print(f"{i:>3} {p:>9.2f} {q:>9.3f}{'  <- best' if i == summary['best_arm'] else ''}")
    return summary


if __name__ == "__main__":
    setup_logging()
    main(*parse_or_exit(CONFIG_TYPES, description=__doc__))
