"""--protocol against lm-evaluation-harness itself, on the real embedded model and the first test problems:
the same prompt text, the same greedy completion, the same strict-match and flexible-extract readings and
scores for every problem; and the comparison fails when the protocol is altered (a shot, a stop sequence, a
filter regex). Runs lm-eval's own CLI offline on the shipped task configs (configs/lm_eval).

    make test-lm-eval      # CI runs it; `make test` skips it (5-6 minutes on 2 cores)
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.arguments import ModelArguments
from pipeline.evaluation import protocols
from pipeline.evaluation.protocols import PROTOCOLS, cut_at_stop, evaluate_protocol, load_protocol_rows, score
from pipeline.models import load_model, load_tokenizer, resolve_model_path

ROOT = Path(__file__).resolve().parents[3]
TASKS = {"gsm8k": 8, "gsm8k_cot_zeroshot": 8}  # protocol: first N test problems
pytestmark = pytest.mark.lm_eval


@pytest.fixture(scope="module")
def model_dir() -> str:
    return resolve_model_path(ModelArguments())


@pytest.fixture(scope="module")
def lm_eval_samples(model_dir, tmp_path_factory) -> dict[str, list[dict]]:
    """lm-eval's logged samples per protocol, one per problem (doc_id order), from its own CLI."""
    out = tmp_path_factory.mktemp("lm-eval")
    samples: dict[str, list[dict]] = {}
    for name, limit in TASKS.items():
        command = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
                   "--device", "cpu", "--include_path", "configs/lm_eval", "--tasks", f"{name}_bundled", "--limit",
                   str(limit), "--batch_size", "1", "--log_samples", "--output_path", str(out / name)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200,
                              env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0, done.stderr[-4000:]
        (found,) = (out / name).rglob(f"samples_{name}_bundled_*.jsonl")
        by_doc: dict[int, dict] = {}
        for line in found.read_text().splitlines():
            row = json.loads(line)
            entry = by_doc.setdefault(row["doc_id"], {"prompt": row["arguments"]["gen_args_0"]["arg_0"],
                                                      "completion": row["resps"][0][0]})
            entry[row["filter"]] = {"value": row["filtered_resps"][0], "correct": row["exact_match"] == 1.0}
        samples[name] = [by_doc[i] for i in sorted(by_doc)]
    return samples


@pytest.fixture(scope="module")
def ours(model_dir) -> dict[str, list[dict]]:
    """Our --protocol records for the same problems, all 8 of a protocol in one left-padded batch."""
    args = ModelArguments(model_name_or_path=model_dir, dtype="float32")
    model, tokenizer = load_model(args, device="cpu").eval(), load_tokenizer(args)
    records = {}
    for name, limit in TASKS.items():
        problems, train = load_protocol_rows("bundled", None, "test", "train", limit)
        records[name] = evaluate_protocol(model, tokenizer, problems, train, PROTOCOLS[name], batch_size=8,
                                          show_progress=False)
    return records


def differences(ours: list[dict], theirs: list[dict]) -> list[str]:
    """Every field of every problem where our evaluation and lm-eval's differ."""
    found = []
    for i, (mine, reference) in enumerate(zip(ours, theirs, strict=True)):
        readings = {"prompt": (mine["prompt"], reference["prompt"]),
                    "completion": (mine["completion"], reference["completion"]),
                    "strict value": (mine["extracted"] or protocols.FALLBACK, reference["strict-match"]["value"]),
                    "strict score": (mine["correct"], reference["strict-match"]["correct"]),
                    "flexible value": (mine["extracted_flexible"] or protocols.FALLBACK,
                                       reference["flexible-extract"]["value"]),
                    "flexible score": (mine["correct_flexible"], reference["flexible-extract"]["correct"])}
        found += [f"problem {i} {field}: ours {a!r}, lm-eval {b!r}" for field, (a, b) in readings.items() if a != b]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TASKS))
def test_protocol_equals_lm_eval_problem_by_problem(name, ours, lm_eval_samples):
    assert len(ours[name]) == TASKS[name] == len(lm_eval_samples[name])
    assert differences(ours[name], lm_eval_samples[name]) == []


def rescored(records: list[dict], protocol, train_rows=None) -> list[dict]:
    """Our records re-derived under an altered protocol, from the text we generated (no new decoding)."""
    problems, train = load_protocol_rows("bundled", None, "test", "train", len(records))
    prompts = protocols.protocol_prompts(protocol, [row for _, row in problems], train_rows or train)
    altered = []
    for record, prompt, (_, row) in zip(records, prompts, problems):
        completion = cut_at_stop(record["generated"], protocol.until)
        altered.append({**record, "prompt": prompt, "completion": completion,
                        **score(protocol, completion, row["answer"])})
    return altered


@pytest.mark.slow
def test_the_comparison_fails_when_the_protocol_is_altered(ours, lm_eval_samples, monkeypatch):
    records, theirs = ours["gsm8k"], lm_eval_samples["gsm8k"]
    gsm8k = PROTOCOLS["gsm8k"]
    assert differences(rescored(records, gsm8k), theirs) == []  # re-deriving alone changes nothing
    _, train = load_protocol_rows("bundled", None, "test", "train", 1)
    first_shot = random.Random(protocols.FEWSHOT_SEED).sample(range(len(train)), gsm8k.num_fewshot)[0]
    a_shot_changed = list(train)
    a_shot_changed[first_shot] = {**train[first_shot], "answer": train[first_shot]["answer"].replace(" ", "  ", 1)}
    assert [d.split(" prompt")[0] for d in differences(rescored(records, gsm8k, a_shot_changed), theirs)] == ["problem 0"]
    no_question_stop = dataclasses.replace(gsm8k, until=("</s>", "<|im_end|>"))
    assert any("completion" in d for d in differences(rescored(records, no_question_stop), theirs))
    assert sum(r["extracted"] is not None for r in records) >= 4  # the model writes '#### N': a regex is tested
    other_strict_regex = dataclasses.replace(gsm8k, strict_pattern=r"####(\-?[0-9\.\,]+)")  # no space after ####
    assert any("strict value" in d for d in differences(rescored(records, other_strict_regex), theirs))
    monkeypatch.setattr(protocols, "FLEXIBLE_GROUP", 0)  # the first number in place of the last
    assert any("flexible value" in d for d in differences(rescored(records, gsm8k), theirs))
