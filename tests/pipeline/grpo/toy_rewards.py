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


def text_length(prompts, completions, **kwargs):
    """Characters in the completion: differs between the samples of a random model at any length."""
    return [float(len(completion_to_text(c))) for c in completions]


def even_length(prompts, completions, **kwargs):
    """1 for a completion of even length, else 0; with odd_length_half at weights 1 and 2 the total is always 1."""
    return [1.0 if len(completion_to_text(c)) % 2 == 0 else 0.0 for c in completions]


def odd_length_half(prompts, completions, **kwargs):
    return [0.0 if len(completion_to_text(c)) % 2 == 0 else 0.5 for c in completions]


_judge_loop: dict[str, object] = {}


async def loop_bound_judge(prompts, completions, **kwargs):
    """An async reward whose client is bound to the event loop of its first call (as aiohttp's is)."""
    import asyncio

    loop = asyncio.get_running_loop()
    if _judge_loop.setdefault("loop", loop) is not loop:
        raise RuntimeError("the client is attached to a different event loop")
    await asyncio.sleep(0)
    return [1.0 if len(completion_to_text(c)) % 2 else 0.0 for c in completions]
