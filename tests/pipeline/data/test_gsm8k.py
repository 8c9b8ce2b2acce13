import json

import pytest

from pipeline.data import DataError, get_template, load_gsm8k, parse_solution, render_prompt
from pipeline.data.gsm8k import bundled_path


def test_bundled_splits_are_complete():
    assert len(load_gsm8k(split="train").examples) == 7473
    test = load_gsm8k(split="test")
    assert len(test.examples) == 1319 and not test.skipped
    first = test.examples[0]
    assert first.answer == "18" and "<<" not in first.reasoning and first.source.endswith("test.jsonl:1")


def test_license_is_shipped():
    assert "MIT" in (bundled_path("train").parent / "LICENSE").read_text()


@pytest.mark.parametrize(
    "solution, reasoning, answer",
    [
        ("a <<1+1=2>>2\n#### 2", "a 2", "2"),
        ("x\n#### 1,234", "x", "1234"),
        ("x\n#### -5", "x", "-5"),
        ("x\n#### 0.5", "x", "0.5"),
        ("x\n#### $7", "x", "7"),
        ("x #### y\n#### 3", "x #### y", "3"),
    ],
)
def test_parse_solution(solution, reasoning, answer):
    assert parse_solution(solution) == (reasoning, answer)


def write_jsonl(tmp_path, lines):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


GOOD = {"question": "What is 1+1?", "answer": "1+1=2\n#### 2"}


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ({"question": "q"}, "missing field 'answer'"),
        ({"answer": "#### 2"}, "missing field 'question'"),
        ({"question": "q", "answer": "no hash line"}, "no '#### <number>' line"),
        ({"question": "q", "answer": "x\n#### two"}, "gold answer 'two' after '####' is not a number"),
        ({"question": "q", "answer": "x\n#### 1/0"}, "is not a number"),
        ({"question": "", "answer": "#### 1"}, "field 'question' must be a non-empty string"),
        ({"question": 5, "answer": "#### 1"}, "field 'question' must be a non-empty string"),
        ("{not json", "invalid JSON"),
        ("[1, 2]", "row is a list"),
    ],
)
def test_bad_row_names_file_and_line(tmp_path, bad_row, message):
    path = write_jsonl(tmp_path, [GOOD, bad_row, GOOD])
    with pytest.raises(DataError) as info:
        load_gsm8k(str(path))
    assert f"{path}:2: " in str(info.value)
    assert message in str(info.value)
    assert "skip_bad_rows" in str(info.value)


def test_bad_rows_can_be_skipped_and_counted(tmp_path):
    path = write_jsonl(tmp_path, [GOOD, {"question": "q"}, "{oops", GOOD])
    split = load_gsm8k(str(path), skip_bad_rows=True)
    assert len(split.examples) == 2
    assert [s.split(": ")[0] for s in split.skipped] == [f"{path}:2", f"{path}:3"]


def test_custom_field_names_and_folder_source(tmp_path):
    (tmp_path / "test.jsonl").write_text(json.dumps({"problem": "q?", "solution": "s\n#### 4"}) + "\n")
    split = load_gsm8k(str(tmp_path), "test", prompt_field="problem", answer_field="solution")
    assert split.examples[0].answer == "4"


def test_empty_dataset_and_missing_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no usable rows"):
        load_gsm8k(str(empty))
    with pytest.raises(DataError, match="dataset file not found"):
        load_gsm8k(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="no bundled GSM8K split 'validation'"):
        load_gsm8k(split="validation")


def test_template_renders_with_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = get_template("reasoning")
    text = render_prompt(tokenizer, template.messages("What is 1+1?"))
    assert text.startswith("<|im_start|>system\nSolve the math problem.")
    assert text.endswith("<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n")
    override = render_prompt(tokenizer, template.messages("q", system_prompt="Be brief."))
    assert "<|im_start|>system\nBe brief.<|im_end|>" in override


def test_template_without_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    text = render_prompt(tokenizer, get_template("gsm8k").messages("q?"))
    assert text.endswith("User: q?\n\nAssistant:")


def test_unknown_template():
    with pytest.raises(ValueError, match="valid: reasoning, think, answer, gsm8k, plain"):
        get_template("nope")


def test_completion_layouts_score_with_the_matching_format_reward():
    from rewards import load_reward

    for name in ("reasoning", "think", "answer", "gsm8k"):
        template = get_template(name)
        fmt = load_reward("format", reasoning_tag=template.reasoning_tag, answer_tag=template.answer_tag)
        acc = load_reward("accuracy")
        completion = template.completion("2 + 2 = 4", "4")
        assert fmt(prompts=[""], completions=[completion]) == [1.0], name
        assert acc(prompts=[""], completions=[completion], answer=["4"]) == [1.0], name
