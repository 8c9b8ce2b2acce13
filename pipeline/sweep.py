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
        """The grid values, e.g. ``group_size=8 epsilon_low=0.2`` (the same for every seed); a value that carries
        options of its own reads as more fields.

        >>> Cell((("loss_type", "cispo --epsilon_high 5"), ("beta", "0")), seed=0).label
        'loss_type=cispo epsilon_high=5 beta=0'
        """
        return " ".join(_readable(field, value) for field, value in self.values)

    @property
    def folder(self) -> str:
        parts = [f"{field}={value}".replace(" ", "_") for field, value in self.values]
        return "__".join(parts) + f"__seed={self.seed}"


def _readable(field: str, value: str) -> str:
    """``field=value``, with the options a grid value carries (``cispo --epsilon_high 5``) as ``name=value``."""
    head, *options = value.split(" --")
    return " ".join([f"{field}={head}", *(option.strip().replace(" ", "=", 1) for option in options)])


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
    """The cell's command line. ``a+b=v`` sets both fields to ``v``; a value with spaces becomes several
    arguments (a list option, ``reward_weights=1 0``, or further options, ``loss_type=cispo --epsilon_high 5``).

    >>> cell_command("t.py", None, Cell((("epsilon_low+epsilon_high", "0.1"), ("reward_weights", "1 0")), 3),
    ...              Path("o"), "seed", [])[2:]
    ['--epsilon_low', '0.1', '--epsilon_high', '0.1', '--reward_weights', '1', '0', '--seed', '3', '--output_dir', 'o/epsilon_low+epsilon_high=0.1__reward_weights=1_0__seed=3']
    """
    command = [sys.executable, script] + (["--config", config] if config else [])
    for fields, value in cell.values:
        for field in fields.split("+"):
            command += [f"--{field}", *value.split()]
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
    summary = json.loads(path.read_text())
    try:
        return lookup(summary, metric)
    except KeyError:
        raise ValueError(f"--metric {metric}: {path} has no number under it; its numbers: "
                         f"{', '.join(numeric_keys(summary))}") from None


def numeric_keys(tree: Any, prefix: str = "") -> list[str]:
    """The dotted keys of a JSON tree's numbers (what --metric can name).

    >>> numeric_keys({"a": 1, "b": {"c": 2.5, "d": "text"}, "e": [1, 2]})
    ['a', 'b.c']
    """
    if isinstance(tree, dict):
        return [key for name, value in tree.items() for key in numeric_keys(value, f"{prefix}{name}.")]
    is_number = isinstance(tree, (int, float)) and not isinstance(tree, bool)
    return [prefix.rstrip(".")] if is_number and prefix else []


def script_module(script: str | Path):
    """The script loaded as a module (its imports, CONFIG_TYPES, THREADS_PER_RUN; its main is guarded)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("sweep_target", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass defined in the script looks its module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def check_grid_fields(script, grid: dict[str, list[str]]) -> None:
    """Refuse a grid field that the script's config does not have, before any cell runs (a misspelt field
    would otherwise fail in every cell, each with the reason in its own sweep.log). ``script``: its module."""
    import dataclasses
    import difflib

    config_types = getattr(script, "CONFIG_TYPES", None)
    if config_types is None:
        return
    fields = sorted({f.name for config in config_types for f in dataclasses.fields(config)})
    for name in grid:
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see the script's --help"
            raise ValueError(f"--grid {name}: {Path(script.__file__).name} has no option {name!r}; {hint}")


def cells_at_once(script, workers: int, cores: int) -> int:
    """``workers``, or fewer where the script pins its runs' torch thread count (``THREADS_PER_RUN``, so that
    they reproduce exactly): cells that want more threads than there are cores run many times slower
    (OpenMP's threads spin while they wait for each other), so only as many run at once as the cores hold.
    ``script``: its module."""
    threads = getattr(script, "THREADS_PER_RUN", None)
    if threads is None:
        return workers
    fit = max(1, cores // threads)
    if workers > fit:
        logger.warning("%s pins %d torch threads per run, for results that reproduce: %d cell(s) at a time on "
                       "%d cores, not %d", Path(script.__file__).name, threads, fit, cores, workers)
    return min(workers, fit)


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


def summary_rows(cells: list[Cell], out: Path, summary_file: str, metrics: list[str]) -> list[dict[str, Any]]:
    """One row per grid combination: the first metric's mean, std, min and max over its seeds, and the
    mean and std of each further metric (keys ``<metric> mean`` and ``<metric> std``)."""
    by_label: dict[str, list[list[float]]] = {}
    for cell in cells:
        if (out / cell.folder / summary_file).is_file():
            values = [final_metric(out / cell.folder, summary_file, metric) for metric in metrics]
            by_label.setdefault(cell.label, []).append(values)
    rows = []
    for label, runs in by_label.items():
        first = [run[0] for run in runs]
        mean, std = mean_std(first)
        row = {"cell": label, "seeds": len(runs), "mean": mean, "std": std, "min": min(first), "max": max(first)}
        for index, metric in enumerate(metrics[1:], start=1):
            row[f"{metric} mean"], row[f"{metric} std"] = mean_std([run[index] for run in runs])
        rows.append(row)
    return rows


def write_table(rows: list[dict[str, Any]], metrics: list[str], out: Path) -> str:
    """sweep.csv and sweep.md in ``out``; returns the Markdown table."""
    extra = metrics[1:]
    with (out / "sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["cell", "seeds", "mean", "std", "min", "max"]
                                + [f"{m} {s}" for m in extra for s in ("mean", "std")])
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| cell | seeds | " + f"{metrics[0]} (mean ± std) | min | max |" + "".join(f" {m} |" for m in extra),
             "|---|---|---|---|---|" + "---|" * len(extra)]
    for r in rows:
        cells = [r["cell"], str(r["seeds"]), f"{r['mean']:.3f} ± {r['std']:.3f}", f"{r['min']:.3f}", f"{r['max']:.3f}"]
        cells += [f"{r[f'{m} mean']:.4g} ± {r[f'{m} std']:.2g}" for m in extra]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (out / "sweep.md").write_text(table)
    return table


def plot_curves(cells: list[Cell], out: Path, curves: list[str], x: str, title: str) -> Path | None:
    """sweep.png: each of ``curves`` against ``x`` (a panel each) per grid combination, the mean over seeds
    with a min-max band."""
    from pipeline.plots import METRICS_FILE, pyplot

    runs_by_label: dict[str, list[Path]] = {}
    for cell in cells:
        if (out / cell.folder / METRICS_FILE).is_file():
            runs_by_label.setdefault(cell.label, []).append(out / cell.folder)
    series = {curve: {label: [dict(metric_curve(folder, curve, x)) for folder in folders]
                      for label, folders in runs_by_label.items()} for curve in curves}
    if not any(points for by_label in series.values() for runs in by_label.values() for points in runs):
        logger.warning("no %s against %r in any metrics.jsonl: no plot", " or ".join(map(repr, curves)), x)
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(10 if len(curves) == 1 else 7.5 * len(curves), 4.5),
                             squeeze=False)
    for ax, curve in zip(axes[0], curves):
        for label, runs in series[curve].items():
            xs = sorted(set.intersection(*(set(points) for points in runs)))  # points every seed has
            if not xs:
                continue
            values = [[points[v] for points in runs] for v in xs]
            ax.plot(xs, [sum(v) / len(v) for v in values], label=f"{label} ({len(runs)} seeds)")
            ax.fill_between(xs, [min(v) for v in values], [max(v) for v in values], alpha=0.15)
        ax.set_xlabel(x)
        ax.set_ylabel(curve)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, never over them
    fig.suptitle(title)
    fig.tight_layout()
    path = out / "sweep.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
