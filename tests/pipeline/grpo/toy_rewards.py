"""A reward plug-in for tests: it varies between the samples of a random tiny model, so GRPO has signal."""

from rewards.text import completion_to_text


def digit_fraction(prompts, completions, **kwargs):
    texts = [completion_to_text(c) for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def always_raises(prompts, completions, **kwargs):
    raise ValueError("broken plug-in")


_calls = {"n": 0}


def flaky(prompts, completions, **kwargs):
    """Raises on every second call."""
    _calls["n"] += 1
    if _calls["n"] % 2 == 0:
        raise RuntimeError("flaky service")
    return [0.0] * len(completions)


def half_constant(prompts, completions, **kwargs):
    """0.5 for every sample of a prompt whose text has an even length (no spread in that group);
    otherwise digit_fraction, which differs between samples."""
    varied = digit_fraction(prompts, completions)
    return [0.5 if len(completion_to_text(p)) % 2 == 0 else v for p, v in zip(prompts, varied)]
