"""Experiment trackers for the scripts that are not accelerate or TRL runs (CartPole, the bandit).

``report_to: wandb`` logs to Weights & Biases: online with a logged-in account, or with no network at all
under ``WANDB_MODE=offline`` (runs are kept in ``<output_dir>/wandb/`` for a later ``wandb sync``).
``tensorboard`` writes ``<output_dir>/tensorboard/``. The GRPO loop sends the same metrics through
accelerate's trackers, and SFT through TRL's ``report_to``.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

TRACKERS = ("none", "tensorboard", "wandb")


class RunTracker:
    """One run's scalar metrics, sent to the chosen tracker (``none``: nothing, no import)."""

    def __init__(self, report_to: str, output_dir: str | Path, project: str, config: dict[str, Any]) -> None:
        if report_to not in TRACKERS:
            raise ValueError(f"report_to must be one of {', '.join(TRACKERS)}, got {report_to!r}")
        self.report_to = report_to
        self._run: Any = None
        run_dir = Path(output_dir)
        if report_to == "wandb":
            import wandb

            run_dir.mkdir(parents=True, exist_ok=True)
            self._run = wandb.init(project=project, name=run_dir.name, dir=str(run_dir), config=config)
        elif report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._run = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Log the numeric entries of ``metrics`` at ``step`` (strings, lists and None are skipped)."""
        scalars = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, numbers.Real) and not isinstance(v, bool) and k != "step"}
        if self.report_to == "wandb":
            self._run.log(scalars, step=step)
        elif self.report_to == "tensorboard":
            for key, value in scalars.items():
                self._run.add_scalar(key, value, step)

    def close(self) -> None:
        if self.report_to == "wandb":
            self._run.finish()
        elif self.report_to == "tensorboard":
            self._run.close()
