"""reasoning-gym's own verifiers as a reward: each task scores an answer with its ``score_answer``."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from rewards.text import completion_to_text

_ANSWER_RE = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)


def extract_tagged_answer(text: str) -> str | None:
    """The last ``<answer>...</answer>`` block, stripped, as reasoning-gym reads answers.

    >>> extract_tagged_answer("<answer>1</answer> then <answer> 2 </answer>"), extract_tagged_answer("2")
    ('2', None)
    """
    matches = _ANSWER_RE.findall(text)
    return matches[-1].strip() if matches else None


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):  # a conversation: the question is its last user turn
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else ""
    return str(prompt)


def reasoning_gym_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    answer: Sequence[Any],
    metadata: Sequence[dict[str, Any]],
    log_extra: Callable[[str, list], None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """The task's score (0 to 1; some tasks give partial credit) of the completion's ``<answer>`` block.

    The rows come from ``dataset_name: reasoning_gym:<task>``: their ``metadata`` column names the task
    (``source_dataset``), so a mix of tasks is scored row by row. No ``<answer>`` block scores 0.

    >>> meta = {"source_dataset": "chain_sum"}
    >>> reasoning_gym_reward(["1 + 2 ="] * 3, ["<answer>3</answer>", "<answer>4</answer>", "3"], ["3"] * 3, [meta] * 3)
    [1.0, 0.0, 0.0]
    """
    from reasoning_gym import get_score_answer_fn

    if not (len(answer) == len(metadata) == len(completions)):
        raise ValueError("reasoning_gym_reward needs 'answer' and 'metadata' columns (dataset_name: "
                         "reasoning_gym:<task>), one value per completion")
    rewards: list[float | None] = []
    extracted: list[str | None] = []
    for prompt, completion, gold, meta in zip(prompts, completions, answer, metadata):
        if not isinstance(meta, dict) or "source_dataset" not in meta:
            raise ValueError("reasoning_gym_reward: a row's 'metadata' has no 'source_dataset'; the rows must come "
                             "from dataset_name: reasoning_gym:<task>")
        predicted = extract_tagged_answer(completion_to_text(completion))
        extracted.append(predicted)
        entry = {"question": _prompt_text(prompt), "answer": gold, "metadata": meta}
        rewards.append(float(get_score_answer_fn(meta["source_dataset"])(predicted, entry)) if predicted is not None else 0.0)
    if log_extra is not None:
        log_extra("reasoning_gym_answer", extracted)
    return rewards
