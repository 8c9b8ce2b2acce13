"""The one prompt template shared by SFT, GRPO and evaluation.

A template fixes the system prompt and how a completion lays out its reasoning and final answer.
The prompt itself is rendered with the model's own chat template.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class PromptTemplate:
    """How prompts are phrased and how a completion marks its reasoning and answer."""

    name: str
    system_prompt: str  # "": no system turn
    reasoning_tag: str | None  # None: no reasoning span (with answer_tag None too: GSM8K's "#### N" layout)
    answer_tag: str | None
    plain: bool = False  # the completion is the answer as written, after any reasoning: no tags, no "####"

    def messages(self, question: str, system_prompt: str | None = None) -> list[dict[str, str]]:
        """Chat messages for one question (the conversational prompt format TRL accepts); an empty system
        prompt (the template's, or ``system_prompt=""``) means no system turn.

        >>> TEMPLATES["plain"].messages("Capital of France?")
        [{'role': 'user', 'content': 'Capital of France?'}]
        """
        system = self.system_prompt if system_prompt is None else system_prompt
        user = [{"role": "user", "content": question.strip()}]
        return ([{"role": "system", "content": system}] if system else []) + user

    def completion(self, reasoning: str, answer: str) -> str:
        """The target completion for supervised training, in this template's layout.

        >>> TEMPLATES["reasoning"].completion("2 + 2 = 4", "4")
        '<reasoning>\\n2 + 2 = 4\\n</reasoning>\\n<answer>\\n4\\n</answer>'
        """
        if self.plain:
            return f"{reasoning.strip()}\n{answer}" if reasoning.strip() else answer
        if self.answer_tag is None:
            return f"{reasoning.strip()}\n#### {answer}"
        if self.reasoning_tag is None:  # answer only: the task's answer, no worked reasoning
            return f"<{self.answer_tag}>\n{answer}\n</{self.answer_tag}>"
        r, a = self.reasoning_tag, self.answer_tag
        return f"<{r}>\n{reasoning.strip()}\n</{r}>\n<{a}>\n{answer}\n</{a}>"


_TAGGED_SYSTEM_PROMPT = (
    "Solve the math problem. Think step by step inside <{r}> </{r}> tags, then give only the final "
    "number inside <{a}> </{a}> tags, in this format:\n<{r}>\n...\n</{r}>\n<{a}>\n...\n</{a}>"
)

TEMPLATES: dict[str, PromptTemplate] = {
    "reasoning": PromptTemplate(
        "reasoning", _TAGGED_SYSTEM_PROMPT.format(r="reasoning", a="answer"), "reasoning", "answer"
    ),
    "think": PromptTemplate("think", _TAGGED_SYSTEM_PROMPT.format(r="think", a="answer"), "think", "answer"),
    "answer": PromptTemplate(
        "answer",
        "Answer the question. Give only the final answer inside <answer> </answer> tags, in this format:\n"
        "<answer>\n...\n</answer>",
        None,
        "answer",
    ),
    "gsm8k": PromptTemplate(
        "gsm8k",
        "Solve the math problem step by step. End with a last line of the form '#### <number>'.",
        None,
        None,
    ),
    "plain": PromptTemplate("plain", "", None, None, plain=True),  # a user's own task: no system turn, no wording
}


def get_template(name: str) -> PromptTemplate:
    """Look a template up by name, listing the valid names if it does not exist."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt_template {name!r}; valid: {', '.join(TEMPLATES)}") from None


def supports_system_role(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders a system turn (Gemma's and Mistral's raise on one)."""
    if not getattr(tokenizer, "chat_template", None):
        return True
    probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    try:
        tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - templates raise jinja's TemplateError or their own exception type
        return False
    return True


def fit_chat_template(tokenizer, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """``messages`` as the chat template takes them: a leading system turn is folded into the first user turn
    (system text, a blank line, the user's text) where the template has no system role, with a warning once.

    >>> fit_chat_template(None, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])[0]
    {'role': 'system', 'content': 'Be brief.'}
    """
    if not messages or messages[0]["role"] != "system" or tokenizer is None or supports_system_role(tokenizer):
        return messages
    warnings.warn("the chat template has no system role: the system prompt is folded into the first user turn; "
                  "set system_prompt: \"\" for none", stacklevel=2)
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    first_user = next((i for i, m in enumerate(rest) if m["role"] == "user"), None)
    if first_user is None:
        return [{"role": "user", "content": system}] + rest
    rest[first_user]["content"] = f"{system}\n\n{rest[first_user]['content']}"
    return rest


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """Prompt text ready for generation, via the tokenizer's chat template (a system turn folded into the first
    user turn where the template has no system role).

    Tokenizers without a chat template (base models) get a plain "System/User/Assistant" layout.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(fit_chat_template(tokenizer, messages), tokenize=False,
                                             add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"
