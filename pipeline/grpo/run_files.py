"""A GRPO run's files: metrics and samples (JSONL), checkpoints, evaluations, the final model, and the
health check that stops a failing run after a checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from pipeline.arguments import EvalArguments, ModelArguments
from pipeline.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from pipeline.data import Example
from pipeline.distributed import loading_on_this_process_only, shards_parameters
from pipeline.grpo.rollout import Rollout
from pipeline.grpo.state import GRPOState, sampling_model
from pipeline.plots import METRICS_FILE

logger = logging.getLogger(__name__)
SAMPLES_FILE = "samples.jsonl"


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_metrics(run_dir: Path, up_to_step: int) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("step", 0) <= up_to_step]


def rewrite_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    # On resume, steps after the checkpoint are replayed; their old lines are dropped first.
    path = run_dir / METRICS_FILE
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_samples(state: GRPOState, batch, rollout: Rollout, rewards: torch.Tensor) -> None:
    extra = {k: v for k, v in state.reward_log.columns.items() if len(v) == rollout.num_completions}  # log_extra
    for i in range(min(state.args.num_logged_samples, rollout.num_completions)):
        example = batch[i // rollout.group_size][1]
        append_jsonl(state.run_dir / SAMPLES_FILE, {
            "step": state.step, "question": example.question, "gold": example.answer,
            "completion": rollout.completions[i], "reward": None if torch.isnan(rewards[i]) else rewards[i].item(),
            **{name: values[i] for name, values in extra.items()}})


def evaluate_policy(state: GRPOState, test_examples: list[Example], tag: str) -> dict[str, Any] | None:
    """GSM8K evaluation of the current policy on the main process (on every process, in step, when the
    parameters are sharded: each forward gathers them from all); returns the summary."""
    from pipeline.evaluation.evaluate import evaluate_gsm8k, write_results

    args, main = state.args, state.accelerator.is_main_process
    if not args.eval_limit or not (main or state.finished_everywhere is not None):
        return None
    eval_args = EvalArguments(limit=args.eval_limit, batch_size=args.eval_batch_size,
                              max_new_tokens=args.eval_max_new_tokens, seed=args.seed,
                              answer_match=args.eval_answer_match)
    with sampling_model(state) as model:  # the merged copy when allowed: same logits, faster decoding
        if args.eval_protocol:  # test_examples: ProtocolProblems (lm-eval's problems, shots and scoring)
            records, summary = test_examples.evaluate(model, state.tokenizer, batch_size=args.eval_batch_size,
                                                      model_name=f"grpo@{tag}", show_progress=main,
                                                      finished_everywhere=state.finished_everywhere)
        else:
            records, summary = evaluate_gsm8k(model, state.tokenizer, test_examples, state.template, eval_args,
                                              system_prompt=state.system_prompt, model_name=f"grpo@{tag}",
                                              split_name=state.eval_label,
                                              show_progress=main, finished_everywhere=state.finished_everywhere)
    if main:
        write_results(state.run_dir / "eval" / tag, records, summary)
    return summary


def gathered_weights(state: GRPOState) -> dict[str, torch.Tensor] | None:
    """The whole state dict when the parameters are sharded (gathered by every process; None elsewhere and
    when they are not: each process then holds them whole)."""
    if not shards_parameters(state.accelerator):
        return None
    return state.accelerator.get_state_dict(state.model)


def save(state: GRPOState) -> None:
    """Checkpoint the current step on the main process (atomic), then wait for every process."""
    controller = state.entropy_controller
    controller_state = controller.state_dict() if controller is not None else {}
    weights = gathered_weights(state)
    if state.accelerator.is_main_process:
        path = save_checkpoint(state.run_dir, state.step, state.policy, state.optimizer, state.scheduler,
                               {"seed": state.args.seed, **controller_state}, keep=state.args.save_total_limit,
                               model_state=weights)
        logger.info("saved %s", path)
    state.accelerator.wait_for_everyone()


def save_final(state: GRPOState, model_args: ModelArguments) -> Path:
    """The run's model, laid out as an SFT run's: ``adapter/`` (LoRA) and ``merged/`` (full precision, the folder
    the next stage or an evaluation loads), both in the run folder. Returns the merged folder."""
    adapter, merged = state.run_dir / "adapter", state.run_dir / "merged"
    weights = gathered_weights(state)
    if state.accelerator.is_main_process:
        policy = state.policy
        if state.uses_lora:
            policy.save_pretrained(adapter, state_dict=weights, safe_serialization=True)
            from pipeline.sft import merge_to_full_precision

            with loading_on_this_process_only(state.accelerator):
                merge_to_full_precision(model_args, adapter, merged)
        else:
            policy.save_pretrained(merged, state_dict=weights, safe_serialization=True)
            state.tokenizer.save_pretrained(merged)
    state.accelerator.wait_for_everyone()
    return merged


def log_step(state: GRPOState, metrics: dict[str, Any], progress) -> None:
    state.history.append(metrics)
    if state.accelerator.is_main_process:
        append_jsonl(state.run_dir / METRICS_FILE, metrics)
        if state.args.report_to != "none":
            state.accelerator.log({k: v for k, v in metrics.items() if v is not None}, step=metrics["step"])
        kl = {"kl": f"{metrics['kl']:.4f}"} if state.args.beta > 0 else {}  # beta 0: no KL term, none shown
        progress.set_postfix(reward=f"{metrics['reward'] or 0:.3f}", **kl, len=f"{metrics['completion_length']:.0f}")
        if metrics["step"] % state.args.logging_steps == 0:
            accuracy = f", accuracy {metrics['accuracy']:.3f}" if metrics.get("accuracy") is not None else ""
            kl_text = "".join(f", kl {value}" for value in kl.values())
            logger.info("step %d: reward %.3f%s%s, loss %.4f, %.1fs (generate %.1fs)", metrics["step"],
                        metrics["reward"] or 0.0, accuracy, kl_text, metrics["loss"], metrics["time/step"],
                        metrics["time/generate"])


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


def resume(state: GRPOState) -> None:
    """Restore the run from the checkpoint ``resume_from_checkpoint`` names, if there is one yet."""
    path = find_checkpoint(state.run_dir, state.args.resume_from_checkpoint)
    if path is None:
        logger.info("no checkpoint in %s yet: starting from step 0", state.run_dir)
        return
    saved = load_checkpoint(path, state.policy, state.optimizer, state.scheduler)
    state.step = saved["step"]
    if state.entropy_controller is not None:
        state.entropy_controller.load_state_dict(saved)
    state.history = read_metrics(state.run_dir, up_to_step=state.step)
    logger.info("resumed from %s at step %d", path, state.step)
