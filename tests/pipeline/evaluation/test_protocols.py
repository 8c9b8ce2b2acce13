"""lm-eval's GSM8K protocols as rebuilt in pipeline/evaluation/protocols.py: the prompts against lm-eval's own
prompt building (its task objects, offline, no model), for every protocol, plain and through the chat template;
the scoring against worked cases; and the script's bad-input lines. Generation against lm-eval itself:
test_protocols_lm_eval.py (make test-lm-eval)."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from pipeline.arguments import EvalArguments, LM_EVAL_PROTOCOLS, ModelArguments
from pipeline.config import ConfigError
from pipeline.evaluation.protocols import PROTOCOLS, exact_match, load_protocol_rows, protocol_prompts, score
from pipeline.models import load_tokenizer

ROOT = Path(__file__).resolve().parents[3]
N = 12  # test problems per comparison


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

    def chat_template(history, add_generation_prompt=True):  # lm-eval's HFLM.apply_chat_template
        return tokenizer().apply_chat_template(history, tokenize=False, add_generation_prompt=add_generation_prompt,
                                               continue_final_message=not add_generation_prompt)

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
