import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_readme_evaluation_on_embedded_model_offline(tmp_path):
    """The README's main job on the real embedded SmolLM2, with the hub unreachable."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--config", "configs/eval_smollm2_cpu.yaml",
         "--limit", "2", "--max_new_tokens", "24", "--output_dir", str(out)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GSM8K test · 2 problems · embedded:SmolLM2-135M-Instruct" in result.stdout
    assert "pass@1 (greedy)" in result.stdout
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in records] == ["18", "3"]
    assert all(r["completion"].strip() for r in records)  # the real model writes text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_problems"] == 2 and 0 < summary["generated_tokens"] <= 48
