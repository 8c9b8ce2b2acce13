import pytest

from rewards import load_reward, make_overlong_reward


@pytest.mark.parametrize("length, expected", [(0, 0.0), (80, 0.0), (81, -0.05), (90, -0.5), (100, -1.0), (150, -1.0)])
def test_soft_overlong_penalty(length, expected):
    fn = make_overlong_reward(max_completion_length=100, overlong_buffer_length=20)
    assert fn(prompts=[""], completions=[""], completion_ids=[[0] * length]) == [pytest.approx(expected)]


def test_matches_trl_soft_overlong_punishment():
    from trl.rewards import get_soft_overlong_punishment

    ours = make_overlong_reward(max_completion_length=64, overlong_buffer_length=16)
    theirs = get_soft_overlong_punishment(max_completion_len=64, soft_punish_cache=16)
    ids = [[1] * n for n in range(0, 80, 3)]
    assert ours(prompts=[""] * len(ids), completions=[""] * len(ids), completion_ids=ids) == pytest.approx(
        theirs(completion_ids=ids)
    )


def test_needs_completion_ids():
    with pytest.raises(ValueError, match="completion_ids"):
        make_overlong_reward(10, 5)(prompts=[""], completions=[""])


@pytest.mark.parametrize("max_len, buffer", [(0, 1), (10, 0), (10, 11)])
def test_invalid_options(max_len, buffer):
    with pytest.raises(ValueError):
        make_overlong_reward(max_len, buffer)


def test_registry_factory_needs_its_options():
    with pytest.raises(ValueError, match="needs option"):
        load_reward("overlong")
    fn = load_reward("overlong", max_completion_length=10, overlong_buffer_length=5, reasoning_tag="x")
    assert fn(prompts=[""], completions=[""], completion_ids=[[1] * 10]) == [-1.0]
