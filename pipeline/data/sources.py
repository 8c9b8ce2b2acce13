"""Where a run's problems come from: the training rows and the evaluation rows, never the same ones.

Sources: ``bundled`` (GSM8K, offline), a local file or folder, a hub dataset id, or ``reasoning_gym:<task>``.
Evaluation reads ``eval_dataset_name`` when given, else the source's own evaluation split (a folder's
``test`` file, a hub split, a freshly seeded reasoning-gym set); a source with only one split gets a
seeded held-out part for training runs, stated in the log. Evaluation alone (``need_train=False``) reads a
single file whole, unless ``eval_holdout_size`` asks for the seeded hold-out a training run would use.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.data import reasoning_gym
from pipeline.data.examples import ColumnMap, DataError, Example, example_from_row
from pipeline.data.files import is_local, is_single_file, read_hub, read_local, split_files
from pipeline.data.gsm8k import BUNDLED, bundled_path

logger = logging.getLogger(__name__)

GSM8K_GRPO_HOLDOUT = 1000  # GSM8K train problems kept from SFT for GRPO (a GSM8K default; other data: none)
HUB_CONFIGS = {"openai/gsm8k": "main", "gsm8k": "main"}


@dataclass
class DataSplits:
    """A run's training and evaluation problems, and how evaluation was chosen (for the log and run folder)."""

    train: list[Example]
    eval: list[Example]
    eval_note: str  # how the evaluation rows were chosen, for the log
    skipped: list[str] = field(default_factory=list)
    eval_label: str = "held-out problems"  # a short name for tables: "GSM8K test", "mine.jsonl, held out"


def examples_from_rows(rows: list[tuple[str, Any]], columns: ColumnMap, *, skip_bad_rows: bool,
                       name: str) -> tuple[list[Example], list[str]]:
    """Examples of the rows; a bad row raises DataError naming file:line (or is skipped and counted)."""
    examples, skipped = [], []
    for where, row in rows:
        try:
            if isinstance(row, Exception):
                raise row
            examples.append(example_from_row(row, where, columns))
            if len(examples) == 1 and "####" in str(row.get(columns.answer_key(row) or "", "")):
                columns = replace(columns, solution_required=True)  # GSM8K solutions: every row must be one
        except ValueError as exc:
            message = f"{where}: {exc}"
            if not skip_bad_rows:
                raise DataError(f"{message}. Fix the row, or set skip_bad_rows: true to skip such rows.") from None
            skipped.append(message)
    if skipped:
        logger.warning("skipped %d malformed rows of %s (first: %s)", len(skipped), name, skipped[0])
    if not examples:
        what = "; check the file and the prompt/answer field names" if rows else ": it holds none; add rows"
        raise DataError(f"{name}: no usable rows{what}")
    return examples, skipped


def read_rows(name: str, split: str, config: str | None = None) -> list[tuple[str, Any]] | None:
    """Raw rows of one split of a file-like source (None: the source has no such split); ``config`` is a hub
    dataset's configuration (default: ``main`` for GSM8K's hub ids)."""
    if name == BUNDLED:
        return read_local(str(bundled_path(split)), split)
    if is_local(name):
        return read_local(name, split)
    return read_hub(name, config or HUB_CONFIGS.get(name), split)


def default_template(dataset_name: str, train_split: str = "train") -> str:
    """The template ``prompt_template: auto`` picks: ``reasoning`` for GSM8K (bundled, its hub ids, or a local
    JSONL file whose first row's ``answer`` is a GSM8K solution ending in '#### N') and reasoning-gym's tasks;
    ``plain`` for any other dataset (a user's own): no system turn and no wording of ours.

    >>> default_template("bundled"), default_template("OpenAI/GSM8K"), default_template("reasoning_gym:chain_sum")
    ('reasoning', 'reasoning', 'reasoning')
    >>> default_template("capitals.jsonl")
    'plain'
    """
    name = dataset_name.lower()
    if name in (BUNDLED, *HUB_CONFIGS) or reasoning_gym.is_reasoning_gym(dataset_name):
        return "reasoning"
    return "reasoning" if _first_answer_is_a_solution(dataset_name, train_split) else "plain"


def _first_answer_is_a_solution(name: str, split: str) -> bool:
    """Whether a local JSONL source's first row has a GSM8K solution as its ``answer`` (read: one line)."""
    path = Path(name)
    found = split_files(path, split) if path.is_dir() else [path]
    if not found or found[0].suffix != ".jsonl" or not found[0].is_file():
        return False
    with found[0].open(encoding="utf-8") as handle:
        first = next((line for line in handle if line.strip()), "")
    try:
        answer = json.loads(first).get("answer") if first else None
    except (json.JSONDecodeError, AttributeError):
        return False
    return isinstance(answer, str) and "####" in answer


def column_map(data_args, name: str) -> ColumnMap:
    return ColumnMap(prompt=data_args.prompt_field, answer=data_args.answer_field,
                     completion=data_args.completion_field, messages=data_args.messages_field,
                     solution_required=name == BUNDLED)


def holdout_size(data_args, rows: int) -> int:
    """Rows held out of one split for evaluation: ``eval_holdout_size``, else a tenth (at least 1, at most 500).

    >>> from types import SimpleNamespace as Options
    >>> holdout_size(Options(eval_holdout_size=None), 12), holdout_size(Options(eval_holdout_size=3), 12)
    (1, 3)
    """
    return data_args.eval_holdout_size or max(1, min(500, rows // 10))


def hold_out(examples: list[Example], size: int, seed: int,
             name: str = "the data") -> tuple[list[Example], list[Example]]:
    """(rest, held out): ``size`` seeded examples kept apart for evaluation, both in file order.

    >>> ex = [Example(str(i), "", i, f"f:{i}") for i in range(10)]
    >>> rest, held = hold_out(ex, 3, seed=0)
    >>> len(rest), len(held), set(rest).isdisjoint(held)
    (7, 3, True)
    """
    if len(examples) < 2:
        raise DataError(f"{name}: {len(examples)} row, too few to hold rows out for evaluation and train on the "
                        "rest; add rows, or give --eval_dataset_name a file to evaluate on")
    if not 0 < size < len(examples):
        raise DataError(f"option --eval_holdout_size: {size} rows held out of the {len(examples)} of {name} leaves "
                        f"none to train on; set it below {len(examples)}, or give --eval_dataset_name a file to "
                        "evaluate on")
    chosen = set(random.Random(seed).sample(range(len(examples)), size))
    return ([e for i, e in enumerate(examples) if i not in chosen], [e for i, e in enumerate(examples) if i in chosen])


def _generated(data_args) -> DataSplits:
    name, size, seed = data_args.dataset_name, data_args.dataset_size, data_args.dataset_seed
    options = dict(options=data_args.dataset_options, weights=data_args.dataset_weights, level=data_args.dataset_level)
    train_rows = reasoning_gym.generate_rows(name, size=size, seed=seed, **options)
    columns = column_map(data_args, name)
    train, _ = examples_from_rows(train_rows, columns, skip_bad_rows=False, name=name)
    if data_args.eval_dataset_name:
        return DataSplits(train, *_eval_from(data_args), [], _eval_label(data_args))
    eval_size = data_args.eval_holdout_size or 200
    eval_rows = reasoning_gym.generate_rows(name, size=eval_size, seed=seed + reasoning_gym.EVAL_SEED_OFFSET,
                                            exclude={row["prompt"] for _, row in train_rows},
                                            purpose="--eval_holdout_size (held-out problems, none of them a "
                                                    "training problem)", **options)
    held, _ = examples_from_rows(eval_rows, columns, skip_bad_rows=False, name=name)
    return DataSplits(train, held, f"{eval_size} problems generated with seed {seed + reasoning_gym.EVAL_SEED_OFFSET}, "
                                   f"none of them among the {size} training problems", [], f"{name}, held out")


def _eval_label(data_args) -> str:
    return f"{data_args.eval_dataset_name} ({data_args.eval_split})"


def _eval_from(data_args) -> tuple[list[Example], str]:
    name = data_args.eval_dataset_name
    rows = read_rows(name, data_args.eval_split, data_args.dataset_config)
    if rows is None:
        raise DataError(f"--eval_dataset_name {name}: no {data_args.eval_split!r} split; set --eval_split")
    held, _ = examples_from_rows(rows, column_map(data_args, name), skip_bad_rows=data_args.skip_bad_rows, name=name)
    return held, f"{len(held)} problems of {name} ({data_args.eval_split})"


def load_splits(data_args, need_train: bool = True) -> DataSplits:
    """The training and evaluation problems of ``data_args`` (a ``DataArguments``). ``need_train=False``
    (evaluation alone) skips the training rows where the evaluation rows do not depend on them.

    Raises DataError when a row would be both trained on and evaluated on."""
    splits = _load_splits(data_args, need_train)
    shared = {e.source for e in splits.train} & {e.source for e in splits.eval}
    if shared:
        raise DataError(f"{sorted(shared)[0]}: this row (and {len(shared) - 1} more) is both a training and an "
                        f"evaluation row ({splits.eval_note}); give --eval_dataset_name another file, or leave it "
                        "unset to hold rows out")
    return splits


def _load_splits(data_args, need_train: bool) -> DataSplits:
    name = data_args.dataset_name
    if reasoning_gym.is_reasoning_gym(name):
        return _generated(data_args)
    if not need_train and data_args.eval_dataset_name:
        return DataSplits([], *_eval_from(data_args), [], _eval_label(data_args))
    if not need_train and is_single_file(name):
        return _evaluated_file(data_args, name)
    if not need_train:
        eval_rows = read_rows(name, data_args.eval_split, data_args.dataset_config)
        if eval_rows is not None:
            return _split_of(data_args, name, [], eval_rows, [])
    rows = read_rows(name, data_args.train_split, data_args.dataset_config)
    if rows is None:
        raise DataError(f"--dataset_name {name}: no {data_args.train_split!r} split; set --train_split")
    train, skipped = examples_from_rows(rows, column_map(data_args, name), skip_bad_rows=data_args.skip_bad_rows,
                                        name=f"{name} ({data_args.train_split})")
    if data_args.eval_dataset_name:
        return DataSplits(train, *_eval_from(data_args), skipped, _eval_label(data_args))
    eval_rows = None if is_single_file(name) else read_rows(name, data_args.eval_split, data_args.dataset_config)
    if eval_rows is not None:
        return _split_of(data_args, name, train, eval_rows, skipped)
    size = holdout_size(data_args, len(train))
    train, held = hold_out(train, size, data_args.split_seed, name if is_single_file(name) else
                           f"{name} ({data_args.train_split})")
    rest = f", training on the other {len(train)}" if need_train else f" (no {data_args.eval_split!r} split)"
    note = (f"{size} rows of {name} held out (seed {data_args.split_seed}; --eval_holdout_size){rest}; give "
            "--eval_dataset_name to evaluate on another file")
    return DataSplits(train, held, note, skipped, f"{name}, held out")


def _evaluated_file(data_args, name: str) -> DataSplits:
    """Evaluation alone on one file: every row, or with ``--eval_holdout_size N`` the N rows a training run on
    the file with that size holds out (same seed, same rows)."""
    rows = read_rows(name, data_args.train_split, data_args.dataset_config)
    examples, skipped = examples_from_rows(rows, column_map(data_args, name), skip_bad_rows=data_args.skip_bad_rows,
                                           name=name)
    size, total = data_args.eval_holdout_size, len(examples)
    every = f"all {total} rows" if total > 1 else "the one row"
    if size is None:
        return DataSplits([], examples, f"{every} of {name} (a single file given for evaluation; "
                          "--eval_holdout_size N evaluates a seeded hold-out of N rows instead)", skipped, name)
    if size >= total:
        below = f", or set it below {total}" if total > 1 else ""
        raise DataError(f"option --eval_holdout_size: {size}, but {name} has only {total} row{'s' * (total > 1)}; "
                        f"leave it unset to evaluate {every}{below}")
    _, held = hold_out(examples, size, data_args.split_seed, name)
    return DataSplits([], held, f"{size} of the {total} rows of {name}, held out with seed {data_args.split_seed} "
                      f"(--eval_holdout_size {size}: the rows a training run on this file with that size evaluates "
                      "on)", skipped, f"{name}, held out")


def _split_of(data_args, name: str, train: list[Example], eval_rows, skipped: list[str]) -> DataSplits:
    held, more = examples_from_rows(eval_rows, column_map(data_args, name), skip_bad_rows=data_args.skip_bad_rows,
                                    name=f"{name} ({data_args.eval_split})")
    label = f"GSM8K {data_args.eval_split}" if name == BUNDLED else f"{name} ({data_args.eval_split})"
    return DataSplits(train, held, f"all {len(held)} rows of the {data_args.eval_split!r} split of {name}",
                      skipped + more, label)


def grpo_holdout(data_args) -> int:
    """Train problems kept from SFT for GRPO: the option, else 1000 for bundled GSM8K, else 0 (no split)."""
    if data_args.grpo_holdout_size is not None:
        return data_args.grpo_holdout_size
    return GSM8K_GRPO_HOLDOUT if data_args.dataset_name == BUNDLED else 0


def split_stages(examples: list[Example], grpo_size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Disjoint (SFT part, GRPO part) of the training problems, seeded so both stages agree; with
    ``grpo_size`` 0 both stages use all of them.

    >>> ex = [Example(str(i), "", i, f"f:{i}") for i in range(10)]
    >>> sft, grpo = split_stages(ex, 3, seed=0)
    >>> len(sft), len(grpo), set(sft).isdisjoint(grpo), len(split_stages(ex, 0, seed=0)[1])
    (7, 3, True, 10)
    """
    if grpo_size == 0:
        return examples, examples
    if not 0 < grpo_size < len(examples):
        raise DataError(f"option --grpo_holdout_size: {grpo_size} train problems kept for GRPO, but there are only "
                        f"{len(examples)}; set a smaller number, or 0 to train both stages on all of them")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    grpo_ids = set(order[:grpo_size])
    return ([e for i, e in enumerate(examples) if i not in grpo_ids], [examples[i] for i in sorted(grpo_ids)])


def stage_examples(data_args, stage: str, splits: DataSplits | None = None
                   ) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """This stage's training problems ("sft" or "grpo"), the evaluation problems, and a record of both
    for the run folder (``data_split.json``). ``splits``: rows already read (the Python entry's in-memory
    data), in place of ``data_args``' dataset."""
    if data_args.train_split == data_args.eval_split and not data_args.eval_dataset_name:
        raise DataError(f"option --train_split: {data_args.train_split!r} is the evaluation split too; the "
                        "evaluation split is never trained on")
    splits = splits or data_args.load_splits()
    grpo_size = grpo_holdout(data_args)
    sft_part, grpo_part = split_stages(splits.train, grpo_size, data_args.split_seed)
    part = sft_part if stage == "sft" else grpo_part
    if data_args.max_train_samples:
        part = part[: data_args.max_train_samples]
    other = next((e for e in part if e.conversational != part[0].conversational), None)
    if other is not None:  # TRL decides per batch from its first row; rewards would get both shapes in one call
        kinds = ("chat messages", "plain text") if other.conversational else ("plain text", "chat messages")
        raise DataError(f"{other.source}: its prompt is {kinds[0]}, but {part[0].source}'s is {kinds[1]}; give every "
                        "row the same kind of prompt")
    logger.info("%s on %d training problems of %s%s; evaluation: %s", stage.upper(), len(part),
                data_args.dataset_name, f" (GRPO keeps {grpo_size} apart from SFT)" if grpo_size else "",
                splits.eval_note)
    record = {
        "stage": stage,
        "dataset": data_args.dataset_name,
        "split": data_args.train_split,
        "split_seed": data_args.split_seed,
        "grpo_holdout_size": grpo_size,
        "sft_size": len(sft_part),
        "used": len(part),
        "evaluation": splits.eval_note,
        "evaluation_label": splits.eval_label,
        "skipped_rows": len(splits.skipped),
        "sources": [e.source for e in part],
    }
    return part, splits.eval, record
