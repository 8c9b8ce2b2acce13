import json

import pytest

from pipeline.plots import plot_clipped_objective, plot_group_advantages, plot_run, read_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_drawn_png(path):
    """A valid PNG whose plot area holds drawn pixels (not a blank canvas)."""
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = mpimg.imread(path)  # [H, W, 4] floats
    h, w = image.shape[:2]
    inner = image[h // 5 : 4 * h // 5, w // 5 : 4 * w // 5, :3]
    colored = ((inner.max(-1) - inner.min(-1)) > 0.2).mean()  # saturated pixels: the data lines
    assert h > 100 and w > 100 and colored > 0.002, (path, colored)


@pytest.fixture
def finished_grpo_run(tiny_model_dir, tmp_path):
    """A real 3-step GRPO run of the tiny model, which writes its plots at the end."""
    from pipeline.arguments import DataArguments, ModelArguments
    from pipeline.data import load_gsm8k
    from pipeline.grpo.config import GRPOArguments
    from pipeline.grpo.trainer import train

    args = GRPOArguments(output_dir=str(tmp_path / "run"), max_steps=3, prompts_per_step=2, num_generations=4,
                         micro_batch_size=8, max_completion_length=8, save_steps=0,
                         reward_funcs=["accuracy", "format_soft"], max_prompt_length=1024,
                         eval_limit=2, eval_steps=2, eval_max_new_tokens=4)
    train(args, ModelArguments(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4), DataArguments(),
          load_gsm8k(split="train").examples[:10], load_gsm8k(split="test").examples[:2])
    return tmp_path / "run"


def test_grpo_run_writes_plots_and_plot_run_redraws_them(finished_grpo_run):
    run = finished_grpo_run
    names = {p.name for p in (run / "plots").iterdir()}
    assert {"reward.png", "kl.png", "clip_fraction.png", "completion_length.png", "step_time.png",
            "held_out.png"} <= names
    from pipeline.plots import held_out_accuracy

    # the evaluations before step 1, at eval_steps 2 and at the end, each of 2 problems
    assert [(p[0], p[4]) for p in held_out_accuracy(run)] == [(0, 2), (2, 2), (3, 2)]
    for path in (run / "plots").iterdir():
        path.unlink()
    written = plot_run(run)
    assert {p.name for p in written} == names
    for path in written:
        assert_drawn_png(path)
    assert len(read_metrics(run)) == 3


def test_plot_run_script_and_teaching_figures(finished_grpo_run, tmp_path):
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("plot_run", root / "scripts" / "plot_run.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    written = script.main([str(finished_grpo_run), "--teaching", str(tmp_path / "teach")])
    assert tmp_path / "teach" / "group_advantages.png" in written
    for path in written:
        assert_drawn_png(path)


def test_teaching_figures(tmp_path):
    assert_drawn_png(plot_group_advantages(tmp_path / "a.png"))
    assert_drawn_png(plot_clipped_objective(tmp_path / "c.png"))


def test_missing_metrics_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        plot_run(tmp_path)


def test_blank_image_is_rejected(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()
    fig.savefig(tmp_path / "blank.png")
    with pytest.raises(AssertionError):
        assert_drawn_png(tmp_path / "blank.png")
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward": 0.5}) + "\n")
    assert [p.name for p in plot_run(tmp_path)] == ["reward.png"]
