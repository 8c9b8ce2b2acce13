"""scripts/plot_run.py on a folder that is not a run: one line, exit 2 (the figures themselves are tested in
tests/pipeline/test_plots.py)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_folder_without_metrics_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "scripts/plot_run.py", str(tmp_path / "no-run")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith(f"error: {tmp_path / 'no-run'}: no metrics.jsonl there; give a training run's output_dir")
    assert "Traceback" not in result.stderr
