"""Rows given from Python (a list of dicts, or a ``datasets.Dataset``) as a run's training and evaluation problems,
read by the same column conventions and checks as a file's rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.data.examples import DataError
from pipeline.data.sources import DataSplits, column_map, examples_from_rows, hold_out, holdout_size

IN_MEMORY_PREFIX = "python:"  # not a file, hub id or reasoning-gym task: rows given from Python
TRAIN_NAME = f"{IN_MEMORY_PREFIX}dataset"  # how errors and data_split.json name the rows: "python:dataset:row 3"
EVAL_NAME = f"{IN_MEMORY_PREFIX}eval_dataset"


def located_rows(rows: Any, name: str) -> list[tuple[str, Any]]:
    """(location, row) pairs of a list of dicts or a ``datasets.Dataset``; anything else is one line naming it.

    >>> located_rows([{"prompt": "1+1?"}], "python:dataset")
    [('python:dataset:row 1', {'prompt': '1+1?'})]
    """
    if hasattr(rows, "to_list") and hasattr(rows, "column_names"):  # a datasets.Dataset
        rows = rows.to_list()
    if not isinstance(rows, (list, tuple)) or not rows:
        raise DataError(f"{name}: give a non-empty list of dicts or a datasets.Dataset, got {type(rows).__name__}"
                        f"{' (empty)' if isinstance(rows, (list, tuple)) else ''}")
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, Mapping)), None)
    if bad is not None:
        raise DataError(f"{name}:row {bad + 1}: a {type(rows[bad]).__name__}, expected a dict of column: value")
    return [(f"{name}:row {i + 1}", row) for i, row in enumerate(rows)]


def in_memory_splits(data_args, rows: Any, eval_rows: Any = None) -> DataSplits:
    """Training and evaluation problems of rows given from Python. Without ``eval_rows``, a seeded part of the rows
    is held out for evaluation, as for a single file (``eval_holdout_size``, default a tenth)."""
    columns = column_map(data_args, TRAIN_NAME)
    train, skipped = examples_from_rows(located_rows(rows, TRAIN_NAME), columns,
                                        skip_bad_rows=data_args.skip_bad_rows, name=TRAIN_NAME)
    if eval_rows is not None:
        held, more = examples_from_rows(located_rows(eval_rows, EVAL_NAME), columns,
                                        skip_bad_rows=data_args.skip_bad_rows, name=EVAL_NAME)
        return DataSplits(train, held, f"the {len(held)} rows of eval_dataset", skipped + more, EVAL_NAME)
    size = holdout_size(data_args, len(train))
    train, held = hold_out(train, size, data_args.split_seed, TRAIN_NAME)
    note = (f"{size} rows held out (seed {data_args.split_seed}; eval_holdout_size), training on the other "
            f"{len(train)}; give eval_dataset to evaluate on other rows")
    return DataSplits(train, held, note, skipped, f"{TRAIN_NAME}, held out")
