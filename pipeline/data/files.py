"""Dataset rows from a local file (JSONL, JSON, CSV, Parquet), a folder of split files, or the hub.

Every row comes with its location (``file:line``, ``file:row N``, ``hub:split:index``) for error messages.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from pipeline.data.examples import DataError

FILE_TYPES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def is_local(name: str) -> bool:
    """A local file or folder (an existing path, or a name with a data file's suffix)."""
    return Path(name).exists() or Path(name).suffix in FILE_TYPES


def is_single_file(name: str) -> bool:
    """A local file rather than a folder: one split, so evaluation rows must come from elsewhere or be held out."""
    return is_local(name) and not Path(name).is_dir()


def split_files(folder: Path, split: str) -> list[Path]:
    """The files of ``split`` in a folder: ``{split}.jsonl|json|csv|parquet``, or every ``{split}-*`` shard
    (a downloaded hub snapshot's ``train-00000-of-00003.parquet`` ...), in order."""
    for suffix in FILE_TYPES:
        if (folder / f"{split}{suffix}").is_file():
            return [folder / f"{split}{suffix}"]
    for sub in (folder, folder / "data"):
        shards = sorted(p for suffix in FILE_TYPES for p in sub.glob(f"{split}-*{suffix}"))
        if shards:
            return shards
    return []


def read_file(path: Path) -> list[tuple[str, Any]]:
    """(location, row) pairs of one file; a JSONL line that does not decode becomes an exception value."""
    if not path.is_file():
        raise DataError(f"{path}: dataset file not found")
    if path.suffix not in FILE_TYPES:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use {', '.join(FILE_TYPES)}")
    if path.suffix == ".jsonl":
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
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg}); give a list of row objects") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataError(f"{path}: a JSON dataset must be a list of row objects (or {{'data': [...]}})")
        return [(f"{path}:row {i + 1}", row) for i, row in enumerate(data)]
    if path.suffix == ".csv":  # cells stay text ("0042" keeps its zeros, "2" is not 2.0); a reward parses numbers
        with path.open(encoding="utf-8", newline="") as handle:
            try:
                return [(f"{path}:row {i + 1}", dict(row)) for i, row in enumerate(csv.DictReader(handle))]
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataError(f"{path}: cannot read it as csv ({exc}); check the file") from None
    from datasets import load_dataset  # Parquet through datasets' reader

    try:
        dataset = load_dataset(FILE_TYPES[path.suffix], data_files=str(path), split="train")
    except Exception as exc:  # noqa: BLE001 - datasets and pyarrow raise many types for one unreadable file
        raise DataError(f"{path}: cannot read it as {path.suffix[1:]} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); check the file") from None
    return [(f"{path}:row {i + 1}", row) for i, row in enumerate(dataset)]


def read_local(name: str, split: str) -> list[tuple[str, Any]] | None:
    """Rows of a local file (the whole file: it is one split), or of ``split``'s file in a folder; None when a
    folder has no file for ``split``."""
    path = Path(name)
    if path.is_dir():
        found = split_files(path, split)
        return [row for shard in found for row in read_file(shard)] if found else None
    if not path.exists():
        raise DataError(f"{path}: dataset file not found; give a JSONL/JSON/CSV/Parquet file, a folder of "
                        f"{split}.jsonl (or .json/.csv/.parquet) files, 'bundled', or a hub dataset id")
    return read_file(path)


def read_hub(name: str, config: str | None, split: str) -> list[tuple[str, Any]] | None:
    """Rows of a hub dataset's split; None when the dataset has no such split."""
    from datasets import get_dataset_split_names, load_dataset

    try:
        if split not in get_dataset_split_names(name, config):
            return None
        dataset = load_dataset(name, config, split=split)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as exc:
        raise DataError(f"--dataset_name {name}: cannot load it from the hub or its cache ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); check the id, or give a local file") from None
    return [(f"{name}:{split}:{i}", row) for i, row in enumerate(dataset)]
