"""reasoning-gym as a data source and a reward, with the real library."""

import pytest

from pipeline.arguments import DataArguments
from pipeline.data import DataError
from rewards import load_reward

CHAIN_SUM = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def chain_sum(**overrides):
    return DataArguments(dataset_name="reasoning_gym:chain_sum", dataset_options=CHAIN_SUM, dataset_size=300,
                         eval_holdout_size=50, **overrides)


def test_training_and_held_out_problems_are_seeded_and_disjoint():
    splits = chain_sum().load_splits()
    assert (len(splits.train), len(splits.eval)) == (300, 50)
    train_questions = {e.question for e in splits.train}
    assert len(train_questions) == 300 and train_questions.isdisjoint(e.question for e in splits.eval)
    assert [e.question for e in chain_sum().load_splits().train] == [e.question for e in splits.train]
    assert [e.question for e in chain_sum(dataset_seed=7).load_splits().train] != [e.question for e in splits.train]
    first = splits.train[0]
    terms = first.columns["metadata"]["expression"].split()
    assert int(first.answer) == eval(" ".join(terms))  # noqa: S307 - the task's own arithmetic, checked by hand
    assert first.columns["metadata"]["source_dataset"] == "chain_sum" and "eval" not in first.source


def test_options_level_and_errors():
    wide = DataArguments(dataset_name="reasoning_gym:chain_sum", dataset_level=2, dataset_size=40).load_splits()
    assert max(e.columns["metadata"]["num_terms"] for e in wide.train) > 2  # level 2: up to 4 terms
    with pytest.raises(DataError, match="has no option 'max_term'; its options: .*max_terms"):
        DataArguments(dataset_name="reasoning_gym:chain_sum", dataset_options={"max_term": 3}).load_splits()
    with pytest.raises(DataError, match="no task 'chain_summ'; did you mean chain_sum"):
        DataArguments(dataset_name="reasoning_gym:chain_summ").load_splits()


def test_a_weighted_mix_of_tasks_is_scored_row_by_row():
    data = DataArguments(dataset_name="reasoning_gym:chain_sum,spell_backward", dataset_size=60, eval_holdout_size=10,
                         dataset_weights=[1.0, 1.0], dataset_options={"chain_sum": CHAIN_SUM})
    rows = data.load_splits().train
    tasks = [e.columns["metadata"]["source_dataset"] for e in rows]
    assert {"chain_sum", "spell_backward"} == set(tasks)
    reward = load_reward("reasoning_gym")
    right = [f"<answer>{e.answer}</answer>" for e in rows]
    wrong = ["<answer>#</answer>" for e in rows]
    kwargs = dict(answer=[e.answer for e in rows], metadata=[e.columns["metadata"] for e in rows])
    assert reward([e.question for e in rows], right, **kwargs) == [1.0] * len(rows)
    assert reward([e.question for e in rows], wrong, **kwargs) == [0.0] * len(rows)
    near = reward([e.question for e in rows], [f"<answer>{e.answer}x</answer>" for e in rows], **kwargs)
    assert any(0.0 < r < 0.99 for r in near)  # the task's own partial credit, not an exact-match test
    untagged = reward([e.question for e in rows], [str(e.answer) for e in rows], **kwargs)
    assert untagged == [0.0] * len(rows)  # the answer must be marked, as reasoning-gym reads it
