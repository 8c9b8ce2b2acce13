"""Process-level set-up shared by the entry scripts: logging, seeding, signals and CPU checks."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

# x86 (avx512_bf16, amx_bf16) and Arm (bf16) flags for bf16 arithmetic in hardware.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


# Deprecation notices that transformers raises on its own and TRL's calls (TrainingArguments' and PEFT's
# gradient_checkpointing): not the user's to act on. Our own warnings are never filtered.
LIBRARY_DEPRECATIONS = (r"`gradient_checkpointing` is deprecated", r"`is_gradient_checkpointing` is deprecated",
                        r"`gradient_checkpointing_(enable|disable)` is deprecated")


def setup_logging(level: str | int = "INFO") -> None:
    """Log to stderr with timestamps; quiet what is not the user's business (see ``quiet_libraries``)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_libraries()


def quiet_libraries() -> None:
    """Quiet the libraries' own chatter on every run: weight-loading and shard-writing bars and dataset-map bars
    (a hub download keeps its progress bar), transformers' internal deprecation notices, and DeepSpeed's "Setting
    accelerator to CPU" on a machine without a GPU (its CPU accelerator is what it would pick). Training
    progress, our warnings and the libraries' other warnings stay."""
    import warnings

    import torch

    for message in LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    others = (getattr(torch, "xpu", None) is not None and torch.xpu.is_available(), torch.backends.mps.is_available())
    if not torch.cuda.is_available() and not any(others):  # what DeepSpeed would pick itself, without its notice
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # read when datasets is imported
    if "datasets" in sys.modules:  # imported already (TRL imports it)
        sys.modules["datasets"].disable_progress_bars()
    import huggingface_hub.utils
    import transformers.utils.logging

    transformers.utils.logging.disable_progress_bar()
    if "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ:  # the user's own choice stands (and is not warned about)
        huggingface_hub.utils.enable_progress_bars()  # transformers turns the hub's off too: downloads keep theirs


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op thread count set to ``count`` inside the block, restored after. A long run at a high
    learning rate amplifies float rounding, and how a sum is split over threads changes its rounding: pinned,
    its result no longer depends on the machine's core count (other CPUs' instruction sets still may)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
    step and checkpoint; a second SIGINT stops the process at once, at the cost of the step under way (and of
    any step since the last checkpoint). Handlers are restored on exit.

    The second SIGINT gets the operating system's default action, not a Python handler: Python runs its
    handlers only between bytecodes, so a KeyboardInterrupt would wait for a backward pass of minutes to end.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        import signal

        self.requested = signal.Signals(signum).name
        logger.warning("%s: stopping after this step, with a checkpoint; Ctrl-C again stops at once (this step "
                       "and any since the last checkpoint are lost)", self.requested)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

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


def end_process_group() -> None:
    """End torch.distributed's process group the same way on every process, once the prepared models are
    freed: a barrier, then ``destroy_process_group`` (which frees the group without holding the GIL). Left to
    the interpreter's exit, the group may be freed by a DDP reducer while the GIL is held, and hang (see
    ``pipeline.grpo.trainer.close``)."""
    import gc

    import torch.distributed as dist

    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def free_memory() -> None:
    """Collect garbage and return cached accelerator memory (after an out-of-memory error)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def resolve_device(name: str = "auto"):
    """The ``torch.device`` for a device option: ``auto`` is the accelerator (CUDA when there is one), else
    the name as torch reads it (``cpu``, ``cuda``, ``cuda:1``).

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_native_bf16(cpuinfo_path: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU does bf16 arithmetic in hardware, from the flags in ``cpuinfo_path``.

    None where that file cannot be read (not Linux): unknown, so nobody is warned.
    """
    try:
        text = Path(cpuinfo_path).read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & NATIVE_BF16_FLAGS)


FLOAT32_SETTING = {"dtype: bfloat16": "dtype: float32", "mixed_precision: bf16": "mixed_precision: no",
                   "bf16: true": "bf16: false"}  # each bf16 setting's float32 counterpart, in the same script


def warn_if_cpu_bf16_is_slow(setting: str, *, on_gpu: bool, cpuinfo_path: str | Path = "/proc/cpuinfo") -> bool:
    """Log a warning when ``setting`` asks for bf16 on a CPU that emulates it, naming that option's float32
    value; returns whether it warned.

    Without native bf16 (e.g. AVX2 only) torch converts every bf16 matmul, and a run measured about
    3x slower than in float32 here; the user asked for bf16, so it is kept, but not silently.
    """
    if on_gpu or cpu_has_native_bf16(cpuinfo_path) is not False:
        return False
    logger.warning("%s runs on a CPU without native bf16 (no avx512_bf16/amx_bf16 flag): expect it to be about "
                   "3x slower than float32 here; use %s unless you need bf16 numerics", setting,
                   FLOAT32_SETTING.get(setting, "float32"))
    return True
