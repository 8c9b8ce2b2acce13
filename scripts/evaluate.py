"""Evaluate a model on GSM8K: greedy pass@1, sampled maj@k / pass@k, strict and flexible scores.

    python scripts/evaluate.py --config configs/eval_smollm2_cpu.yaml [--limit 50 ...]
    python scripts/evaluate.py --protocol gsm8k --limit 50     # as lm-eval's gsm8k task (5-shot), comparable

Works with a base model (hub id or folder), a merged folder, or a LoRA adapter folder.
"""

from __future__ import annotations

import logging
import time

from pipeline.arguments import DataArguments, EvalArguments, ModelArguments
from pipeline.config import ConfigError, run_script
from pipeline.data import get_template
from pipeline.evaluation.evaluate import check_gold_answers, evaluate_gsm8k, format_table, write_results
from pipeline.evaluation.protocols import PROTOCOLS, evaluate_protocol, load_protocol_rows, protocol_summary
from pipeline.models import load_model, load_tokenizer
from pipeline.runtime import resolve_device, seed_everything, setup_logging

logger = logging.getLogger("evaluate")
CONFIG_TYPES = [ModelArguments, DataArguments, EvalArguments]


def main(model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments) -> dict:
    seed_everything(eval_args.seed)
    if eval_args.protocol:
        return evaluate_as_lm_eval(model_args, data_args, eval_args)
    # Data first: a bad file fails in a second, not after the model has loaded.
    splits = data_args.load_splits(need_train=False)
    check_gold_answers(splits.eval[: eval_args.limit])
    template = get_template(data_args.prompt_template)
    tokenizer = load_tokenizer(model_args)
    model = load_model(model_args, device=resolve_device(eval_args.device))  # in model_args.dtype
    records, summary = evaluate_gsm8k(
        model, tokenizer, splits.eval, template, eval_args,
        system_prompt=data_args.system_prompt, model_name=model_args.model_name_or_path, split_name=splits.eval_label,
    )
    summary["skipped_rows"] = len(splits.skipped)
    write_results(eval_args.output_dir, records, summary)
    print(format_table(summary))
    return summary


def evaluate_as_lm_eval(model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments) -> dict:
    protocol = PROTOCOLS[eval_args.protocol]
    problems, train = load_protocol_rows(data_args.eval_dataset_name or data_args.dataset_name, data_args.dataset_config,
                                         data_args.eval_split, data_args.train_split, eval_args.limit, protocol)
    tokenizer = load_tokenizer(model_args)
    if eval_args.apply_chat_template and not tokenizer.chat_template:
        raise ConfigError(f"option --apply_chat_template: {model_args.model_name_or_path}'s tokenizer has no chat "
                          "template; leave it false")
    model = load_model(model_args, device=resolve_device(eval_args.device)).eval()
    started = time.perf_counter()
    records = evaluate_protocol(model, tokenizer, problems, train, protocol, batch_size=eval_args.batch_size,
                                apply_chat_template=eval_args.apply_chat_template,
                                fewshot_as_multiturn=eval_args.fewshot_as_multiturn)
    summary = protocol_summary(records, protocol, time.perf_counter() - started, model=model_args.model_name_or_path,
                               split=f"{protocol.name} (lm-eval) · {data_args.eval_dataset_name or data_args.dataset_name} "
                               f"{data_args.eval_split}", settings=eval_args.to_dict())
    write_results(eval_args.output_dir, records, summary)
    print(format_table(summary))
    return summary


if __name__ == "__main__":
    setup_logging()
    run_script(main, CONFIG_TYPES, description=__doc__)
