import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def result(strict, flexible, marked):
    """An evaluation summary of 4 problems with these per-problem greedy outcomes."""
    return {"num_problems": len(strict), "per_problem": {"strict": strict, "flexible": flexible, "marked": marked}}


def test_report_lists_base_sft_and_grpo_with_intervals_and_paired_changes(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("report", ROOT / "scripts" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    (tmp_path / "sft").mkdir()
    (tmp_path / "grpo").mkdir()
    base, sft = result([0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1]), result([0, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1])
    grpo = result([0, 1, 0, 1], [1, 0, 1, 1], [1, 1, 1, 1])
    (tmp_path / "sft" / "sft_summary.json").write_text(json.dumps({"before": base, "after": sft}))
    (tmp_path / "grpo" / "grpo_summary.json").write_text(json.dumps({"eval_after": grpo}))
    text = report.main([str(tmp_path / "sft"), str(tmp_path / "grpo")])
    lines = text.splitlines()
    assert lines[0].startswith("GSM8K test pass@1 (greedy), first 4 problems")
    # Wilson 95% intervals for 4 problems, by hand: 0/4 -> [0, 0.490], 1/4 -> [0.046, 0.699],
    # 2/4 -> [0.150, 0.850], 3/4 -> [0.301, 0.954], 4/4 -> [0.510, 1].
    assert lines[2].split() == ["base", "0.000", "[0.000,", "0.490]", "0.250", "[0.046,", "0.699]",
                                "0.500", "[0.150,", "0.850]"]
    assert lines[3].split() == ["after", "SFT", "0.250", "[0.046,", "0.699]", "0.500", "[0.150,", "0.850]",
                                "1.000", "[0.510,", "1.000]"]
    assert lines[4].split()[:3] == ["after", "GRPO", "0.500"]
    # Paired changes: SFT - base strict diffs [0, 0, 0, 1]: mean 0.25, sd 0.5, half-width 1.96 * 0.5 / 2 = 0.490.
    assert lines[5].startswith("change from the row above")
    assert lines[6].split()[:5] == ["after", "SFT", "+0.250", "[-0.240,", "+0.740]"]
    # marked: diffs [1, 1, 0, 0]: mean 0.5, sd 0.577, half-width 0.566 -> [-0.066, +1.066], clipped to +1, no star.
    assert lines[6].split()[-3:] == ["+0.500", "[-0.066,", "+1.000]"]
    # GRPO - SFT flexible diffs [1, 0, 0, 0]: +0.250 [-0.240, +0.740]; marked unchanged: zero width.
    assert lines[7].split()[-3:] == ["+0.000", "[+0.000,", "+0.000]"]
    assert capsys.readouterr().out.strip() == text
