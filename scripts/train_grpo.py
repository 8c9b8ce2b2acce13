"""GRPO stage: G sampled completions per GSM8K prompt, verifiable rewards, group advantages,
clipped surrogate + per-token KL to the frozen SFT policy.

    accelerate launch scripts/train_grpo.py --config configs/grpo_smollm2_cpu.yaml
    python scripts/train_grpo.py --config configs/grpo_smollm2_cpu.yaml --max_steps 5
    python scripts/train_grpo.py --config configs/grpo_smollm2_cpu.yaml --backend trl   # TRL's GRPOTrainer
    python scripts/train_grpo.py --config configs/grpo_smollm2_cpu.yaml --resume_from_checkpoint latest

Writes into output_dir: metrics.jsonl, samples.jsonl, checkpoints/, eval/, adapter/ (LoRA),
merged/ (full precision; the model card README.md and grpo_config.yaml beside the weights), as
scripts/train_sft.py lays them out.
"""

from __future__ import annotations

import logging
import sys

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.config import ConfigError, run_script
from pipeline.grpo.config import GRPOArguments
from pipeline.runtime import end_process_group, setup_logging

logger = logging.getLogger("train_grpo")
CONFIG_TYPES = [GRPOArguments, ModelArguments, DataArguments]


def print_before_after(summary: dict) -> None:
    from pipeline.evaluation.evaluate import format_comparison

    before, after = summary.get("eval_before"), summary.get("eval_after")
    if before and after:
        title = f"\nGRPO, {summary['steps']} steps · pass@1 (greedy) on {after['split']}, {after['num_problems']} problems"
        print(format_comparison(title, [("before", before), ("after", after)]))


def refuse_bare_defaults_on_a_cpu(argv: list[str]) -> None:
    """The bare command (neither --config nor --model_name_or_path) on a machine without a GPU: the built-in
    defaults are a GPU's (full fine-tuning, 256-token completions), a first step of more than ten minutes on 2
    cores; refuse in one line naming the CPU recipe. A command that names its config or model chose its own
    settings (any of them overridable on the command line)."""
    import torch

    chosen = ("--config", "--model_name_or_path", "--model-name-or-path")
    if any(a.split("=", 1)[0] in chosen for a in argv) or torch.cuda.is_available():
        return
    raise ConfigError("no --config: the built-in defaults (full fine-tuning, 256-token completions) are a GPU's and "
                      "take over ten minutes a step on a CPU. On a CPU run the recipe of make demo: "
                      "scripts/train_sft.py --config configs/sft_chain_sum_cpu.yaml, then scripts/train_grpo.py "
                      "--config configs/grpo_chain_sum_cpu.yaml (any option can be overridden after it), or name "
                      "--model_name_or_path and the options yourself")


def main(grpo_args: GRPOArguments, model_args: ModelArguments, data_args: DataArguments) -> dict:
    from pipeline.grpo.inputs import preflight
    from pipeline.grpo.trainer import train

    refuse_bare_defaults_on_a_cpu(sys.argv[1:])
    examples, test_examples, eval_label = preflight(grpo_args, model_args, data_args)  # fails before any weights load
    if grpo_args.backend == "trl":
        from pipeline.grpo.trl_backend import train_with_trl

        summary = train_with_trl(grpo_args, model_args, data_args, examples)
        end_process_group()  # TRL's trainer is freed on return; our loop ends its group in trainer.close
        return summary
    summary = train(grpo_args, model_args, data_args, examples, test_examples, eval_label)
    if summary.get("interrupted"):
        print(f"Interrupted: checkpoint of step {summary['steps']} saved in {grpo_args.output_dir}/checkpoints. "
              "Resume with: --resume_from_checkpoint latest", file=sys.stderr)
        raise SystemExit(130)
    print_before_after(summary)
    return summary


if __name__ == "__main__":
    from pipeline.grpo.run_files import TrainingStopped

    setup_logging()
    try:
        run_script(main, CONFIG_TYPES, description=__doc__)  # bad input: one line, exit 2
    except TrainingStopped as stopped:
        print(f"error: {stopped}", file=sys.stderr)
        raise SystemExit(1) from None
