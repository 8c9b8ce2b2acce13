"""Run a training script over a grid of option values x seeds, then tabulate and plot one metric.

Each cell (one combination of values and one seed) is a separate process running the script with
``--<field> <value> --<seed_field> <seed> --output_dir <sweep>/<cell>``; a cell whose summary file
already exists is not run again, so an interrupted sweep resumes where it stopped. Works for any script
whose config takes command-line overrides and writes a JSON summary and ``metrics.jsonl``.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: a value per grid field, and a seed."""

    values: tuple[tuple[str, str], ...]  # (field, value) in grid order
    seed: int

    @property
    def label(self) -> str:
        """The grid values, e.g. ``group_size=8 epsilon_low=0.2`` (the same for every seed)."""
        return " ".join(f"{field}={value}" for field, value in self.values)

    @property
    def folder(self) -> str:
        return "__".join(f"{field}={value}" for field, value in self.values) + f"__seed={self.seed}"


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """``["group_size=2,4,8", "beta=0,0.04"]`` → ``{"group_size": ["2", "4", "8"], "beta": ["0", "0.04"]}``.

    >>> parse_grid(["group_size=2,4", "loss_type=grpo"])
    {'group_size': ['2', '4'], 'loss_type': ['grpo']}
    """
    grid: dict[str, list[str]] = {}
    for spec in specs:
        field, sep, values = spec.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not field.strip() or not items:
            raise ValueError(f"--grid {spec!r}: write FIELD=V1,V2,... (e.g. group_size=2,4,8)")
        if field.strip() in grid:
            raise ValueError(f"--grid {spec!r}: field {field.strip()!r} is given twice; list all its values once")
        grid[field.strip()] = items
    if not grid:
        raise ValueError("--grid: give at least one FIELD=V1,V2,...")
    return grid


def grid_cells(grid: dict[str, list[str]], seeds: list[int]) -> list[Cell]:
    """Every combination of grid values, for every seed (values vary slowest, seeds fastest)."""
    fields = list(grid)
    return [Cell(tuple(zip(fields, combo)), seed) for combo in itertools.product(*grid.values()) for seed in seeds]


def cell_command(script: str, config: str | None, cell: Cell, out: Path, seed_field: str, extra: list[str]) -> list[str]:
    command = [sys.executable, script] + (["--config", config] if config else [])
    for field, value in cell.values:
        command += [f"--{field}", value]
    return command + [f"--{seed_field}", str(cell.seed), "--output_dir", str(out / cell.folder), *extra]


def run_cells(cells: list[Cell], commands: dict[Cell, list[str]], out: Path, summary_file: str, workers: int,
              env: dict[str, str] | None = None) -> list[Cell]:
    """Run the unfinished cells, ``workers`` at a time; returns the cells that failed (logs in their folder)."""
    pending = [c for c in cells if not (out / c.folder / summary_file).is_file()]
    logger.info("%d of %d cells to run (%d already finished), %d at a time", len(pending), len(cells),
                len(cells) - len(pending), workers)
    # Each cell gets an equal share of the cores, so parallel cells do not oversubscribe them.
    env = dict(env or os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // workers)))
    running: list[tuple[Cell, subprocess.Popen, Any]] = []
    failed: list[Cell] = []
    while pending or running:
        while pending and len(running) < workers:
            cell = pending.pop(0)
            (out / cell.folder).mkdir(parents=True, exist_ok=True)
            log = (out / cell.folder / "sweep.log").open("w")
            running.append((cell, subprocess.Popen(commands[cell], stdout=log, stderr=subprocess.STDOUT, env=env), log))
        time.sleep(0.2)
        for item in [r for r in running if r[1].poll() is not None]:
            cell, process, log = item
            log.close()
            running.remove(item)
            if process.returncode != 0 or not (out / cell.folder / summary_file).is_file():
                failed.append(cell)
                logger.error("cell %s failed (exit %s); see %s", cell.folder, process.returncode,
                             out / cell.folder / "sweep.log")
            else:
                logger.info("cell %s finished", cell.folder)
    return failed


def lookup(record: dict[str, Any], key: str) -> float:
    """A number from a JSON record by a dotted key (``eval_after.accuracy``)."""
    value: Any = record
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(key)
        value = value[part]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise KeyError(key)
    return float(value)


def final_metric(folder: Path, summary_file: str, metric: str) -> float:
    path = folder / summary_file
    try:
        return lookup(json.loads(path.read_text()), metric)
    except KeyError:
        raise ValueError(f"{path}: no number under {metric!r}; choose --metric from its keys") from None


def metric_curve(folder: Path, metric: str, x: str = "step") -> list[tuple[float, float]]:
    """(x, metric) points of every metrics.jsonl row that has both."""
    from pipeline.plots import read_metrics

    rows = read_metrics(folder)
    return [(float(r[x]), float(r[metric])) for r in rows if r.get(x) is not None and r.get(metric) is not None]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value).

    >>> mean_std([1.0, 2.0, 3.0])
    (2.0, 1.0)
    """
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summary_rows(cells: list[Cell], out: Path, summary_file: str, metric: str) -> list[dict[str, Any]]:
    """One row per grid combination: the final metric's mean, std, min and max over its seeds."""
    by_label: dict[str, list[float]] = {}
    for cell in cells:
        if (out / cell.folder / summary_file).is_file():
            by_label.setdefault(cell.label, []).append(final_metric(out / cell.folder, summary_file, metric))
    rows = []
    for label, values in by_label.items():
        mean, std = mean_std(values)
        rows.append({"cell": label, "seeds": len(values), "mean": mean, "std": std, "min": min(values),
                     "max": max(values)})
    return rows


def write_table(rows: list[dict[str, Any]], metric: str, out: Path) -> str:
    """sweep.csv and sweep.md in ``out``; returns the Markdown table."""
    with (out / "sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["cell", "seeds", "mean", "std", "min", "max"])
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"| cell | seeds | {metric} (mean ± std) | min | max |", "|---|---|---|---|---|"]
    lines += [f"| {r['cell']} | {r['seeds']} | {r['mean']:.3f} ± {r['std']:.3f} | {r['min']:.3f} | {r['max']:.3f} |"
              for r in rows]
    table = "\n".join(lines) + "\n"
    (out / "sweep.md").write_text(table)
    return table


def plot_curves(cells: list[Cell], out: Path, curve: str, x: str, title: str) -> Path | None:
    """sweep.png: ``curve`` against ``x`` per grid combination, mean over seeds with a min-max band."""
    from pipeline.plots import METRICS_FILE, pyplot

    series: dict[str, list[dict[float, float]]] = {}
    for cell in cells:
        if (out / cell.folder / METRICS_FILE).is_file():
            series.setdefault(cell.label, []).append(dict(metric_curve(out / cell.folder, curve, x)))
    if not any(points for runs in series.values() for points in runs):
        logger.warning("no %r against %r in any metrics.jsonl: no plot", curve, x)
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, runs in series.items():
        xs = sorted(set.intersection(*(set(points) for points in runs)))  # points every seed has
        if not xs:
            continue
        values = [[points[v] for points in runs] for v in xs]
        ax.plot(xs, [sum(v) / len(v) for v in values], label=f"{label} ({len(runs)} seeds)")
        ax.fill_between(xs, [min(v) for v in values], [max(v) for v in values], alpha=0.15)
    ax.set_xlabel(x)
    ax.set_ylabel(curve)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "sweep.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
