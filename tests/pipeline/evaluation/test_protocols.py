"""lm-eval's GSM8K protocols as rebuilt in pipeline/evaluation/protocols.py: the prompts against lm-eval's own
prompt building (its task objects, offline, no model), for every protocol, plain and through the chat template;
the scoring against worked cases; and the script's bad-input lines. Generation against lm-eval itself:
test_protocols_lm_eval.py (make test-lm-eval)."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pipeline.arguments import EvalArguments, LM_EVAL_PROTOCOLS, ModelArguments
from pipeline.config import ConfigError
from pipeline.evaluation.protocols import PROTOCOLS, exact_match, load_protocol_rows, protocol_prompts, score
from pipeline.models import load_tokenizer

ROOT = Path(__file__).resolve().parents[3]
N = 12  # test problems per comparison
pytest.importorskip("lm_eval", reason="lm-eval is the lm-eval extra: make install puts it in .venv")


@cache
def tokenizer():
    return load_tokenizer(ModelArguments())  # the embedded SmolLM2-135M-Instruct's, with its chat template


@cache
def lm_eval_tasks() -> dict:
    """lm-eval's task objects for the shipped configs (configs/lm_eval), read offline, built once."""
    from lm_eval.tasks import TaskManager, get_task_dict

    names = [f"{name}_bundled" for name in PROTOCOLS]
    # include_defaults=False: the shipped configs are whole; scanning lm-eval's thousands of built-in ones costs 15 s
    return get_task_dict(names, TaskManager(include_path=str(ROOT / "configs" / "lm_eval"), include_defaults=False))


def lm_eval_prompts(name: str, apply_chat_template: bool, fewshot_as_multiturn: bool) -> list[str]:
    """The contexts lm-eval builds for the first N problems of its task."""
    task = lm_eval_tasks()[f"{name}_bundled"]
    task.set_fewshot_seed(1234)  # what lm_eval's simple_evaluate does (fewshot_random_seed)

    def chat_template(history, add_generation_prompt=True):  # lm-eval's own HFLM.apply_chat_template
        from lm_eval.models.huggingface import HFLM

        lm = SimpleNamespace(tokenizer=tokenizer(), chat_template_args={})
        return HFLM.apply_chat_template(lm, history, add_generation_prompt=add_generation_prompt)

    task.build_all_requests(limit=N, apply_chat_template=apply_chat_template, fewshot_as_multiturn=fewshot_as_multiturn,
                            chat_template=chat_template if apply_chat_template else None)
    return [instance.args[0] for instance in sorted(task.instances, key=lambda i: i.doc_id)]


@pytest.mark.parametrize("apply_chat_template, fewshot_as_multiturn", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_prompts_equal_lm_evals_own(name, apply_chat_template, fewshot_as_multiturn, monkeypatch):
    monkeypatch.chdir(ROOT)  # the task configs name the bundled files from the repository root
    problems, train = load_protocol_rows("bundled", None, "test", "train", N)
    ours = protocol_prompts(PROTOCOLS[name], [row for _, row in problems], train, tokenizer(),
                            apply_chat_template=apply_chat_template, fewshot_as_multiturn=fewshot_as_multiturn)
    assert ours == lm_eval_prompts(name, apply_chat_template, fewshot_as_multiturn)


def test_the_protocol_names_are_the_ones_the_options_accept():
    assert tuple(PROTOCOLS) == LM_EVAL_PROTOCOLS


def test_a_5_shot_prompt_by_hand():
    train = [{"question": f"q{i}?", "answer": f"w{i}\n#### {i}"} for i in range(10)]
    (prompt,) = protocol_prompts(PROTOCOLS["gsm8k"], [{"question": "Q?", "answer": "#### 1"}], train)
    shots = prompt.split("\n\n")
    assert len(shots) == 6 and shots[-1] == "Question: Q?\nAnswer:"
    assert all(s.startswith("Question: q") and "?\nAnswer: w" in s and "\n#### " in s for s in shots[:5])


@pytest.mark.parametrize("name, completion, solution, expected", [
    # strict-match reads '#### N' (gsm8k) or 'The answer is N.' (cot); flexible-extract the last number
    ("gsm8k", "She pays 3 * 4 = 12.\n#### 12", "3*4=12\n#### 12", (("12", True), ("12", True))),
    ("gsm8k", "The total is $1,250.", "#### 1250", ((None, False), ("$1,250.", True))),
    ("gsm8k", "#### 7.5 or so 8", "#### 8", (("7.5", False), ("8", True))),
    ("gsm8k_cot", "So 5 + 4 = 9. The answer is 9.", "#### 9", (("9", True), ("9.", True))),
    ("gsm8k_cot_zeroshot", "The answer is 12,000. Then 3", "#### 12000", (("12,000.", True), ("3", False))),
])
def test_scores_by_hand(name, completion, solution, expected):
    result = score(PROTOCOLS[name], completion, solution)
    assert ((result["extracted"], result["correct"]), (result["extracted_flexible"], result["correct_flexible"])) == expected


def test_exact_match_ignores_case_commas_dollars_and_a_final_period():
    assert exact_match("$1,000.", "#### 1000") and not exact_match("1000.5", "#### 1000")


def test_protocol_options_are_checked():
    with pytest.raises(ConfigError, match="--protocol"):
        EvalArguments(protocol="gsm8k_5shot")
    with pytest.raises(ConfigError, match="--fewshot_as_multiturn"):
        EvalArguments(protocol="gsm8k", fewshot_as_multiturn=True)
    with pytest.raises(ConfigError, match="--num_samples"):
        EvalArguments(protocol="gsm8k", num_samples=4)
    assert EvalArguments(protocol="gsm8k", apply_chat_template=True).fewshot_as_multiturn is True  # lm-eval's default


def test_a_row_without_a_gsm8k_solution_is_one_line_before_the_model_loads(tmp_path):
    (tmp_path / "test.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
    (tmp_path / "train.jsonl").write_text('{"question": "2+2?", "answer": "#### 4"}\n')
    done = subprocess.run([sys.executable, "scripts/evaluate.py", "--protocol", "gsm8k", "--dataset_name", str(tmp_path),
                           "--model_name_or_path", str(tmp_path / "no-model")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    assert f"error: {tmp_path / 'test.jsonl'}:1: an lm-eval GSM8K protocol needs" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_shipped_task_configs_are_lm_evals_own_but_for_their_data():
    import lm_eval

    shipped_dir = Path(lm_eval.__file__).parent / "tasks" / "gsm8k"
    for ours, theirs in [("gsm8k", "gsm8k"), ("gsm8k_cot", "gsm8k-cot"), ("gsm8k_cot_zeroshot", "gsm8k-cot-zeroshot")]:
        local = yaml.safe_load((ROOT / "configs" / "lm_eval" / f"{ours}_bundled.yaml").read_text())
        shipped = yaml.safe_load((shipped_dir / f"{theirs}.yaml").read_text())
        data_fields = {"task", "tag", "dataset_path", "dataset_name", "dataset_kwargs"}
        assert {k: v for k, v in local.items() if k not in data_fields} == \
            {k: v for k, v in shipped.items() if k not in data_fields}, ours
        assert local["task"] == f"{ours}_bundled" and local["dataset_path"] == "json"


@pytest.mark.parametrize("files, extra, message", [
    ({"all.jsonl": 6}, [], "random shots would be drawn from the problems evaluated"),  # one file: both splits
    ({"test.jsonl": 2, "train.jsonl": 3}, [], "'train' has 3 rows; gsm8k draws 5 shots"),
    ({"test.jsonl": 2}, [], "no 'train' split"),
    ({"test.jsonl": 2, "train.jsonl": 6}, ["--apply_chat_template", "true", "--model_name_or_path", "MODEL"],
     "option --apply_chat_template:"),  # a tokenizer without a chat template, before the weights load
])
def test_protocol_data_and_options_fail_in_one_line_before_the_model_loads(tmp_path, files, extra, message):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    for name, n in files.items():
        rows = [{"question": f"q{i}?", "answer": f"w\n#### {i}"} for i in range(n)]
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0}, "a"))).save_pretrained(tmp_path / "tok")
    dataset = tmp_path / "all.jsonl" if "all.jsonl" in files else tmp_path
    command = [sys.executable, "scripts/evaluate.py", "--protocol", "gsm8k", "--dataset_name", str(dataset),
               "--model_name_or_path", str(tmp_path / "no-model"), *extra]
    command = [str(tmp_path / "tok") if part == "MODEL" else part for part in command]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_chat_template_options_belong_to_protocols():
    with pytest.raises(ConfigError, match="--apply_chat_template"):
        EvalArguments(apply_chat_template=True)


def test_a_generation_config_that_sets_logits_processors_is_named(caplog):
    from pipeline.evaluation.protocols import warn_about_generation_config

    warn_about_generation_config(SimpleNamespace(generation_config=SimpleNamespace(repetition_penalty=None)))
    assert not caplog.records  # transformers 5 leaves them None: nothing to say
    warn_about_generation_config(SimpleNamespace(generation_config=SimpleNamespace(repetition_penalty=1.05)))
    assert "{'repetition_penalty': 1.05}" in caplog.text and "lm-eval's greedy decoding applies it" in caplog.text
