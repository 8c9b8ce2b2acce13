import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def result(strict, flexible, marked):
    """An evaluation summary of 4 problems with these per-problem greedy outcomes."""
    return {"num_problems": len(strict), "split": "GSM8K test",
            "per_problem": {"strict": strict, "flexible": flexible, "marked": marked}}


def load_report():
    spec = importlib.util.spec_from_file_location("report", ROOT / "scripts" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    return report


def test_report_lists_base_sft_and_grpo_with_intervals_and_paired_changes(tmp_path, capsys):
    report = load_report()
    (tmp_path / "sft").mkdir()
    (tmp_path / "grpo").mkdir()
    base, sft = result([0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1]), result([0, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1])
    grpo = result([0, 1, 0, 1], [1, 0, 1, 1], [1, 1, 1, 1])
    (tmp_path / "sft" / "sft_summary.json").write_text(json.dumps({"before": base, "after": sft}))
    (tmp_path / "grpo" / "grpo_summary.json").write_text(json.dumps({"eval_after": grpo}))
    text = report.main([str(tmp_path / "sft"), str(tmp_path / "grpo")])
    lines = text.splitlines()
    assert lines[0].startswith("pass@1 (greedy) on GSM8K test: first 4 problems")
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


def test_a_control_row_is_compared_with_the_sft_start(tmp_path):
    report = load_report()
    for name in ("sft", "grpo", "negated"):
        (tmp_path / name).mkdir()
    base, sft = result([0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]), result([0, 1, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1])
    (tmp_path / "sft" / "sft_summary.json").write_text(json.dumps({"before": base, "after": sft}))
    (tmp_path / "grpo" / "grpo_summary.json").write_text(json.dumps({"eval_after": result([1, 1, 1, 1], [1] * 4, [1] * 4)}))
    (tmp_path / "negated" / "grpo_summary.json").write_text(json.dumps({"eval_after": result([0] * 4, [0] * 4, [1] * 4)}))
    lines = report.main([str(tmp_path / "sft"), str(tmp_path / "grpo"), "--control", str(tmp_path / "negated")])
    lines = lines.splitlines()
    assert lines[5].startswith("GRPO, reward negated") and lines[6].startswith("change from the row named")
    # the control against SFT: strict diffs [0, -1, -1, 0]: -0.5, sd 0.577, half-width 0.566 -> [-1.000 (clipped), +0.066]
    negated = [line for line in lines[7:] if line.startswith("GRPO, reward negated vs after SFT")]
    assert negated and negated[0].split()[6:9] == ["-0.500", "[-1.000,", "+0.066]"]
    grpo = [line for line in lines[7:] if line.startswith("after GRPO vs after SFT")]
    assert grpo and grpo[0].split()[5:8] == ["+0.500", "[-0.066,", "+1.000]"]


def test_a_missing_run_folder_is_one_line(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as stop:
        load_report().main([str(tmp_path / "nope"), str(tmp_path / "grpo")])
    assert stop.value.code == 2 and "no such run folder; run the stage first" in capsys.readouterr().err
