"""One training or evaluation problem, read from a dataset row by TRL's column conventions.

A row gives a prompt (``prompt``: plain text or chat messages; GSM8K's ``question``), optionally a gold
``answer`` (any type: a number, a numeric string, a GSM8K solution ending in ``#### N``, a task's text
answer), optionally an SFT target (``completion``, or a ``messages`` conversation whose last turn is the
assistant's), and any other columns, which reach reward functions as keyword arguments, as in TRL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import BadInput
from pipeline.data.templates import PromptTemplate, render_prompt


class DataError(BadInput, ValueError):
    """A dataset row or file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    """One problem: its prompt, gold answer, optional SFT target and the row's other columns."""

    question: str  # the prompt's text: the user turn a template wraps, or a conversation's last user turn
    reasoning: str  # a worked solution for the SFT target (GSM8K's, annotations removed), else ""
    answer: Any  # the gold answer as the row holds it ("#### N" solutions: the number); None: no answer column
    source: str  # "file:line" (or "hub:split:index", "reasoning_gym:task:index") for errors and provenance
    messages: tuple[Mapping[str, str], ...] | None = field(default=None, compare=False)  # a conversational prompt
    completion: str | None = field(default=None, compare=False)  # the row's own SFT target text
    columns: Mapping[str, Any] = field(default_factory=dict, compare=False)  # every other column, for rewards
    prompt: str | None = field(default=None, compare=False)  # a plain-text prompt as the row holds it (unstripped)

    @property
    def conversational(self) -> bool:
        return self.messages is not None

    def prompt_messages(self, template: PromptTemplate, system_prompt: str | None = None) -> list[dict[str, str]]:
        """The chat the model is prompted with: a conversational prompt as given, a plain one in the template."""
        if self.messages is not None:
            return [dict(m) for m in self.messages]
        return template.messages(self.question, system_prompt)

    def prompt_text(self, tokenizer, template: PromptTemplate, system_prompt: str | None = None) -> str:
        """The prompt as the model reads it: ``prompt_messages`` through the tokenizer's chat template."""
        return render_prompt(tokenizer, self.prompt_messages(template, system_prompt))

    def reward_prompt(self) -> str | list[dict[str, str]]:
        """The prompt as reward functions get it, as TRL passes it: a plain-text row's prompt string as the dataset
        holds it, a conversational row's messages. (The model itself is always prompted through its chat template
        and the prompt template: see ``prompt_messages``.)

        >>> Example("2+2?", "", 4, "f:1", prompt="2+2? ").reward_prompt()
        '2+2? '
        """
        if self.messages is not None:
            return [dict(m) for m in self.messages]
        return self.prompt if self.prompt is not None else self.question

    def reward_completion(self, text: str) -> str | list[dict[str, str]]:
        """A completion as TRL hands it to rewards: text for a plain-text row, one assistant message for a
        conversational one.

        >>> Example("2+2?", "", 4, "f:1").reward_completion("4")
        '4'
        """
        if self.messages is not None:
            return [{"role": "assistant", "content": text}]
        return text

    def reward_columns(self) -> dict[str, Any]:
        """The row's columns that rewards receive (``answer`` first, when there is one)."""
        return ({"answer": self.answer} if self.answer is not None else {}) | dict(self.columns)

    def target(self, template: PromptTemplate) -> str:
        """The SFT completion: the row's own, else the gold answer (and reasoning) in the template's layout.

        >>> from pipeline.data.templates import TEMPLATES
        >>> Example("1+2?", "", 3, "f:1").target(TEMPLATES["answer"])
        '<answer>\\n3\\n</answer>'
        """
        if self.completion is not None:
            return self.completion
        if self.answer is None:
            raise DataError(f"{self.source}: no completion or answer column to train SFT on; give a 'completion' "
                            "(or 'messages') column, or map one with --completion_field / --answer_field")
        return template.completion(self.reasoning, answer_text(self.answer))


def answer_text(answer: Any) -> str:
    """A gold answer as the text an SFT target states.

    >>> answer_text(3), answer_text(2.50), answer_text("0.5"), answer_text(7.0)
    ('3', '2.5', '0.5', '7')
    """
    if isinstance(answer, float) and answer.is_integer():
        return str(int(answer))
    return str(answer).strip()


@dataclass(frozen=True)
class ColumnMap:
    """Which row fields hold the prompt, the gold answer and the SFT target (TRL's names by default)."""

    prompt: str = "auto"  # "auto": prompt, else question (GSM8K), else the messages column's conversation
    answer: str = "auto"  # "auto": answer, when the row has one
    completion: str = "completion"
    messages: str = "messages"
    solution_required: bool = False  # GSM8K: the answer must be a worked solution ending in '#### N'

    def prompt_key(self, row: Mapping[str, Any]) -> str:
        if self.prompt != "auto":
            if self.prompt not in row:
                raise ValueError(f"missing field {self.prompt!r} (fields present: {_fields(row)})")
            return self.prompt
        for key in ("prompt", "question", self.messages):
            if key in row:
                return key
        raise ValueError(f"no prompt column: expected 'prompt', 'question' or {self.messages!r} (fields present: "
                         f"{_fields(row)}); name yours with --prompt_field")

    def answer_key(self, row: Mapping[str, Any]) -> str | None:
        key = "answer" if self.answer == "auto" else self.answer
        if row.get(key) is not None:
            return key
        if self.answer == "auto" and not self.solution_required:
            return None  # no gold answer: fine for a reward that needs none, refused where one is needed
        raise ValueError(f"missing field {key!r} (fields present: {_fields(row)})")


def _fields(row: Mapping[str, Any]) -> str:
    return ", ".join(map(str, row)) or "none"


def _chat(value: Any, name: str) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value):
        raise ValueError(f"field {name!r} must be a non-empty string or a list of {{'role', 'content'}} messages")
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def _prompt(row: Mapping[str, Any], key: str, columns: ColumnMap) -> tuple[str, tuple | None, str | None]:
    """(question text, conversational prompt or None, the conversation's own completion or None)."""
    value = row[key]
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"field {key!r} must be a non-empty string")
        return value.strip(), None, None
    chat = _chat(value, key)
    completion = None
    if key == columns.messages and chat[-1]["role"] == "assistant":
        chat, completion = chat[:-1], chat[-1]["content"]  # a full conversation: SFT's target is its last turn
        if not chat:
            raise ValueError(f"field {key!r} has only an assistant turn; it needs a prompt before it")
    users = [m["content"] for m in chat if m["role"] == "user"]
    return (users[-1] if users else chat[-1]["content"]).strip(), chat, completion


def _completion(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    return "".join(m["content"] for m in _chat(value, name) if m["role"] == "assistant")


def example_from_row(row: Any, where: str, columns: ColumnMap = ColumnMap()) -> Example:
    """An Example from one dataset row; ``ValueError`` says what is wrong with the row.

    >>> ex = example_from_row({"prompt": [{"role": "user", "content": "2+2?"}], "answer": 4, "level": 1}, "f:1")
    >>> ex.question, ex.answer, ex.conversational, dict(ex.columns)
    ('2+2?', 4, True, {'level': 1})
    """
    from pipeline.data.gsm8k import parse_solution

    if not isinstance(row, Mapping):
        raise ValueError(f"row is a {type(row).__name__}, expected a JSON object")
    prompt_key = columns.prompt_key(row)
    question, messages, completion = _prompt(row, prompt_key, columns)
    answer_key = columns.answer_key(row)
    answer, reasoning = (row[answer_key] if answer_key else None), ""
    if isinstance(answer, str) and ("####" in answer or columns.solution_required):
        reasoning, answer = parse_solution(answer)
    elif columns.solution_required:
        raise ValueError(f"field {answer_key or 'answer'!r} must be a solution ending in '#### <number>'")
    if columns.completion in row and row[columns.completion] is not None:
        completion = _completion(row[columns.completion], columns.completion)
    elif completion is None and prompt_key != columns.messages and isinstance(row.get(columns.messages), list):
        chat = _chat(row[columns.messages], columns.messages)  # prompt + messages (ultrachat's shape): SFT's
        completion = chat[-1]["content"] if chat[-1]["role"] == "assistant" else None  # target is the last turn
    used = {prompt_key, columns.completion} | ({"answer"} if answer_key == "answer" else set())
    extra = {k: v for k, v in row.items() if k not in used}  # a renamed gold column also keeps its own name
    raw_prompt = row[prompt_key] if isinstance(row[prompt_key], str) else None
    return Example(question, reasoning, answer, where, messages, completion, extra, raw_prompt)
