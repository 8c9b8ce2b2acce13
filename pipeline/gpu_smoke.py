"""The first run on a GPU, in about 5 minutes: each check runs a user's command (or the sampler) on a
SmolLM2-135M-shaped model with random weights and SmolLM2's real tokenizer, so no model file is needed.

    make gpu-smoke                          # on a CUDA machine
    python scripts/gpu_smoke.py --cpu       # the same plumbing on CPU in float32 (2 layers), to check the checks

Each check prints one line: ``PASS name  seconds  what it measured`` or ``FAIL name  seconds  the error``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Smoke:
    """Where the checks run: the model folder, a scratch folder, and the precisions to use."""

    model_dir: Path
    work_dir: Path
    on_gpu: bool

    def precision(self, name: str) -> str:
        return name if self.on_gpu else "no"  # CPU: float32 (fp16 autocast needs a GPU)


def build_smollm2_shaped(path: Path, tokenizer_dir: Path, num_layers: int = 30, seed: int = 0) -> Path:
    """SmolLM2-135M's architecture (``num_layers`` of its 30) with random weights, and its tokenizer files."""
    import shutil

    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tokenizer_dir)
    config.num_hidden_layers = num_layers
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, path / name)
    return path


def _run(command: list[str], log: Path) -> None:
    with log.open("w") as handle:
        done = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, timeout=900,
                              env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    if done.returncode:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        raise RuntimeError(f"exit {done.returncode}: {lines[-1] if lines else ''} (log: {log})")


def vowel_share_reward(prompts: list, completions: list, **kwargs) -> list[float]:
    """Share of a completion's letters that are vowels: a reward that varies on a random model's text, so that
    the smoke's GRPO steps have non-zero advantages and gradients (accuracy and format are 0 on random text).

    >>> vowel_share_reward(["p", "p"], ["aeb", "xyz1"])
    [0.6666666666666666, 0.0]
    """
    shares = []
    for completion in completions:
        text = completion if isinstance(completion, str) else completion[-1]["content"]
        letters = [c for c in text.lower() if c.isalpha()]
        shares.append(sum(c in "aeiou" for c in letters) / len(letters) if letters else 0.0)
    return shares


def _trained(rows: list[dict]) -> list[dict]:
    """The steps whose update had a signal: refuses a run in which no step had a finite, non-zero gradient."""
    trained = [r for r in rows if r["frac_reward_zero_std"] < 1 and 0 < r["grad_norm"] < float("inf")]
    if not trained:
        raise RuntimeError(f"no step had a finite non-zero gradient: "
                           f"{[(r['frac_reward_zero_std'], r['grad_norm']) for r in rows]}")
    return trained


def _grpo(smoke: Smoke, name: str, precision: str, *extra: str, launcher: list[str] | None = None) -> dict:
    out = smoke.work_dir / name
    _run([*(launcher or [sys.executable]), "scripts/train_grpo.py", "--model_name_or_path", str(smoke.model_dir),
          "--use_peft", "true", "--max_steps", "2", "--prompts_per_step", "2", "--num_generations", "4",
          "--micro_batch_size", "4", "--max_completion_length", "32", "--reward_funcs", "accuracy", "format",
          "pipeline.gpu_smoke:vowel_share_reward",
          "--learning_rate", "1e-4", "--mixed_precision", smoke.precision(precision), "--eval_limit", "0",
          "--save_steps", "0", "--output_dir", str(out), *extra], smoke.work_dir / f"{name}.log")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"rows": rows, "config": json.loads((out / "config.json").read_text())}


def check_sft_step(smoke: Smoke) -> str:
    out = smoke.work_dir / "sft"
    _run([sys.executable, "scripts/train_sft.py", "--model_name_or_path", str(smoke.model_dir), "--use_peft", "true",
          "--max_steps", "1", "--per_device_train_batch_size", "2", "--max_train_samples", "8", "--max_length", "256",
          "--bf16", str(smoke.on_gpu).lower(), "--use_cpu", str(not smoke.on_gpu).lower(), "--eval_limit", "0",
          "--report_to", "none", "--save_steps", "1", "--output_dir", str(out)], smoke.work_dir / "sft.log")
    summary = json.loads((out / "sft_summary.json").read_text())
    return f"1 step, train loss {summary['train']['train_loss']:.3f}"


def check_grpo_bf16(smoke: Smoke) -> str:
    run = _grpo(smoke, "grpo_bf16", "bf16")
    trained = _trained(run["rows"])
    return (f"{len(run['rows'])} steps, grad norm {trained[-1]['grad_norm']:.3g}, kl at the last step "
            f"{run['rows'][-1]['kl']:.2g}, mixed precision {smoke.precision('bf16')}")


def check_grpo_fp16(smoke: Smoke) -> str:
    run = _grpo(smoke, "grpo_fp16", "fp16")
    skipped = sum(r["skipped_updates"] for r in run["rows"])
    trained = _trained(run["rows"])  # a GradScaler that skipped every update would leave none
    return (f"{len(run['rows'])} steps, {skipped:.0f} updates skipped by the GradScaler, "
            f"grad norm {trained[-1]['grad_norm']:.3g}")


def check_evaluation(smoke: Smoke) -> str:
    out = smoke.work_dir / "eval"
    _run([sys.executable, "scripts/evaluate.py", "--model_name_or_path", str(smoke.model_dir), "--limit", "32",
          "--max_new_tokens", "64", "--batch_size", "32", "--dtype", "bfloat16" if smoke.on_gpu else "float32",
          "--output_dir", str(out)], smoke.work_dir / "eval.log")
    summary = json.loads((out / "summary.json").read_text())
    return f"{summary['num_problems']} problems, {summary['tokens_per_second']:.0f} tokens/s"


def check_zero2_step(smoke: Smoke) -> str:
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/zero2.yaml",
                "--num_processes", "1", "--mixed_precision", smoke.precision("bf16")]
    run = _grpo(smoke, "zero2", "bf16", "--max_steps", "1", launcher=launcher)
    engine = run["config"]["engine"]
    if engine.get("zero_stage") != 2:
        raise RuntimeError(f"DeepSpeed not engaged: {engine}")
    trained = _trained(run["rows"])
    return f"ZeRO stage {engine['zero_stage']}, {engine['optimizer']}, grad norm {trained[-1]['grad_norm']:.3g}"


def check_sampler_matches_generate(smoke: Smoke) -> str:
    """Greedy tokens of our static-cache sampler against transformers' generate, in bf16 on the GPU."""
    import torch

    from pipeline.arguments import ModelArguments
    from pipeline.generation import encode, eos_token_ids
    from pipeline.grpo.sampling import SamplingParams, sample_groups
    from pipeline.models import load_model, load_tokenizer

    model_args = ModelArguments(model_name_or_path=str(smoke.model_dir),
                                dtype="bfloat16" if smoke.on_gpu else "float32")
    device = "cuda" if smoke.on_gpu else "cpu"
    model, tokenizer = load_model(model_args, device=device).eval(), load_tokenizer(model_args)
    eos = eos_token_ids(model, tokenizer)
    prompts = [encode(tokenizer, f"Question {i}: what is {i} + {2 * i}?", device) for i in range(8)]
    params = SamplingParams(1, 32, 0.0, 1.0, tuple(sorted(eos)), tokenizer.pad_token_id)
    ours = sample_groups(model, prompts, [0] * len(prompts), params)  # [8, T]
    same = 0
    for i, prompt in enumerate(prompts):
        with torch.no_grad():
            theirs = model.generate(prompt[None], attention_mask=torch.ones_like(prompt[None]), max_new_tokens=32,
                                    do_sample=False, pad_token_id=tokenizer.pad_token_id)[0, prompt.numel():]
        width = min(theirs.numel(), ours.size(1))
        same += int(torch.equal(ours[i, :width], theirs[:width]))
    if same < len(prompts) // 2:
        raise RuntimeError(f"only {same} of {len(prompts)} greedy completions equal generate's")
    return f"{same} of {len(prompts)} greedy completions equal to generate's token for token"


CHECKS: dict[str, Callable[[Smoke], str]] = {
    "sft_step": check_sft_step, "grpo_bf16": check_grpo_bf16, "grpo_fp16": check_grpo_fp16,
    "evaluation_32": check_evaluation, "zero2_step": check_zero2_step, "sampler_vs_generate": check_sampler_matches_generate,
}


def run_checks(smoke: Smoke, names: list[str], report: Callable[[str], None]) -> int:
    """Run the named checks, reporting one line each; returns how many failed."""
    failed = 0
    for name in names:
        started = time.perf_counter()
        try:
            outcome, detail = "PASS", CHECKS[name](smoke)
        except Exception as exc:  # a failed check is reported, and the next one still runs
            outcome, detail, failed = "FAIL", f"{type(exc).__name__}: {exc}", failed + 1
        report(f"{outcome} {name:<20} {time.perf_counter() - started:6.1f}s  {detail}")
    return failed
