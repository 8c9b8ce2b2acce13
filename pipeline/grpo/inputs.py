"""What a GRPO run reads before and during training: reward functions, the checks that need no
weights, the GSM8K problems, and which problems each step uses."""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import random
from pathlib import Path
from typing import Any

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.config import require
from pipeline.data import DataError, Example, PromptTemplate, get_template
from pipeline.data.sources import stage_examples
from pipeline.distributed import launched_engine, shards_parameters, zero_stage
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.state import GRPOState
from rewards import load_reward

logger = logging.getLogger(__name__)
LOOP_KWARGS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric")  # not columns
NUMERIC_REWARDS = ("accuracy", "digit_match")  # they read the gold answer as a number
MARKED_REWARDS = ("accuracy", "format", "format_soft")  # they read the answer where the template marks it
EXTRAS = {"reasoning_gym": "reasoning_gym", "math_verify": "math_verify"}  # reward -> the library it needs
RESERVED_COLUMNS = ("reward_funcs", "names", "weights", "timeout", "faults", "async_loop", "fn", "name")


def reward_options(args: GRPOArguments, template: PromptTemplate) -> dict[str, Any]:
    """What reward factories may take from the run and the template (``rewards.load_reward``'s options)."""
    return {"max_completion_length": args.max_completion_length, "overlong_buffer_length": args.overlong_buffer_length,
            "reasoning_tag": template.reasoning_tag, "answer_tag": template.answer_tag}


def reward_functions(args: GRPOArguments, template: PromptTemplate) -> list[Any]:
    """The configured reward functions, with the options they take from the run and the template."""
    return [load_reward(name, **reward_options(args, template)) for name in args.reward_funcs]


def reward_columns(rows: list[Example]) -> dict[str, list[Any]]:
    """Each dataset column as one list over the rows (None where a row lacks it), as TRL hands them to rewards.

    >>> reward_columns([Example("q", "", 3, "f:1", columns={"level": 1}), Example("r", "", 4, "f:2")])
    {'answer': [3, 4], 'level': [1, None]}
    """
    per_row = [row.reward_columns() for row in rows]
    names = list(dict.fromkeys(key for columns in per_row for key in columns))
    return {name: [columns.get(name) for columns in per_row] for name in names}


def preflight(args: GRPOArguments, model_args: ModelArguments, data_args: DataArguments,
              reward_funcs: list[Any] | None = None, splits=None, named: list[bool] | None = None):
    """Every check that needs no weights, before any load: rewards, model path and size, data. ``reward_funcs``:
    callables given from Python (named by ``args.reward_funcs``; ``named`` says which were given by name);
    ``splits``: rows already read (a ``DataSplits``), in place of ``data_args``' dataset.

    Returns (GRPO examples, evaluation examples, the evaluation's short label). Raises ConfigError, DataError or
    ModelLoadError naming the option or file:line.
    """
    from transformers import AutoConfig

    from pipeline.config import ConfigError
    from pipeline.models import is_adapter_folder, resolve_model_path

    try:
        reward_funcs = reward_funcs or reward_functions(args, get_template(data_args.prompt_template))
    except ValueError as exc:
        raise ConfigError(f"option --reward_funcs: {exc}") from None
    if args.use_vllm and model_args.load_in_4bit:
        raise ConfigError("option --use_vllm: does not combine with load_in_4bit (QLoRA): vLLM would be sent 4-bit "
                          "packed weights; set load_in_4bit: false, or use_vllm: false")
    start = Path(model_args.model_name_or_path).expanduser().absolute()
    if start.name in ("merged", "adapter") and start.exists() and \
            start.parent.resolve() == Path(args.output_dir).expanduser().resolve():
        raise ConfigError(f"option --output_dir: {args.output_dir} holds the model this run starts from "
                          f"({model_args.model_name_or_path}), which the run's own {start.name}/ would overwrite; "
                          "give another folder")
    path = resolve_model_path(model_args)
    if not is_adapter_folder(path) and Path(path).is_dir():
        config = AutoConfig.from_pretrained(path, trust_remote_code=model_args.trust_remote_code)
        limit = getattr(config, "max_position_embeddings", None)
        needed = args.max_prompt_length + args.max_completion_length
        if limit is not None and needed > limit:
            raise ConfigError(f"option --max_completion_length: max_prompt_length + max_completion_length = {needed} "
                              f"exceeds the model's {limit} positions; lower one of them")
    named = named or [True] * len(args.reward_funcs)
    check_resumed_prompts(args, data_args)
    examples, eval_examples, record = stage_examples(data_args, "grpo", splits)
    check_reward_columns(reward_funcs, args.reward_funcs, examples, named)
    check_template_rewards(get_template(data_args.prompt_template), args.reward_funcs, named)
    examples = prompts_that_fit(args, model_args, data_args, examples)
    if args.eval_limit and args.eval_protocol:  # lm-eval's problems and shots: GSM8K-shaped rows, read here
        from pipeline.evaluation.protocols import ProtocolProblems

        protocol = ProtocolProblems.load(args.eval_protocol, data_args.eval_dataset_name or data_args.dataset_name,
                                         data_args.dataset_config, data_args.eval_split, data_args.train_split,
                                         args.eval_limit)
        return examples, protocol, f"{args.eval_protocol} (lm-eval), {protocol.label}"
    if args.eval_limit:
        from pipeline.evaluation.evaluate import check_gold_answers

        check_gold_answers(eval_examples[: args.eval_limit], args.eval_answer_match, "--eval_answer_match")
    return examples, eval_examples, record["evaluation_label"]


def reward_kwargs(state: GRPOState, rows: list[Example]) -> dict[str, Any]:
    """Keyword arguments of every reward call, as TRL's GRPOTrainer passes them: the dataset's columns (one value
    per completion), ``trainer_state``, ``log_extra`` and ``log_metric``."""
    from transformers import TrainerState

    state.reward_log.columns.clear()
    progress = TrainerState(global_step=state.step, max_steps=state.args.max_steps)
    return reward_columns(rows) | {"trainer_state": progress, "log_extra": state.reward_log.log_extra,
                                   "log_metric": state.reward_log.log_metric}


def check_reward_columns(reward_funcs: list[Any], names: list[str], examples: list[Example],
                         named: list[bool] | None = None) -> None:
    """Every column a reward function requires (a parameter without a default) is in the data, and gold answers
    read as numbers where the reward compares numbers; else one line naming the reward, column or row.
    ``named``: which rewards were given by name (the built-ins' own checks apply to those only; a callable given
    from Python is checked by its signature alone)."""
    named = named or [True] * len(names)
    from pipeline.config import ConfigError
    from rewards.parsing import GoldAnswerError, parse_gold_answer

    columns = reward_columns(examples)
    clash = next((c for c in columns if c in RESERVED_COLUMNS), None)
    if clash is not None:
        raise DataError(f"{examples[0].source}: the column {clash!r} has a name the reward call uses itself; rename "
                        f"the column (reserved: {', '.join(RESERVED_COLUMNS)})")
    for name, by_name in zip(names, named):
        if by_name and name in EXTRAS and importlib.util.find_spec(EXTRAS[name]) is None:
            raise ConfigError(f"option --reward_funcs: {name} needs the {EXTRAS[name]} package: "
                              "pip install -e '.[reasoning]' (make install does)")
    for fn, name, by_name in zip(reward_funcs, names, named):
        params = inspect.signature(fn).parameters.values()
        needed = [p.name for p in params if p.default is inspect.Parameter.empty and p.name not in LOOP_KWARGS
                  and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for column in needed:
            if column not in columns:
                raise ConfigError(f"option --reward_funcs: {name} needs the column {column!r}, but the rows (first: "
                                  f"{examples[0].source}) have {', '.join(columns) or 'none'}; "
                                  "map it with --answer_field, or choose another reward")
            lacking = next((e for e, value in zip(examples, columns[column]) if value is None), None)
            if lacking is not None:
                raise DataError(f"{lacking.source}: missing field {column!r}, which reward {name} needs; fix the row")
        if by_name and name in NUMERIC_REWARDS:
            for example in examples:
                try:
                    parse_gold_answer(example.answer)
                except GoldAnswerError as error:
                    raise DataError(f"{example.source}: {error}; reward {name} compares numbers: use math_verify, "
                                    "reasoning_gym or your own reward for such answers") from None


def check_template_rewards(template: PromptTemplate, names: list[str], named: list[bool]) -> None:
    """The rewards that read a marked answer (``<answer>``, ``####``, ``\\boxed``) against a template that asks for
    none (``plain``): every score would be 0, so one line instead."""
    from pipeline.config import ConfigError

    marked = next((n for n, by_name in zip(names, named) if by_name and n in MARKED_REWARDS), None)
    if template.plain and marked:
        raise ConfigError(f"option --reward_funcs: {marked} reads a marked answer (<answer>, ####, \\boxed), which "
                          "prompt_template plain does not ask for, so it would score 0; give your own reward (or "
                          "exact_match), or set --prompt_template answer (or reasoning)")


def prompts_that_fit(args: GRPOArguments, model_args: ModelArguments, data_args: DataArguments,
                     examples: list[Example]) -> list[Example]:
    """Every training prompt, rendered as the loop renders it, within ``max_prompt_length`` tokens: checked here,
    before any weights load and on every process alike, not when a step first samples it. A longer one is one line
    naming its row, or with ``drop_long_prompts`` left out and counted."""
    from pipeline.models import load_tokenizer

    tokenizer, template = load_tokenizer(model_args), get_template(data_args.prompt_template)
    lengths = [len(tokenizer(e.prompt_text(tokenizer, template, data_args.system_prompt),
                             add_special_tokens=False).input_ids) for e in examples]
    kept = [e for e, n in zip(examples, lengths) if n <= args.max_prompt_length]
    if len(kept) == len(examples):
        return examples
    longest = max(range(len(examples)), key=lengths.__getitem__)
    if not args.drop_long_prompts:
        raise DataError(f"{examples[longest].source}: prompt has {lengths[longest]} tokens, over max_prompt_length="
                        f"{args.max_prompt_length} ({len(examples) - len(kept)} such rows); raise --max_prompt_length, "
                        "or set --drop_long_prompts true to train without them")
    if not kept:
        raise DataError(f"{examples[0].source}: every prompt is over max_prompt_length={args.max_prompt_length}; "
                        "raise --max_prompt_length")
    logger.warning("drop_long_prompts: %d of %d prompts over max_prompt_length=%d left out "
                   "(longest: %s, %d tokens)", len(examples) - len(kept), len(examples), args.max_prompt_length,
                   examples[longest].source, lengths[longest])
    return kept


def check_resumed_prompts(args: GRPOArguments, data_args: DataArguments) -> None:
    """A resumed run keeps the prompt template and system prompt it started with (its config.json)."""
    from pipeline.config import ConfigError

    saved = Path(args.output_dir) / "config.json"
    if not args.resume_from_checkpoint or not saved.is_file():
        return
    started = json.loads(saved.read_text()).get("data", {})
    for option in ("prompt_template", "system_prompt"):
        if option in started and started[option] != getattr(data_args, option):
            raise ConfigError(f"option --{option}: {saved} started with {started[option]!r}, not "
                              f"{getattr(data_args, option)!r}; resume with --{option} {started[option]!r}")


def load_grpo_examples(data_args: DataArguments) -> tuple[list[Example], list[Example]]:
    """GRPO's training problems (bundled GSM8K: the hold-out disjoint from SFT's part) and the evaluation ones."""
    examples, eval_examples, _ = stage_examples(data_args, "grpo")
    return examples, eval_examples


def prompt_indices(num_examples: int, step: int, prompts_per_step: int, seed: int) -> list[int]:
    """Dataset indices of a step's prompts: a seeded permutation per epoch, a pure function of the step.

    >>> epoch = prompt_indices(6, 0, 3, seed=0) + prompt_indices(6, 1, 3, seed=0)
    >>> sorted(epoch)  # one epoch: every problem exactly once
    [0, 1, 2, 3, 4, 5]
    """
    indices = []
    for position in range(step * prompts_per_step, (step + 1) * prompts_per_step):
        epoch, offset = divmod(position, num_examples)
        order = list(range(num_examples))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        indices.append(order[offset])
    return indices


def local_prompts(state: GRPOState, step: int) -> list[tuple[int, Example]]:
    """This process's (global position, example) pairs for ``step``: whole groups, never split."""
    args, acc = state.args, state.accelerator
    indices = prompt_indices(len(state.examples), step, args.prompts_per_step, args.seed)
    per_process = args.prompts_per_step // acc.num_processes
    start = acc.process_index * per_process
    positions = range(step * args.prompts_per_step + start, step * args.prompts_per_step + start + per_process)
    return [(pos, state.examples[i]) for pos, i in zip(positions, indices[start : start + per_process])]


def check_engine_options(accelerator, args: GRPOArguments, model_args: ModelArguments) -> None:
    """What the loop does not offer under DeepSpeed or FSDP yet, refused before any weights load."""
    engine = launched_engine()
    if engine is None:
        return
    require(not args.resume_from_checkpoint, "resume_from_checkpoint", f"not under {engine} yet: its checkpoints "
            "hold the gathered weights, not the sharded optimizer state; rerun from the saved weights instead")
    require(not (args.dynamic_sampling and shards_parameters(accelerator)), "dynamic_sampling",
            "not with sharded parameters (ZeRO-3, FSDP) yet: each process would decide its own extra rounds, "
            "and every forward pass is a collective")
    require(zero_stage(accelerator) < 3 or model_args.use_peft or args.beta == 0, "beta",
            "ZeRO-3 with full fine-tuning needs a sharded reference model, not offered yet: use LoRA (use_peft: true) "
            "or beta: 0")
