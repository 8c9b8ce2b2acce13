"""Benchmark our GRPO loop against TRL 1.16's GRPOTrainer on identical work.

    python scripts/benchmark.py --profile cpu-smollm2          # ~10 min on 2 CPU cores
    python scripts/benchmark.py --profile cpu-tiny --rounds 2

Rounds alternate ours / TRL, each backend in a fresh process (clean peak memory); warm-up steps are
not timed; generation runs a fixed number of new tokens (EOS suppressed) so the work is identical.
Writes docs/benchmarks/benchmark_<profile>.{json,md} and prints the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.benchmark import BACKENDS, PROFILES, markdown, run_worker, save, summarize  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu-tiny", help="Workload to time.")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per backend and round.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed steps first.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating ours / TRL rounds.")
    parser.add_argument("--trl_defaults", type=int, default=1,
                        help="Extra rounds, after the others, of ours with gradient checkpointing and of TRL at its "
                             "own defaults (gradient checkpointing, bf16): the low-memory settings.")
    parser.add_argument("--vllm", action="store_true",
                        help="Ours and TRL, each with its built-in sampler and with vLLM rollouts (our use_vllm, "
                             "TRL's colocate mode), in alternating rounds; needs a venv with vLLM (make vllm-venv).")
    parser.add_argument("--out_dir", type=Path, default=ROOT / "docs" / "benchmarks", help="Where JSON + Markdown go.")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # one backend, in this process
        args.result.write_text(json.dumps(run_worker(args.profile, args.worker, args.steps, args.warmup)))
        return {}
    results = []
    schedule = [("ours", "trl")] * args.rounds + [("ours-checkpointed", "trl-defaults")] * args.trl_defaults
    if args.vllm:
        schedule = [("ours", "ours-vllm", "trl", "trl-vllm")] * args.rounds
    with tempfile.TemporaryDirectory(prefix="bench-results-") as scratch:  # each worker's measurements, read back
        for round_index, backends in enumerate(schedule):
            for backend in backends:
                result_file = Path(scratch) / f"{round_index}-{backend}.json"
                subprocess.run([sys.executable, __file__, "--profile", args.profile, "--steps", str(args.steps),
                                "--warmup", str(args.warmup), "--worker", backend, "--result", str(result_file)],
                               check=True, cwd=ROOT)
                results.append(json.loads(result_file.read_text()))
                print(f"round {round_index + 1}, {backend}: median step "
                      f"{sorted(results[-1]['step_times'])[len(results[-1]['step_times']) // 2]:.2f} s", flush=True)
    table = summarize(results)
    command = (f"python scripts/benchmark.py --profile {args.profile} --steps {args.steps} --warmup {args.warmup} "
               f"--rounds {args.rounds} " + ("--vllm" if args.vllm else f"--trl_defaults {args.trl_defaults}"))
    path = save(args.out_dir, args.profile + ("-vllm" if args.vllm else ""), results, table, command)
    print(markdown(args.profile, table, command))
    print(f"written: {path} and {path.with_suffix('.json')}")
    return table


if __name__ == "__main__":
    main()
