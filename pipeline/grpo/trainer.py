"""Our GRPO loop (torch + accelerate), split into setup / generate / score / step / train."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from pipeline.arguments import DataArguments, EvalArguments, ModelArguments
from pipeline.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from pipeline.data import GSM8KExample, PromptTemplate, get_template, render_prompt
from pipeline.generation import eos_token_ids
from pipeline.grpo.advantages import group_advantages
from pipeline.grpo.config import GRPOArguments, policy_objective
from pipeline.grpo.logprobs import completion_logps
from pipeline.grpo.loss import LossNormalizer, grpo_loss, sequence_denominators
from pipeline.grpo.rollout import Rollout, collate_rollout, group_seed
from pipeline.grpo.sampling import SamplingParams, right_pad, sample_groups
from pipeline.models import MergedAdapterView, add_lora, load_model, load_tokenizer
from pipeline.runtime import GracefulInterrupt
from rewards import RewardBreakdown, combine_rewards, load_reward
from rewards.guard import RewardFaults

logger = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"


@dataclass
class GRPOState:
    """Runtime objects of a run (built by ``setup``; the config stays a pure description)."""

    args: GRPOArguments
    accelerator: Any
    model: Any  # prepared (possibly DDP-wrapped) policy
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    ref_model: Any | None  # frozen copy without LoRA; None with LoRA (adapter disabled) or beta = 0
    reward_funcs: list[Any]
    template: PromptTemplate
    system_prompt: str | None
    examples: list[GSM8KExample]
    eos_ids: set[int]
    run_dir: Path
    uses_lora: bool
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    faults: RewardFaults = field(default_factory=RewardFaults)
    nonfinite_streak: int = 0
    micro_batch_size: int = 0  # starts at args.micro_batch_size; halved after an out-of-memory error
    generation_batch: int = 0  # completions decoded at once; halved after an out-of-memory error
    merged_view: MergedAdapterView | None = None  # LoRA merged into a weight copy for decoding
    updates_this_step: int = 0

    @property
    def policy(self):
        return self.accelerator.unwrap_model(self.model)


# --- setup --------------------------------------------------------------------------------------------------------


def _reward_functions(args: GRPOArguments, template: PromptTemplate) -> list[Any]:
    options = {"max_completion_length": args.max_completion_length,
               "overlong_buffer_length": args.overlong_buffer_length,
               "reasoning_tag": template.reasoning_tag, "answer_tag": template.answer_tag}
    return [load_reward(name, **options) for name in args.reward_funcs]


def setup(args: GRPOArguments, model_args: ModelArguments, data_args: DataArguments, examples: list[GSM8KExample]):
    """Load the policy (+ LoRA), reference, optimizer and rewards; restore a checkpoint if asked."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to, project_dir=args.output_dir,
    )
    args.check_processes(accelerator.num_processes)
    set_seed(args.seed)
    template = get_template(data_args.prompt_template)
    reward_funcs = _reward_functions(args, template)  # resolve names before the model loads
    tokenizer = load_tokenizer(model_args, padding_side="left")
    model = load_model(model_args, device=accelerator.device)
    ref_model = None
    if args.gradient_checkpointing:  # before LoRA, so peft sees it; non-reentrant needs no input grads
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if model_args.use_peft:
        model = add_lora(model, model_args)
    elif args.beta > 0:
        ref_model = load_model(model_args, device=accelerator.device).eval().requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.warmup_steps,
                              num_training_steps=args.max_steps * args.num_iterations)
    model, optimizer = accelerator.prepare(model, optimizer)
    run_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(
            {"grpo": args.to_dict(), "model": model_args.to_dict(), "data": data_args.to_dict(),
             "processes": accelerator.num_processes}, indent=2))
    if args.report_to != "none":
        accelerator.init_trackers("grpo", config=args.to_dict())
    state = GRPOState(args, accelerator, model, tokenizer, optimizer, scheduler, ref_model, reward_funcs, template,
                      data_args.system_prompt, examples, eos_token_ids(accelerator.unwrap_model(model), tokenizer),
                      run_dir, model_args.use_peft)
    state.micro_batch_size = args.micro_batch_size
    state.generation_batch = args.prompts_per_step // accelerator.num_processes * args.num_generations
    if model_args.use_peft:
        state.merged_view = decoding_view(state.policy, args)
    if args.resume_from_checkpoint:
        _resume(state)
    return state


def decoding_view(policy, args: GRPOArguments) -> MergedAdapterView | None:
    """A merged-weight view of a LoRA policy to decode with, or None to decode through the adapters."""
    if not args.merge_adapter_for_generation:
        return None
    view = MergedAdapterView(policy)
    # Under bf16/fp16 autocast the merged weight is rounded as a whole, losing a small ΔW.
    if view.supported and args.mixed_precision == "no":
        return view
    logger.info("decoding through the LoRA adapters: a merged copy needs float32 weights and no mixed precision")
    return None


def _resume(state: GRPOState) -> None:
    path = find_checkpoint(state.run_dir, state.args.resume_from_checkpoint)
    if path is None:
        logger.info("no checkpoint in %s yet: starting from step 0", state.run_dir)
        return
    saved = load_checkpoint(path, state.policy, state.optimizer, state.scheduler)
    state.step = saved["step"]
    state.history = _read_metrics(state.run_dir, up_to_step=state.step)
    logger.info("resumed from %s at step %d", path, state.step)


# --- data order ---------------------------------------------------------------------------------------------------


def prompt_indices(num_examples: int, step: int, prompts_per_step: int, seed: int) -> list[int]:
    """Dataset indices of a step's prompts: a seeded permutation per epoch, a pure function of the step.

    >>> epoch = prompt_indices(6, 0, 3, seed=0) + prompt_indices(6, 1, 3, seed=0)
    >>> sorted(epoch)  # one epoch: every problem exactly once
    [0, 1, 2, 3, 4, 5]
    """
    indices = []
    for position in range(step * prompts_per_step, (step + 1) * prompts_per_step):
        epoch, offset = divmod(position, num_examples)
        order = list(range(num_examples))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        indices.append(order[offset])
    return indices


def local_prompts(state: GRPOState, step: int) -> list[tuple[int, GSM8KExample]]:
    """This process's (global position, example) pairs for ``step``: whole groups, never split."""
    args, acc = state.args, state.accelerator
    indices = prompt_indices(len(state.examples), step, args.prompts_per_step, args.seed)
    per_process = args.prompts_per_step // acc.num_processes
    start = acc.process_index * per_process
    positions = range(step * args.prompts_per_step + start, step * args.prompts_per_step + start + per_process)
    return [(pos, state.examples[i]) for pos, i in zip(positions, indices[start : start + per_process])]


# --- generate / score ---------------------------------------------------------------------------------------------


def generate(state: GRPOState, batch: list[tuple[int, GSM8KExample]], ignore_eos: bool = False) -> Rollout:
    """G completions for each of this process's prompts, each group seeded by (seed, step, prompt)."""
    args, tokenizer = state.args, state.tokenizer
    prompts = []
    for _, example in batch:
        text = render_prompt(tokenizer, state.template.messages(example.question, state.system_prompt))
        prompts.append(tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0])
        if prompts[-1].numel() > args.max_prompt_length:
            raise ValueError(f"{example.source}: prompt has {prompts[-1].numel()} tokens, over "
                             f"max_prompt_length={args.max_prompt_length}; raise the option or drop the row")
    seeds = [group_seed(args.seed, state.step, position) for position, _ in batch]
    params = SamplingParams(args.num_generations, args.max_completion_length, args.temperature, args.top_p,
                            tuple(sorted(state.eos_ids)), tokenizer.pad_token_id, ignore_eos)
    state.policy.eval()
    try:
        with _sampling_model(state) as model:
            completions = _sample_with_retry(state, model, prompts, seeds, params)  # [P * G, T]
    except torch.OutOfMemoryError:
        if state.merged_view is None:
            raise
        state.merged_view = None  # the merged copy is the one thing left to give up
        _free_memory()
        logger.warning("out of memory while generating: decoding through the LoRA adapters from now on")
        completions = _sample_with_retry(state, state.policy, prompts, seeds, params)
    G = args.num_generations
    groups = [(prompt, completions[i * G : (i + 1) * G]) for i, prompt in enumerate(prompts)]
    return collate_rollout(groups, pad_token_id=tokenizer.pad_token_id, eos_ids=state.eos_ids, group_size=G,
                           mask_truncated_completions=args.mask_truncated_completions, tokenizer=tokenizer)


def _sampling_model(state: GRPOState):
    """The policy to decode with: LoRA merged into a weight copy when allowed, else the policy itself."""
    # decoding_view only keeps a view that is supported.
    return state.merged_view() if state.merged_view is not None else contextlib.nullcontext(state.policy)


def _sample_with_retry(state: GRPOState, model, prompts: list[torch.Tensor], seeds: list[int],
                       params: SamplingParams) -> torch.Tensor:
    """All groups' samples, ``state.generation_batch`` rows at a time; an out-of-memory error halves that.

    Whole groups per call give the same samples as one call (each group has its own generator); below G
    rows a group is split into calls with derived seeds, so its samples differ from an unsplit run.
    """
    G = params.num_generations
    while True:
        try:
            if state.generation_batch >= G:
                per_call = state.generation_batch // G
                parts = [sample_groups(model, prompts[i : i + per_call], seeds[i : i + per_call], params)
                         for i in range(0, len(prompts), per_call)]
            else:
                parts = []
                for prompt, seed in zip(prompts, seeds):
                    for index, start in enumerate(range(0, G, state.generation_batch)):
                        count = min(state.generation_batch, G - start)
                        parts.append(sample_groups(model, [prompt], [seed * 31 + index],
                                                   replace(params, num_generations=count)))
            return right_pad(parts, params.pad_token_id)
        except torch.OutOfMemoryError:
            if state.generation_batch == 1:
                raise
            state.generation_batch = max(1, state.generation_batch // 2)
            _free_memory()
            logger.warning("out of memory while generating: retrying with %d samples at a time", state.generation_batch)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def score(state: GRPOState, rollout: Rollout, batch: list[tuple[int, GSM8KExample]]) -> tuple[torch.Tensor, RewardBreakdown]:
    """Rewards of every completion and their group-relative advantages ([N] each)."""
    G = rollout.group_size
    prompts = [state.template.messages(ex.question, state.system_prompt) for _, ex in batch for _ in range(G)]
    answers = [ex.answer for _, ex in batch for _ in range(G)]
    lengths = rollout.completion_mask.sum(1).tolist()
    completion_ids = [row[: int(n)].tolist() for row, n in zip(rollout.completion_ids, lengths)]
    breakdown = combine_rewards(state.reward_funcs, state.args.reward_funcs, state.args.weights, prompts,
                                rollout.completions, timeout=state.args.reward_timeout, faults=state.faults,
                                answer=answers, completion_ids=completion_ids)
    total = torch.tensor(breakdown.total, dtype=torch.float32)
    unscorable = torch.tensor([all(v[i] is None for v in breakdown.per_function) for i in range(len(total))])
    total[unscorable] = torch.nan  # no function had an opinion: left out of the group statistics
    return total, breakdown


# --- step ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def reference_logps(state: GRPOState, rollout: Rollout) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Old log-probs (only when mu > 1) and reference log-probs (only when beta > 0), chunked, no grad."""
    args, policy = state.args, state.policy
    input_ids, attention_mask, T = rollout.input_ids(), rollout.attention_mask(), rollout.completion_ids.size(1)
    kwargs = dict(temperature=args.temperature, chunk_size=args.logps_chunk_size)
    policy.eval()  # no dropout: these are the sampling policy's probabilities
    old = completion_logps(policy, input_ids, attention_mask, T, **kwargs)[0] if args.num_iterations > 1 else None
    ref = None
    if args.beta > 0:
        if state.uses_lora:
            with policy.disable_adapter():  # the merged SFT weights: the reference, without a second copy
                ref = completion_logps(policy, input_ids, attention_mask, T, **kwargs)[0]
        else:
            ref = completion_logps(state.ref_model, input_ids, attention_mask, T, **kwargs)[0]
    return old, ref


def _micro_batches(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def train_on_rollout(state: GRPOState, rollout: Rollout, advantages: torch.Tensor,
                     old: torch.Tensor | None, ref: torch.Tensor | None) -> dict[str, float]:
    """mu optimizer updates on one generation batch; returns this process's training metrics."""
    args, acc, model = state.args, state.accelerator, state.model
    input_ids, attention_mask = rollout.input_ids(), rollout.attention_mask()
    mask, T = rollout.completion_mask, rollout.completion_ids.size(1)
    slices = _micro_batches(rollout.num_completions, state.micro_batch_size)
    tokens_total = acc.gather(mask.sum().reshape(1).to(acc.device)).sum().item()
    normalizer = LossNormalizer(len(slices), tokens_total / acc.num_processes, args.max_completion_length)
    # Per-completion denominators make the update independent of the micro-batch cut (uneven slices and
    # the out-of-memory retry's finer cut included); bnpo keeps the configured micro-batches' token counts.
    denominators = sequence_denominators(mask, args.loss_type, micro_batch_size=args.micro_batch_size,
                                         max_completion_length=args.max_completion_length,
                                         tokens_per_process=tokens_total / acc.num_processes)
    objective = policy_objective(args)
    sums: dict[str, float] = {"loss": 0.0, "kl": 0.0, "clip_low": 0.0, "clip_high": 0.0, "entropy": 0.0, "grad_norm": 0.0}
    model.train()
    for _ in range(args.num_iterations):
        for index, rows in enumerate(slices):
            sync = index == len(slices) - 1
            context = acc.no_sync(model) if not sync and acc.num_processes > 1 else contextlib.nullcontext()
            with context:
                logps, entropy = completion_logps(model, input_ids[rows], attention_mask[rows], T,
                                                  temperature=args.temperature, with_entropy=True)
                out = grpo_loss(logps, None if old is None else old[rows], None if ref is None else ref[rows],
                                advantages[rows].to(logps.dtype), mask[rows], beta=args.beta,
                                epsilon_low=args.epsilon_low, epsilon_high=args.epsilon_high,
                                loss_type=args.loss_type, normalizer=normalizer,
                                kl_importance_correction=args.kl_importance_correction,
                                denominators=denominators[rows], objective=objective)
                acc.backward(out.loss)
            weight = 1.0 / (len(slices) * args.num_iterations)
            # The backpropagated micro-batch losses add up to the generation batch's loss.
            sums["loss"] += out.loss.item() / args.num_iterations
            sums["kl"] += (out.kl.item() if out.kl is not None else 0.0) * weight
            sums["clip_low"] += out.clip_low.item() * weight
            sums["clip_high"] += out.clip_high.item() * weight
            sums["entropy"] += ((entropy * mask[rows]).sum() / mask[rows].sum().clamp(min=1)).item() * weight
        grad_norm = acc.clip_grad_norm_(model.parameters(), args.max_grad_norm if args.max_grad_norm > 0 else math.inf)
        if math.isfinite(float(grad_norm)) and math.isfinite(sums["loss"]):
            state.updates_this_step += 1
            state.optimizer.step()
            state.scheduler.step()
        else:  # a NaN/inf loss or gradient: skip this update, keep the last good weights
            sums["skipped_updates"] = sums.get("skipped_updates", 0.0) + 1
            logger.warning("step %d: non-finite loss or gradient norm (%s); update skipped", state.step + 1, grad_norm)
        state.optimizer.zero_grad(set_to_none=True)
        sums["grad_norm"] += float(grad_norm) / args.num_iterations
    sums.setdefault("skipped_updates", 0.0)
    return sums


def _mean_over_processes(acc, values: dict[str, float]) -> dict[str, float]:
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=acc.device)
    return dict(zip(keys, (acc.reduce(tensor, reduction="mean")).tolist()))


def step_metrics(state: GRPOState, rollout: Rollout, rewards: torch.Tensor, breakdown: RewardBreakdown,
                 advantages, train: dict[str, float], timing: dict[str, float]) -> dict[str, float]:
    """Metrics of one step over all processes (rewards and lengths gathered, the rest averaged)."""
    acc, args = state.accelerator, state.args
    per_function = torch.tensor([[math.nan if v is None else v for v in values] for values in breakdown.per_function],
                                dtype=torch.float32).T  # [N, F]
    lengths = rollout.completion_mask.sum(1).float()  # [N]
    local = torch.cat([rewards[:, None], per_function, lengths[:, None], rollout.is_truncated.float()[:, None]], 1)
    everything = acc.gather(local.to(acc.device)).cpu()  # [N_all, F + 3]
    metrics = {"step": state.step + 1, "reward": torch.nanmean(everything[:, 0]).item()}
    for i, name in enumerate(args.reward_funcs):
        metrics[f"reward/{name}"] = torch.nanmean(everything[:, 1 + i]).item()
    if "accuracy" in args.reward_funcs:
        metrics["accuracy"] = metrics["reward/accuracy"]
    metrics["completion_length"] = everything[:, -2].mean().item()
    metrics["truncated_rate"] = everything[:, -1].mean().item()
    zero_std = acc.gather(advantages.zero_std_groups.float().to(acc.device)).mean().item()
    metrics["frac_reward_zero_std"] = zero_std
    metrics.update(_mean_over_processes(acc, train))
    metrics["learning_rate"] = state.scheduler.get_last_lr()[0]
    generated = acc.reduce(lengths.sum().to(acc.device), reduction="sum").item()
    metrics["generate_tokens_per_second"] = generated / max(timing["generate"], 1e-9)
    trained = rollout.attention_mask().sum().item() * acc.num_processes * args.num_iterations
    metrics["train_tokens"] = trained  # prompt + completion tokens through the training passes
    metrics["train_tokens_per_second"] = trained / max(timing["train"], 1e-9)
    metrics.update({f"time/{k}": v for k, v in timing.items()})
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def run_step(state: GRPOState) -> dict[str, float]:
    """One GRPO step: generate → score → reference/old log-probs → mu updates; returns its metrics."""
    torch.manual_seed(group_seed(state.args.seed, state.step, 10**9 + state.accelerator.process_index))  # dropout
    batch = local_prompts(state, state.step)
    t0 = time.perf_counter()
    rollout = generate(state, batch, ignore_eos=state.args.ignore_eos)
    t1 = time.perf_counter()
    rewards, breakdown = score(state, rollout, batch)
    advantages = group_advantages(rewards, rollout.group_size, state.args.scale_rewards)
    t2 = time.perf_counter()
    old, ref = reference_logps(state, rollout)
    t3 = time.perf_counter()
    train = _train_with_retry(state, rollout, advantages.advantages, old, ref)
    t4 = time.perf_counter()
    timing = {"generate": t1 - t0, "score": t2 - t1, "reference": t3 - t2, "train": t4 - t3, "step": t4 - t0}
    metrics = step_metrics(state, rollout, rewards, breakdown, advantages, train, timing)
    state.step += 1
    if state.accelerator.is_main_process and state.step % state.args.logging_steps == 0:
        _write_samples(state, batch, rollout, rewards)
    return metrics


def _train_with_retry(state: GRPOState, rollout: Rollout, advantages, old, ref) -> dict[str, float]:
    """train_on_rollout; an out-of-memory error before any update of this step retries it with half the
    micro-batch (per-completion denominators fixed from the configured micro-batch make the update the same,
    for bnpo too)."""
    while True:
        state.updates_this_step = 0
        try:
            train = train_on_rollout(state, rollout, advantages, old, ref)
            train["micro_batch_size"] = float(state.micro_batch_size)
            return train
        except torch.OutOfMemoryError:
            if state.micro_batch_size == 1 or state.updates_this_step or state.accelerator.num_processes > 1:
                raise  # nothing smaller to try, or part of the step already applied, or peers mid-step
            state.optimizer.zero_grad(set_to_none=True)
            state.micro_batch_size = max(1, state.micro_batch_size // 2)
            _free_memory()
            logger.warning("out of memory in the training forward: retrying the step with micro_batch_size %d",
                           state.micro_batch_size)


# --- logging, evaluation, checkpoints, train -----------------------------------------------------------------------


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _read_metrics(run_dir: Path, up_to_step: int) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("step", 0) <= up_to_step]


def _rewrite_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    # On resume, steps after the checkpoint are replayed; their old lines are dropped first.
    path = run_dir / METRICS_FILE
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_samples(state: GRPOState, batch, rollout: Rollout, rewards: torch.Tensor) -> None:
    for i in range(min(state.args.num_logged_samples, rollout.num_completions)):
        example = batch[i // rollout.group_size][1]
        _append_jsonl(state.run_dir / SAMPLES_FILE, {
            "step": state.step, "question": example.question, "gold": example.answer,
            "completion": rollout.completions[i], "reward": None if torch.isnan(rewards[i]) else rewards[i].item()})


def evaluate_policy(state: GRPOState, test_examples: list[GSM8KExample], tag: str) -> dict[str, Any] | None:
    """GSM8K evaluation of the current policy on the main process; returns the summary."""
    from pipeline.evaluate import evaluate_gsm8k, write_results

    args = state.args
    if not args.eval_limit or not state.accelerator.is_main_process:
        return None
    eval_args = EvalArguments(limit=args.eval_limit, batch_size=args.eval_batch_size,
                              max_new_tokens=args.eval_max_new_tokens, seed=args.seed)
    with _sampling_model(state) as model:  # the merged copy when allowed: same logits, faster decoding
        records, summary = evaluate_gsm8k(model, state.tokenizer, test_examples, state.template, eval_args,
                                          system_prompt=state.system_prompt, model_name=f"grpo@{tag}",
                                          show_progress=False)
    write_results(state.run_dir / "eval" / tag, records, summary)
    return summary


def save(state: GRPOState) -> None:
    """Checkpoint the current step on the main process (atomic), then wait for every process."""
    if state.accelerator.is_main_process:
        path = save_checkpoint(state.run_dir, state.step, state.policy, state.optimizer, state.scheduler,
                               {"seed": state.args.seed}, keep=state.args.save_total_limit)
        logger.info("saved %s", path)
    state.accelerator.wait_for_everyone()


def save_final(state: GRPOState, model_args: ModelArguments) -> Path:
    """final/adapter (or final/model) and, with LoRA, final/merged in full precision."""
    final = state.run_dir / "final"
    if state.accelerator.is_main_process:
        policy = state.policy
        if state.uses_lora:
            policy.save_pretrained(final / "adapter", safe_serialization=True)
            from pipeline.sft import merge_to_full_precision

            merge_to_full_precision(model_args, final / "adapter", final / "merged")
        else:
            policy.save_pretrained(final / "merged", safe_serialization=True)
            state.tokenizer.save_pretrained(final / "merged")
    state.accelerator.wait_for_everyone()
    return final / "merged"


def _log(state: GRPOState, metrics: dict[str, Any], progress) -> None:
    state.history.append(metrics)
    if state.accelerator.is_main_process:
        _append_jsonl(state.run_dir / METRICS_FILE, metrics)
        if state.args.report_to != "none":
            state.accelerator.log({k: v for k, v in metrics.items() if v is not None}, step=metrics["step"])
        progress.set_postfix(reward=f"{metrics['reward'] or 0:.3f}", kl=f"{metrics['kl']:.4f}",
                             len=f"{metrics['completion_length']:.0f}")
        if metrics["step"] % state.args.logging_steps == 0:
            logger.info("step %d: reward %.3f, accuracy %s, kl %.4f, loss %.4f, %.1fs (generate %.1fs)",
                        metrics["step"], metrics["reward"] or 0.0, metrics.get("accuracy"), metrics["kl"],
                        metrics["loss"], metrics["time/step"], metrics["time/generate"])


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (a fault past its threshold); a checkpoint of the last good state exists."""


def check_health(state: GRPOState, metrics: dict[str, Any]) -> None:
    """Stop, after a checkpoint, on a failing reward plug-in or on repeated non-finite steps."""
    args = state.args
    state.nonfinite_streak = state.nonfinite_streak + 1 if metrics["skipped_updates"] else 0
    problem = None
    if state.nonfinite_streak >= args.max_nonfinite_steps:
        problem = (f"{state.nonfinite_streak} consecutive steps had a NaN/inf loss or gradient "
                   f"(max_nonfinite_steps={args.max_nonfinite_steps}); lower learning_rate or check the rewards")
    for name in args.reward_funcs:
        if state.faults.rate(name) > args.max_reward_error_rate:
            problem = (f"reward {name!r} lost {state.faults.rate(name):.0%} of its values (max_reward_error_rate="
                       f"{args.max_reward_error_rate}); last problem: {state.faults.last_problem.get(name)}")
    if problem:
        save(state)
        raise TrainingStopped(f"{problem}. Checkpoint of step {state.step} saved in {state.run_dir}/checkpoints; "
                              "fix the cause, then rerun with --resume_from_checkpoint latest")


def train(args: GRPOArguments, model_args: ModelArguments, data_args: DataArguments,
          examples: list[GSM8KExample], test_examples: list[GSM8KExample] | None = None) -> dict[str, Any]:
    """The whole GRPO stage; returns a summary with the metrics history and the before/after evaluations."""
    from tqdm.auto import tqdm

    state = setup(args, model_args, data_args, examples)
    if state.accelerator.is_main_process and state.step:
        _rewrite_metrics(state.run_dir, state.history)
    summary: dict[str, Any] = {"start_step": state.step}
    if test_examples and state.step == 0 and args.eval_before:
        summary["eval_before"] = evaluate_policy(state, test_examples, "step-0")
    progress = tqdm(total=args.max_steps, initial=state.step, desc="GRPO", unit="step",
                    disable=not state.accelerator.is_main_process)
    interrupt = GracefulInterrupt()
    with interrupt:
        summary["interrupted"] = _loop(state, test_examples, progress, interrupt)
    progress.close()
    if summary["interrupted"]:
        save(state)
        summary.update({"steps": state.step, "history": state.history})
        state.accelerator.end_training()
        return summary
    if not (args.save_steps and state.step % args.save_steps == 0):  # not saved by the loop's last step
        save(state)
    if test_examples:
        summary["eval_after"] = evaluate_policy(state, test_examples, f"step-{state.step}")
    summary["final"] = str(save_final(state, model_args))
    summary.update({"steps": state.step, "history": state.history})
    if state.accelerator.is_main_process:
        (state.run_dir / "grpo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        from pipeline.plots import plot_run

        plot_run(state.run_dir)
    state.accelerator.end_training()
    del state
    gc.collect()
    return summary


def _loop(state: GRPOState, test_examples, progress, interrupt: GracefulInterrupt) -> bool:
    """Steps until max_steps; returns True when a signal asked to stop (at a step boundary)."""
    args = state.args
    while state.step < args.max_steps:
        metrics = run_step(state)
        _log(state, metrics, progress)
        progress.update(1)
        check_health(state, metrics)
        if args.eval_steps and test_examples and state.step % args.eval_steps == 0 and state.step < args.max_steps:
            evaluate_policy(state, test_examples, f"step-{state.step}")
        if args.save_steps and state.step % args.save_steps == 0:
            save(state)
        if interrupt.requested:
            logger.warning("%s received: stopping after step %d", interrupt.requested, state.step)
            return True
    return False


def preflight(args: GRPOArguments, model_args: ModelArguments, data_args: DataArguments):
    """Every check that needs no weights, before any load: rewards, model path and size, data.

    Returns (GRPO examples, test examples). Raises ConfigError, DataError or ModelLoadError naming the
    option or file:line.
    """
    from transformers import AutoConfig

    from pipeline.config import ConfigError
    from pipeline.models import is_adapter_folder, resolve_model_path

    try:
        _reward_functions(args, get_template(data_args.prompt_template))
    except ValueError as exc:
        raise ConfigError(f"option --reward_funcs: {exc}") from None
    path = resolve_model_path(model_args)
    if not is_adapter_folder(path) and Path(path).is_dir():
        config = AutoConfig.from_pretrained(path, trust_remote_code=model_args.trust_remote_code)
        limit = getattr(config, "max_position_embeddings", None)
        needed = args.max_prompt_length + args.max_completion_length
        if limit is not None and needed > limit:
            raise ConfigError(f"option --max_completion_length: max_prompt_length + max_completion_length = {needed} "
                              f"exceeds the model's {limit} positions; lower one of them")
    examples, test = load_grpo_examples(data_args)
    if not examples:
        raise ConfigError("option --grpo_holdout_size: the GRPO stage has no problems; set it above 0")
    return examples, test


def load_grpo_examples(data_args: DataArguments) -> tuple[list[GSM8KExample], list[GSM8KExample]]:
    """The GRPO hold-out of GSM8K train (disjoint from SFT's part) and the test split."""
    from pipeline.sft import load_stage_examples

    examples, _ = load_stage_examples(data_args, "grpo")
    return examples, data_args.load_split("test").examples
