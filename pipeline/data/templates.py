"""The one prompt template shared by SFT, GRPO and evaluation.

A template fixes the system prompt and how a completion lays out its reasoning and final answer.
The prompt itself is rendered with the model's own chat template.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptTemplate:
    """How prompts are phrased and how a completion marks its reasoning and answer."""

    name: str
    system_prompt: str
    reasoning_tag: str | None  # None: no reasoning span (with answer_tag None too: GSM8K's "#### N" layout)
    answer_tag: str | None

    def messages(self, question: str, system_prompt: str | None = None) -> list[dict[str, str]]:
        """Chat messages for one question (the conversational prompt format TRL accepts)."""
        return [
            {"role": "system", "content": self.system_prompt if system_prompt is None else system_prompt},
            {"role": "user", "content": question.strip()},
        ]

    def completion(self, reasoning: str, answer: str) -> str:
        """The target completion for supervised training, in this template's layout.

        >>> TEMPLATES["reasoning"].completion("2 + 2 = 4", "4")
        '<reasoning>\\n2 + 2 = 4\\n</reasoning>\\n<answer>\\n4\\n</answer>'
        """
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
}


def get_template(name: str) -> PromptTemplate:
    """Look a template up by name, listing the valid names if it does not exist."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt_template {name!r}; valid: {', '.join(TEMPLATES)}") from None


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """Prompt text ready for generation, via the tokenizer's chat template.

    Tokenizers without a chat template (base models) get a plain "System/User/Assistant" layout.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"
