"""What re-encoding the few-shot prefix costs a protocol evaluation (`scripts/evaluate.py --protocol`): each
batch's prefill (every prompt encoded whole, shared shots included) against the whole greedy evaluation of
that batch, on the same model and problems. Caching the prefix every prompt shares could save at most the
prefill's shared share; this measures it before building it.

    python scripts/benchmark_eval_prefix.py                                   # gsm8k_cot and gsm8k, 16 problems
    python scripts/benchmark_eval_prefix.py --protocols gsm8k_cot --limit 8 --model tiny

Writes docs/benchmarks/eval_prefix_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.arguments import DataArguments  # noqa: E402
from pipeline.benchmark import PROFILES, load_profile_model  # noqa: E402
from pipeline.evaluation.protocols import (PROTOCOLS, adds_special_tokens, evaluate_protocol,  # noqa: E402
                                          load_protocol_rows, protocol_prompts)
from pipeline.generation import encode  # noqa: E402
from pipeline.grpo.sampling import left_pad  # noqa: E402


def shared_prefix_tokens(prompts: list[list[int]]) -> int:
    """Tokens at the start of every prompt, identical in all.

    >>> shared_prefix_tokens([[1, 2, 3], [1, 2, 4], [1, 2]])
    2
    """
    return len(os.path.commonprefix(prompts))


@torch.no_grad()
def prefill_seconds(model, tokenizer, prompts: list[str], add_special_tokens: bool) -> float:
    """One left-padded forward over the prompts, as the sampler's prefill runs it (last position's logits)."""
    ids = [encode(tokenizer, p, model.device, add_special_tokens) for p in prompts]
    ids, mask = left_pad(ids, tokenizer.pad_token_id)  # [B, L]
    start = time.perf_counter()
    model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
    return time.perf_counter() - start


def measure(model, tokenizer, name: str, limit: int, batch_size: int, repeats: int) -> dict:
    """Per pass over the problems: the prefills of its batches, and the whole evaluation (the same batches)."""
    data, protocol = DataArguments(), PROTOCOLS[name]
    problems, train = load_protocol_rows(data.dataset_name, data.dataset_config, data.eval_split, data.train_split,
                                         limit, protocol)
    prompts = protocol_prompts(protocol, [row for _, row in problems], train, tokenizer)
    add_special_tokens = adds_special_tokens(tokenizer, prompts)  # as evaluate_protocol encodes them
    token_ids = [encode(tokenizer, p, "cpu", add_special_tokens).tolist() for p in prompts]
    batches = [prompts[s : s + batch_size] for s in range(0, len(prompts), batch_size)]
    prefill, whole = [], []
    for repeat in range(repeats + 1):  # the first pass is warm-up
        p = sum(prefill_seconds(model, tokenizer, batch, add_special_tokens) for batch in batches)
        start = time.perf_counter()  # all problems at once: the shots are drawn for the whole list, as evaluate.py does
        evaluate_protocol(model, tokenizer, problems, train, protocol, batch_size=batch_size, show_progress=False)
        if repeat:
            prefill.append(p)
            whole.append(time.perf_counter() - start)
    mean_tokens = statistics.mean(len(t) for t in token_ids)
    shared = shared_prefix_tokens(token_ids)
    share = statistics.median(p / w for p, w in zip(prefill, whole))
    return {"protocol": name, "problems": len(problems), "batch_size": batch_size, "passes_timed": len(whole),
            "prompt_tokens_mean": mean_tokens, "shared_prefix_tokens": shared,
            "prefill_s_per_batch": statistics.median(prefill) / len(batches),
            "evaluation_s_per_batch": statistics.median(whole) / len(batches), "prefill_share": share,
            # attention over the shared part is not all of a prefill's work, so this bounds what caching saves
            "shared_prefix_share_at_most": share * shared / mean_tokens}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2", help="SmolLM2-135M or a random 2-layer Llama.")
    parser.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=["gsm8k_cot", "gsm8k"],
                        help="Protocols to measure.")
    parser.add_argument("--limit", type=int, default=16, help="First test problems per protocol.")
    parser.add_argument("--batch_size", type=int, default=8, help="Problems per batch (evaluate.py's default).")
    parser.add_argument("--repeats", type=int, default=1, help="Timed passes over the problems (after one warm-up).")
    parser.add_argument("--out_dir", type=Path, default=ROOT / "docs" / "benchmarks", help="Where JSON + Markdown go.")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    profile = PROFILES["cpu-smollm2" if args.model == "smollm2" else "cpu-tiny"]
    model, tokenizer, _ = load_profile_model(profile)
    model.eval()
    rows = [measure(model, tokenizer, name, args.limit, args.batch_size, args.repeats) for name in args.protocols]
    command = "python scripts/benchmark_eval_prefix.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"`{command.strip()}`", "", f"{torch.get_num_threads()} threads, float32, greedy, batches of {args.batch_size}, medians over passes", "",
             "| protocol | prompt tokens (mean) | shared prefix tokens | prefill s / batch | evaluation s / batch "
             "| prefill share | shared prefix's share, at most |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['protocol']} | {r['prompt_tokens_mean']:.0f} | {r['shared_prefix_tokens']} | "
              f"{r['prefill_s_per_batch']:.2f} | {r['evaluation_s_per_batch']:.1f} | {r['prefill_share']:.1%} | "
              f"{r['shared_prefix_share_at_most']:.1%} |" for r in rows]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"eval_prefix_{args.model}"
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "command": command}, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return {r["protocol"]: r for r in rows}


if __name__ == "__main__":
    main()
