"""Evaluation: greedy pass@1, sampled maj@k and pass@k, strict and flexible extraction; answers judged as
exact numbers (GSM8K and other numeric data), as normalised text, by math-verify or by a reasoning-gym task's
own verifier (``pipeline.evaluation.judges``, ``--answer_match``)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import torch

from pipeline.arguments import EvalArguments
from pipeline.data import Example, PromptTemplate
from pipeline.evaluation.judges import (  # noqa: F401 - the judges' names, importable from here as before
    MathVerifyJudge,
    NumericJudge,
    ReasoningGymJudge,
    TextJudge,
    check_gold_answers,
    judge_for,
)
from pipeline.evaluation.stats import format_change, format_rate
from pipeline.generation import generate

logger = logging.getLogger(__name__)
EXTRACTIONS = ("strict", "flexible")
SUMMARY_FILE = "summary.json"


@dataclass
class ScoredCompletion:
    """One completion with the answers read from it and whether they equal the gold."""

    completion: str
    num_tokens: int
    strict: Any  # marked answer (<answer>, \boxed, ####, "the answer is"); None: none
    flexible: Any  # the fallback reading (numeric: the last number; see the judges); None: none
    judge: Any = field(default_factory=NumericJudge, repr=False)

    def correct(self, gold: Any, extraction: str) -> bool:
        return self.judge.matches(getattr(self, extraction), gold)

    def to_record(self, gold: Any) -> dict[str, Any]:
        return {
            "completion": self.completion,
            "num_tokens": self.num_tokens,
            "extracted": self.judge.show(self.strict),
            "correct": self.correct(gold, "strict"),
            "extracted_flexible": self.judge.show(self.flexible),
            "correct_flexible": self.correct(gold, "flexible"),
        }


def score_completion(completion: str, num_tokens: int = 0, judge: Any = None) -> ScoredCompletion:
    judge = judge or NumericJudge()
    return ScoredCompletion(completion, num_tokens, *judge.extract(completion), judge)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), pass_at_k(4, 0, 4)
    (0.25, 1.0, 0.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_answer(values: Sequence[Any]) -> Any:
    """Most frequent extracted answer (ties: the one seen first); missing answers do not vote.

    >>> majority_answer([Fraction(3), None, Fraction(4), Fraction(4), None, None])
    Fraction(4, 1)
    """
    votes = Counter(v for v in values if v is not None)
    return votes.most_common(1)[0][0] if votes else None


def problem_metrics(greedy: ScoredCompletion, samples: Sequence[ScoredCompletion], gold: Fraction | None) -> dict[str, float]:
    """Per-problem scores; the summary is their mean over problems."""
    metrics: dict[str, float] = {}
    for extraction in EXTRACTIONS:
        metrics[f"pass@1 (greedy)/{extraction}"] = float(greedy.correct(gold, extraction))
        if samples:
            n = len(samples)
            correct = sum(s.correct(gold, extraction) for s in samples)
            metrics[f"pass@1 (sampled)/{extraction}"] = pass_at_k(n, correct, 1)
            metrics[f"pass@{n}/{extraction}"] = pass_at_k(n, correct, n)
            vote = majority_answer([getattr(s, extraction) for s in samples])
            metrics[f"maj@{n}/{extraction}"] = float(samples[0].judge.matches(vote, gold))
    return metrics


def summarize(per_problem: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean of each metric over problems, as ``{metric: {"strict": x, "flexible": y}}``."""
    table: dict[str, dict[str, float]] = {}
    for name in per_problem[0]:
        metric, extraction = name.rsplit("/", 1)
        table.setdefault(metric, {})[extraction] = sum(p[name] for p in per_problem) / len(per_problem)
    return table


def format_table(summary: dict[str, Any]) -> str:
    """A short plain-text table of the summary's metrics."""
    lines = [
        f"{summary['split']} · {summary['num_problems']} problems · {summary['model']}",
        f"{'metric':<20} {'strict':>8} {'flexible':>9}",
    ]
    for metric, values in summary["metrics"].items():
        lines.append(f"{metric:<20} {values['strict']:>8.3f} {values['flexible']:>9.3f}")
    lines.append(f"{'marked answer rate':<20} {summary['marked_answer_rate']:>8.3f}")
    lines.append(
        f"{summary['generated_tokens']} tokens generated in {summary['seconds']:.1f} s "
        f"({summary['tokens_per_second']:.1f} tokens/s)"
    )
    return "\n".join(lines)


GREEDY_RATES = (("strict", "strict"), ("flexible", "flexible"), ("marked", "marked answer rate"))


def greedy_outcomes(records: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """Per problem, 0/1: greedy strict correct, flexible correct, and whether an answer was marked."""
    return {
        "strict": [int(r["correct"]) for r in records],
        "flexible": [int(r["correct_flexible"]) for r in records],
        "marked": [int(r["extracted"] is not None) for r in records],
    }


def format_comparison(title: str, rows: Sequence[tuple[str, dict[str, Any]]],
                      compare_to: Sequence[int | None] | None = None) -> str:
    """Greedy pass@1 (strict, flexible) and the marked-answer rate of several evaluations on the same
    problems, each with its 95% Wilson interval, then each row's paired change from the row above (or from
    row ``compare_to[i]``) with its 95% interval (``*``: the interval excludes 0, a change beyond the noise)."""
    names = [name for name, _ in rows]
    compare_to = list(compare_to) if compare_to is not None else [None] + list(range(len(rows) - 1))
    plain = compare_to == [None] + list(range(len(rows) - 1))
    labels = {i: names[i] if plain else f"{names[i]} vs {names[base]}" for i, base in enumerate(compare_to)
              if base is not None}
    width, name_width = 27, max(12, *(len(n) + 1 for n in [*names, *labels.values()]))
    header = f"{'':<{name_width}}" + "".join(f"{label:>{width}}" for _, label in GREEDY_RATES)
    lines = [title, header]
    outcomes = [summary["per_problem"] for _, summary in rows]
    for name, per_problem in zip(names, outcomes):
        lines.append(f"{name:<{name_width}}" + "".join(f"{format_rate(per_problem[key]):>{width}}"
                                                      for key, _ in GREEDY_RATES))
    if len(outcomes) > 1:
        lines.append(f"change from {'the row above' if plain else 'the row named'} (paired, 95% interval; * excludes 0)")
        for i, base in enumerate(compare_to):
            if base is None:
                continue
            cells = "".join(f"{format_change(outcomes[base][key], outcomes[i][key]):>{width}}" for key, _ in GREEDY_RATES)
            lines.append(f"{labels[i]:<{name_width}}{cells}")
    return "\n".join(lines)


def _batches(items: Sequence[Any], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def evaluate_gsm8k(
    model,
    tokenizer,
    examples: Sequence[Example],
    template: PromptTemplate,
    args: EvalArguments,
    *,
    system_prompt: str | None = None,
    model_name: str = "model",
    show_progress: bool = True,
    finished_everywhere=None,
    split_name: str = "held-out problems",
    generator=None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Generate for each problem and score it. Returns (per-problem records, summary).

    ``finished_everywhere``: with parameters sharded over processes, each runs this same evaluation, its
    decoding kept in step by this collective stop test (see ``pipeline.grpo.sampling.sample_groups``).
    ``generator``: decodes in place of the built-in decoder on ``model`` (``pipeline.generation.generate``'s
    arguments less the model and tokenizer, e.g. ``pipeline.vllm_generation.VLLMGenerator``); ``model`` unused then.
    """
    from tqdm.auto import tqdm

    examples = list(examples[: args.limit] if args.limit else examples)
    judge = judge_for(examples, args.answer_match)
    prompts = [ex.prompt_text(tokenizer, template, system_prompt) for ex in examples]
    records: list[dict[str, Any]] = []
    per_problem: list[dict[str, float]] = []
    if generator is None:
        generator = partial(generate, model.eval(), tokenizer)
    torch.manual_seed(args.seed)
    started, generated_tokens = time.perf_counter(), 0
    progress = tqdm(total=len(examples), desc="evaluation", unit="problem", disable=not show_progress)
    for batch in _batches(list(zip(examples, prompts)), args.batch_size):
        batch_prompts = [p for _, p in batch]
        shown = progress.n  # the greedy pass moves the bar a problem at a time, as each one finishes
        greedy = generator(batch_prompts, max_new_tokens=args.max_new_tokens, do_sample=False,
                          finished_everywhere=finished_everywhere,
                          rows_done=lambda done, start=shown: progress.update(start + done - progress.n))
        sampled = None
        if args.num_samples:
            sampled = generator(
                batch_prompts, max_new_tokens=args.max_new_tokens, do_sample=True,
                temperature=args.temperature, top_p=args.top_p, num_return_sequences=args.num_samples,
                finished_everywhere=finished_everywhere,
            )
        for i, (example, prompt) in enumerate(batch):
            gold = judge.gold(example)
            greedy_scored = score_completion(greedy.texts[i][0], greedy.num_tokens[i][0], judge)
            samples = ([score_completion(t, n, judge) for t, n in zip(sampled.texts[i], sampled.num_tokens[i])]
                       if sampled else [])
            generated_tokens += greedy_scored.num_tokens + sum(s.num_tokens for s in samples)
            per_problem.append(problem_metrics(greedy_scored, samples, gold))
            record = {"index": len(records), "source": example.source, "question": example.question,
                      "prompt": prompt, "gold": example.answer, **greedy_scored.to_record(gold)}
            if samples:
                record["samples"] = [s.to_record(gold) for s in samples]
            records.append(record)
        progress.update(shown + len(batch) - progress.n)
    progress.close()
    seconds = time.perf_counter() - started
    summary = {
        "model": model_name,
        "split": split_name,
        "num_problems": len(records),
        "answer_match": judge.name,
        "metrics": summarize(per_problem),
        "marked_answer_rate": sum(r["extracted"] is not None for r in records) / max(len(records), 1),
        "per_problem": greedy_outcomes(records),
        "generated_tokens": generated_tokens,
        "seconds": seconds,
        "tokens_per_second": generated_tokens / seconds if seconds > 0 else 0.0,
        "settings": args.to_dict(),
        "prompt_template": template.name,
    }
    return records, summary


def write_results(output_dir: str | Path, records: Sequence[dict[str, Any]], summary: dict[str, Any]) -> Path:
    """Write ``predictions.jsonl`` and ``summary.json`` into ``output_dir``; returns the folder."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    logger.info("wrote %s/predictions.jsonl and summary.json", out)
    return out
