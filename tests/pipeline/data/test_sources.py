"""Any dataset by TRL's conventions: local files of every type, folders, column mapping, evaluation rows that
are never training rows, and the SFT/GRPO split as a GSM8K default only."""

import json

import pytest

from pipeline.arguments import DataArguments
from pipeline.data import DataError, get_template
from pipeline.data.sources import stage_examples
from pipeline.sft import sft_record


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def conversational_rows(n):
    return [{"prompt": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": f"{i} + 1?"}],
             "answer": i + 1, "difficulty": i % 3} for i in range(n)]


def test_one_file_is_never_both_splits(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", conversational_rows(40))
    splits = DataArguments(dataset_name=str(path)).load_splits()
    train_sources = {e.source for e in splits.train}
    eval_sources = {e.source for e in splits.eval}
    assert len(splits.eval) == 4 and len(splits.train) == 36  # 10% held out, seeded
    assert train_sources.isdisjoint(eval_sources)
    assert "held out" in splits.eval_note and "mine.jsonl" in splits.eval_note
    again = DataArguments(dataset_name=str(path)).load_splits()
    assert [e.source for e in again.eval] == [e.source for e in splits.eval]
    other = DataArguments(dataset_name=str(path), split_seed=7).load_splits()
    assert [e.source for e in other.eval] != [e.source for e in splits.eval]


def test_eval_dataset_name_is_used_whole_and_training_keeps_every_row(tmp_path):
    train = write_jsonl(tmp_path / "train_rows.jsonl", conversational_rows(10))
    held = write_jsonl(tmp_path / "held.jsonl", conversational_rows(3))
    splits = DataArguments(dataset_name=str(train), eval_dataset_name=str(held)).load_splits()
    assert len(splits.train) == 10 and len(splits.eval) == 3
    assert all(e.source.startswith(str(held)) for e in splits.eval)


def test_conversational_prompt_extra_columns_and_answer_types(tmp_path):
    rows = conversational_rows(3)
    rows[1]["answer"], rows[2]["answer"] = "3", "work\n#### 1,004"
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    examples = DataArguments(dataset_name=str(path), eval_holdout_size=1).load_splits()
    by_line = {e.source.rsplit(":", 1)[1]: e for e in examples.train + examples.eval}
    first = by_line["1"]
    assert first.conversational and first.question == "0 + 1?"
    assert first.prompt_messages(get_template("reasoning"))[0] == {"role": "system", "content": "Be terse."}
    assert first.reward_columns() == {"answer": 1, "difficulty": 0}  # the int stays an int, as the column holds it
    assert by_line["2"].answer == "3"
    assert (by_line["3"].answer, by_line["3"].reasoning) == ("1004", "work")
    assert first.reward_completion("2") == [{"role": "assistant", "content": "2"}]


def test_plain_text_prompts_reach_rewards_as_strings_the_model_still_sees_the_template(tmp_path):
    """As TRL passes a standard row: the dataset's prompt string, unchanged, and text completions. The model is
    prompted through the template all the same."""
    path = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": f" {i} + 1? ", "answer": i + 1} for i in range(5)])
    example = DataArguments(dataset_name=str(path), eval_holdout_size=1).load_splits().train[0]
    assert example.reward_prompt() == " 0 + 1? "  # as the file holds it, spaces included
    assert example.reward_completion("x") == "x"
    template = get_template("answer")
    assert example.prompt_messages(template) == [{"role": "system", "content": template.system_prompt},
                                                 {"role": "user", "content": "0 + 1?"}]


def test_a_renamed_gold_column_reaches_rewards_under_both_names(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"problem": "1+1?", "solution": "2"}] * 3)
    example = DataArguments(dataset_name=str(path), prompt_field="problem", answer_field="solution",
                            eval_holdout_size=1).load_splits().train[0]
    assert example.reward_columns() == {"answer": "2", "solution": "2"}  # TRL's accuracy_reward reads `solution`


def test_prompt_and_messages_columns_train_sft_on_the_conversation(tmp_path):
    """ultrachat's shape: a prompt column and the whole conversation in messages."""
    rows = [{"prompt": f"Say {i}", "prompt_id": str(i), "messages": [{"role": "user", "content": f"Say {i}"},
                                                                    {"role": "assistant", "content": f"{i}!"}]}
            for i in range(4)]
    path = write_jsonl(tmp_path / "uc.jsonl", rows)
    for prompt_field in ("auto", "messages"):
        examples, _, _ = stage_examples(DataArguments(dataset_name=str(path), prompt_field=prompt_field,
                                                      eval_holdout_size=1), "sft")
        index = int(examples[0].question.split()[-1])
        assert sft_record(examples[0], get_template("reasoning"))["completion"][0]["content"] == f"{index}!"


def test_the_same_file_for_training_and_evaluation_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", conversational_rows(6))
    with pytest.raises(DataError, match="is both a training and an evaluation row"):
        DataArguments(dataset_name=str(path), eval_dataset_name=str(path)).load_splits()


def test_every_shard_of_a_split_is_read(tmp_path):
    from datasets import Dataset

    for shard in range(3):
        rows = [{"prompt": f"{shard}-{i}", "answer": i} for i in range(4)]
        Dataset.from_list(rows).to_parquet(str(tmp_path / f"train-0000{shard}-of-00003.parquet"))
    write_jsonl(tmp_path / "test.jsonl", [{"prompt": "t", "answer": 1}])
    assert len(DataArguments(dataset_name=str(tmp_path)).load_splits().train) == 12


def test_csv_cells_stay_text_and_an_unreadable_file_is_one_line(tmp_path):
    (tmp_path / "a.csv").write_text("prompt,answer\nx,0042\ny,2\nz,2.50\n")
    answers = sorted(e.answer for e in DataArguments(dataset_name=str(tmp_path / "a.csv"),
                                                     eval_dataset_name=str(tmp_path / "a.csv")).load_splits(
        need_train=False).eval)  # evaluation alone: the training rows are not read
    assert answers == ["0042", "2", "2.50"]
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="bad.parquet: cannot read it as parquet"):
        DataArguments(dataset_name=str(tmp_path / "bad.parquet")).load_splits()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_csv_parquet_and_json_files(tmp_path, suffix):
    from datasets import Dataset

    rows = [{"problem": f"What is {i} * 2?", "target": str(2 * i), "level": i} for i in range(6)]
    path = tmp_path / f"rows{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        getattr(Dataset.from_list(rows), "to_csv" if suffix == ".csv" else "to_parquet")(str(path))
    splits = DataArguments(dataset_name=str(path), prompt_field="problem", answer_field="target",
                           eval_holdout_size=2).load_splits()
    examples = sorted(splits.train + splits.eval, key=lambda e: e.question)
    assert [e.question for e in examples] == [r["problem"] for r in rows]
    assert [e.answer for e in examples] == [r["target"] for r in rows]  # text in every format
    assert {str(e.columns["level"]) for e in examples} == {str(i) for i in range(6)}
    assert "row 1" in examples[0].source


def test_folder_with_train_and_test_files(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", conversational_rows(5))
    write_jsonl(tmp_path / "test.jsonl", conversational_rows(2))
    splits = DataArguments(dataset_name=str(tmp_path)).load_splits()
    assert (len(splits.train), len(splits.eval)) == (5, 2) and "'test' split" in splits.eval_note


def test_messages_column_trains_sft_on_the_last_assistant_turn(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": f"{i}!"}]}
            for i in range(4)]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    examples, _, _ = stage_examples(DataArguments(dataset_name=str(path), eval_holdout_size=1), "sft")
    record = sft_record(examples[0], get_template("reasoning"))
    index = int(examples[0].question.split()[-1])
    assert record["prompt"] == [{"role": "user", "content": f"Say {index}"}]
    assert record["completion"] == [{"role": "assistant", "content": f"{index}!"}]


def test_prompt_and_completion_columns_for_sft(tmp_path):
    rows = [{"prompt": f"Spell {w}", "completion": "-".join(w)} for w in ("cat", "dog", "owl")]
    path = write_jsonl(tmp_path / "pc.jsonl", rows)
    examples, _, _ = stage_examples(DataArguments(dataset_name=str(path), eval_holdout_size=1), "sft")
    for e in examples:
        assert sft_record(e, get_template("answer"))["completion"][0]["content"] == "-".join(e.question.split()[1])


@pytest.mark.parametrize("row, option, message", [
    ({"text": "q", "answer": 1}, {}, "no prompt column"),
    ({"prompt": "x", "answer": 1}, {"prompt_field": "q"}, "missing field 'q'"),
    ({"prompt": "x"}, {"answer_field": "gold"}, "missing field 'gold'"),
    ({"prompt": [{"role": "user"}]}, {}, "list of {'role', 'content'} messages"),
    ({"prompt": "x", "answer": "work\n#### many"}, {}, "is not a number"),
])
def test_bad_rows_name_the_file_line_and_the_fix(tmp_path, row, option, message):
    good = {"prompt": "ok", "q": "ok", "answer": 1, "gold": 1}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, row, good])
    with pytest.raises(DataError) as info:
        DataArguments(dataset_name=str(path), eval_holdout_size=1, **option).load_splits()
    assert f"{path}:2: " in str(info.value) and message in str(info.value)


def test_grpo_holdout_is_a_gsm8k_default_only(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", conversational_rows(20))
    sft, _, record = stage_examples(DataArguments(dataset_name=str(path)), "sft")
    grpo, _, _ = stage_examples(DataArguments(dataset_name=str(path)), "grpo")
    assert record["grpo_holdout_size"] == 0 and [e.source for e in sft] == [e.source for e in grpo]
    assert len(grpo) == 18  # the whole training part (2 rows held out for evaluation)
    with pytest.raises(DataError, match="option --grpo_holdout_size: 1000 .* only 18"):
        stage_examples(DataArguments(dataset_name=str(path), grpo_holdout_size=1000), "grpo")
    _, _, gsm8k = stage_examples(DataArguments(max_train_samples=1), "grpo")
    assert gsm8k["grpo_holdout_size"] == 1000 and gsm8k["sft_size"] == 6473


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="dataset file not found"):
        DataArguments(dataset_name=str(tmp_path / "nope.jsonl")).load_splits()
    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(DataError, match="unknown file type '.txt'"):
        DataArguments(dataset_name=str(tmp_path / "rows.txt")).load_splits()


def test_evaluation_alone_reads_a_single_file_whole_unless_a_holdout_is_asked_for(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", conversational_rows(3))
    alone = DataArguments(dataset_name=str(path)).load_splits(need_train=False)
    assert [e.source for e in alone.eval] == [f"{path}:1", f"{path}:2", f"{path}:3"] and alone.train == []
    assert alone.eval_note == (f"all 3 rows of {path} (a single file given for evaluation; --eval_holdout_size N "
                               "evaluates a seeded hold-out of N rows instead)")
    one = write_jsonl(tmp_path / "one.jsonl", conversational_rows(1))
    assert [e.source for e in DataArguments(dataset_name=str(one)).load_splits(need_train=False).eval] == [f"{one}:1"]
    big = write_jsonl(tmp_path / "big.jsonl", conversational_rows(40))
    held = DataArguments(dataset_name=str(big), eval_holdout_size=4).load_splits(need_train=False).eval
    trained = DataArguments(dataset_name=str(big), eval_holdout_size=4).load_splits()
    assert len(held) == 4 and [e.source for e in held] == [e.source for e in trained.eval]  # a training run's rows
    assert len(DataArguments(dataset_name=str(big)).load_splits().eval) == 4  # training still holds a tenth out


@pytest.mark.parametrize("rows, option, message", [
    (1, {}, "{path}: 1 row, too few to hold rows out for evaluation and train on the rest; add rows, or give "
            "--eval_dataset_name a file to evaluate on"),
    (3, {"eval_holdout_size": 3}, "option --eval_holdout_size: 3 rows held out of the 3 of {path} leaves none to "
                                  "train on; set it below 3, or give --eval_dataset_name a file to evaluate on"),
    (0, {}, "{path} (train): no usable rows: it holds none; add rows"),
], ids=["one-row", "holdout-of-all", "empty"])
def test_a_training_run_on_a_tiny_file_is_one_line_naming_the_file_and_the_fix(tmp_path, rows, option, message):
    path = write_jsonl(tmp_path / "tiny.jsonl", conversational_rows(rows))
    with pytest.raises(DataError) as info:
        stage_examples(DataArguments(dataset_name=str(path), **option), "sft")
    assert str(info.value) == message.format(path=path)
