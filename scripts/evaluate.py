"""Evaluate a model on GSM8K or any dataset: greedy pass@1, sampled maj@k / pass@k, strict and flexible scores.

    python scripts/evaluate.py --config configs/eval_smollm2_cpu.yaml [--limit 50 ...]
    python scripts/evaluate.py --protocol gsm8k --limit 50     # as lm-eval's gsm8k task (5-shot), comparable
    .venv-vllm/bin/python scripts/evaluate.py --protocol gsm8k --use_vllm true     # decoded by vLLM

Works with a base model (hub id or folder), a merged folder, or a LoRA adapter folder. A file given with
--dataset_name is evaluated whole (--eval_holdout_size N: the seeded N rows a training run on it holds out);
--answer_match picks how answers are judged (numbers, normalised text, math-verify).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from pipeline.arguments import DataArguments, EvalArguments, ModelArguments
from pipeline.config import ConfigError, run_script
from pipeline.data import get_template
from pipeline.evaluation.evaluate import check_gold_answers, evaluate_gsm8k, format_table, write_results
from pipeline.evaluation.protocols import (PROTOCOLS, adds_special_tokens, evaluate_protocol, load_protocol_rows,
                                           protocol_prompts, protocol_summary)
from pipeline.models import is_adapter_folder, load_model, load_tokenizer, resolve_model_path
from pipeline.runtime import resolve_device, seed_everything, setup_logging

logger = logging.getLogger("evaluate")
CONFIG_TYPES = [ModelArguments, DataArguments, EvalArguments]
JUDGED_BY = {"numeric": "exact numeric value", "text": "normalised exact text match", "math_verify": "math-verify",
             "reasoning_gym": "the reasoning-gym task's verifier"}


def main(model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments) -> dict:
    seed_everything(eval_args.seed)
    if eval_args.protocol:
        return evaluate_as_lm_eval(model_args, data_args, eval_args)
    # Data first: a bad file fails in a second, not after the model has loaded.
    splits = data_args.load_splits(need_train=False)
    shown = len(splits.eval[: eval_args.limit])
    cut = f"the first {shown} (--limit {eval_args.limit}) of " if shown < len(splits.eval) else ""
    logger.info("evaluating %s%s", cut, splits.eval_note)
    judge = check_gold_answers(splits.eval[: eval_args.limit], eval_args.answer_match)
    logger.info("answers judged by %s (--answer_match %s)", JUDGED_BY[judge.name], eval_args.answer_match)
    template = get_template(data_args.prompt_template)
    model, tokenizer, generator = load_decoder(model_args, eval_args, lambda tokenizer: [
        ex.prompt_text(tokenizer, template, data_args.system_prompt)
        for ex in splits.eval[: eval_args.limit]])
    records, summary = evaluate_gsm8k(
        model, tokenizer, splits.eval, template, eval_args, system_prompt=data_args.system_prompt,
        model_name=model_args.model_name_or_path, split_name=splits.eval_label, generator=generator,
    )
    summary["skipped_rows"] = len(splits.skipped)
    write_results(eval_args.output_dir, records, summary)
    print(format_table(summary))
    return summary


def evaluate_as_lm_eval(model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments) -> dict:
    protocol = PROTOCOLS[eval_args.protocol]
    problems, train = load_protocol_rows(data_args.eval_dataset_name or data_args.dataset_name, data_args.dataset_config,
                                         data_args.eval_split, data_args.train_split, eval_args.limit, protocol)
    model, tokenizer, generator = load_decoder(model_args, eval_args, lambda tokenizer: protocol_prompts(
        protocol, [row for _, row in problems], train, tokenizer, apply_chat_template=eval_args.apply_chat_template,
        fewshot_as_multiturn=eval_args.fewshot_as_multiturn))
    started = time.perf_counter()
    records = evaluate_protocol(model, tokenizer, problems, train, protocol, batch_size=eval_args.batch_size,
                                apply_chat_template=eval_args.apply_chat_template,
                                fewshot_as_multiturn=eval_args.fewshot_as_multiturn, generator=generator)
    summary = protocol_summary(records, protocol, time.perf_counter() - started, model=model_args.model_name_or_path,
                               split=f"{protocol.name} (lm-eval) · {data_args.eval_dataset_name or data_args.dataset_name} "
                               f"{data_args.eval_split}", settings=eval_args.to_dict())
    write_results(eval_args.output_dir, records, summary)
    print(format_table(summary))
    return summary


def load_decoder(model_args: ModelArguments, eval_args: EvalArguments, prompts_for: Callable[[Any], list[str]]):
    """(the model in eval mode, its tokenizer, None) for the built-in decoder; (None, the tokenizer, a vLLM
    generator) with --use_vllm. What cannot work is one line before any weights load; ``prompts_for(tokenizer)``:
    the prompts to evaluate, whose longest must fit vLLM's model length with the new tokens."""
    path = vllm_model_path(model_args, eval_args) if eval_args.use_vllm else None
    tokenizer = load_tokenizer(model_args)
    if eval_args.apply_chat_template and not tokenizer.chat_template:
        raise ConfigError(f"option --apply_chat_template: {model_args.model_name_or_path}'s tokenizer has no chat "
                          "template; leave it false")
    if path is None:
        return load_model(model_args, device=resolve_device(eval_args.device)).eval(), tokenizer, None
    from pipeline.vllm_generation import VLLMGenerator, check_fits

    new_tokens = PROTOCOLS[eval_args.protocol].max_gen_toks if eval_args.protocol else eval_args.max_new_tokens
    prompts = prompts_for(tokenizer)
    special = bool(eval_args.protocol) and adds_special_tokens(tokenizer, prompts)
    check_fits([len(tokenizer(p, add_special_tokens=special).input_ids) for p in prompts], new_tokens,
               eval_args.vllm_max_model_length)
    hub = {"revision": model_args.model_revision} if model_args.model_revision != "main" else {}
    return None, tokenizer, VLLMGenerator(
        path, tokenizer, batch_size=eval_args.batch_size, seed=eval_args.seed, dtype=model_args.dtype,
        max_model_length=eval_args.vllm_max_model_length, gpu_memory_utilization=eval_args.vllm_gpu_memory_utilization,
        trust_remote_code=model_args.trust_remote_code, **hub)


def vllm_model_path(model_args: ModelArguments, eval_args: EvalArguments) -> str:
    """The full-weights folder (or hub id) vLLM evaluates; a ConfigError for what it cannot load or honour."""
    for option in ("load_in_4bit", "gguf_file"):
        if getattr(model_args, option):
            raise ConfigError(f"option --{option}: not with --use_vllm (vLLM loads the folder's own weights); "
                              "leave one of them out")
    where = "cuda" if torch.cuda.is_available() else "cpu"
    if eval_args.device not in ("auto", where):
        raise ConfigError(f"option --device: vLLM runs on {where} here (its first GPU, or the CPU); leave --device "
                          "auto with --use_vllm (CUDA_VISIBLE_DEVICES picks another GPU)")
    path = resolve_model_path(model_args)
    if is_adapter_folder(path):
        raise ConfigError(f"option --use_vllm: {path} is a LoRA adapter folder; vLLM evaluates full weights: give "
                          "the run's merged/ folder (or leave --use_vllm false)")
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("option --use_vllm: vLLM is not installed here; run with .venv-vllm/bin/python "
                          "(`make vllm-venv`, CPU) or `pip install -e .[vllm]` (GPU)")
    from pipeline.vllm_generation import context_length

    context = context_length(path)
    if eval_args.vllm_max_model_length > context:
        raise ConfigError(f"option --vllm_max_model_length: {eval_args.vllm_max_model_length} is more than "
                          f"{path}'s context length ({context}); lower it")
    return path


if __name__ == "__main__":
    setup_logging()
    run_script(main, CONFIG_TYPES, description=__doc__)
