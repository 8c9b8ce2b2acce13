"""SFT stage: LoRA (or 4-bit QLoRA) fine-tuning on GSM8K train with TRL's SFTTrainer.

    accelerate launch scripts/train_sft.py --config configs/sft_smollm2_cpu.yaml
    python scripts/train_sft.py --config configs/sft_smollm2_cpu.yaml --max_steps 10

Writes into output_dir: checkpoints, adapter/ (LoRA), merged/ (full precision; GRPO starts from it
and uses it as its reference), data_split.json, sft_summary.json, and eval_before/ + eval_after/
when eval_limit > 0. `--resume_from_checkpoint latest` continues from the newest checkpoint.
"""

from __future__ import annotations

import logging
import sys

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.config import run_script
from pipeline.evaluation.evaluate import format_comparison
from pipeline.runtime import end_process_group, setup_logging
from pipeline.sft import SFTScriptArguments, SFTTrainingArguments, run_sft

logger = logging.getLogger("train_sft")
CONFIG_TYPES = [SFTScriptArguments, SFTTrainingArguments, ModelArguments, DataArguments]


def main(script_args: SFTScriptArguments, training_args: SFTTrainingArguments, model_args: ModelArguments, data_args: DataArguments):
    summary = run_sft(script_args, training_args, model_args, data_args)
    if summary.get("interrupted"):
        print(f"Interrupted ({summary['interrupted']}): checkpoint of step {summary['train']['global_step']} saved in "
              f"{training_args.output_dir}. Resume with: --resume_from_checkpoint latest", file=sys.stderr)
        raise SystemExit(130)
    steps = summary["train"]["global_step"]
    logger.info("SFT done: %d steps; merged model in %s", steps, summary["output"]["merged"])
    if "before" in summary and "after" in summary:
        title = (f"\nSFT on {summary['train_examples']} problems, {steps} steps · pass@1 (greedy) on "
                 f"{summary['after']['split']}, {summary['after']['num_problems']} problems")
        print(format_comparison(title, [("before", summary["before"]), ("after", summary["after"])]))
    return summary


if __name__ == "__main__":
    setup_logging()
    run_script(main, CONFIG_TYPES, description=__doc__)
    end_process_group()  # several processes (accelerate launch): one matched shutdown
