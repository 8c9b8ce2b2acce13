"""Process-level set-up shared by the entry scripts: logging and seeding."""

from __future__ import annotations

import logging
import os
import random


def setup_logging(level: str | int = "INFO") -> None:
    """Log to stderr with timestamps; quiet the chattiest third-party loggers."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, so a CPU run can be reproduced exactly."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
