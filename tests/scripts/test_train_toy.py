import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import parse_config
from pipeline.grpo.config import GRPOArguments
from pipeline.toy import toy_grpo_arguments

ROOT = Path(__file__).resolve().parents[2]


def test_the_toy_config_is_the_demos_toy_run():
    """configs/toy_grpo.yaml (for sweeps) and the demo's run_grpo must train the same thing."""
    spec = importlib.util.spec_from_file_location("train_toy", ROOT / "scripts" / "train_toy.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules["train_toy"] = script  # dataclasses look their module up there
    try:
        spec.loader.exec_module(script)
    finally:
        del sys.modules["train_toy"]
    from_yaml, toy = parse_config([GRPOArguments, script.ToyArguments], ["--config", str(ROOT / "configs" / "toy_grpo.yaml")])
    assert from_yaml.to_dict() == toy_grpo_arguments(from_yaml.output_dir).to_dict()
    assert toy.start_dir == "runs/toy/start"


@pytest.mark.slow
def test_train_toy_reuses_its_start_point_and_writes_the_held_out_change(tmp_path):
    common = [sys.executable, "scripts/train_toy.py", "--config", "configs/toy_grpo.yaml", "--start_dir",
              str(tmp_path / "start"), "--sft_steps", "30", "--max_steps", "2"]
    first = subprocess.run([*common, "--output_dir", str(tmp_path / "a")], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    start_weights = (tmp_path / "start" / "sft" / "model.safetensors").stat().st_mtime_ns
    second = subprocess.run([*common, "--output_dir", str(tmp_path / "b"), "--loss_type", "sapo"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (tmp_path / "start" / "sft" / "model.safetensors").stat().st_mtime_ns == start_weights  # reused
    a, b = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("a", "b"))
    assert a["held_out_problems"] == 200 and a["start_exact_match"] == b["start_exact_match"]
    assert a["change"] == pytest.approx(a["held_out_exact_match"] - a["start_exact_match"])
    assert json.loads((tmp_path / "b" / "config.json").read_text())["grpo"]["loss_type"] == "sapo"
    from pipeline.toy import kl_from_start, load_or_build_start_point

    start = load_or_build_start_point(tmp_path / "start", 0.6, 30)
    assert kl_from_start(start.model_dir, start) == pytest.approx(0.0, abs=1e-12)  # the start point against itself
    assert a["kl_from_start"] > 1e-6  # two GRPO steps moved the policy
    steps = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert a["last_10_steps"]["reward"] == pytest.approx((steps[0]["reward"] + steps[1]["reward"]) / 2)
    with pytest.raises(ValueError, match="use another start_dir"):  # another recipe never reuses this start point
        load_or_build_start_point(tmp_path / "start", 0.6, 31)
