import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("crosscheck_trl", ROOT / "scripts" / "crosscheck_trl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_crosscheck_prints_both_tables_and_passes(tmp_path, capsys):
    status = load_script().main(["--steps", "1", "--work_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0
    assert out.count(" yes") == 121 and " NO" not in out  # 48 loss types + 68 variants + 5 adaptive entropy updates
    assert "Run level: 1 steps each" in out and "TRL GRPOTrainer" in out
    assert "unit-level parity: PASSED" in out
    assert (tmp_path / "trl").is_dir() and (tmp_path / "ours" / "metrics.jsonl").is_file()
