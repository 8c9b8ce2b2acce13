import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def result(strict, flexible, rate, n=16):
    return {"num_problems": n, "marked_answer_rate": rate,
            "metrics": {"pass@1 (greedy)": {"strict": strict, "flexible": flexible}}}


def test_report_lists_base_sft_and_grpo(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("report", ROOT / "scripts" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    (tmp_path / "sft").mkdir()
    (tmp_path / "grpo").mkdir()
    (tmp_path / "sft" / "sft_summary.json").write_text(json.dumps({"before": result(0, 0.0625, 0), "after": result(0.125, 0.125, 0.75)}))
    (tmp_path / "grpo" / "grpo_summary.json").write_text(json.dumps({"eval_after": result(0.1875, 0.25, 0.875)}))
    text = report.main([str(tmp_path / "sft"), str(tmp_path / "grpo")])
    lines = text.splitlines()
    assert lines[0] == "GSM8K test pass@1 (greedy), first 16 problems"
    assert lines[2].split() == ["base", "0.000", "0.062", "0.000"]
    assert lines[3].split() == ["after", "SFT", "0.125", "0.125", "0.750"]
    assert lines[4].split() == ["after", "GRPO", "0.188", "0.250", "0.875"]
    assert capsys.readouterr().out.strip() == text
