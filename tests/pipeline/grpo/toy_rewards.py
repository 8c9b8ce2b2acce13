"""A reward plug-in for tests: it varies between the samples of a random tiny model, so GRPO has signal."""

from rewards.text import completion_to_text


def digit_fraction(prompts, completions, **kwargs):
    texts = [completion_to_text(c) for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]
