"""A user's own data before any weights load: the template auto picks, rewards that could only score 0, a resumed
run's template, rows that mix prompt kinds, and a callable that shares a built-in's name."""

import json

import pytest

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.config import ConfigError
from pipeline.data import DataError
from pipeline.data.in_memory import in_memory_splits
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.inputs import preflight


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def capitals(tmp_path):
    return write_rows(tmp_path / "capitals.jsonl", [{"prompt": f"Capital of {c}?", "answer": a} for c, a in
                                                    [("France", "Paris"), ("Japan", "Tokyo"), ("Peru", "Lima")] * 4])


def test_auto_picks_the_math_template_for_gsm8k_shaped_files_and_names_the_evaluated_file(tmp_path, mini_gsm8k):
    assert DataArguments(dataset_name=str(mini_gsm8k)).prompt_template == "reasoning"  # '#### N' solutions
    assert DataArguments(dataset_name="OpenAI/GSM8K").prompt_template == "reasoning"
    mine = capitals(tmp_path)
    assert DataArguments(eval_dataset_name=mine).prompt_template == "plain"  # evaluate.py on the user's file


def test_rewards_that_read_a_marked_answer_are_refused_with_the_plain_template(tmp_path, tiny_model_dir):
    sums = write_rows(tmp_path / "sums.jsonl", [{"prompt": f"{i} + 1?", "answer": i + 1} for i in range(10)])
    args = GRPOArguments(output_dir=str(tmp_path / "run"), max_completion_length=8)  # default: accuracy, format
    with pytest.raises(ConfigError, match="accuracy reads a marked answer.*prompt_template plain"):
        preflight(args, ModelArguments(model_name_or_path=str(tiny_model_dir)), DataArguments(dataset_name=sums))
    exact = GRPOArguments(output_dir=str(tmp_path / "run"), max_completion_length=8, reward_funcs=["exact_match"])
    examples, _, _ = preflight(exact, ModelArguments(model_name_or_path=str(tiny_model_dir)),
                               DataArguments(dataset_name=capitals(tmp_path)))
    assert examples and examples[0].answer in ("Paris", "Tokyo", "Lima")


def test_a_resumed_run_keeps_the_template_it_started_with(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": {"prompt_template": "answer", "system_prompt": None}}))
    args = GRPOArguments(output_dir=str(run), max_completion_length=8, reward_funcs=["exact_match"],
                         resume_from_checkpoint="latest")
    with pytest.raises(ConfigError, match="started with 'answer', not 'plain'; resume with --prompt_template 'answer'"):
        preflight(args, ModelArguments(model_name_or_path=str(tiny_model_dir)), DataArguments(dataset_name=capitals(tmp_path)))


def test_rows_that_mix_plain_and_chat_prompts_are_one_line_naming_the_row(tmp_path, tiny_model_dir):
    rows = [{"prompt": "a?", "answer": "x"}] * 5 + [{"prompt": [{"role": "user", "content": "b?"}], "answer": "y"}]
    data = DataArguments(dataset_name=write_rows(tmp_path / "mixed.jsonl", rows), eval_holdout_size=1)
    args = GRPOArguments(output_dir=str(tmp_path / "run"), max_completion_length=8, reward_funcs=["exact_match"])
    with pytest.raises(DataError, match=r"mixed.jsonl:6: its prompt is chat messages, but .*mixed.jsonl:\d's is plain"):
        preflight(args, ModelArguments(model_name_or_path=str(tiny_model_dir)), data)


def test_a_callable_named_like_a_built_in_is_checked_by_its_signature_not_its_name(tmp_path, tiny_model_dir):
    def accuracy(completions, answer, **kwargs):  # the user's own, on text answers
        return [float(c == a) for c, a in zip(completions, answer)]

    data = DataArguments(dataset_name="python:dataset")
    splits = in_memory_splits(data, [{"prompt": "Capital of France?", "answer": "Paris"}] * 4)
    args = GRPOArguments(output_dir=str(tmp_path / "run"), max_completion_length=8, reward_funcs=["accuracy"])
    model = ModelArguments(model_name_or_path=str(tiny_model_dir))
    examples, _, _ = preflight(args, model, data, [accuracy], splits, named=[False])
    assert len(examples) == 3
    with pytest.raises(DataError, match="reward accuracy compares numbers"):  # the built-in of that name: refused
        preflight(args, model, data, None, splits)


def test_a_prompt_over_max_prompt_length_stops_preflight_naming_its_row_or_is_dropped(tmp_path, tiny_model_dir,
                                                                                      caplog):
    rows = [{"prompt": f"Say {w}.", "answer": w} for w in ("a", "b", "c", "d")] + [{"prompt": "long " * 80, "answer": "e"}]
    data = DataArguments(dataset_name=write_rows(tmp_path / "long.jsonl", rows),
                         eval_dataset_name=write_rows(tmp_path / "held.jsonl", rows[:1]))
    model = ModelArguments(model_name_or_path=str(tiny_model_dir))
    args = GRPOArguments(output_dir=str(tmp_path / "run"), max_prompt_length=48, max_completion_length=8,
                         reward_funcs=["exact_match"])
    with pytest.raises(DataError, match=r"long.jsonl:5: prompt has \d+ tokens, over max_prompt_length=48 \(1 such"):
        preflight(args, model, data)
    args.drop_long_prompts = True
    examples, _, _ = preflight(args, model, data)
    assert [e.answer for e in examples] == ["a", "b", "c", "d"]
    assert "1 of 5 prompts over max_prompt_length=48 left out" in caplog.text
