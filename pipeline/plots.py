"""PNG figures of a run's metrics.jsonl, and the teaching figures (group advantages, clipping)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from pipeline.grpo.advantages import group_advantages

logger = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"
PLOTS_DIR = "plots"

# (file name, title, metric keys drawn on it). Only panels with data are written.
RUN_PANELS = [
    ("reward.png", "Reward (total and per function)", ["reward", "reward/*"]),
    ("accuracy.png", "Accuracy", ["accuracy"]),
    ("kl.png", "KL to the reference", ["kl"]),
    ("clip_fraction.png", "Clipped fraction of tokens", ["clip_low", "clip_high"]),
    ("completion_length.png", "Completion length (tokens)", ["completion_length"]),
    ("loss.png", "Loss", ["loss"]),
    ("return.png", "Episode return", ["return", "greedy_return", "baseline_return"]),
    ("best_arm_probability.png", "Probability of the best arm", ["best_arm_probability"]),
]
TIME_KEYS = ["time/generate", "time/score", "time/reference", "time/train"]
LABELS = {"baseline_return": "hand-crafted rule (greedy)", "greedy_return": "policy (greedy, eval seeds)",
          "return": "sampled episodes"}
MIN_POINTS_TO_SMOOTH = 10  # a moving average of a few sparse points (periodic evals) only lags


class _FigureFiles:
    """pyplot's ``subplots`` and ``close`` for figures written to files, built on ``matplotlib.figure.Figure``:
    no pyplot, so a notebook or script that plots its own figures keeps its backend and figure list."""

    @staticmethod
    def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols, **kwargs)

    @staticmethod
    def close(fig) -> None:
        """Nothing to release: the figure is not registered with pyplot."""


def pyplot() -> type[_FigureFiles]:
    return _FigureFiles


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file; give a run folder written by a training script")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def smooth(values: list[float], alpha: float = 0.2) -> list[float]:
    """Exponential moving average (the smoothed line drawn over the raw points).

    >>> smooth([0.0, 1.0, 1.0], alpha=0.5)
    [0.0, 0.5, 0.75]
    """
    out, current = [], None
    for v in values:
        current = v if current is None else alpha * v + (1 - alpha) * current
        out.append(current)
    return out


def _series(rows: list[dict], pattern: str) -> dict[str, tuple[list, list]]:
    keys = {k for r in rows for k in r}
    names = sorted(k for k in keys if k.startswith(pattern[:-1])) if pattern.endswith("*") else [pattern]
    out = {}
    for name in names:
        points = [(r["step"], r[name]) for r in rows if isinstance(r.get(name), (int, float))]
        if points:
            out[name] = ([s for s, _ in points], [v for _, v in points])
    return out


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write one PNG per panel with data into RUN_DIR/plots; returns the files."""
    plt = pyplot()
    rows = read_metrics(run_dir)
    out_dir = Path(run_dir) / PLOTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, title, patterns in RUN_PANELS:
        series = {name: xy for pattern in patterns for name, xy in _series(rows, pattern).items()}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for name, (steps, values) in series.items():
            label = LABELS.get(name, name)
            constant = len(set(values)) == 1
            if len(values) >= MIN_POINTS_TO_SMOOTH and not constant:
                line = ax.plot(steps, values, alpha=0.35, linewidth=1)[0]
                ax.plot(steps, smooth(values), color=line.get_color(), linewidth=2, label=f"{label} (smoothed)")
            else:
                ax.plot(steps, values, marker=None if constant else "o", linewidth=1.5, label=label)
        ax.set(title=title, xlabel="step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        written.append(_save(fig, out_dir / file_name, plt))
    times = {k: _series(rows, k).get(k) for k in TIME_KEYS}
    times = {k: v for k, v in times.items() if v}
    if times:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        steps = next(iter(times.values()))[0]
        ax.stackplot(steps, *[v[1] for v in times.values()], labels=[k.split("/")[1] for k in times], alpha=0.8)
        ax.set(title="Step time split (s)", xlabel="step", ylabel="seconds")
        ax.legend(fontsize=8, loc="upper left")
        written.append(_save(fig, out_dir / "step_time.png", plt))
    held_out = held_out_accuracy(run_dir)
    if held_out:
        written.append(_plot_held_out(held_out, out_dir, plt))
    logger.info("wrote %d figures to %s", len(written), out_dir)
    return written


def held_out_accuracy(run_dir: str | Path) -> list[tuple[int, float, float, float, int, str]]:
    """The run's periodic evaluations (``eval/step-N/summary.json``) as (step, greedy strict accuracy, 95% Wilson
    low, high, problems, split), by step."""
    from pipeline.evaluation.stats import wilson_interval

    points = []
    for path in Path(run_dir).glob("eval/step-*/summary.json"):
        summary = json.loads(path.read_text())
        accuracy, n = summary["metrics"]["pass@1 (greedy)"]["strict"], summary["num_problems"]
        low, high = wilson_interval(round(accuracy * n), n)
        points.append((int(path.parent.name.removeprefix("step-")), accuracy, low, high, n, summary["split"]))
    return sorted(points)


def _plot_held_out(points: list[tuple], out_dir: Path, plt) -> Path:
    steps, accuracy, low, high = ([p[i] for p in points] for i in range(4))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.errorbar(steps, accuracy, yerr=[[a - lo for a, lo in zip(accuracy, low)], [hi - a for a, hi in zip(accuracy, high)]],
                marker="o", capsize=3, linewidth=1.5, label="greedy strict accuracy, 95% Wilson interval")
    ax.set(title=f"Held-out accuracy ({points[-1][5]}, {points[-1][4]} problems)", xlabel="step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out_dir / "held_out.png", plt)


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_group_advantages(path: str | Path) -> Path:
    """Teaching figure: advantages of groups with different reward mixes and sizes."""
    plt = pyplot()
    groups = {"G=4, one right": [1, 0, 0, 0], "G=4, three right": [1, 1, 1, 0], "G=8, half right": [1, 0] * 4,
              "G=8, graded": [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0], "G=4, all right": [1, 1, 1, 1]}
    fig, axes = plt.subplots(1, len(groups), figsize=(15, 3.2), sharey=True)
    for ax, (name, rewards) in zip(axes, groups.items()):
        adv = group_advantages(torch.tensor(rewards, dtype=torch.float32), len(rewards)).advantages
        ax.bar(range(len(rewards)), adv.tolist(), color=["tab:green" if a > 0 else "tab:red" for a in adv.tolist()])
        ax.set(title=name, xlabel="sample")
        ax.axhline(0, color="black", linewidth=0.8)
    axes[0].set_ylabel("advantage (r - mean) / std")
    return _save(fig, Path(path), plt)


def plot_clipped_objective(path: str | Path, epsilon_low: float = 0.2, epsilon_high: float = 0.28) -> Path:
    """Teaching figure: the clipped surrogate min(r A, clip(r) A) against the ratio r, for A > 0 and A < 0."""
    plt = pyplot()
    ratio = torch.linspace(0.0, 2.0, 401)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, adv in zip(axes, (1.0, -1.0)):
        clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
        objective = torch.minimum(ratio * adv, clipped * adv)
        ax.plot(ratio, ratio * adv, "--", color="gray", label="r · A (unclipped)")
        ax.plot(ratio, objective, linewidth=2, label="min(r·A, clip(r)·A)")
        for edge in (1 - epsilon_low, 1 + epsilon_high):
            ax.axvline(edge, color="tab:red", alpha=0.4)
        ax.set(title=f"A = {adv:+.0f}", xlabel="ratio r = π/π_old", ylabel="objective")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _save(fig, Path(path), plt)
