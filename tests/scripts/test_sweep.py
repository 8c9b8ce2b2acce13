import csv
import importlib.util
import json
from pathlib import Path

import pytest

from pipeline.classic.bandit import BanditConfig, train_bandit

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("sweep", ROOT / "scripts" / "sweep.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def sweep_args(out: Path, *extra: str) -> list[str]:
    return [str(ROOT / "scripts" / "train_bandit.py"), "--config", str(ROOT / "configs" / "bandit.yaml"),
            "--grid", "group_size=4,16", "--seeds", "0", "1", "--metric", "best_arm_probability", "best_arm",
            "--curve", "best_arm_probability", "return", "--workers", "2", "--output_dir", str(out), *extra]


def test_a_tiny_sweep_tabulates_every_cell_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "sweep"
    rows = load_script().main(sweep_args(out, "--", "--steps", "40"))

    # Each cell is the bandit run with that group size and seed: redo them in this process.
    expected, best_arms = {}, {}
    for group_size in (4, 16):
        finals = [train_bandit(BanditConfig(output_dir=str(tmp_path / f"direct-{group_size}-{seed}"), steps=40,
                                            group_size=group_size, seed=seed)) for seed in (0, 1)]
        expected[f"group_size={group_size}"] = [f["best_arm_probability"] for f in finals]
        best_arms[f"group_size={group_size}"] = [f["best_arm"] for f in finals]
    assert [r["cell"] for r in rows] == ["group_size=4", "group_size=16"]
    for row in rows:
        values = expected[row["cell"]]
        assert row["seeds"] == 2
        assert row["mean"] == pytest.approx(sum(values) / 2)
        assert (row["min"], row["max"]) == pytest.approx((min(values), max(values)))
        assert row["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
        arms = best_arms[row["cell"]]  # the second metric: mean and std only
        assert (row["best_arm mean"], row["best_arm std"]) == pytest.approx((sum(arms) / 2, abs(arms[0] - arms[1]) / 2 ** 0.5))
    assert expected["group_size=4"] != expected["group_size=16"]  # the grid value reached the runs

    with (out / "sweep.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["cell"] for r in table] == ["group_size=4", "group_size=16"]
    assert float(table[0]["best_arm mean"]) == pytest.approx(rows[0]["best_arm mean"])
    markdown = (out / "sweep.md").read_text()
    assert "| group_size=16 | 2 |" in markdown and markdown.splitlines()[0].endswith("| best_arm |")
    png = (out / "sweep.png").read_bytes()
    assert int.from_bytes(png[16:20], "big") == round(2 * 7.5 * 110)  # two panels side by side: the two curves
    assert json.loads((out / "sweep.json").read_text())["grid"] == {"group_size": ["4", "16"]}

    # Rerun: every cell is finished, so nothing runs again (the cell logs are not rewritten).
    logs = {p: p.stat().st_mtime_ns for p in out.glob("*/sweep.log")}
    assert len(logs) == 4
    again = load_script().main(sweep_args(out, "--", "--steps", "40"))
    assert again == rows
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/sweep.log")} == logs


def test_a_failing_cell_is_reported_and_exits_nonzero(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_info:
        load_script().main(sweep_args(tmp_path / "bad", "--", "--steps", "0"))  # steps must be >= 1
    assert exit_info.value.code == 1
    log = next((tmp_path / "bad").glob("group_size=4__seed=0/sweep.log")).read_text()
    assert "steps" in log


@pytest.mark.parametrize("spec, message", [("group_size", "write FIELD=V1,V2"), ("=1,2", "write FIELD=V1,V2"),
                                           ("beta=", "write FIELD=V1,V2"),
                                           ("grup_size=4,16", "--grid grup_size: train_bandit.py has no option "
                                                              "'grup_size'; did you mean group_size?")])
def test_bad_grid_names_the_spec(tmp_path, capsys, spec, message):
    with pytest.raises(SystemExit):
        load_script().main([str(ROOT / "scripts" / "train_bandit.py"), "--grid", spec, "--metric", "x",
                            "--output_dir", str(tmp_path)])
    assert message in capsys.readouterr().err


def test_a_misspelt_grid_field_starts_no_cell(tmp_path):
    with pytest.raises(SystemExit):
        load_script().main([str(ROOT / "scripts" / "train_bandit.py"), "--grid", "grup_size=4", "--metric", "x",
                            "--output_dir", str(tmp_path)])
    assert not list(tmp_path.glob("*/sweep.log"))


@pytest.mark.parametrize("script", ["train_toy.py", "train_cartpole.py", "train_grpo.py", "train_sft.py"])
def test_every_training_script_s_options_are_read_before_any_cell(tmp_path, capsys, script):
    """The field check loads the script itself: train_toy.py defines a dataclass of its own, which needs
    the script's module registered while it loads. Its own field passes the check; a misspelt one is named."""
    from pipeline.sweep import check_grid_fields, script_module

    module = script_module(ROOT / "scripts" / script)
    check_grid_fields(module, {"seed": ["0"]})  # a field every script has: no error
    with pytest.raises(ValueError, match=f"--grid sede: {script} has no option 'sede'; did you mean seed"):
        check_grid_fields(module, {"sede": ["0"]})


def test_a_script_that_pins_its_threads_runs_only_as_many_cells_as_the_cores_hold(caplog):
    """train_toy.py pins 2 torch threads per run (its results then reproduce): two such cells on 2 cores ran
    each step about 18 times slower (27 s against 1.5 s, measured), so the sweep runs one at a time there."""
    from pipeline.sweep import cells_at_once, script_module

    toy, bandit = (script_module(ROOT / "scripts" / name) for name in ("train_toy.py", "train_bandit.py"))
    assert cells_at_once(toy, workers=2, cores=2) == 1
    assert "train_toy.py pins 2 torch threads per run" in caplog.text and "1 cell(s) at a time on 2 cores" in caplog.text
    assert cells_at_once(toy, workers=4, cores=8) == 4 and cells_at_once(toy, workers=8, cores=8) == 4
    assert cells_at_once(bandit, workers=2, cores=2) == 2  # no pin: the sweep shares the cores out itself


def test_the_sweep_runs_a_pinned_script_s_cells_one_at_a_time_on_two_cores(tmp_path, monkeypatch):
    import os

    script, seen = load_script(), {}

    class Started(Exception):
        pass

    def record(cells, commands, out, summary_file, workers, env=None):
        seen["workers"] = workers
        raise Started  # what run_cells was given is all this test needs

    monkeypatch.setattr(script, "run_cells", record)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(Started):
        script.main([str(ROOT / "scripts" / "train_toy.py"), "--grid", "loss_type=dapo,grpo", "--metric",
                     "held_out_exact_match", "--workers", "2", "--output_dir", str(tmp_path)])
    assert seen["workers"] == 1


def test_an_unknown_metric_lists_the_numbers_the_runs_wrote(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    args = sweep_args(tmp_path, "--", "--steps", "5")
    args[args.index("best_arm_probability")] = "best_arm_prob"
    args[args.index("group_size=4,16")] = "group_size=4"  # one cell is enough to write the keys
    del args[args.index("--seeds") + 2]
    with pytest.raises(SystemExit):
        load_script().main(args)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--metric best_arm_prob:" in error and "best_arm_probability" in error
