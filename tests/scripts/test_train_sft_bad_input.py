"""Bad input to scripts/train_sft.py: one line naming the file:line, exit 2, before any weights load."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_bad_data_row_is_one_line_before_any_weights_load(tiny_model_dir, tmp_path):
    (tmp_path / "data").mkdir()
    good = '{"question": "What is 1+1?", "answer": "1+1=2\\n#### 2"}\n'
    (tmp_path / "data" / "train.jsonl").write_text(good * 3 + '{"question": "q", "answer": "no marker"}\n')
    result = subprocess.run([sys.executable, "scripts/train_sft.py", "--model_name_or_path", str(tiny_model_dir),
                             "--dataset_name", str(tmp_path / "data"), "--grpo_holdout_size", "1", "--use_cpu", "true",
                             "--bf16", "false", "--output_dir", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {tmp_path / 'data' / 'train.jsonl'}:4:"), last
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stderr
