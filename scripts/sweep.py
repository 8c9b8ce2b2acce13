"""Run a training config over a grid of option values x seeds; table and plot of one metric.

    python scripts/sweep.py scripts/train_cartpole.py --config configs/cartpole.yaml \
        --grid group_size=2,4,8,16 --seeds 0 1 2 3 4 --metric greedy_return --curve return \
        --output_dir runs/sweeps/cartpole_group_size
    python scripts/sweep.py scripts/train_bandit.py --config configs/bandit.yaml --grid epsilon=0.1,0.2,0.3 \
        --seeds 0 1 2 --metric best_arm_probability --curve best_arm_probability

Cells run as separate processes, --workers at a time (default: the core count); a finished cell (its
summary file exists) is skipped, so rerunning the same command resumes. Writes sweep.csv, sweep.md
(final metric: mean ± std over seeds, min, max) and sweep.png (the curve per grid value, mean over
seeds with a min-max band) into --output_dir. Options after `--` go to every cell unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pipeline.runtime import setup_logging
from pipeline.sweep import (
    cell_command,
    cells_at_once,
    check_grid_fields,
    grid_cells,
    parse_grid,
    plot_curves,
    run_cells,
    script_module,
    summary_rows,
    write_table,
)

logger = logging.getLogger("sweep")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("script", help="Training script whose config options the grid sets (e.g. scripts/train_cartpole.py).")
    parser.add_argument("--config", help="YAML config every cell starts from (passed as --config).")
    parser.add_argument("--grid", nargs="+", required=True, metavar="FIELD=V1,V2",
                        help="Config fields and the values to try; several fields give their cartesian product. "
                             "A+B=V1,V2 sets both A and B to each value; a value with spaces becomes several "
                             "arguments (\"reward_weights=1 0,0 1\").")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="Seeds of every grid cell.")
    parser.add_argument("--seed_field", default="seed", help="The script's seed option.")
    parser.add_argument("--metric", nargs="+", required=True,
                        help="Final metrics: numbers in each run's summary file, by dotted key (e.g. greedy_return); "
                             "the first gets mean ± std, min and max, the others mean ± std.")
    parser.add_argument("--summary_file", default="summary.json", help="Each run's JSON summary (marks it finished).")
    parser.add_argument("--curve", nargs="+", help="metrics.jsonl keys to plot per grid value, a panel each "
                                                   "(default: no plot).")
    parser.add_argument("--curve_x", default="step", help="metrics.jsonl key on the plot's x axis.")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Cells run at once.")
    parser.add_argument("--output_dir", type=Path, default=Path("runs/sweep"), help="One folder per cell, and the results.")
    parser.epilog = "Options after a lone `--` are passed to every cell unchanged."
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []  # the cells' own options
    args = build_parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.workers < 1:
        build_parser().error(f"--workers must be >= 1, got {args.workers}")
    if not Path(args.script).is_file():
        build_parser().error(f"script {args.script!r} not found")
    try:
        grid = parse_grid(args.grid)
        target = script_module(args.script)  # loaded once: its options and its thread pin
        check_grid_fields(target, grid)
    except ValueError as exc:
        build_parser().error(str(exc))
    workers = cells_at_once(target, args.workers, os.cpu_count() or 1)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    cells = grid_cells(grid, args.seeds)
    commands = {cell: cell_command(args.script, args.config, cell, out, args.seed_field, extra) for cell in cells}
    (out / "sweep.json").write_text(json.dumps({"argv": sys.argv, "grid": grid, "seeds": args.seeds}, indent=2))
    failed = run_cells(cells, commands, out, args.summary_file, workers)
    try:
        rows = summary_rows(cells, out, args.summary_file, args.metric)
    except ValueError as exc:  # an unknown --metric: the keys the runs wrote
        build_parser().error(str(exc))
    print(write_table(rows, args.metric, out), end="")
    if args.curve:
        plot_curves(cells, out, args.curve, args.curve_x, f"{Path(args.script).stem}: by {', '.join(grid)}")
    if failed:
        logger.error("%d cells failed: %s", len(failed), ", ".join(c.folder for c in failed))
        sys.exit(1)
    return rows


if __name__ == "__main__":
    setup_logging()
    main()
