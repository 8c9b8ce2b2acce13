"""What a GRPO run reads before and during training: reward functions, the checks that need no
weights, the GSM8K problems, and which problems each step uses."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.config import require
from pipeline.data import GSM8KExample, PromptTemplate, get_template
from pipeline.distributed import launched_engine, shards_parameters, zero_stage
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.state import GRPOState
from rewards import load_reward


def reward_functions(args: GRPOArguments, template: PromptTemplate) -> list[Any]:
    """The configured reward functions, with the options they take from the run and the template."""
    options = {"max_completion_length": args.max_completion_length,
               "overlong_buffer_length": args.overlong_buffer_length,
               "reasoning_tag": template.reasoning_tag, "answer_tag": template.answer_tag}
    return [load_reward(name, **options) for name in args.reward_funcs]


def preflight(args: GRPOArguments, model_args: ModelArguments, data_args: DataArguments):
    """Every check that needs no weights, before any load: rewards, model path and size, data.

    Returns (GRPO examples, test examples). Raises ConfigError, DataError or ModelLoadError naming the
    option or file:line.
    """
    from transformers import AutoConfig

    from pipeline.config import ConfigError
    from pipeline.models import is_adapter_folder, resolve_model_path

    try:
        reward_functions(args, get_template(data_args.prompt_template))
    except ValueError as exc:
        raise ConfigError(f"option --reward_funcs: {exc}") from None
    if args.use_vllm and model_args.load_in_4bit:
        raise ConfigError("option --use_vllm: does not combine with load_in_4bit (QLoRA): vLLM would be sent 4-bit "
                          "packed weights; set load_in_4bit: false, or use_vllm: false")
    path = resolve_model_path(model_args)
    if not is_adapter_folder(path) and Path(path).is_dir():
        config = AutoConfig.from_pretrained(path, trust_remote_code=model_args.trust_remote_code)
        limit = getattr(config, "max_position_embeddings", None)
        needed = args.max_prompt_length + args.max_completion_length
        if limit is not None and needed > limit:
            raise ConfigError(f"option --max_completion_length: max_prompt_length + max_completion_length = {needed} "
                              f"exceeds the model's {limit} positions; lower one of them")
    examples, test = load_grpo_examples(data_args)
    if not examples:
        raise ConfigError("option --grpo_holdout_size: the GRPO stage has no problems; set it above 0")
    return examples, test


def load_grpo_examples(data_args: DataArguments) -> tuple[list[GSM8KExample], list[GSM8KExample]]:
    """The GRPO hold-out of GSM8K train (disjoint from SFT's part) and the test split."""
    from pipeline.sft import load_stage_examples

    examples, _ = load_stage_examples(data_args, "grpo")
    return examples, data_args.load_split("test").examples


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


def local_prompts(state: GRPOState, step: int) -> list[tuple[int, GSM8KExample]]:
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
