"""Processes that tests start (launchers and their ranks) run in a process group of their own, and the
whole group is ended when the test is done with it: a rank that hangs never outlives its test."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def start(command: list[str], *, cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    """``command`` in a new session (its own process group), output to ``log``: a file, not a pipe, since
    a full pipe would block a rank inside a collective and hang every rank."""
    with log.open("w") as handle:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)


def end_group(process: subprocess.Popen) -> None:
    """Kill every process left in ``process``'s group (the launcher, its ranks, their helpers)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def wait_all(processes: list[subprocess.Popen], timeout: float) -> list[int | None]:
    """Exit codes (None for a process still running at ``timeout`` seconds); every group is ended after."""
    deadline = time.monotonic() + timeout
    codes: list[int | None] = []
    try:
        for process in processes:
            try:
                codes.append(process.wait(timeout=max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(None)
    finally:
        for process in processes:
            end_group(process)
    return codes


def run(command: list[str], *, cwd: Path, env: dict, log: Path, timeout: float) -> tuple[int | None, str]:
    """Run ``command`` in its own process group; (exit code or None on timeout, its output)."""
    (code,) = wait_all([start(command, cwd=cwd, env=env, log=log)], timeout)
    return code, log.read_text()
