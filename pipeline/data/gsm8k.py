"""GSM8K loading: the bundled offline copy, any local JSONL, or the hub."""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from pipeline.config import BadInput
from rewards.parsing import format_fraction, parse_number

logger = logging.getLogger(__name__)

BUNDLED = "bundled"
HUB_DATASET = "openai/gsm8k"
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")


class DataError(BadInput, ValueError):
    """A dataset row or file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class GSM8KExample:
    """One problem: the question, its cleaned reasoning and the gold final answer."""

    question: str
    reasoning: str  # the worked solution without <<calculator>> annotations
    answer: str  # the gold number as a plain string ("1200", "-3", "0.5")
    source: str  # "file:line" (or "hub:split:index") for error messages and provenance


@dataclass
class GSM8KSplit:
    """The examples of one split and the rows skipped on the way (with reasons)."""

    examples: list[GSM8KExample]
    skipped: list[str] = field(default_factory=list)


def strip_calculator_annotations(text: str) -> str:
    """Remove GSM8K's ``<<48/2=24>>`` calculator annotations.

    >>> strip_calculator_annotations("48/2 = <<48/2=24>>24 clips")
    '48/2 = 24 clips'
    """
    return _CALCULATOR_RE.sub("", text)


def parse_solution(solution: str) -> tuple[str, str]:
    """Split a GSM8K solution into (reasoning, final answer) at its ``####`` line.

    >>> parse_solution("She has 3 + <<3+4=7>>4 = 7.\\n#### 1,007")
    ('She has 3 + 4 = 7.', '1007')
    """
    if "####" not in solution:
        raise ValueError("answer has no '#### <number>' line")
    reasoning, final = solution.rsplit("####", 1)
    value = parse_number(final.strip())
    if value is None or not re.fullmatch(r"\s*[-+−]?\$?[\d,]*\.?\d+\s*", final):
        raise ValueError(f"gold answer {final.strip()!r} after '####' is not a number")
    return strip_calculator_annotations(reasoning).strip(), format_fraction(value)


def bundled_path(split: str) -> Path:
    """Path of the GSM8K copy shipped inside the package (MIT license beside it)."""
    path = Path(str(files("pipeline.data") / "bundled" / f"{split}.jsonl"))
    if not path.exists():
        raise DataError(f"no bundled GSM8K split {split!r}; bundled splits are 'train' and 'test'")
    return path


def _example_from_row(row: Any, where: str, question_field: str, answer_field: str) -> GSM8KExample:
    if not isinstance(row, dict):
        raise ValueError(f"row is a {type(row).__name__}, expected a JSON object")
    for name in (question_field, answer_field):
        if name not in row:
            raise ValueError(f"missing field {name!r} (fields present: {', '.join(map(str, row)) or 'none'})")
        if not isinstance(row[name], str) or not row[name].strip():
            raise ValueError(f"field {name!r} must be a non-empty string")
    reasoning, answer = parse_solution(row[answer_field])
    return GSM8KExample(row[question_field].strip(), reasoning, answer, where)


def _read_rows(source: str, split: str, dataset_config: str) -> list[tuple[str, Any]]:
    """(location, raw row) pairs; JSON that does not decode becomes an exception value."""
    if source == BUNDLED or source.endswith((".jsonl", ".json")) or Path(source).exists():
        path = bundled_path(split) if source == BUNDLED else Path(source)
        if path.is_dir():
            path = path / f"{split}.jsonl"
        if not path.is_file():
            raise DataError(f"{path}: dataset file not found; give a JSONL file, a folder with {split}.jsonl, "
                            f"'{BUNDLED}', or a hub id such as {HUB_DATASET}")
        rows: list[tuple[str, Any]] = []
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((f"{path}:{line_no}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    rows.append((f"{path}:{line_no}", ValueError(f"invalid JSON ({exc.msg})")))
        return rows
    from datasets import load_dataset  # imported here: the offline path must not need the hub

    dataset = load_dataset(source, dataset_config, split=split)
    return [(f"{source}:{split}:{i}", row) for i, row in enumerate(dataset)]


def load_gsm8k(
    source: str = BUNDLED,
    split: str = "test",
    *,
    dataset_config: str = "main",
    question_field: str = "question",
    answer_field: str = "answer",
    skip_bad_rows: bool = False,
) -> GSM8KSplit:
    """Load one GSM8K split.

    Args:
        source: ``"bundled"`` (offline copy shipped with the package), a JSONL file or a folder
            holding ``{split}.jsonl``, or a hub dataset id such as ``openai/gsm8k``.
        split: ``train`` or ``test``.
        dataset_config: Hub dataset configuration (``main`` for GSM8K).
        question_field: Field holding the problem text.
        answer_field: Field holding the solution that ends in ``#### N``.
        skip_bad_rows: Skip and count malformed rows instead of failing on the first one.

    Raises:
        DataError: naming ``file:line`` and the problem, for a malformed row (unless skipped) or
            an empty dataset.
    """
    split_data = GSM8KSplit(examples=[])
    for where, row in _read_rows(source, split, dataset_config):
        try:
            if isinstance(row, Exception):
                raise row
            split_data.examples.append(_example_from_row(row, where, question_field, answer_field))
        except ValueError as exc:
            message = f"{where}: {exc}"
            if not skip_bad_rows:
                raise DataError(f"{message}. Fix the row, or set skip_bad_rows: true to skip such rows.") from None
            split_data.skipped.append(message)
    if split_data.skipped:
        logger.warning("skipped %d malformed rows of %s (first: %s)", len(split_data.skipped), source, split_data.skipped[0])
    if not split_data.examples:
        raise DataError(f"{source} ({split}): no usable rows; check the file and the question/answer field names")
    return split_data


def split_train(examples: list[GSM8KExample], grpo_size: int, seed: int) -> tuple[list[GSM8KExample], list[GSM8KExample]]:
    """Split train problems into disjoint (SFT part, GRPO part), seeded, so both stages agree.

    >>> ex = [GSM8KExample(str(i), "", str(i), f"f:{i}") for i in range(10)]
    >>> sft, grpo = split_train(ex, 3, seed=0)
    >>> len(sft), len(grpo), set(sft).isdisjoint(grpo)
    (7, 3, True)
    """
    if not 0 <= grpo_size <= len(examples):
        raise DataError(f"grpo_holdout_size={grpo_size} must be between 0 and the {len(examples)} train problems")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    grpo_ids = set(order[:grpo_size])
    sft = [e for i, e in enumerate(examples) if i not in grpo_ids]
    grpo = [examples[i] for i in sorted(grpo_ids)]
    return sft, grpo
