"""Turning a completion, in either of TRL's shapes, into text."""

from __future__ import annotations

from typing import Any


def completion_to_text(completion: Any) -> str:
    """Text of a completion given as a string or as a list of chat messages.

    Anything else (``None``, bytes, numbers) becomes ``""`` so reward functions stay total.

    >>> completion_to_text([{"role": "assistant", "content": "hi"}])
    'hi'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        content = completion.get("content")
        return content if isinstance(content, str) else ""
    if isinstance(completion, (list, tuple)):
        return "".join(completion_to_text(message) for message in completion if isinstance(message, dict))
    return ""
