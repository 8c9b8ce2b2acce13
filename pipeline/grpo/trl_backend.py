"""The same GRPO run through TRL's GRPOTrainer: same model, data, rewards and hyper-parameters."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import torch

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.config import require
from pipeline.data import Example, get_template
from pipeline.data.templates import fit_chat_template
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.inputs import reward_functions
from pipeline.models import add_lora, load_model, load_tokenizer

logger = logging.getLogger(__name__)


def trl_config(args: GRPOArguments, num_processes: int = 1, **overrides):
    """GRPOConfig equivalent to our options (one optimizer step per generation batch, as ours);
    ``overrides`` replace GRPOConfig fields (the benchmark uses it to restore TRL's own defaults)."""
    from trl import GRPOConfig

    check_trl_backend(args, num_processes)
    completions_per_update = args.prompts_per_step * args.num_generations // num_processes // args.steps_per_generation
    accumulation = completions_per_update // args.micro_batch_size
    vllm = dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization,
                vllm_enable_sleep_mode=args.vllm_enable_sleep_mode, vllm_max_model_length=args.vllm_max_model_length,
                vllm_importance_sampling_correction=args.vllm_importance_sampling_correction,
                vllm_importance_sampling_mode=args.vllm_importance_sampling_mode,
                vllm_importance_sampling_clip_min=args.vllm_importance_sampling_clip_min,
                vllm_importance_sampling_clip_max=args.vllm_importance_sampling_clip_max) if args.use_vllm else {}
    options = dict(
        # TRL's max_steps counts optimizer steps; one of our steps makes num_iterations x steps_per_generation.
        output_dir=args.output_dir, seed=args.seed,
        max_steps=args.max_steps * args.num_iterations * args.steps_per_generation, **vllm,
        per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=accumulation, steps_per_generation=accumulation * args.steps_per_generation,
        num_generations=args.num_generations, num_iterations=args.num_iterations,
        temperature=args.temperature, top_p=args.top_p, max_completion_length=args.max_completion_length,
        mask_truncated_completions=args.mask_truncated_completions, reward_weights=args.weights,
        scale_rewards=args.scale_rewards, loss_type=args.loss_type, beta=args.beta,
        use_bias_correction_kl=args.kl_importance_correction, epsilon=args.epsilon_low,
        epsilon_high=args.epsilon_high, importance_sampling_level=args.importance_sampling_level, delta=args.delta,
        sapo_temperature_pos=args.sapo_temperature_pos, sapo_temperature_neg=args.sapo_temperature_neg,
        top_entropy_quantile=args.top_entropy_quantile, entropy_coef=args.entropy_coef,
        use_adaptive_entropy=args.use_adaptive_entropy, entropy_coef_min=args.entropy_coef_min,
        entropy_coef_max=args.entropy_coef_max, entropy_coef_delta=args.entropy_coef_delta,
        entropy_target=args.entropy_target, vespo_k_pos=args.vespo_k_pos, vespo_lambda_pos=args.vespo_lambda_pos,
        vespo_k_neg=args.vespo_k_neg, vespo_lambda_neg=args.vespo_lambda_neg,
        off_policy_mask_threshold=args.off_policy_mask_threshold,
        multi_objective_aggregation=args.multi_objective_aggregation,
        learning_rate=args.learning_rate, weight_decay=args.weight_decay,
        lr_scheduler_type=args.lr_scheduler_type, warmup_steps=args.warmup_steps, max_grad_norm=args.max_grad_norm,
        bf16=args.precision == "bf16", fp16=args.precision == "fp16", use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=args.gradient_checkpointing, logging_steps=args.logging_steps, save_steps=args.save_steps or args.max_steps,
        save_total_limit=args.save_total_limit, report_to=[] if args.report_to == "none" else [args.report_to],
        disable_tqdm=False,
        # Benchmark mode: EOS suppressed so both backends generate exactly the same number of tokens.
        generation_kwargs={"min_new_tokens": args.max_completion_length} if args.ignore_eos else None,
    )
    return GRPOConfig(**(options | overrides))


def check_trl_backend(args: GRPOArguments, num_processes: int) -> None:
    """``--backend trl`` runs the same configuration or stops in one line: options TRL 1.16 does not have, or a
    batch it would cut differently, are refused, never dropped or shrunk."""
    require(not args.dynamic_sampling, "dynamic_sampling", "is this project's (TRL 1.16 has none); not with "
            "--backend trl")
    require(not args.push_to_hub, "push_to_hub", "uploads from this project's loop; with --backend trl push the "
            "saved merged/ folder (hf upload)")
    require(not args.skip_zero_advantage, "skip_zero_advantage", "is this project's (TRL 1.16 has none); not "
            "with --backend trl")
    generation = args.prompts_per_step * args.num_generations
    require(generation % (num_processes * args.steps_per_generation) == 0, "prompts_per_step",
            f"--backend trl: the {generation} completions of a step do not split over {num_processes} processes "
            f"x steps_per_generation {args.steps_per_generation}")
    per_update = generation // num_processes // args.steps_per_generation
    require(per_update % args.micro_batch_size == 0, "micro_batch_size",
            f"--backend trl needs it ({args.micro_batch_size}) to divide the {per_update} completions per "
            "process and update")


def train_with_trl(args: GRPOArguments, model_args: ModelArguments, data_args: DataArguments,
                   examples: list[Example], callbacks: list | None = None,
                   config_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train through TRL's GRPOTrainer; returns its log history in our metric names."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from accelerate import PartialState

    config = trl_config(args, PartialState().num_processes, **(config_overrides or {}))  # before any weights load
    template = get_template(data_args.prompt_template)
    reward_funcs = reward_functions(args, template)
    tokenizer = load_tokenizer(model_args, padding_side="left")
    dataset = Dataset.from_list([trl_row(e, template, data_args.system_prompt, tokenizer) for e in examples])
    if not examples[0].conversational:  # one kind of prompt for every row: stage_examples checked it
        reward_funcs = [with_dataset_prompts(fn) for fn in reward_funcs]
    for fn, name in zip(reward_funcs, args.reward_funcs):
        fn.__name__ = name  # TRL names its reward metrics after the function
    model = load_model(model_args)
    if model_args.use_peft:
        model = add_lora(model, model_args)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=callbacks)
    if args.resume_from_checkpoint:
        trainer.train(resume_from_checkpoint=True if args.resume_from_checkpoint == "latest" else args.resume_from_checkpoint)
    else:
        trainer.train()
    history = [_our_names(h) for h in trainer.state.log_history if "loss" in h]
    out = Path(args.output_dir)
    trainer.save_model(str(out / "adapter") if model_args.use_peft else str(out / "merged"))
    if model_args.use_peft and trainer.accelerator.is_main_process:  # the same layout as our loop's: merged/ too
        from pipeline.sft import merge_to_full_precision

        merge_to_full_precision(model_args, out / "adapter", out / "merged")
    return {"steps": trainer.state.global_step, "history": history}


DATASET_PROMPT = "grpo_pipeline_dataset_prompt"  # a plain-text row's own prompt, carried past TRL to the rewards


def trl_row(example: Example, template, system_prompt: str | None, tokenizer) -> dict[str, Any]:
    """The row TRL's GRPOTrainer gets: the prompt the model sees in our loop, and every reward column.

    A conversational row goes as its messages (TRL applies the chat template, and rewards get messages, as in our
    loop). A plain-text row goes as the text our template renders: TRL then treats it as a standard row, so rewards
    get text completions, and ``with_dataset_prompts`` hands them the dataset's own prompt string, as our loop does.
    """
    if example.conversational:
        messages = fit_chat_template(tokenizer, example.prompt_messages(template, system_prompt))
        return {"prompt": messages, **example.reward_columns()}
    rendered = example.prompt_text(tokenizer, template, system_prompt)
    if tokenizer.bos_token and rendered.startswith(tokenizer.bos_token) and tokenizer("").input_ids:
        rendered = rendered[len(tokenizer.bos_token):]  # TRL's tokenizer call adds it back, as our loop's template has it
    return {"prompt": rendered, DATASET_PROMPT: example.reward_prompt(), **example.reward_columns()}


def with_dataset_prompts(fn):
    """``fn`` called with the dataset's prompt strings as ``prompts`` (TRL would pass the rendered prompt), and
    without the column that carries them."""
    if inspect.iscoroutinefunction(fn):
        async def call_async(prompts, completions, **kwargs):
            return await fn(prompts=kwargs.pop(DATASET_PROMPT), completions=completions, **kwargs)

        return call_async

    def call(prompts, completions, **kwargs):
        return fn(prompts=kwargs.pop(DATASET_PROMPT), completions=completions, **kwargs)

    return call


def _our_names(entry: dict[str, float]) -> dict[str, float]:
    mapping = {"loss": "loss", "reward": "reward", "kl": "kl", "step_time": "time/step", "entropy": "entropy",
               "completions/mean_length": "completion_length", "frac_reward_zero_std": "frac_reward_zero_std",
               "clip_ratio/low_mean": "clip_low", "clip_ratio/high_mean": "clip_high", "grad_norm": "grad_norm"}
    out = {"step": entry.get("step")}
    out.update({ours: entry[theirs] for theirs, ours in mapping.items() if theirs in entry})
    out.update({k.replace("rewards/", "reward/").replace("/mean", ""): v for k, v in entry.items()
                if k.startswith("rewards/") and k.endswith("/mean")})
    return out
