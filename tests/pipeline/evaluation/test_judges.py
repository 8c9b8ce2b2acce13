"""How answers are judged (--answer_match): text answers by normalised exact match, math-verify's equivalence,
the numeric reading chosen only when every gold answer is a number; expectations derived by hand."""

import json
from types import SimpleNamespace

import pytest

from pipeline.arguments import EvalArguments
from pipeline.data import DataError, Example, get_template, load_gsm8k
from pipeline.evaluation.evaluate import evaluate_gsm8k, majority_answer, problem_metrics, score_completion
from pipeline.evaluation.judges import (
    MathVerifyJudge,
    NumericJudge,
    TextJudge,
    check_gold_answers,
    judge_for,
    normalize_text_answer,
)
from pipeline.models import load_tokenizer
from rewards.parsing import GoldAnswerError


def example(answer, source="mine.jsonl:1", question="q?"):
    return Example(question, "", answer, source)


@pytest.mark.parametrize("text, normalised", [
    ("Paris", "paris"),
    ("  paris. ", "paris"),
    ("b)", "b"),
    ("(B)", "b"),
    ("**New   York**\n", "new york"),
    ("'Hello, world!'", "hello, world"),  # inner punctuation stays
    ("U.S.", "u.s"),
    ("The Beatles", "the beatles"),  # articles stay: SQuAD's rule would make the choice "A" empty
    ("A", "a"),
    ("ＡＢＣ", "abc"),  # NFKC: full-width letters
    ("...", ""),
])
def test_text_normalisation_by_hand(text, normalised):
    assert normalize_text_answer(text) == normalised


@pytest.mark.parametrize("gold, completion, strict, flexible", [
    ("Paris", "paris.", False, True),  # unmarked: only the flexible reading (the last line) sees it
    ("Paris", "<answer>\nparis.\n</answer>", True, True),
    ("B", "b)", False, True),
    ("B", "The answer is (B).", True, True),
    ("B", "I think A.\nNo: the answer is b)", True, True),  # the last marker wins
    ("B", "The answer is C.\nB", False, False),  # a marked answer is read by both; the later line is not
    ("New York", "<answer>new york city</answer>", False, False),
    ("New York", "new york city", False, False),
    ("New York", "Let me think.\nThe city is big.\n\nNew  York\n", False, True),
    ("A", "", False, False),  # no answer never matches, though "a" and "" are both short
    ("A", "<answer></answer>\nA", False, True),  # an empty marked answer is no answer: the last line counts
    (7.0, "<answer>7</answer>", True, True),  # a number as gold: its text, 7
    (["NYC", "New York"], "\\boxed{new york}", True, True),  # a list: any of them
])
def test_text_judge_by_hand(gold, completion, strict, flexible):
    judge = TextJudge()
    golds = judge.gold(example(gold))
    scored = score_completion(completion, judge=judge)
    assert (scored.correct(golds, "strict"), scored.correct(golds, "flexible")) == (strict, flexible)


def test_text_judge_votes_on_normalised_answers():
    judge = TextJudge()
    gold = judge.gold(example("Paris"))
    samples = [score_completion(t, judge=judge) for t in ["<answer>Lyon</answer>", "<answer>paris.</answer>",
                                                          "<answer>PARIS</answer>", "<answer>lyon</answer>",
                                                          "<answer>Paris!</answer>"]]
    assert majority_answer([s.strict for s in samples]) == "paris"  # 3 votes against lyon's 2
    metrics = problem_metrics(samples[0], samples, gold)
    assert metrics["maj@5/strict"] == 1.0 and metrics["pass@1 (greedy)/strict"] == 0.0
    assert metrics["pass@1 (sampled)/strict"] == pytest.approx(3 / 5)


@pytest.mark.parametrize("gold, message", [
    ("...", "is empty once normalised"),
    ({"city": "Paris"}, "is not text, a number, or a list of them"),
    ([], "is not text, a number, or a list of them"),
])
def test_a_text_gold_that_cannot_be_judged_is_refused(gold, message):
    with pytest.raises(GoldAnswerError, match=message):
        TextJudge().gold(example(gold))


def test_auto_reads_numbers_only_when_every_gold_answer_is_one():
    gsm8k = load_gsm8k(split="test").examples[:5]
    assert isinstance(judge_for(gsm8k), NumericJudge)  # GSM8K: numeric, as before
    assert isinstance(judge_for([example(3), example("4.5"), example("1,200")]), NumericJudge)
    assert isinstance(judge_for([example("Paris"), example("B")]), TextJudge)
    assert isinstance(judge_for([example(3), example("three")]), TextJudge)  # one text answer: all read as text
    assert isinstance(judge_for(gsm8k, "text"), TextJudge)
    assert isinstance(judge_for([example("Paris")], "math_verify"), MathVerifyJudge)


def test_text_gold_answers_pass_the_check_that_refused_them():
    rows = [example("Paris", "mine.jsonl:1"), example("B", "mine.jsonl:2")]
    assert check_gold_answers(rows).name == "text"
    with pytest.raises(DataError) as info:
        check_gold_answers(rows, "numeric")
    assert str(info.value).startswith("mine.jsonl:1: gold answer 'Paris' is not one number")
    assert str(info.value).endswith("; fix the row, or judge answers as text with --answer_match text")
    with pytest.raises(DataError, match=r"mine.jsonl:2: .*with --eval_answer_match text$"):
        check_gold_answers([example(2, "mine.jsonl:1"), example("B", "mine.jsonl:2")], "numeric",
                           "--eval_answer_match")
    with pytest.raises(DataError, match=r"^mine.jsonl:3: gold answer '\?' is empty once normalised .*; fix the row$"):
        check_gold_answers([example("Paris"), example("B", "mine.jsonl:2"), example("?", "mine.jsonl:3")])


def test_math_verify_judge_by_hand():
    judge = MathVerifyJudge()
    half = judge.gold(example("0.5"))
    assert score_completion(r"so \boxed{\frac{1}{2}}", judge=judge).correct(half, "strict")
    assert not score_completion(r"<answer>\frac{1}{3}</answer>", judge=judge).correct(half, "strict")
    unmarked = score_completion("Halving 1 gives\n1/2", judge=judge)
    assert (unmarked.strict, unmarked.flexible) == (None, "1/2")
    assert (unmarked.correct(half, "strict"), unmarked.correct(half, "flexible")) == (False, True)
    with pytest.raises(DataError, match=r"^mine.jsonl:1: gold answer 'Paris': math-verify cannot parse it; fix the "
                                        "row, or judge answers as text with --answer_match text$"):
        check_gold_answers([example("Paris")], "math_verify")


def test_eval_arguments_keep_lm_eval_protocols_numeric():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="option --answer_match: lm-eval's GSM8K protocols read answers"):
        EvalArguments(protocol="gsm8k", answer_match="text")
    with pytest.raises(ConfigError, match="option --answer_match: 'exact' is not one of auto, numeric, text"):
        EvalArguments(answer_match="exact")


TEXT_PROBLEMS = [  # (question, gold, the forced greedy completion, strict correct, flexible correct), by hand
    ("Capital of France?", "Paris", "<answer>\nparis.\n</answer>", True, True),
    ("Which letter is a vowel: (A) b (B) e?", "B", "The vowel is e.\nb)", False, True),
    ("Biggest city of the USA?", "New York", "<answer>New York City</answer>", False, False),
    ("Largest planet?", "Jupiter", "Hmm.\nThe answer is Jupiter.", True, True),
    ("How many legs has a spider?", "8", "<answer>8</answer>", True, True),  # a number, read as text here
]


def forced_generator(completions_by_question):
    """Stands in for the decoder: the completion written for the question the prompt holds."""
    def generate(prompts, max_new_tokens, do_sample, finished_everywhere=None, rows_done=None, **kwargs):
        assert not do_sample
        texts = [[next(c for q, c in completions_by_question.items() if q in p)] for p in prompts]
        return SimpleNamespace(texts=texts, num_tokens=[[3]] * len(prompts))
    return generate


def test_evaluation_of_text_answers_by_hand(tiny_model_args, tmp_path):
    path = tmp_path / "capitals.jsonl"
    path.write_text("".join(json.dumps({"prompt": q, "answer": g}) + "\n" for q, g, *_ in TEXT_PROBLEMS))
    from pipeline.arguments import DataArguments

    problems = DataArguments(dataset_name=str(path)).load_splits(need_train=False).eval
    records, summary = evaluate_gsm8k(None, load_tokenizer(tiny_model_args), problems, get_template("reasoning"),
                                      EvalArguments(batch_size=2), show_progress=False,
                                      generator=forced_generator({q: c for q, _, c, *_ in TEXT_PROBLEMS}))
    assert [r["gold"] for r in records] == [g for _, g, *_ in TEXT_PROBLEMS]
    assert [r["correct"] for r in records] == [s for *_, s, _ in TEXT_PROBLEMS]
    assert [r["correct_flexible"] for r in records] == [f for *_, f in TEXT_PROBLEMS]
    assert [r["extracted"] for r in records] == ["paris", None, "new york city", "jupiter", "8"]
    assert summary["answer_match"] == "text"
    assert summary["metrics"]["pass@1 (greedy)"] == {"strict": 0.6, "flexible": 0.8}
    assert summary["marked_answer_rate"] == 0.8
