"""Our GRPO loop against TRL's GRPOTrainer on identical work: same model, data, G, prompts, LoRA, and
a fixed number of generated tokens (EOS suppressed). Each backend runs in its own process, so its
peak memory is its own."""

from __future__ import annotations

import json
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.grpo.config import GRPOArguments


@dataclass(frozen=True)
class Profile:
    name: str
    model: str  # "tiny" (a random 2-layer Llama built on the fly) or a model_name_or_path
    prompts: int
    num_generations: int
    new_tokens: int
    micro_batch_size: int
    mixed_precision: str = "no"


PROFILES = {
    "toy": Profile("toy", "tiny", 1, 2, 4, 2),
    "cpu-tiny": Profile("cpu-tiny", "tiny", 2, 4, 32, 8),
    "cpu-smollm2": Profile("cpu-smollm2", "embedded:SmolLM2-135M-Instruct", 2, 4, 64, 8),
    "gpu-smollm2": Profile("gpu-smollm2", "embedded:SmolLM2-135M-Instruct", 32, 8, 256, 64, "bf16"),
}


def _model_path(profile: Profile, work: Path) -> str:
    if profile.model != "tiny":
        return profile.model
    from pipeline.data import load_gsm8k
    from pipeline.tiny import build_tiny_llama

    corpus = [f"{e.question} {e.reasoning} {e.answer}" for e in load_gsm8k(split="train").examples[:300]]
    return str(build_tiny_llama(work / "tiny-llama", corpus))


def load_profile_model(profile: Profile, **model_options) -> tuple[object, object, ModelArguments]:
    """(model, left-padding tokenizer, its ModelArguments) of ``profile``; a tiny model is built in a temporary
    folder, removed once the weights have loaded."""
    from pipeline.models import load_model, load_tokenizer

    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        model_args = ModelArguments(model_name_or_path=_model_path(profile, Path(tmp)), **model_options)
        tokenizer = load_tokenizer(model_args, padding_side="left")
        model = load_model(model_args)
    return model, tokenizer, model_args


def _grpo_args(profile: Profile, steps: int, output_dir: Path) -> GRPOArguments:
    return GRPOArguments(
        output_dir=str(output_dir), max_steps=steps, prompts_per_step=profile.prompts,
        num_generations=profile.num_generations, micro_batch_size=profile.micro_batch_size,
        max_completion_length=profile.new_tokens, max_prompt_length=4096, ignore_eos=True,
        reward_funcs=["accuracy", "format_soft"], beta=0.04, loss_type="dapo", learning_rate=1e-5,
        mixed_precision=profile.mixed_precision, save_steps=0, logging_steps=1, seed=0,
    )


# TRL's own GRPOConfig defaults that our equal-settings comparison turns off (bf16=None lets TRL pick,
# which is bf16 unless fp16 is set).
TRL_DEFAULTS = {"gradient_checkpointing": True, "bf16": None}
BACKENDS = ("ours", "trl", "ours-checkpointed", "trl-defaults", "ours-vllm", "trl-vllm")
# TRL's vLLM rollouts in its colocate mode, the counterpart of our use_vllm.
TRL_VLLM = {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3}


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _time_trl_phases(totals: dict[str, float]) -> None:
    """Wrap GRPOTrainer's generation, reward and no-grad log-prob methods (in this worker process only)
    so a step splits into generate / score / reference like ours; the rest of the step is train."""
    from trl import GRPOTrainer

    def timed(method, phase, only_without_grad=False):
        def wrapper(*args, **kwargs):
            if only_without_grad and torch.is_grad_enabled():
                return method(*args, **kwargs)
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                totals[phase] += time.perf_counter() - start
        return wrapper

    GRPOTrainer._generate = timed(GRPOTrainer._generate, "generate")
    GRPOTrainer._calculate_rewards = timed(GRPOTrainer._calculate_rewards, "score")
    GRPOTrainer._get_per_token_logps_and_entropies = timed(
        GRPOTrainer._get_per_token_logps_and_entropies, "reference", only_without_grad=True)


def _run_trl(backend, args, model_args, data_args, examples) -> tuple[list[float], list[dict], list[float]]:
    from transformers import TrainerCallback

    from pipeline.grpo.trl_backend import train_with_trl

    totals = dict.fromkeys(("generate", "score", "reference"), 0.0)
    _time_trl_phases(totals)
    step_times, splits, tokens, seen = [], [], [], [0.0]

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **kw):
            totals.update(dict.fromkeys(totals, 0.0))
            self.started = time.perf_counter()

        def on_step_end(self, *a, **kw):
            step_times.append(time.perf_counter() - self.started)
            splits.append(dict(totals, train=step_times[-1] - sum(totals.values())))

        def on_log(self, *a, logs=None, **kw):
            if logs and "num_tokens" in logs:  # cumulative prompt + completion tokens
                tokens.append(float(logs["num_tokens"]) - seen[0])
                seen[0] = float(logs["num_tokens"])

    overrides = {"trl-defaults": TRL_DEFAULTS, "trl-vllm": TRL_VLLM}.get(backend)
    if backend == "trl-vllm":  # vLLM's names for the fixed token count (EOS suppressed)
        overrides = overrides | {"generation_kwargs": {"min_tokens": args.max_completion_length, "ignore_eos": True}}
    train_with_trl(args, model_args, data_args, examples, callbacks=[Timer()], config_overrides=overrides)
    return step_times, splits, tokens


def run_worker(profile_name: str, backend: str, steps: int, warmup: int) -> dict:
    """Time ``warmup + steps`` steps of one backend in this process; returns its measurements."""
    profile = PROFILES[profile_name]
    with tempfile.TemporaryDirectory(prefix=f"bench-{backend}-") as tmp:  # a model and a run per worker: gone after
        return _time_backend(profile, backend, steps, warmup, Path(tmp))


def _time_backend(profile: Profile, backend: str, steps: int, warmup: int, work: Path) -> dict:
    """``run_worker``'s measurements, with the model and run written under ``work``."""
    from pipeline.grpo.inputs import load_grpo_examples
    from pipeline.grpo.trainer import run_step, setup

    model_args = ModelArguments(model_name_or_path=_model_path(profile, work), use_peft=True, lora_r=16,
                                lora_alpha=32, lora_dropout=0.0)
    data_args = DataArguments()
    examples, _ = load_grpo_examples(data_args)
    args = _grpo_args(profile, warmup + steps, work / "run")
    args.gradient_checkpointing = backend == "ours-checkpointed"
    args.use_vllm = backend == "ours-vllm"  # vLLM samples; vllm_importance_sampling_correction on (TRL's default)
    if backend.startswith("ours"):
        state = setup(args, model_args, data_args, examples)
        step_times, splits, tokens = [], [], []
        for _ in range(warmup + steps):
            metrics = run_step(state)
            step_times.append(metrics["time/step"])
            splits.append({k: metrics[f"time/{k}"] for k in ("generate", "score", "reference", "train")})
            tokens.append(metrics["train_tokens"])
    else:
        step_times, splits, tokens = _run_trl(backend, args, model_args, data_args, examples)
    completions = profile.prompts * profile.num_generations
    return {"backend": backend, "profile": asdict(profile), "step_times": step_times[warmup:],
            "split": {k: statistics.median(s[k] for s in splits[warmup:]) for k in splits[0]},
            "trained_tokens_per_step": statistics.median(tokens[warmup:]),
            "generated_tokens_per_step": completions * profile.new_tokens, "peak_memory_mb": _peak_memory_mb(),
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def summarize(results: list[dict]) -> dict:
    """Per backend: median/min/max step time, tokens/s, peak memory; and ours' speed over each TRL run."""
    table = {}
    for backend in BACKENDS:
        runs = [r for r in results if r["backend"] == backend]
        if not runs:
            continue
        times = [t for r in runs for t in r["step_times"]]
        median = statistics.median(times)
        table[backend] = {
            "steps_timed": len(times), "median_s": median, "min_s": min(times), "max_s": max(times),
            "generated_tokens_per_s": runs[0]["generated_tokens_per_step"] / median,
            "trained_tokens_per_s": statistics.median(r["trained_tokens_per_step"] for r in runs) / median,
            "peak_memory_mb": max(r["peak_memory_mb"] for r in runs),
        }
        table[backend]["split_s"] = {k: statistics.median(r["split"][k] for r in runs) for k in runs[0]["split"]}
    pairs = {"speedup_ours_over_trl": ("ours", "trl"),
             "speedup_ours_over_trl_defaults": ("ours", "trl-defaults"),
             "speedup_ours_checkpointed_over_trl_defaults": ("ours-checkpointed", "trl-defaults"),
             "speedup_ours_vllm_over_ours": ("ours-vllm", "ours"),
             "speedup_ours_vllm_over_trl_vllm": ("ours-vllm", "trl-vllm")}
    for key, (ours, theirs) in pairs.items():
        if ours in table and theirs in table:
            table[key] = table[theirs]["median_s"] / table[ours]["median_s"]
    return table


def markdown(profile: str, table: dict, command: str) -> str:
    lines = [f"### Profile `{profile}`", "", f"`{command}`", "",
             "| backend | steps timed | step s (median / min / max) | generated tok/s | trained tok/s | peak memory MB "
             "| split (generate / score / reference / train) s |",
             "|---|---|---|---|---|---|---|"]
    for backend in (b for b in BACKENDS if b in table):
        row = table[backend]
        split_text = " / ".join(f"{row['split_s'][k]:.2f}" for k in ("generate", "score", "reference", "train"))
        lines.append(f"| {backend} | {row['steps_timed']} | {row['median_s']:.2f} / {row['min_s']:.2f} / {row['max_s']:.2f} "
                     f"| {row['generated_tokens_per_s']:.1f} | {row['trained_tokens_per_s']:.1f} "
                     f"| {row['peak_memory_mb']:.0f} | {split_text} |")
    if "speedup_ours_over_trl" in table:
        lines += ["", f"Ours / TRL steps per second (equal settings): **{table['speedup_ours_over_trl']:.2f}x**"]
    if "speedup_ours_vllm_over_ours" in table:
        lines.append(f"Ours with vLLM rollouts / ours with the built-in sampler: "
                     f"**{table['speedup_ours_vllm_over_ours']:.2f}x**")
    if "speedup_ours_vllm_over_trl_vllm" in table:
        lines.append(f"Ours with vLLM / TRL with vLLM (colocate): **{table['speedup_ours_vllm_over_trl_vllm']:.2f}x**")
    if "speedup_ours_over_trl_defaults" in table:
        lines.append(f"Ours / TRL at its defaults (gradient checkpointing, bf16): "
                     f"**{table['speedup_ours_over_trl_defaults']:.2f}x**")
    if "speedup_ours_checkpointed_over_trl_defaults" in table:
        lines.append(f"Ours with gradient checkpointing (fp32) / TRL at its defaults: "
                     f"**{table['speedup_ours_checkpointed_over_trl_defaults']:.2f}x**")
    return "\n".join(lines + [""])


def save(out_dir: Path, profile: str, results: list[dict], table: dict, command: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"benchmark_{profile}.json").write_text(json.dumps({"results": results, "summary": table}, indent=2))
    path = out_dir / f"benchmark_{profile}.md"
    path.write_text(markdown(profile, table, command))
    return path
