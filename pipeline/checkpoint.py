"""Atomic, resumable checkpoints for our own training loops.

A checkpoint is written into a temporary folder and renamed into place, then ``latest`` is
replaced atomically; a crash mid-write leaves the previous checkpoint whole and ``latest`` on it.
Only safetensors and ``torch.load(weights_only=True)`` are read back: no pickle from outside the run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "trainer_state.json"
MODEL_DIR = "model"


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


def _write_model(model, target: Path, model_state: dict[str, torch.Tensor] | None) -> None:
    # A PeftModel saves only its adapter; a plain model saves all weights. Both as safetensors.
    model.save_pretrained(target, state_dict=model_state, safe_serialization=True)


def save_checkpoint(
    run_dir: str | Path, step: int, model, optimizer, scheduler, state: dict[str, Any], keep: int,
    model_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and keep only the newest ``keep``; returns its folder.

    ``model_state``: the model's weights when this process holds only a shard of them (gathered first).
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    try:
        _write_model(model, staging / MODEL_DIR, model_state)
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        (staging / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _point_latest(root, final.name)
    _prune(root, keep)
    return final


def _point_latest(root: Path, name: str) -> None:
    tmp = root / f".{LATEST}.tmp"
    tmp.write_text(name + "\n")
    os.replace(tmp, root / LATEST)


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(run_dir: str | Path, which: str) -> Path | None:
    """``latest`` → the checkpoint ``latest`` points at (None if the run has none); else a folder path."""
    if which != LATEST:
        path = Path(which)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"--resume_from_checkpoint {which}: not a checkpoint folder (no {STATE_FILE})")
        return path
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{pointer} points at {path}, which is not a complete checkpoint")
    return path


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore model weights, optimizer and scheduler in place; returns the saved trainer state."""
    from safetensors.torch import load_file

    model_dir = path / MODEL_DIR
    adapter_file = model_dir / "adapter_model.safetensors"
    if adapter_file.is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(adapter_file))
    else:
        from transformers.modeling_utils import load_sharded_checkpoint

        if (model_dir / "model.safetensors").is_file():
            model.load_state_dict(load_file(model_dir / "model.safetensors"), strict=False)
        else:
            load_sharded_checkpoint(model, model_dir, prefer_safe=True)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    return json.loads((path / STATE_FILE).read_text())
