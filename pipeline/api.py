"""The Python entry, for notebooks and scripts: SFT and GRPO on rows held in memory (a list of dicts or a
``datasets.Dataset``), with reward functions given as callables, closures included.

The same stages, loop and checks as ``scripts/train_sft.py`` and ``scripts/train_grpo.py``; every option is the
scripts' option of the same name, as a keyword argument. No file, registry or config is written first.

    from pipeline.api import train_grpo, train_sft

    rows = [{"prompt": "What is the capital of France?", "answer": "Paris"}, ...]
    sft = train_sft(rows, output_dir="runs/capitals/sft", use_peft=True, max_steps=30)

    def mentions(word_column):                      # a closure: a reward built from an option
        def reward(completions, **columns):
            return [float(w.lower() in c.lower()) for c, w in zip(completions, columns[word_column])]
        return reward

    grpo = train_grpo(rows, [mentions("answer")], model_name_or_path=sft["output"]["merged"],
                      output_dir="runs/capitals/grpo", use_peft=True, max_steps=10)
    grpo["history"]                                 # the per-step metrics, as metrics.jsonl holds them
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.config import ConfigError, configs_from_options
from pipeline.data import get_template
from pipeline.data.in_memory import TRAIN_NAME, in_memory_splits

Rows = Any  # a list of dicts, or a datasets.Dataset


def train_sft(dataset: Rows | None = None, *, eval_dataset: Rows | None = None, **options: Any) -> dict[str, Any]:
    """Supervised fine-tuning, as ``scripts/train_sft.py`` runs it.

    Args:
        dataset: The training rows (TRL's columns: ``prompt`` and ``completion``, or ``messages``; or ``prompt``
            and ``answer``). None: the ``dataset_name`` option's source, as on the command line.
        eval_dataset: Rows to evaluate on (``eval_limit`` > 0); default: a seeded part of ``dataset`` held out.
        **options: Any option of ``scripts/train_sft.py`` (``output_dir``, ``max_steps``, ``use_peft``,
            ``model_name_or_path``, ...).

    Returns:
        The run's summary (``sft_summary.json``): ``output["merged"]`` is the folder the next stage starts from.
    """
    from pipeline.sft import SFTScriptArguments, SFTTrainingArguments, run_sft

    options.setdefault("output_dir", "runs/sft")
    script_args, training_args, model_args, data_args = configs_from_options(
        [SFTScriptArguments, SFTTrainingArguments, ModelArguments, DataArguments],
        _data_options(dataset, eval_dataset, options))
    splits = None if dataset is None else in_memory_splits(data_args, dataset, eval_dataset)
    return run_sft(script_args, training_args, model_args, data_args, splits)


def train_grpo(dataset: Rows | None = None, reward_funcs: Sequence[Callable[..., Any] | str] = (), *,
               eval_dataset: Rows | None = None, **options: Any) -> dict[str, Any]:
    """GRPO, as ``scripts/train_grpo.py`` runs it (our loop).

    Args:
        dataset: The prompts (a ``prompt`` column, plain text or messages; every other column reaches the rewards).
            None: the ``dataset_name`` option's source.
        reward_funcs: Callables with TRL's reward signature ``fn(prompts, completions, **kwargs)``, or the names
            ``--reward_funcs`` takes. A callable is named by its ``__name__`` in the metrics (``reward_<i>`` for a
            lambda).
        eval_dataset: Rows to evaluate on (``eval_limit`` > 0); default: a seeded part of ``dataset`` held out.
        **options: Any option of ``scripts/train_grpo.py`` but ``reward_funcs`` and ``backend``.

    Returns:
        The run's summary: ``history`` (per-step metrics), ``eval_before`` / ``eval_after`` when evaluated, and
        ``final``, the folder of the trained model.
    """
    from pipeline.grpo.config import GRPOArguments
    from pipeline.grpo.inputs import preflight, reward_options
    from pipeline.grpo.trainer import train
    from rewards import load_reward

    for option in ("reward_funcs", "backend"):
        if option in options:
            raise ConfigError(f"option {option!r}: give reward functions as train_grpo's reward_funcs argument; "
                              "the Python entry runs this project's loop")
    if not reward_funcs or isinstance(reward_funcs, (str, bytes)) or callable(reward_funcs):
        raise ConfigError("train_grpo: reward_funcs must be a non-empty list of callables or reward names")
    options.setdefault("output_dir", "runs/grpo")
    options["reward_funcs"] = reward_names(reward_funcs)
    args, model_args, data_args = configs_from_options([GRPOArguments, ModelArguments, DataArguments],
                                                       _data_options(dataset, eval_dataset, options))
    template = get_template(data_args.prompt_template)
    funcs = [load_reward(f, **reward_options(args, template)) if isinstance(f, str) else f for f in reward_funcs]
    splits = None if dataset is None else in_memory_splits(data_args, dataset, eval_dataset)
    named = [isinstance(f, str) for f in reward_funcs]  # a callable is checked by its signature, not its name
    examples, eval_examples, eval_label = preflight(args, model_args, data_args, funcs, splits, named)
    return train(args, model_args, data_args, examples, eval_examples, eval_label, reward_funcs=funcs)


def reward_names(reward_funcs: Sequence[Callable[..., Any] | str]) -> list[str]:
    """A distinct name per reward, for the metrics: a name as given, a callable's ``__name__`` (a lambda's or a
    repeated one's numbered).

    >>> def length(completions, **kw): ...
    >>> reward_names([length, lambda completions, **kw: [0.0], "format", length])
    ['length', 'reward_1', 'format', 'length_3']
    """
    names: list[str] = []
    for index, fn in enumerate(reward_funcs):
        if not isinstance(fn, str) and not callable(fn):
            raise ConfigError(f"train_grpo: reward_funcs[{index}] is a {type(fn).__name__}, not a callable or a name")
        name = fn if isinstance(fn, str) else getattr(fn, "__name__", "")
        if not name or name == "<lambda>":
            name = f"reward_{index}"
        names.append(f"{name}_{index}" if name in names else name)
    return names


def _data_options(dataset: Rows | None, eval_dataset: Rows | None, options: dict[str, Any]) -> dict[str, Any]:
    """The options with in-memory rows named as the dataset (so ``prompt_template: auto`` picks the plain
    template, and no GSM8K default applies); rows beside a dataset name are one line.

    >>> _data_options(None, [{"prompt": "a"}], {})
    Traceback (most recent call last):
    ...
    pipeline.config.ConfigError: eval_dataset: rows to evaluate on need rows to train on (the dataset argument); for a file or hub dataset give eval_dataset_name instead
    """
    if dataset is None:
        if eval_dataset is not None:
            raise ConfigError("eval_dataset: rows to evaluate on need rows to train on (the dataset argument); for a "
                              "file or hub dataset give eval_dataset_name instead")
        return options
    for option in ("dataset_name", "eval_dataset_name"):
        if option in options:
            raise ConfigError(f"option {option!r}: give either rows (the dataset and eval_dataset arguments) or "
                              f"{option}, not both")
    return {**options, "dataset_name": TRAIN_NAME}
