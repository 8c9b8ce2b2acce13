"""Draw a run's figures from its metrics.jsonl into RUN_DIR/plots (PNG).

    python scripts/plot_run.py runs/grpo_smollm2_cpu
    python scripts/plot_run.py --teaching docs/figures     # group advantages and the clipped objective
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.plots import plot_clipped_objective, plot_group_advantages, plot_run


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("run_dir", nargs="?", type=Path, help="Run folder holding metrics.jsonl.")
    parser.add_argument("--teaching", type=Path, default=None, help="Also write the teaching figures into this folder.")
    args = parser.parse_args(argv)
    if args.run_dir is None and args.teaching is None:
        parser.error("give a RUN_DIR, or --teaching FOLDER")
    if args.run_dir is not None and not (args.run_dir / "metrics.jsonl").is_file():
        parser.error(f"{args.run_dir}: no metrics.jsonl there; give a training run's output_dir")
    written = plot_run(args.run_dir) if args.run_dir else []
    if args.teaching:
        args.teaching.mkdir(parents=True, exist_ok=True)
        written += [plot_group_advantages(args.teaching / "group_advantages.png"),
                    plot_clipped_objective(args.teaching / "clipped_objective.png")]
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
