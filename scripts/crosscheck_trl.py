"""Cross-check our GRPO loop against TRL 1.16's GRPOTrainer.

    python scripts/crosscheck_trl.py                          # unit level, on a tiny random Llama
    python scripts/crosscheck_trl.py --model_name_or_path runs/sft_smollm2_cpu/merged --steps 2   # + run level

1. Unit level: for every loss type x beta x mu (x TRL's KL correction), our loss and gradients
   against TRL's `GRPOTrainer._compute_loss` on one float64 batch with padding and a truncated row.
2. Run level (with --model_name_or_path): the same config (model, data, rewards, hyper-parameters) trained
   a few steps from one seed by both backends, side by side: loss, reward, KL, step time.
Exits with status 1 when the unit-level parity fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.crosscheck import PARITY_CASES, VARIANT_CASES, adaptive_entropy_case, losses_agree, parity_case
from pipeline.runtime import setup_logging

logger = logging.getLogger("crosscheck_trl")


def tiny_model(folder: Path) -> Path:
    from pipeline.data import load_gsm8k
    from pipeline.tiny import build_tiny_llama

    corpus = [f"{e.question} {e.reasoning} {e.answer}" for e in load_gsm8k(split="train").examples[:300]]
    return build_tiny_llama(folder / "tiny-llama", corpus + ["<reasoning>\n</reasoning>\n<answer>\n</answer>"])


def unit_level(model_dir: Path, work: Path) -> bool:
    print("\nUnit level: our loss and gradients vs TRL GRPOTrainer._compute_loss (float64)")
    print(f"{'loss_type':<9} {'beta':>5} {'mu':>3} {'kl_corr':>7} {'our loss':>13} {'TRL loss':>13} {'grad err':>9}  ok")
    all_ok = True
    cases = [(*case, {}) for case in PARITY_CASES] + [(t, 0.04, mu, True, v) for t, mu, v in VARIANT_CASES]
    for loss_type, beta, mu, kl, variant in cases:
        r = parity_case(model_dir, work / "unit", loss_type, beta, mu, kl, variant=variant)
        all_ok &= r.ok()
        options = " ".join(f"{k}={v}" for k, v in variant.items())
        print(f"{loss_type:<9} {beta:>5} {mu:>3} {str(kl):>7} {r.our_loss:>13.6e} {r.trl_loss:>13.6e} "
              f"{r.max_grad_error:>9.1e}  {'yes' if r.ok() else 'NO'}  {options}")
    print("\nAdaptive entropy (use_adaptive_entropy): loss and entropy_coef after each update, ours vs TRL")
    print(f"{'update':>6} {'our loss':>13} {'TRL loss':>13} {'our coef':>9} {'TRL coef':>9}  ok")
    for index, row in enumerate(adaptive_entropy_case(model_dir, work / "adaptive"), start=1):
        ok = losses_agree(row["our_loss"], row["trl_loss"]) and abs(row["our_coef"] - row["trl_coef"]) <= 1e-12
        all_ok &= ok
        print(f"{index:>6} {row['our_loss']:>13.6e} {row['trl_loss']:>13.6e} {row['our_coef']:>9.4f} "
              f"{row['trl_coef']:>9.4f}  {'yes' if ok else 'NO'}")
    return all_ok


def run_level(model_dir: str, work: Path, steps: int, use_peft: bool) -> None:
    from pipeline.grpo.inputs import load_grpo_examples
    from pipeline.grpo.trainer import train
    from pipeline.grpo.trl_backend import train_with_trl

    model_args = ModelArguments(model_name_or_path=model_dir, use_peft=use_peft, lora_r=8, lora_alpha=16,
                                lora_dropout=0.0)
    data_args = DataArguments()
    examples, _ = load_grpo_examples(data_args)

    def grpo_args(name: str) -> GRPOArguments:
        return GRPOArguments(output_dir=str(work / name), max_steps=steps, prompts_per_step=2, num_generations=4,
                             micro_batch_size=4, max_completion_length=32, max_prompt_length=2048,
                             reward_funcs=["accuracy", "format_soft", "overlong"], overlong_buffer_length=16,
                             beta=0.04, learning_rate=1e-4, loss_type="dapo", save_steps=0, seed=42)

    ours = train(grpo_args("ours"), model_args, data_args, examples)["history"]
    theirs = train_with_trl(grpo_args("trl"), model_args, data_args, examples)["history"]
    print(f"\nRun level: {steps} steps each, same config and seed (samples differ: each backend has its own RNG use)")
    print(f"{'step':>4} | {'loss':>9} {'reward':>7} {'kl':>8} {'time s':>7} | {'loss':>9} {'reward':>7} {'kl':>8} {'time s':>7}")
    print(f"{'':>4} | {'ours':^34} | {'TRL GRPOTrainer':^34}")
    for step in range(steps):
        cells = []
        for history in (ours, theirs):
            h = history[step] if step < len(history) else {}
            cells.append(f"{h.get('loss', float('nan')):>9.4f} {h.get('reward') or 0:>7.3f} "
                         f"{h.get('kl', float('nan')):>8.5f} {h.get('time/step', float('nan')):>7.2f}")
        print(f"{step + 1:>4} | {cells[0]} | {cells[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model_name_or_path", default=None,
                        help="A model that earns GSM8K rewards (an SFT run's merged/) for the run-level check; "
                             "without one it is skipped: a random model's every step has reward -1 and loss 0.")
    parser.add_argument("--steps", type=int, default=3, help="Training steps per backend in the run-level check.")
    parser.add_argument("--skip_run_level", action="store_true", help="Only run the unit-level parity.")
    parser.add_argument("--work_dir", default=None, help="Folder for the runs (default: a temporary folder).")
    args = parser.parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="crosscheck-"))
    tiny = tiny_model(work)
    ok = unit_level(tiny, work)
    if args.model_name_or_path and not args.skip_run_level:
        run_level(args.model_name_or_path, work, args.steps, use_peft=True)
    elif not args.skip_run_level:
        print("\nRun level: skipped. Give --model_name_or_path of a model that earns GSM8K rewards (an SFT run's "
              "merged/): a random model's completions are all truncated, so every step has reward -1 and loss 0.")
    print(f"\nunit-level parity: {'PASSED' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    setup_logging("WARNING")
    sys.exit(main())
