import pytest

from rewards import load_reward, make_format_reward

GOOD = "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>"


@pytest.mark.parametrize(
    "completion, strict, soft",
    [
        (GOOD, 1.0, 1.0),
        (GOOD + "\n", 1.0, 1.0),
        ("<reasoning> 3 + 4 = 7 </reasoning> <answer> 7 </answer>", 0.0, 1.0),
        ("Sure! " + GOOD, 0.0, 1.0),
        (GOOD + " and more text", 0.0, 1.0),
        ("<answer>\n7\n</answer>\n<reasoning>\n3+4\n</reasoning>", 0.0, 0.0),
        ("<reasoning>\n3\n</reasoning>", 0.0, 0.0),
        ("<reasoning>\n<reasoning>\n3\n</reasoning>\n</reasoning>\n<answer>\n7\n</answer>", 0.0, 1.0),
        ("7", 0.0, 0.0),
        ("", 0.0, 0.0),
    ],
)
def test_strict_and_soft_format(completion, strict, soft):
    assert make_format_reward(strict=True)(prompts=[""], completions=[completion]) == [strict]
    assert make_format_reward(strict=False)(prompts=[""], completions=[completion]) == [soft]


def test_format_follows_the_template_tags():
    think = load_reward("format", reasoning_tag="think", answer_tag="answer")
    assert think(prompts=[""], completions=["<think>\nx\n</think>\n<answer>\n1\n</answer>", GOOD]) == [1.0, 0.0]


def test_plain_gsm8k_template_uses_hash_line():
    plain = load_reward("format", reasoning_tag=None, answer_tag=None)
    assert plain(prompts=["", "", ""], completions=["2*3=6\n#### 6", "#### 6", "2*3=6"]) == [1.0, 0.0, 0.0]


def test_chat_message_completions():
    fn = make_format_reward()
    assert fn(prompts=[""], completions=[[{"role": "assistant", "content": GOOD}]]) == [1.0]
