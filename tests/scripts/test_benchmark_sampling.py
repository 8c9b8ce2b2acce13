import importlib.util
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sampling_benchmark_times_every_variant_at_toy_size(tmp_path, monkeypatch):
    """Keeps the ablation working; it asserts what is reported, never how fast."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    spec = importlib.util.spec_from_file_location("benchmark_sampling", ROOT / "scripts" / "benchmark_sampling.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    summary = script.main(["--model", "tiny", "--new_tokens", "4", "--repeats", "1", "--out_dir", str(tmp_path)])
    assert list(summary) == list(script.VARIANTS)
    for row in summary.values():
        assert row["median_s"] > 0 and row["tokens_per_s"] == 2 * 4 * 4 / row["median_s"]
    data = json.loads((tmp_path / "sampling_tiny.json").read_text())
    assert all(len(times) == 1 for times in data["times"].values())
    assert data["weight_read_floor"]["weight_bytes"] > 0 and data["weight_read_floor"]["seconds_per_step"] > 0
    assert "| merged-lora |" in (tmp_path / "sampling_tiny.md").read_text()
    left = [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_")]  # torch's own cache
    assert not left  # the tiny model's folder is removed once it has loaded
