"""A task small enough to watch GRPO learn on a CPU in minutes: 2-digit addition, char-level.

The SFT start point is built on purpose: labels say ``sum + 1`` a fixed fraction of the time (more
often than the true sum), so the policy samples the right answer often but greedy decoding gives
the wrong one. Only the verifiable reward can tell the two apart.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from pipeline.data import GSM8KExample

ALPHABET = "0123456789+="


def addition_examples(pairs: list[tuple[int, int]]) -> list[GSM8KExample]:
    return [GSM8KExample(f"{a}+{b}=", "", str(a + b), f"addition:{a}+{b}") for a, b in pairs]


def split_pairs(seed: int = 0, held_out: int = 200, low: int = 10, high: int = 49) -> tuple[list, list]:
    """All (a, b) with low <= a, b <= high, shuffled: (training pairs, held-out pairs)."""
    pairs = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1)]
    random.Random(seed).shuffle(pairs)
    return pairs[held_out:], pairs[:held_out]


def noisy_sft(model, tokenizer, examples: list[GSM8KExample], *, wrong_fraction: float, steps: int,
              batch_size: int = 64, lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Full fine-tuning on answers that are ``sum + 1`` with probability ``wrong_fraction``; returns losses."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        batch = rng.sample(examples, batch_size)
        answers = [str(int(e.answer) + 1) if rng.random() < wrong_fraction else e.answer for e in batch]
        texts = [e.question + a + tokenizer.eos_token for e, a in zip(batch, answers)]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = enc.input_ids.clone()
        prompt_len = len(batch[0].question)  # all prompts have the same length: "ab+cd="
        labels[:, :prompt_len] = -100
        labels[enc.attention_mask == 0] = -100
        loss = model(**enc, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def greedy_exact_match(model, tokenizer, examples: list[GSM8KExample]) -> float:
    """Fraction of problems whose greedy answer is exactly the sum."""
    from pipeline.generation import generate

    out = generate(model, tokenizer, [e.question for e in examples], max_new_tokens=4, do_sample=False)
    return sum(t[0].strip() == e.answer for t, e in zip(out.texts, examples)) / len(examples)


def save_model(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(path)
    return path
