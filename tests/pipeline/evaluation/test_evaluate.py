import json
from fractions import Fraction

import pytest
import torch

from pipeline.arguments import EvalArguments
from pipeline.data import get_template, load_gsm8k, render_prompt
from pipeline.evaluation.evaluate import (
    evaluate_gsm8k,
    format_table,
    majority_answer,
    pass_at_k,
    problem_metrics,
    score_completion,
    summarize,
    write_results,
)
from pipeline.models import load_model, load_tokenizer


def test_pass_at_k_matches_brute_force():
    from itertools import combinations

    n, c = 5, 2
    outcomes = [1] * c + [0] * (n - c)
    for k in range(1, n + 1):
        subsets = list(combinations(outcomes, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_majority_vote_ignores_missing_answers_and_breaks_ties_by_first_seen():
    assert majority_answer([None, None, Fraction(2)]) == 2
    assert majority_answer([Fraction(1), Fraction(2), Fraction(2), Fraction(1)]) == 1
    assert majority_answer([None]) is None


def test_problem_metrics_by_hand():
    gold = Fraction(7)
    greedy = score_completion("I get 7")  # flexible right, strict missing
    samples = [score_completion(t) for t in ["<answer>7</answer>", "<answer>8</answer>", "<answer>8</answer>", "7"]]
    metrics = problem_metrics(greedy, samples, gold)
    assert metrics == {
        "pass@1 (greedy)/strict": 0.0,
        "pass@1 (greedy)/flexible": 1.0,
        "pass@1 (sampled)/strict": 0.25,
        "pass@4/strict": 1.0,
        "maj@4/strict": 0.0,  # strict votes 7, 8, 8: 8 wins
        "pass@1 (sampled)/flexible": 0.5,
        "pass@4/flexible": 1.0,
        "maj@4/flexible": 1.0,  # flexible votes 7, 8, 8, 7: a tie, won by 7, seen first
    }
    table = summarize([metrics, problem_metrics(score_completion("0"), samples, Fraction(1))])
    assert table["pass@1 (greedy)"] == {"strict": 0.0, "flexible": 0.5}


CONSTANT_TARGET = "<reasoning>\nadd them\n</reasoning>\n<answer>\n7\n</answer>"


@pytest.fixture
def constant_answer_model(tiny_model_args, tmp_path):
    """The tiny model trained to answer 7 to every prompt, so the expected scores are known by hand."""
    tokenizer = load_tokenizer(tiny_model_args, padding_side="right")
    model = load_model(tiny_model_args)
    template = get_template("reasoning")
    questions = ["What is 3 + 4?", "Add 5 and 2.", "How many legs have 3 birds?", "What is 6 + 1?", "What is 10 + 2?"]
    texts = [render_prompt(tokenizer, template.messages(q)) + CONSTANT_TARGET + tokenizer.eos_token for q in questions]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path / "constant-7"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    golds = ["7", "7", "6", "7", "12"]
    data = tmp_path / "mini.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": f"x\n#### {g}"}) + "\n" for q, g in zip(questions, golds)))
    return path, data


def test_evaluation_scores_match_hand_computed(constant_answer_model, tmp_path):
    from pipeline.arguments import ModelArguments

    path, data = constant_answer_model
    args = ModelArguments(model_name_or_path=str(path))
    examples = load_gsm8k(str(data)).examples
    eval_args = EvalArguments(batch_size=2, max_new_tokens=48, num_samples=3, temperature=0.5, output_dir=str(tmp_path / "out"))
    records, summary = evaluate_gsm8k(
        load_model(args), load_tokenizer(args), examples, get_template("reasoning"), eval_args, show_progress=False
    )
    write_results(eval_args.output_dir, records, summary)

    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    assert [r["completion"] for r in records] == [CONSTANT_TARGET] * 5  # greedy reproduces the training target
    assert [r["extracted"] for r in records] == ["7"] * 5
    assert [r["gold"] for r in records] == ["7", "7", "6", "7", "12"]
    assert [r["correct"] for r in records] == [True, True, False, True, False]
    assert summary["metrics"]["pass@1 (greedy)"] == {"strict": 0.6, "flexible": 0.6}
    assert summary["marked_answer_rate"] == 1.0
    # Sampled metrics recomputed by hand from the recorded samples.
    for metric, field in (("maj@3", "extracted"), ("pass@3", "correct")):
        expected = []
        for r in records:
            if metric == "pass@3":
                expected.append(float(any(s["correct"] for s in r["samples"])))
            else:
                votes = [s["extracted"] for s in r["samples"] if s["extracted"] is not None]
                winner = max(votes, key=votes.count) if votes else None
                expected.append(float(winner == r["gold"]))
        assert summary["metrics"][metric]["strict"] == pytest.approx(sum(expected) / 5)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["num_problems"] == 5
    assert "pass@1 (greedy)" in format_table(summary)
    assert summary["generated_tokens"] == sum(r["num_tokens"] + sum(s["num_tokens"] for s in r["samples"]) for r in records)


def test_limit_and_determinism(tiny_model_args, tmp_path):
    model, tokenizer = load_model(tiny_model_args), load_tokenizer(tiny_model_args)
    examples = load_gsm8k(split="test").examples
    eval_args = EvalArguments(limit=3, batch_size=2, max_new_tokens=8, num_samples=2)
    first, _ = evaluate_gsm8k(model, tokenizer, examples, get_template("reasoning"), eval_args, show_progress=False)
    second, _ = evaluate_gsm8k(model, tokenizer, examples, get_template("reasoning"), eval_args, show_progress=False)
    assert len(first) == 3 and first == second
    assert all(1 <= r["num_tokens"] <= 8 for r in first)


def test_reasoning_gym_problems_are_judged_by_the_tasks_own_verifier():
    from pipeline.arguments import DataArguments
    from pipeline.evaluation.evaluate import NumericJudge, ReasoningGymJudge, judge_for

    words = DataArguments(dataset_name="reasoning_gym:spell_backward", dataset_size=4, eval_holdout_size=2).load_splits()
    example = words.train[0]  # a text answer: the numeric reader could not judge it
    judge = judge_for([example])
    assert isinstance(judge, ReasoningGymJudge) and isinstance(judge_for(load_gsm8k(split="test").examples[:1]),
                                                                 NumericJudge)
    gold = judge.gold(example)
    right = score_completion(f"Reversed:\n<answer>{example.answer}</answer>", judge=judge)
    untagged = score_completion(f"Reversed:\n{example.answer}", judge=judge)
    wrong = score_completion(f"<answer>{example.answer[::-1]}x</answer>", judge=judge)
    assert (right.correct(gold, "strict"), right.correct(gold, "flexible")) == (True, True)
    assert (untagged.correct(gold, "strict"), untagged.correct(gold, "flexible")) == (False, True)  # last line
    assert not wrong.correct(gold, "strict")
    metrics = problem_metrics(untagged, [right, wrong, right], gold)
    assert metrics["maj@3/strict"] == 1.0 and metrics["pass@1 (greedy)/strict"] == 0.0
