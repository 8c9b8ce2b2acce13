import importlib.util
import json
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_runs_every_backend_at_toy_size(tmp_path, capsys, monkeypatch):
    """Keeps the benchmark working; it asserts what is reported, never how fast."""
    scratch = tmp_path / "tmp"  # the workers' temporary folders land here (TMPDIR reaches their subprocesses)
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    table = script.main(["--profile", "toy", "--steps", "1", "--warmup", "1", "--rounds", "1", "--out_dir", str(tmp_path)])
    data = json.loads((tmp_path / "benchmark_toy.json").read_text())
    backends = ["ours", "trl", "ours-checkpointed", "trl-defaults"]
    assert [r["backend"] for r in data["results"]] == backends
    for backend in backends:
        row = table[backend]
        assert row["steps_timed"] == 1 and row["median_s"] > 0 and row["peak_memory_mb"] > 0
        split = row["split_s"]
        assert set(split) == {"generate", "score", "reference", "train"} and split["generate"] > 0
        assert sum(split.values()) == pytest.approx(row["median_s"], rel=0.2)
        assert row["trained_tokens_per_s"] > row["generated_tokens_per_s"]  # prompts are trained through too
    assert table["speedup_ours_over_trl"] == table["trl"]["median_s"] / table["ours"]["median_s"]
    assert table["speedup_ours_over_trl_defaults"] == table["trl-defaults"]["median_s"] / table["ours"]["median_s"]
    assert table["speedup_ours_checkpointed_over_trl_defaults"] == (
        table["trl-defaults"]["median_s"] / table["ours-checkpointed"]["median_s"])
    assert "| ours | 1 |" in (tmp_path / "benchmark_toy.md").read_text()
    assert "Ours / TRL steps per second" in capsys.readouterr().out
    left = [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_")]  # torch's own cache
    assert not left  # each worker's model, run folder and result file is removed when it has been read
