"""A task small enough to watch GRPO learn on a CPU in minutes: 2-digit addition, char-level.

The SFT start point is built on purpose: labels say ``sum + 1`` a fixed fraction of the time (more
often than the true sum), so the policy samples the right answer often but greedy decoding gives
the wrong one. Only the verifiable reward can tell the two apart.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.data import Example
from pipeline.runtime import torch_threads

# The toy's runs use this many torch threads on every machine: 1500 SFT steps at lr 3e-3 amplify float
# rounding, which depends on how sums are split over threads (its start point answered 0.110, 0.215 or 0.285
# of the held-out problems with different thread counts). 2: the count its documented numbers were measured at.
TOY_THREADS = 2

ALPHABET = "0123456789+="


def addition_examples(pairs: list[tuple[int, int]]) -> list[Example]:
    return [Example(f"{a}+{b}=", "", str(a + b), f"addition:{a}+{b}") for a, b in pairs]


def split_pairs(seed: int = 0, held_out: int = 200, low: int = 10, high: int = 49) -> tuple[list, list]:
    """All (a, b) with low <= a, b <= high, shuffled: (training pairs, held-out pairs)."""
    pairs = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1)]
    random.Random(seed).shuffle(pairs)
    return pairs[held_out:], pairs[:held_out]


def noisy_sft(model, tokenizer, examples: list[Example], *, wrong_fraction: float, steps: int,
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
def greedy_answers(model, tokenizer, examples: list[Example]) -> list[str]:
    """The greedy answer to each problem, stripped."""
    from pipeline.generation import generate

    out = generate(model, tokenizer, [e.question for e in examples], max_new_tokens=4, do_sample=False)
    return [t[0].strip() for t in out.texts]


def greedy_outcomes(model, tokenizer, examples: list[Example]) -> list[int]:
    """Per problem, 1 if the greedy answer is exactly the sum, else 0."""
    return [int(a == e.answer) for a, e in zip(greedy_answers(model, tokenizer, examples), examples)]


def greedy_exact_match(model, tokenizer, examples: list[Example]) -> float:
    """Fraction of problems whose greedy answer is exactly the sum."""
    outcomes = greedy_outcomes(model, tokenizer, examples)
    return sum(outcomes) / len(outcomes)


def save_model(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(path)
    return path


@dataclass
class ToyStartPoint:
    """The SFT'd char-level model and the disjoint training / held-out addition problems."""

    model_dir: Path
    train: list[Example]
    held_out: list[Example]


def build_start_point(folder: Path, wrong_fraction: float = 0.6, sft_steps: int = 1500) -> ToyStartPoint:
    """A 0.5M-parameter char-level Llama SFT'd on labels that say ``sum + 1`` ``wrong_fraction`` of the time."""
    from pipeline.tiny import build_char_llama

    train_pairs, held_pairs = split_pairs(seed=0, held_out=200)
    model, tokenizer = build_char_llama(ALPHABET)
    with torch_threads(TOY_THREADS):
        noisy_sft(model, tokenizer, addition_examples(train_pairs), wrong_fraction=wrong_fraction, steps=sft_steps)
    path = save_model(model, tokenizer, Path(folder) / "sft")
    return ToyStartPoint(path, addition_examples(train_pairs), addition_examples(held_pairs))


def load_or_build_start_point(folder: Path, wrong_fraction: float = 0.6, sft_steps: int = 1500) -> ToyStartPoint:
    """The start point saved in ``folder`` (built there first if missing, atomically, so runs started
    together build it at most once each and never read half a folder)."""
    folder = Path(folder)
    recipe = {"wrong_fraction": wrong_fraction, "sft_steps": sft_steps}
    marker = folder / "start.json"
    if not marker.is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        build_start_point(staging, wrong_fraction, sft_steps)
        (staging / "start.json").write_text(json.dumps(recipe))
        try:
            os.replace(staging, folder)  # fails if another run got there first: use theirs
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    saved = json.loads(marker.read_text())
    if saved != recipe:
        raise ValueError(f"{marker}: start point built with {saved}, not {recipe}; use another start_dir")
    train_pairs, held_pairs = split_pairs(seed=0, held_out=200)
    return ToyStartPoint(folder / "sft", addition_examples(train_pairs), addition_examples(held_pairs))


def toy_grpo_arguments(output_dir: Path, reward_weight: float = 1.0, max_steps: int = 60, logging_steps: int = 10):
    """The toy run's GRPO options (configs/toy_grpo.yaml holds the same, for scripts/train_toy.py)."""
    from pipeline.grpo.config import GRPOArguments

    values = dict(
        output_dir=str(output_dir), max_steps=max_steps, prompts_per_step=16, num_generations=8, micro_batch_size=64,
        max_completion_length=4, max_prompt_length=16, reward_funcs=["exact_match"], reward_weights=[reward_weight],
        beta=0.0, learning_rate=3e-4, loss_type="dapo", save_steps=0, logging_steps=logging_steps,
    )
    return GRPOArguments(**values)


def run_grpo(start: ToyStartPoint, output_dir: Path, reward_weight: float = 1.0, max_steps: int = 60,
             logging_steps: int = 10) -> tuple[dict, Path]:
    """GRPO from the start point with the exact-match reward times ``reward_weight`` (-1: the sign-flipped
    control, whose advantages point the other way). Returns (the run's summary, its merged model folder)."""
    args = toy_grpo_arguments(output_dir, reward_weight, max_steps, logging_steps)
    return train_toy(start, args)


def train_toy(start: ToyStartPoint, args) -> tuple[dict, Path]:
    """GRPO from the start point with any GRPOArguments; returns (the run's summary, its merged model folder)."""
    from pipeline.arguments import DataArguments, ModelArguments
    from pipeline.grpo.trainer import train

    with torch_threads(TOY_THREADS):
        summary = train(args, ModelArguments(model_name_or_path=str(start.model_dir)), DataArguments(), start.train)
    return summary, Path(args.output_dir) / "merged"


def last_steps_means(history: list[dict], steps: int = 10) -> dict[str, float]:
    """Mean of every numeric training metric over the last ``steps`` logged steps (sampled rewards are noisy
    per step, so sweeps compare these windows).

    >>> last_steps_means([{"step": 1, "kl": 0.5}, {"step": 2, "kl": 0.25, "reward": 1.0}], steps=2)
    {'kl': 0.375, 'reward': 1.0}
    """
    window = history[-steps:]
    keys = [k for k in dict.fromkeys(k for row in window for k in row) if k != "step"]
    means = {}
    for key in keys:
        values = [row[key] for row in window if isinstance(row.get(key), (int, float))]
        if values:
            means[key] = sum(values) / len(values)
    return means


def _load_trained(model_dir: Path, start: ToyStartPoint):
    """A trained folder's model (eval mode) and the start point's tokenizer."""
    from pipeline.arguments import ModelArguments
    from pipeline.models import load_model, load_tokenizer

    model = load_model(ModelArguments(model_name_or_path=str(model_dir))).eval()
    return model, load_tokenizer(ModelArguments(model_name_or_path=str(start.model_dir)))


@torch.no_grad()
def kl_from_start(model_dir: Path, start: ToyStartPoint) -> float:
    """Mean per-token KL(trained || start point), exact over the vocabulary, at the tokens of the trained
    model's greedy answers (their EOS included) to the held-out problems: how far training moved the policy
    where it acts, whatever beta was (with beta = 0 no reference is loaded during training)."""
    trained, tokenizer = _load_trained(model_dir, start)
    reference, _ = _load_trained(start.model_dir, start)
    total, count = 0.0, 0
    for example, answer in zip(start.held_out, greedy_answers(trained, tokenizer, start.held_out)):
        prompt = example.question  # one row at a time: no padding
        ids = tokenizer(prompt + answer + tokenizer.eos_token, return_tensors="pt", add_special_tokens=False).input_ids
        targets = ids.size(1) - len(tokenizer(prompt, add_special_tokens=False).input_ids)  # answer + EOS
        logp = torch.log_softmax(trained(ids).logits[0, -targets - 1 : -1].double(), -1)  # [targets, V]
        logq = torch.log_softmax(reference(ids).logits[0, -targets - 1 : -1].double(), -1)
        total += (logp.exp() * (logp - logq)).sum().item()
        count += targets
    return total / count


def held_out_outcomes(model_dir: Path, start: ToyStartPoint) -> list[int]:
    """Greedy exact match of a trained folder on the held-out problems (the start point's tokenizer)."""
    return greedy_outcomes(*_load_trained(model_dir, start), start.held_out)
