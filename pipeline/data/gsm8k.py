"""GSM8K: the bundled offline copy, its ``#### N`` solutions, and loading GSM8K-shaped files."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from pipeline.data.examples import ColumnMap, DataError, Example
from rewards.parsing import format_fraction, parse_number

BUNDLED = "bundled"
HUB_DATASET = "openai/gsm8k"
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")


GSM8KExample = Example  # the name earlier code and plug-ins use


@dataclass
class GSM8KSplit:
    """The examples of one split and the rows skipped on the way (with reasons)."""

    examples: list[Example]
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


def load_gsm8k(
    source: str = BUNDLED,
    split: str = "test",
    *,
    prompt_field: str = "question",
    answer_field: str = "answer",
    skip_bad_rows: bool = False,
) -> GSM8KSplit:
    """Load one split of GSM8K-shaped rows: a question and a solution ending in ``#### N``.

    Args:
        source: ``"bundled"`` (offline copy shipped with the package), a JSONL file or a folder
            holding ``{split}.jsonl``, or a hub dataset id such as ``openai/gsm8k``.
        split: ``train`` or ``test``.
        prompt_field: Field holding the problem text.
        answer_field: Field holding the solution that ends in ``#### N``.
        skip_bad_rows: Skip and count malformed rows instead of failing on the first one.

    Raises:
        DataError: naming ``file:line`` and the problem, for a malformed row (unless skipped) or
            an empty dataset.
    """
    from pipeline.data.sources import examples_from_rows, read_rows

    rows = read_rows(source, split, "main")
    if rows is None:
        raise DataError(f"{source}: dataset file not found: no {split}.jsonl in the folder")
    columns = ColumnMap(prompt=prompt_field, answer=answer_field, solution_required=True)
    examples, skipped = examples_from_rows(rows, columns, skip_bad_rows=skip_bad_rows, name=f"{source} ({split})")
    return GSM8KSplit(examples, skipped)
