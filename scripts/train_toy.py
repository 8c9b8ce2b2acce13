"""GRPO on the toy addition task with any GRPO option, scored on 200 held-out problems.

    python scripts/train_toy.py --config configs/toy_grpo.yaml
    python scripts/train_toy.py --config configs/toy_grpo.yaml --importance_sampling_level sequence --output_dir runs/toy/gspo

The start point (a 0.5M-parameter char-level Llama SFT'd on sums labelled ``sum + 1`` 60% of the time) is
built once into --start_dir and reused. Writes summary.json into --output_dir: held-out greedy exact match
of the start point and of the trained policy, the paired change with its 95% interval, the trained policy's
token KL from the start point on its held-out answers (``kl_from_start``), and each training
metric's mean over the last 10 steps (``last_10_steps.kl``, ``last_10_steps.reward/exact_match``, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ValidatedConfig, field_with_help, parse_or_exit, require
from pipeline.grpo.config import GRPOArguments
from pipeline.runtime import setup_logging
from pipeline.evaluation.stats import format_change, format_rate, paired_difference
from pipeline.toy import (TOY_THREADS, held_out_outcomes, kl_from_start, last_steps_means, load_or_build_start_point,
                          train_toy)


@dataclass
class ToyArguments(ValidatedConfig):
    start_dir: str = field_with_help("runs/toy/start", "Folder of the SFT start point: built there once, then reused.")
    wrong_fraction: float = field_with_help(0.6, "Fraction of SFT labels that say sum + 1.")
    sft_steps: int = field_with_help(1500, "Full fine-tuning steps of the start point.")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 <= self.wrong_fraction <= 1, "wrong_fraction", f"must be in [0, 1], got {self.wrong_fraction}")
        require(self.sft_steps >= 1, "sft_steps", f"must be >= 1, got {self.sft_steps}")


CONFIG_TYPES = [GRPOArguments, ToyArguments]
THREADS_PER_RUN = TOY_THREADS  # pinned, for runs that reproduce: scripts/sweep.py runs only as many as the cores hold


def main(args: GRPOArguments, toy: ToyArguments) -> dict:
    start = load_or_build_start_point(Path(toy.start_dir), toy.wrong_fraction, toy.sft_steps)
    cached = Path(toy.start_dir) / "held_out_outcomes.json"
    if not cached.is_file():
        cached.write_text(json.dumps(held_out_outcomes(start.model_dir, start)))
    before = json.loads(cached.read_text())
    run, trained = train_toy(start, args)
    after = held_out_outcomes(trained, start)
    change, low, high = paired_difference(before, after)
    summary = {"start_exact_match": sum(before) / len(before), "held_out_exact_match": sum(after) / len(after),
               "change": change, "change_interval": [low, high], "held_out_problems": len(after),
               "kl_from_start": kl_from_start(trained, start), "last_10_steps": last_steps_means(run["history"], 10)}
    (Path(args.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"toy addition, {len(after)} held-out problems, greedy exact match")
    print(f"{'start point':<14}{format_rate(before):>26}\n{'after GRPO':<14}{format_rate(after):>26}")
    print(f"{'change':<14}{format_change(before, after):>26}")
    return summary


if __name__ == "__main__":
    setup_logging()
    main(*parse_or_exit(CONFIG_TYPES, description=__doc__))
