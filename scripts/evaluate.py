"""Evaluate a model on GSM8K: greedy pass@1, sampled maj@k / pass@k, strict and flexible scores.

    python scripts/evaluate.py --config configs/eval_smollm2_cpu.yaml [--limit 50 ...]

Works with a base model (hub id or folder), a merged folder, or a LoRA adapter folder.
"""

from __future__ import annotations

import logging

from pipeline.arguments import DataArguments, EvalArguments, ModelArguments
from pipeline.config import run_script
from pipeline.data import get_template
from pipeline.evaluation.evaluate import check_gold_answers, evaluate_gsm8k, format_table, write_results
from pipeline.models import load_model, load_tokenizer
from pipeline.runtime import resolve_device, seed_everything, setup_logging

logger = logging.getLogger("evaluate")
CONFIG_TYPES = [ModelArguments, DataArguments, EvalArguments]


def main(model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments) -> dict:
    seed_everything(eval_args.seed)
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


if __name__ == "__main__":
    setup_logging()
    run_script(main, CONFIG_TYPES, description=__doc__)
