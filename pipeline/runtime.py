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


class GracefulInterrupt:
    """Within ``with``: the first SIGINT/SIGTERM only sets ``requested`` so the loop can finish its
    step and checkpoint; a second SIGINT interrupts at once. Handlers are restored on exit."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        import signal

        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "GracefulInterrupt":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():  # signals can only be set there
            for name in self.SIGNALS:
                signum = getattr(signal, name)
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False
