"""Where rollout generation time goes: each decoding optimisation added one at a time, same work.

    python scripts/benchmark_sampling.py                      # SmolLM2-135M, 2 prompts x G 4 x 64 tokens, ~4 min on 2 CPU cores
    python scripts/benchmark_sampling.py --model tiny --repeats 1

Variants (each adds one thing to the previous):
  1. hf-generate-per-prompt: transformers ``generate`` with num_return_sequences=G, one prompt at a time
     (our loop before issue 7: the prompt is copied G times before the prefill; the KV cache grows by concatenation)
  2. prefill-once-static-cache: ``sample_groups`` on one prompt at a time (one prefill per prompt, static cache)
  3. all-prompts-one-batch: ``sample_groups`` on all prompts together
  4. merged-lora: as 3, decoding with LoRA merged into a weight copy (``MergedAdapterView``)
EOS is suppressed, so every variant generates exactly prompts x G x new_tokens tokens.
Writes docs/benchmarks/sampling_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.arguments import DataArguments  # noqa: E402
from pipeline.benchmark import PROFILES, load_profile_model  # noqa: E402
from pipeline.data import get_template, load_gsm8k, render_prompt  # noqa: E402
from pipeline.generation import eos_token_ids  # noqa: E402
from pipeline.grpo.sampling import SamplingParams, sample_groups  # noqa: E402
from pipeline.models import MergedAdapterView, add_lora  # noqa: E402

VARIANTS = ("hf-generate-per-prompt", "prefill-once-static-cache", "all-prompts-one-batch", "merged-lora")


def hf_generate_per_prompt(model, prompts, seeds, params: SamplingParams) -> None:
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=None,
                              max_new_tokens=params.max_new_tokens, min_new_tokens=params.max_new_tokens,
                              num_return_sequences=params.num_generations, pad_token_id=params.pad_token_id,
                              eos_token_id=list(params.eos_ids))
    for prompt, seed in zip(prompts, seeds):
        torch.manual_seed(seed)
        model.generate(input_ids=prompt[None], attention_mask=torch.ones_like(prompt[None]), generation_config=config)


def weight_read_floor(model, rows: int, repeats: int = 5) -> dict:
    """Time one ``[rows, in] @ W.T`` over every base Linear weight (the LM head included): each decode
    step reads all of them once, so no decode step can be faster than this pass."""
    weights = [m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lora_" not in n]
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=w.dtype, device=w.device) for w in weights}
    times = []
    with torch.no_grad():
        for repeat in range(repeats + 1):
            start = time.perf_counter()
            for w in weights:
                inputs[w.shape[1]] @ w.T
            if repeat:
                times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    total = sum(w.numel() * w.element_size() for w in weights)
    return {"seconds_per_step": seconds, "weight_bytes": total, "bytes_per_s": total / seconds}


def run_variant(name: str, model, view: MergedAdapterView, prompts, seeds, params) -> None:
    if name == "hf-generate-per-prompt":
        hf_generate_per_prompt(model, prompts, seeds, params)
    elif name == "prefill-once-static-cache":
        for prompt, seed in zip(prompts, seeds):
            sample_groups(model, [prompt], [seed], params)
    elif name == "all-prompts-one-batch":
        sample_groups(model, prompts, seeds, params)
    else:
        with view() as merged:
            sample_groups(merged, prompts, seeds, params)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2", help="SmolLM2-135M or a random 2-layer Llama.")
    parser.add_argument("--prompts", type=int, default=2, help="Prompts per step.")
    parser.add_argument("--num_generations", type=int, default=4, help="G samples per prompt.")
    parser.add_argument("--new_tokens", type=int, default=64, help="Tokens generated per sample (EOS suppressed).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed repeats per variant (after one warm-up), interleaved.")
    parser.add_argument("--out_dir", type=Path, default=ROOT / "docs" / "benchmarks", help="Where JSON + Markdown go.")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    profile = PROFILES["cpu-smollm2" if args.model == "smollm2" else "cpu-tiny"]
    model, tokenizer, model_args = load_profile_model(profile, use_peft=True, lora_r=16, lora_alpha=32, lora_dropout=0.0)
    model = add_lora(model, model_args).eval()
    with torch.no_grad():  # a trained adapter, not the B = 0 of a fresh one
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=1e-3)
    data_args = DataArguments()  # the GRPO stage's prompts: its template and system prompt
    template = get_template(data_args.prompt_template)
    texts = [render_prompt(tokenizer, template.messages(e.question, data_args.system_prompt))
             for e in load_gsm8k(split="train").examples[: args.prompts]]
    prompts = [tokenizer(t, return_tensors="pt", add_special_tokens=False).input_ids[0] for t in texts]
    params = SamplingParams(args.num_generations, args.new_tokens, 1.0, 1.0,
                            tuple(sorted(eos_token_ids(model, tokenizer))), tokenizer.pad_token_id, ignore_eos=True)
    view, seeds = MergedAdapterView(model), list(range(args.prompts))
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats + 1):
        for name in VARIANTS:
            start = time.perf_counter()
            run_variant(name, model, view, prompts, seeds, params)
            if repeat:  # the first pass is warm-up
                times[name].append(time.perf_counter() - start)
    tokens = args.prompts * args.num_generations * args.new_tokens
    floor = weight_read_floor(model, args.prompts * args.num_generations)
    summary = {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                      "tokens_per_s": tokens / statistics.median(t)} for name, t in times.items()}
    command = "python scripts/benchmark_sampling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    base = summary[VARIANTS[0]]["median_s"]
    lines = [f"`{command.strip()}`", "",
             f"{args.prompts} prompts x G {args.num_generations} x {args.new_tokens} tokens, prompt lengths "
             f"{[p.numel() for p in prompts]}, {torch.get_num_threads()} threads, fp32, LoRA r 16", "",
             "| variant | generate s (median / min / max) | tokens/s | speed-up over variant 1 |", "|---|---|---|---|"]
    for name in VARIANTS:
        row = summary[name]
        lines.append(f"| {name} | {row['median_s']:.2f} / {row['min_s']:.2f} / {row['max_s']:.2f} "
                     f"| {row['tokens_per_s']:.1f} | {base / row['median_s']:.2f}x |")
    best = min(row["median_s"] for row in summary.values())
    lines += ["", f"Weight-read floor: one decode step reads {floor['weight_bytes'] / 1e6:.0f} MB of weights; "
              f"a bare matmul pass over them at batch {args.prompts * args.num_generations} takes "
              f"{floor['seconds_per_step'] * 1e3:.1f} ms ({floor['bytes_per_s'] / 1e9:.1f} GB/s), so "
              f"{args.new_tokens} tokens cost at least {floor['seconds_per_step'] * args.new_tokens:.2f} s; "
              f"the fastest variant takes {best / (floor['seconds_per_step'] * args.new_tokens):.1f}x that "
              f"(prefill included)."]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"sampling_{args.model}"
    out.with_suffix(".json").write_text(json.dumps({"times": times, "summary": summary, "weight_read_floor": floor,
                                                        "command": command}, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    main()
