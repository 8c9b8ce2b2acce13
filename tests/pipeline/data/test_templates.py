"""Templates for any task: a user's dataset gets no math wording, an empty system prompt means no system turn, and
a chat template without a system role gets the system prompt in the first user turn."""

import json

import pytest
from transformers import AutoTokenizer

from pipeline.arguments import DataArguments
from pipeline.data import Example, get_template, render_prompt
from pipeline.sft import sft_record

# Gemma's chat template (google/gemma-7b-it): it raises on a system turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_users_dataset_gets_the_plain_template_gsm8k_and_reasoning_gym_keep_theirs(tmp_path):
    data = write_rows(tmp_path / "capitals.jsonl", [{"prompt": "Capital of France?", "answer": "Paris"}] * 4)
    assert DataArguments(dataset_name=str(data)).prompt_template == "plain"
    assert DataArguments(dataset_name="bundled").prompt_template == "reasoning"
    assert DataArguments(dataset_name="reasoning_gym:chain_sum").prompt_template == "reasoning"
    assert DataArguments(dataset_name=str(data), prompt_template="answer").prompt_template == "answer"  # as chosen
    example = DataArguments(dataset_name=str(data), eval_holdout_size=1).load_splits().train[0]
    plain = get_template("plain")
    assert example.prompt_messages(plain) == [{"role": "user", "content": "Capital of France?"}]  # no system turn
    assert sft_record(example, plain)["completion"] == [{"role": "assistant", "content": "Paris"}]  # as written


def test_an_empty_system_prompt_means_no_system_turn():
    messages = get_template("reasoning").messages("2 + 2?", system_prompt="")
    assert messages == [{"role": "user", "content": "2 + 2?"}]
    assert get_template("reasoning").messages("2 + 2?", system_prompt="Be brief.")[0] == {"role": "system",
                                                                                         "content": "Be brief."}


def test_a_chat_template_without_a_system_role_gets_the_system_prompt_in_the_first_user_turn(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = GEMMA_TEMPLATE
    messages = get_template("reasoning").messages("2 + 2?", system_prompt="Be brief.")
    with pytest.warns(UserWarning, match="no system role"):
        text = render_prompt(tokenizer, messages)
    assert text.endswith("<start_of_turn>user\nBe brief.\n\n2 + 2?<end_of_turn>\n<start_of_turn>model\n")
    assert render_prompt(tokenizer, get_template("plain").messages("2 + 2?")).endswith(
        "<start_of_turn>user\n2 + 2?<end_of_turn>\n<start_of_turn>model\n")  # nothing to fold: no warning needed
    with pytest.warns(UserWarning, match="no system role"):  # SFT's rows, which TRL renders, are folded too
        record = sft_record(Example("2 + 2?", "", 4, "f:1"), get_template("answer"), "Be brief.", tokenizer)
    assert record["prompt"] == [{"role": "user", "content": "Be brief.\n\n2 + 2?"}]
