"""reasoning-gym as a data source: ``dataset_name: reasoning_gym:<task>`` (or ``<task>,<task>`` for a
weighted mix), procedurally generated offline, seeded, with a held-out set disjoint from training.

Each row is ``{"prompt", "answer", "metadata"}``: ``metadata`` reaches rewards as a column, and the
``reasoning_gym`` reward scores a completion with the task's own ``score_answer``.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from pipeline.data.examples import DataError

PREFIX = "reasoning_gym:"
EVAL_SEED_OFFSET = 1_000_003  # the held-out set's seed: far from any training seed a user picks


def is_reasoning_gym(name: str) -> bool:
    return name.startswith(PREFIX)


def task_names(name: str) -> list[str]:
    """``reasoning_gym:chain_sum,basic_arithmetic`` → ``['chain_sum', 'basic_arithmetic']``, checked."""
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError:
        raise DataError(f"--dataset_name {name}: reasoning-gym is not installed; pip install -e '.[reasoning]' "
                        "(make install does)") from None
    tasks = [t.strip() for t in name[len(PREFIX):].split(",") if t.strip()]
    if not tasks:
        raise DataError(f"--dataset_name {name}: name a task, e.g. reasoning_gym:chain_sum")
    for task in tasks:
        if task not in DATASETS:
            close = difflib.get_close_matches(task, list(DATASETS), n=3)
            raise DataError(f"--dataset_name {name}: reasoning-gym has no task {task!r}"
                            + (f"; did you mean {', '.join(close)}?" if close else f" ({len(DATASETS)} tasks exist)"))
    return tasks


def task_config(task: str, options: dict[str, Any], level: int | None) -> dict[str, Any]:
    """The task's options: its curriculum's settings at ``level`` (if given), then ``options`` over them."""
    from reasoning_gym.factory import DATASETS, create_curriculum, has_curriculum

    config: dict[str, Any] = {}
    if level is not None:
        if not has_curriculum(task):
            raise DataError(f"option --dataset_level: reasoning-gym's {task!r} has no difficulty curriculum; "
                            "set its options in --dataset_options instead")
        curriculum = create_curriculum(task)
        top = max(len(attr.levels) for attr in curriculum.attributes.values()) - 1
        if level > top:
            raise DataError(f"option --dataset_level: {task!r}'s curriculum has levels 0 to {top}, got {level}")
        curriculum.set_global_level(level)
        generated = curriculum.generate_configuration()
        config = {f.name: getattr(generated, f.name) for f in dataclasses.fields(generated)}
        config.pop("seed", None), config.pop("size", None)
    valid = {f.name for f in dataclasses.fields(DATASETS[task][1])} - {"seed", "size"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise DataError(f"option --dataset_options: reasoning-gym's {task!r} has no option {unknown[0]!r}; "
                        f"its options: {', '.join(sorted(valid))}")
    return config | options


def generate_rows(name: str, *, size: int, seed: int, options: dict[str, Any] | None = None,
                  weights: list[float] | None = None, level: int | None = None,
                  exclude: set[str] = frozenset(), purpose: str = "--dataset_size") -> list[tuple[str, dict[str, Any]]]:
    """``size`` generated problems as (location, row) pairs, skipping questions in ``exclude``.

    Several tasks: ``options`` maps each task to its options, ``weights`` gives their shares.
    """
    import reasoning_gym
    from reasoning_gym.composite import DatasetSpec

    tasks, options = task_names(name), options or {}
    if len(tasks) > 1 and set(options) - set(tasks):
        raise DataError(f"option --dataset_options: with several tasks, key the options by task ({', '.join(tasks)}); "
                        f"got {', '.join(sorted(set(options) - set(tasks)))}")
    if weights is not None and len(weights) != len(tasks):
        raise DataError(f"option --dataset_weights: {len(weights)} weights for {len(tasks)} tasks")
    per_task = {t: task_config(t, options.get(t, {}) if len(tasks) > 1 else options, level) for t in tasks}
    rows: list[tuple[str, dict[str, Any]]] = []
    seen = set(exclude)  # no duplicates within the set either
    attempt = 0
    while len(rows) < size and attempt < 4:  # a few more rounds when excluded questions are dropped
        round_seed = seed + attempt * 7919
        try:
            if len(tasks) == 1:
                dataset = reasoning_gym.create_dataset(tasks[0], size=size, seed=round_seed, **per_task[tasks[0]])
            else:
                specs = [DatasetSpec(t, w, per_task[t]) for t, w in zip(tasks, weights or [1.0] * len(tasks))]
                dataset = reasoning_gym.create_dataset("composite", size=size, seed=round_seed, datasets=specs)
        except (AssertionError, TypeError, ValueError) as exc:
            raise DataError(f"--dataset_name {name}: reasoning-gym refused the options {per_task} ({exc})") from None
        for index, entry in enumerate(dataset):
            if len(rows) == size:
                break
            if entry["question"] in seen:
                continue
            seen.add(entry["question"])
            rows.append((f"{name}:seed {round_seed}:{index}",
                         {"prompt": entry["question"], "answer": entry["answer"], "metadata": entry["metadata"]}))
        attempt += 1
    if len(rows) < size:
        raise DataError(f"--dataset_name {name}: only {len(rows)} distinct problems for {purpose} {size}; the task's "
                        "options allow too few: ask for fewer, or widen the options")
    return rows
