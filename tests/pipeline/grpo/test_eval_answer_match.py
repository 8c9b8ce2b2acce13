"""GRPO's evaluation of text answers: judged by normalised text match (auto, or --eval_answer_match), and a
numeric reading asked for on them refused before any weights load."""

import json

import pytest

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.config import ConfigError
from pipeline.data import DataError
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.inputs import preflight
from pipeline.grpo.trainer import train

CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Peru", "Lima")]


def test_grpo_evaluates_text_answers(tiny_model_dir, mini_gsm8k, tmp_path):
    held = tmp_path / "capitals.jsonl"
    held.write_text("".join(json.dumps({"prompt": f"Capital of {c}?", "answer": a}) + "\n" for c, a in CAPITALS))
    data = DataArguments(dataset_name=str(mini_gsm8k), eval_dataset_name=str(held), grpo_holdout_size=8)
    model = ModelArguments(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4, lora_alpha=8)
    args = dict(output_dir=str(tmp_path / "run"), max_steps=1, prompts_per_step=2, num_generations=2,
                micro_batch_size=4, max_completion_length=4, reward_funcs=["accuracy"], save_steps=0,
                eval_limit=3, eval_batch_size=3, eval_max_new_tokens=3, eval_before=False)
    with pytest.raises(DataError, match=rf"^{held}:1: gold answer 'Paris' is not one number .*; fix the row, or "
                                        "judge answers as text with --eval_answer_match text$"):
        preflight(GRPOArguments(**args, eval_answer_match="numeric"), model, data)
    examples, problems, label = preflight(GRPOArguments(**args), model, data)
    summary = train(GRPOArguments(**args), model, data, examples, problems, label)
    records = [json.loads(line) for line in
               (tmp_path / "run" / "eval" / "step-1" / "predictions.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in records] == ["Paris", "Rome", "Lima"]
    assert summary["eval_after"]["answer_match"] == "text" and summary["eval_after"]["num_problems"] == 3


def test_an_eval_protocol_keeps_answer_match_auto_as_evaluate_does():
    """scripts/evaluate.py refuses --protocol with --answer_match other than auto; GRPO's evaluation likewise."""
    with pytest.raises(ConfigError, match=r"^option --eval_answer_match: lm-eval's GSM8K protocols read answers as "
                                          r"lm-eval does; leave --eval_answer_match auto with --eval_protocol$"):
        GRPOArguments(eval_protocol="gsm8k", eval_answer_match="numeric")
    assert GRPOArguments(eval_protocol="gsm8k").eval_answer_match == "auto"
    assert GRPOArguments(eval_answer_match="numeric").eval_protocol is None
