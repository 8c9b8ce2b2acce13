"""Our GRPO loop (torch + accelerate), top to bottom: setup / generate / score / step / train.

Run files, metrics and the health check live in ``run_files`` and ``metrics``; inputs (rewards, data order,
preflight) in ``inputs``; the state object in ``state``.
"""

from __future__ import annotations

import gc
import json
import logging
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.data import Example, get_template
from pipeline.distributed import (engine_summary, finished_everywhere, launched_engine, make_accelerator,
                                  shards_parameters)
from pipeline.generation import encode, eos_token_ids
from pipeline.grpo.advantages import process_advantages
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.dynamic_sampling import Scored, replace_flat_groups
from pipeline.grpo.inputs import check_engine_options, local_prompts, reward_functions, reward_kwargs
from pipeline.grpo.logprobs import completion_logps
from pipeline.grpo.metrics import step_metrics
from pipeline.grpo.model_card import publish
from pipeline.grpo.rollout import Rollout, collate_rollout, group_seed
from pipeline.grpo.run_files import (
    check_health,
    evaluate_policy,
    log_step,
    resume,
    rewrite_metrics,
    save,
    save_final,
    write_samples,
)
from pipeline.grpo.sampling import SamplingParams, right_pad, sample_groups
from pipeline.grpo.state import GRPOState, decoding_view, sampling_model
from pipeline.grpo.update import entropy_controller, train_with_retry
from pipeline.grpo.vllm_engine import VLLMEngine, vllm_weights  # vLLM itself is imported by VLLMEngine only
from pipeline.models import MergedAdapterView, add_lora, full_weights_path, load_model, load_tokenizer
from pipeline.runtime import GracefulInterrupt, free_memory, warn_if_cpu_bf16_is_slow
from rewards import RewardBreakdown, combine_rewards
from rewards.guard import AsyncRewardLoop, is_async_reward

logger = logging.getLogger(__name__)


# --- setup --------------------------------------------------------------------------------------------------------


def setup(args: GRPOArguments, model_args: ModelArguments, data_args: DataArguments, examples: list[Example],
          reward_funcs: list[Any] | None = None):
    """Load the policy (+ LoRA), reference, optimizer and rewards (``reward_funcs``: callables given from Python,
    else ``args.reward_funcs`` resolved); restore a checkpoint if asked."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    accelerator = make_accelerator(args.precision, micro_batch_size=args.micro_batch_size,
                                   max_grad_norm=args.max_grad_norm, project_dir=args.output_dir,
                                   log_with=None if args.report_to == "none" else args.report_to)
    args.check_processes(accelerator.num_processes)
    check_engine_options(accelerator, args, model_args)
    if args.precision == "bf16":
        warn_if_cpu_bf16_is_slow("mixed_precision: bf16", on_gpu=accelerator.device.type == "cuda")
    set_seed(args.seed)
    template = get_template(data_args.prompt_template)
    reward_funcs = reward_funcs or reward_functions(args, template)  # resolve names before the model loads
    tokenizer = load_tokenizer(model_args, padding_side="left")
    model = load_model(model_args, device=accelerator.device, merge_adapter=True)  # an SFT adapter: the start
    ref_model = None
    if args.gradient_checkpointing:  # before LoRA, so peft sees it; non-reentrant needs no input grads
        if hasattr(model, "activation_checkpointing_enable"):  # transformers' new name (the old one warns)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if model_args.use_peft:
        model = add_lora(model, model_args)
    elif args.beta > 0:
        ref_model = load_model(model_args, device=accelerator.device, merge_adapter=True).eval().requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.warmup_steps,
                              num_training_steps=args.max_steps * args.num_iterations * args.steps_per_generation)
    model, optimizer = accelerator.prepare(model, optimizer)
    try:
        return _finish_setup(args, model_args, data_args, examples, accelerator, model, tokenizer, optimizer,
                             scheduler, ref_model, reward_funcs, template)
    except BaseException as error:  # the prepared model must not outlive the process group (see close)
        traceback.clear_frames(error.__traceback__)  # the failed calls' locals hold it too
        model = optimizer = None
        _release(accelerator)
        raise


def _finish_setup(args, model_args, data_args, examples, accelerator, model, tokenizer, optimizer, scheduler,
                  ref_model, reward_funcs, template) -> GRPOState:
    run_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(
            {"grpo": args.to_dict(), "model": model_args.to_dict(), "data": data_args.to_dict(),
             "processes": accelerator.num_processes, "engine": engine_summary(accelerator, model)}, indent=2))
    if args.report_to != "none":  # wandb: online, or offline under WANDB_MODE=offline; its files in the run folder
        accelerator.init_trackers("grpo-pipeline", config=args.to_dict(),
                                  init_kwargs={"wandb": {"dir": str(run_dir), "name": run_dir.name}})
    state = GRPOState(args, accelerator, model, tokenizer, optimizer, scheduler, ref_model, reward_funcs, template,
                      data_args.system_prompt, examples, eos_token_ids(accelerator.unwrap_model(model), tokenizer),
                      run_dir, model_args.use_peft)
    state.micro_batch_size = args.micro_batch_size
    state.entropy_controller = entropy_controller(args)
    if shards_parameters(accelerator):  # every forward gathers the parameters: processes decode in step
        state.finished_everywhere = finished_everywhere(accelerator)
    if any(is_async_reward(fn) for fn in reward_funcs):
        state.reward_loop = AsyncRewardLoop()
    state.generation_batch = args.prompts_per_step // accelerator.num_processes * args.num_generations
    if model_args.use_peft:
        state.merged_view = decoding_view(state.policy, args)
    if args.use_vllm:
        kv_bytes = None if args.vllm_kv_cache_gib is None else int(args.vllm_kv_cache_gib * 2**30)
        # Started from full weights (an adapter folder's base); the policy's are sent before the first generation.
        state.vllm = VLLMEngine(full_weights_path(model_args), seed=args.seed,
                                max_model_length=args.vllm_max_model_length or args.max_prompt_length + args.max_completion_length,
                                batch_sequences=state.generation_batch, kv_cache_memory_bytes=kv_bytes,
                                gpu_memory_utilization=args.vllm_gpu_memory_utilization,
                                enable_sleep_mode=args.vllm_enable_sleep_mode)
    if args.resume_from_checkpoint:
        resume(state)
    return state


# --- generate / score ---------------------------------------------------------------------------------------------


def generate(state: GRPOState, batch: list[tuple[int, Example]], ignore_eos: bool = False) -> Rollout:
    """G completions for each of this process's prompts, each group seeded by (seed, step, prompt)."""
    args, tokenizer = state.args, state.tokenizer
    prompts = []
    for _, example in batch:
        text = example.prompt_text(tokenizer, state.template, state.system_prompt)
        prompts.append(encode(tokenizer, text, state.accelerator.device))  # [L]
        if prompts[-1].numel() > args.max_prompt_length:
            raise ValueError(f"{example.source}: prompt has {prompts[-1].numel()} tokens, over "
                             f"max_prompt_length={args.max_prompt_length}; raise the option or drop the row")
    seeds = [group_seed(args.seed, state.step, position) for position, _ in batch]
    params = SamplingParams(args.num_generations, args.max_completion_length, args.temperature, args.top_p,
                            tuple(sorted(state.eos_ids)), tokenizer.pad_token_id, ignore_eos)
    state.policy.eval()
    sampling_logps = None
    try:
        if state.vllm is not None:
            completions, sampling_logps = _sample_with_vllm(state, prompts, params)  # [P * G, T] each
        else:
            with sampling_model(state) as model:
                completions = _sample_with_retry(state, model, prompts, seeds, params)  # [P * G, T]
    except torch.OutOfMemoryError:
        if state.merged_view is None:
            raise
        state.merged_view = None  # the merged copy is the one thing left to give up
        free_memory()
        logger.warning("out of memory while generating: decoding through the LoRA adapters from now on")
        completions = _sample_with_retry(state, state.policy, prompts, seeds, params)
    G = args.num_generations
    groups = [(prompt, completions[i * G : (i + 1) * G]) for i, prompt in enumerate(prompts)]
    rollout = collate_rollout(groups, pad_token_id=tokenizer.pad_token_id, eos_ids=state.eos_ids, group_size=G,
                              mask_truncated_completions=args.mask_truncated_completions, tokenizer=tokenizer)
    if sampling_logps is not None:
        rollout.sampling_logps = sampling_logps[:, : rollout.completion_ids.size(1)]
    return rollout


def _sample_with_vllm(state: GRPOState, prompts: list[torch.Tensor], params: SamplingParams):
    """vLLM's samples, after sending it the policy's weights if an update changed them since the last send."""
    if state.vllm.synced_step != state.step:
        merged = (state.merged_view or MergedAdapterView(state.policy)) if state.uses_lora else None
        state.vllm.load_weights(vllm_weights(state.policy, merged))
        state.vllm.synced_step = state.step
    return state.vllm.sample(prompts, params, device=state.accelerator.device)


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
                parts = [sample_groups(model, prompts[i : i + per_call], seeds[i : i + per_call], params,
                                       state.finished_everywhere) for i in range(0, len(prompts), per_call)]
            else:
                parts = []
                for prompt, seed in zip(prompts, seeds):
                    for index, start in enumerate(range(0, G, state.generation_batch)):
                        count = min(state.generation_batch, G - start)
                        parts.append(sample_groups(model, [prompt], [seed * 31 + index],
                                                   replace(params, num_generations=count), state.finished_everywhere))
            return right_pad(parts, params.pad_token_id)
        except torch.OutOfMemoryError:
            if state.generation_batch == 1 or state.finished_everywhere is not None:
                raise  # nothing smaller to try, or the processes must decode in step
            state.generation_batch = max(1, state.generation_batch // 2)
            free_memory()
            logger.warning("out of memory while generating: retrying with %d samples at a time", state.generation_batch)


def score(state: GRPOState, rollout: Rollout, batch: list[tuple[int, Example]]) -> tuple[torch.Tensor, RewardBreakdown]:
    """Rewards of every completion and their group-relative advantages ([N] each).

    As TRL does: every dataset column reaches the rewards as a keyword argument, one value per completion; a
    plain-text row's prompt and completions arrive as strings, a conversational row's as messages; ``completion_ids``
    are the ids as generated (through the first EOS), truncated ones included, whatever the loss masks."""
    G = rollout.group_size
    rows = [ex for _, ex in batch for _ in range(G)]
    prompts = [ex.reward_prompt() for ex in rows]
    completions = [ex.reward_completion(text) for ex, text in zip(rows, rollout.completions)]
    completion_ids = [row[: int(n)].tolist() for row, n in zip(rollout.completion_ids, rollout.lengths.tolist())]
    breakdown = combine_rewards(state.reward_funcs, state.args.reward_funcs, state.args.weights, prompts,
                                completions, timeout=state.args.reward_timeout, faults=state.faults,
                                async_loop=state.reward_loop, completion_ids=completion_ids, **reward_kwargs(state, rows))
    device = state.accelerator.device
    total = torch.tensor(breakdown.total, dtype=torch.float32, device=device)  # [N]
    unscorable = torch.tensor([all(v[i] is None for v in breakdown.per_function) for i in range(len(total))],
                              device=device)  # [N]
    total[unscorable] = torch.nan  # no function had an opinion: left out of the group statistics
    return total, breakdown


# --- step ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def reference_logps(state: GRPOState, rollout: Rollout) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Old log-probs (only when a batch serves more than one update) and reference log-probs (only when
    beta > 0), chunked, no grad."""
    args, policy = state.args, state.policy
    input_ids, attention_mask, T = rollout.input_ids(), rollout.attention_mask(), rollout.completion_ids.size(1)
    kwargs = dict(temperature=args.temperature, chunk_size=args.logps_chunk_size)
    policy.eval()  # no dropout: these are the sampling policy's probabilities
    off_policy = args.num_iterations * args.steps_per_generation > 1 or (
        args.use_vllm and args.vllm_importance_sampling_correction)  # the ratio to vLLM's probabilities needs them
    if off_policy or args.beta > 0:
        state.show_phase("reference log-probs")
    old = completion_logps(policy, input_ids, attention_mask, T, **kwargs)[0] if off_policy else None
    ref = None
    if args.beta > 0:
        if state.uses_lora:
            with policy.disable_adapter():  # the merged SFT weights: the reference, without a second copy
                ref = completion_logps(policy, input_ids, attention_mask, T, **kwargs)[0]
        else:
            ref = completion_logps(state.ref_model, input_ids, attention_mask, T, **kwargs)[0]
    return old, ref


def run_step(state: GRPOState) -> dict[str, float]:
    """One GRPO step: generate → score → reference/old log-probs → mu updates; returns its metrics."""
    torch.manual_seed(group_seed(state.args.seed, state.step, 10**9 + state.accelerator.process_index))  # dropout
    batch = local_prompts(state, state.step)
    t0 = time.perf_counter()
    state.show_phase("generating")
    rollout = generate(state, batch, ignore_eos=state.args.ignore_eos)
    t1 = time.perf_counter()
    state.show_phase("scoring")
    rewards, breakdown = score(state, rollout, batch)
    resampling: dict[str, float] = {}
    if state.args.dynamic_sampling:  # time/score then includes the extra rounds' generation
        def sample(prompts) -> Scored:
            extra = generate(state, prompts, ignore_eos=state.args.ignore_eos)
            return Scored(prompts, extra, *score(state, extra, prompts))

        kept, resampling = replace_flat_groups(state, Scored(batch, rollout, rewards, breakdown), sample)
        batch, rollout, rewards, breakdown = kept.batch, kept.rollout, kept.rewards, kept.breakdown
    advantages = process_advantages(state.accelerator, state.args, rewards, breakdown, rollout.group_size)
    t2 = time.perf_counter()
    old, ref = reference_logps(state, rollout)
    t3 = time.perf_counter()
    train = train_with_retry(state, rollout, advantages.advantages, old, ref)
    t4 = time.perf_counter()
    timing = {"generate": t1 - t0, "score": t2 - t1, "reference": t3 - t2, "train": t4 - t3, "step": t4 - t0}
    metrics = step_metrics(state, rollout, rewards, breakdown, advantages, train, timing) | resampling
    state.step += 1
    if state.accelerator.is_main_process and state.step % state.args.logging_steps == 0:
        write_samples(state, batch, rollout, rewards)
    return metrics


# --- train ------------------------------------------------------------------------------------------------------


def train(args: GRPOArguments, model_args: ModelArguments, data_args: DataArguments, examples: list[Example],
          test_examples: list[Example] | None = None, eval_label: str = "held-out problems",
          reward_funcs: list[Any] | None = None) -> dict[str, Any]:
    """The whole GRPO stage; returns a summary with the metrics history and the before/after evaluations.
    ``reward_funcs``: callables given from Python, named by ``args.reward_funcs`` (else those names resolved)."""
    state = setup(args, model_args, data_args, examples, reward_funcs)
    state.eval_label = eval_label
    try:
        summary = _train(state, model_args, test_examples)
    except BaseException as error:  # ended the same way, without waiting for the others
        traceback.clear_frames(error.__traceback__)  # the failed calls' locals hold the prepared model too
        close(state, wait=False)
        raise
    close(state)
    return summary


def _train(state: GRPOState, model_args: ModelArguments, test_examples) -> dict[str, Any]:
    from tqdm.auto import tqdm

    args = state.args
    if state.accelerator.is_main_process and state.step:
        rewrite_metrics(state.run_dir, state.history)
    summary: dict[str, Any] = {"start_step": state.step}
    if test_examples and state.step == 0 and args.eval_before:
        summary["eval_before"] = evaluate_policy(state, test_examples, "step-0")
    progress = tqdm(total=args.max_steps, initial=state.step, desc="GRPO", unit="step",
                    disable=not state.accelerator.is_main_process)
    state.show_phase = lambda phase: progress.set_description(f"GRPO ({phase})")
    interrupt = GracefulInterrupt()
    with interrupt:
        summary["interrupted"] = _loop(state, test_examples, progress, interrupt)
    state.show_phase("done")
    progress.close()
    if summary["interrupted"]:
        save(state)
        summary.update({"steps": state.step, "history": state.history})
        return summary
    if not (args.save_steps and state.step % args.save_steps == 0):  # not saved by the loop's last step
        save(state)
    if test_examples:
        summary["eval_after"] = evaluate_policy(state, test_examples, f"step-{state.step}")
    summary["final"] = str(save_final(state, model_args))
    summary.update({"steps": state.step, "history": state.history})
    if state.accelerator.is_main_process:
        publish(state, Path(summary["final"]), summary)
        (state.run_dir / "grpo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        from pipeline.plots import plot_run

        try:  # the figures are a view of files already written: a fault there must not fail a finished run
            plot_run(state.run_dir)
        except Exception as error:
            logger.warning("figures not written (%s: %s); python scripts/plot_run.py %s draws them again",
                           type(error).__name__, error, state.run_dir)
    return summary


def close(state: GRPOState, wait: bool = True) -> None:
    """The one shutdown path of a run, the same on every process: wait for the others (``wait``), free the
    prepared model, then end the trackers and the process group.

    The order matters with several processes. DDP's reducer holds the process group; when freeing the model
    drops its last reference, torch joins gloo's worker threads while holding the GIL, and a worker still
    releasing the last collective's tensors waits for the GIL: that rank hangs at exit (seen in CI). Freed
    first, the model leaves the process group to ``destroy_process_group``, which releases the GIL.
    """
    if wait:
        state.accelerator.wait_for_everyone()
    state.model = state.optimizer = state.merged_view = None
    if state.reward_loop is not None:
        state.reward_loop.close()
    _release(state.accelerator)


def _release(accelerator) -> None:
    """Free accelerate's references to the prepared model, then end the trackers and the process group."""
    accelerator.free_memory()
    gc.collect()
    accelerator.end_training()
    if launched_engine() == "fsdp" and not torch.cuda.is_available():  # FSDP on CPU set accelerate's state itself
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)


def _loop(state: GRPOState, test_examples, progress, interrupt: GracefulInterrupt) -> bool:
    """Steps until max_steps; returns True when a signal asked to stop (at a step boundary)."""
    args = state.args
    while state.step < args.max_steps:
        metrics = run_step(state)
        log_step(state, metrics, progress)
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
