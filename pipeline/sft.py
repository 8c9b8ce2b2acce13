"""SFT stage: LoRA/QLoRA supervised fine-tuning on GSM8K with TRL's SFTTrainer.

The training text is GSM8K's own reasoning (calculator annotations removed) in the shared prompt
template. The stage hands GRPO a merged full-precision model: its starting point and its frozen
reference policy.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trl import SFTConfig

from pipeline.arguments import ANSWER_MATCHES, DataArguments, EvalArguments, ModelArguments
from pipeline.config import ValidatedConfig, field_with_help, require
from pipeline.data import Example, PromptTemplate, get_template
from pipeline.data.sources import DataSplits, stage_examples
from pipeline.data.templates import fit_chat_template
from pipeline.evaluation.evaluate import check_gold_answers, evaluate_gsm8k, format_table, write_results
from pipeline.models import add_lora, load_model, load_tokenizer
from pipeline.runtime import GracefulInterrupt, resolve_device, warn_if_cpu_bf16_is_slow

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
SUMMARY_FILE = "sft_summary.json"
SPLIT_FILE = "data_split.json"


@dataclass
class SFTScriptArguments(ValidatedConfig):
    # --- before/after evaluation on the GSM8K test split ---
    eval_limit: int = field_with_help(0, "Evaluate on the first N test problems before and after SFT (0: skip).")
    eval_batch_size: int = field_with_help(16, "Prompts per generation batch in the before/after evaluation.")
    eval_max_new_tokens: int = field_with_help(256, "Generation cap in the before/after evaluation.")
    eval_answer_match: str = field_with_help(
        "auto", "How the before/after evaluation judges answers (scripts/evaluate.py's --answer_match): numeric, "
        "text (normalised exact match), math_verify, or auto (reasoning-gym's verifier, numeric when every gold "
        "answer is a number, text otherwise).", choices=ANSWER_MATCHES)
    # --- outputs ---
    merge_adapter: bool = field_with_help(True, "Also write a merged full-precision model folder (GRPO starts from it).")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.eval_limit >= 0, "eval_limit", f"must be >= 0, got {self.eval_limit}")
        require(self.eval_batch_size >= 1, "eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        require(self.eval_max_new_tokens >= 1, "eval_max_new_tokens", f"must be >= 1, got {self.eval_max_new_tokens}")


@dataclass
class SFTTrainingArguments(SFTConfig):
    """TRL's SFTConfig with defaults that fit the machine. Without a bf16-capable GPU, ``bf16`` left unset means
    float32 (TRL's default, bf16, would stop on transformers' "doesn't support bf16/gpu" check), and without any
    GPU training runs on the CPU (``use_cpu``); one log line says each. An explicit value is kept."""

    def __post_init__(self) -> None:
        import torch
        from transformers.utils import is_torch_bf16_gpu_available

        accelerator = torch.cuda.is_available() or torch.backends.mps.is_available() or (
            getattr(torch, "xpu", None) is not None and torch.xpu.is_available())
        if not self.use_cpu and not accelerator:
            self.use_cpu = True
            logger.info("no GPU: SFT trains on the CPU (use_cpu true)")
        if self.bf16 is None and not self.fp16 and (self.use_cpu or not is_torch_bf16_gpu_available()):
            self.bf16 = False
            logger.info("no bf16-capable GPU in use: SFT trains in float32 (--bf16 true forces bf16)")
        super().__post_init__()


def sft_record(example: Example, template: PromptTemplate, system_prompt: str | None = None,
               tokenizer=None) -> dict[str, Any]:
    """One conversational prompt/completion row: SFTTrainer puts the loss on the completion only. With the
    ``tokenizer``, a system turn its chat template cannot render is folded into the first user turn."""
    return {
        "prompt": fit_chat_template(tokenizer, example.prompt_messages(template, system_prompt)),
        "completion": [{"role": "assistant", "content": example.target(template)}],
    }


def build_sft_dataset(examples: list[Example], template: PromptTemplate, system_prompt: str | None = None,
                      tokenizer=None):
    from datasets import Dataset

    return Dataset.from_list([sft_record(e, template, system_prompt, tokenizer) for e in examples])


class _TokensPerSecond:
    """Adds ``train_tokens_per_second`` (since the last log) to SFTTrainer's logs."""

    def __init__(self) -> None:
        self.last_time = time.perf_counter()
        self.last_tokens = 0

    def update(self, logs: dict[str, float], total_tokens: int) -> None:
        now = time.perf_counter()
        if "loss" in logs and now > self.last_time:
            logs["train_tokens_per_second"] = (total_tokens - self.last_tokens) / (now - self.last_time)
            self.last_time, self.last_tokens = now, total_tokens


def make_trainer(model, tokenizer, dataset, training_args, interrupt: GracefulInterrupt | None = None):
    """TRL's SFTTrainer, logging training tokens per second beside loss and learning rate.

    With ``interrupt``, a SIGINT/SIGTERM makes it save a checkpoint and stop at the next step boundary.
    """
    from transformers import TrainerCallback
    from trl import SFTTrainer

    class SaveAndStopOnSignal(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if interrupt is not None and interrupt.requested:
                control.should_save = True
                control.should_training_stop = True

    class PipelineSFTTrainer(SFTTrainer):
        _throughput = _TokensPerSecond()

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            self._throughput.update(logs, getattr(self, "_total_train_tokens", 0))
            super().log(logs, start_time)

    return PipelineSFTTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                              callbacks=[SaveAndStopOnSignal()])


def resolve_resume(resume: str | bool | None, output_dir: str) -> str | None:
    """``latest``/``true`` → the newest checkpoint in output_dir (None if there is none); a path → itself."""
    if resume in (None, False, "", "false", "False"):
        return None
    if resume in (True, "latest", "true", "True"):
        last = last_complete_checkpoint(Path(output_dir))
        if last is None:
            logger.info("no checkpoint in %s yet: starting from step 0", output_dir)
        return last
    if not Path(str(resume)).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume}: no such checkpoint folder; use 'latest' or a path")
    return str(resume)


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` that transformers finished writing (its trainer_state.json is written last):
    a checkpoint cut short, by a second Ctrl-C or a full disk, is passed over with a warning."""
    folders = sorted((p for p in output_dir.glob("checkpoint-*") if p.name.removeprefix("checkpoint-").isdigit()),
                     key=lambda p: int(p.name.removeprefix("checkpoint-")), reverse=True)
    for folder in folders:
        if (folder / "trainer_state.json").is_file():
            return str(folder)
        logger.warning("%s was not finished (no trainer_state.json): resuming from an earlier checkpoint", folder)
    return None


def merge_to_full_precision(base_args: ModelArguments, adapter_dir: Path, target: Path) -> Path:
    """Merge the adapter into float32 base weights (never into 4-bit ones) and save the folder."""
    from peft import PeftModel

    fp_args = ModelArguments(
        model_name_or_path=base_args.model_name_or_path, gguf_file=base_args.gguf_file,
        model_revision=base_args.model_revision, dtype="float32", trust_remote_code=base_args.trust_remote_code,
        model_cache_dir=base_args.model_cache_dir,
    )
    model = PeftModel.from_pretrained(load_model(fp_args), str(adapter_dir)).merge_and_unload()
    model.save_pretrained(target, safe_serialization=True)
    load_tokenizer(fp_args).save_pretrained(target)
    return target


def evaluate_on_test(model_args: ModelArguments, data_args: DataArguments, script_args: SFTScriptArguments,
                     output_dir: Path, seed: int, device: str = "auto", examples: list[Example] | None = None,
                     label: str = "held-out problems") -> dict[str, Any]:
    """Greedy evaluation of ``model_args``'s model on the evaluation problems, loaded on ``device`` in its dtype."""
    if examples is None:
        splits = data_args.load_splits()
        examples, label = splits.eval, splits.eval_label
    eval_args = EvalArguments(limit=script_args.eval_limit, batch_size=script_args.eval_batch_size,
                              max_new_tokens=script_args.eval_max_new_tokens, seed=seed, output_dir=str(output_dir),
                              answer_match=script_args.eval_answer_match)
    model, tokenizer = load_model(model_args, device=resolve_device(device)), load_tokenizer(model_args)
    records, summary = evaluate_gsm8k(model, tokenizer, examples, get_template(data_args.prompt_template),
                                      eval_args, system_prompt=data_args.system_prompt,
                                      model_name=model_args.model_name_or_path, split_name=label)
    write_results(output_dir, records, summary)
    print(format_table(summary))
    del model
    gc.collect()
    return summary


def finished_evaluation(folder: Path, script_args: SFTScriptArguments, training_args) -> dict[str, Any] | None:
    """On a resumed run, the base model's evaluation already written with the same settings (it is not
    repeated); None otherwise."""
    from pipeline.evaluation.evaluate import SUMMARY_FILE as EVAL_SUMMARY

    path = folder / EVAL_SUMMARY
    if not training_args.resume_from_checkpoint or not path.is_file():
        return None
    summary = json.loads(path.read_text())
    settings = summary.get("settings", {})
    same = (settings.get("limit"), settings.get("max_new_tokens"), settings.get("seed"),
            settings.get("answer_match", "auto")) == (script_args.eval_limit, script_args.eval_max_new_tokens,
                                                      training_args.seed, script_args.eval_answer_match)
    if same:
        logger.info("resumed run: reusing the base model's evaluation in %s", path)
    return summary if same else None


def run_sft(script_args: SFTScriptArguments, training_args, model_args: ModelArguments, data_args: DataArguments,
            splits: DataSplits | None = None) -> dict[str, Any]:
    """Train, save the adapter, merge it, and (optionally) evaluate before and after. Returns the summary.
    ``splits``: rows already read (the Python entry's), in place of ``data_args``' dataset."""
    from transformers import set_seed

    set_seed(training_args.seed)  # before add_lora: the adapter's random init must be reproducible too
    out = Path(training_args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    template = get_template(data_args.prompt_template)
    examples, eval_examples, split_record = stage_examples(data_args, "sft", splits)
    for example in examples:
        example.target(get_template(data_args.prompt_template))  # a row with nothing to learn: one line, now
    if script_args.eval_limit:
        check_gold_answers(eval_examples[: script_args.eval_limit], script_args.eval_answer_match,
                           "--eval_answer_match")
    (out / SPLIT_FILE).write_text(json.dumps(split_record, indent=2))
    summary: dict[str, Any] = {"train_examples": len(examples), "base_model": model_args.model_name_or_path}
    device = "cpu" if training_args.use_cpu else "auto"  # the evaluations run where training does

    if script_args.eval_limit:
        summary["before"] = finished_evaluation(out / "eval_before", script_args, training_args) or \
            evaluate_on_test(model_args, data_args, script_args, out / "eval_before", training_args.seed, device,
                         eval_examples, split_record["evaluation_label"])

    if training_args.bf16:
        import torch

        warn_if_cpu_bf16_is_slow("bf16: true", on_gpu=torch.cuda.is_available() and not training_args.use_cpu)
    tokenizer = load_tokenizer(model_args, padding_side="right")
    model = load_model(model_args)
    if model_args.use_peft:
        model = add_lora(model, model_args)
    interrupt = GracefulInterrupt()
    trainer = make_trainer(model, tokenizer, build_sft_dataset(examples, template, data_args.system_prompt, tokenizer),
                           training_args, interrupt)
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    with interrupt:
        result = trainer.train(resume_from_checkpoint=resume)
    summary["train"] = {**result.metrics, "global_step": trainer.state.global_step, "log_history": trainer.state.log_history}
    if interrupt.requested:
        summary["interrupted"] = interrupt.requested
        return summary

    final_dir = out / (ADAPTER_DIR if model_args.use_peft else MERGED_DIR)
    trainer.save_model(str(final_dir))
    tokenizer.save_pretrained(final_dir)
    del trainer, model
    gc.collect()
    if model_args.use_peft and script_args.merge_adapter:
        merge_to_full_precision(model_args, final_dir, out / MERGED_DIR)
    summary["output"] = {"adapter": str(out / ADAPTER_DIR) if model_args.use_peft else None,
                         "merged": str(out / MERGED_DIR) if (out / MERGED_DIR).is_dir() else None}

    if script_args.eval_limit and summary["output"]["merged"]:
        after_args = ModelArguments(model_name_or_path=summary["output"]["merged"], dtype=model_args.dtype)
        summary["after"] = evaluate_on_test(after_args, data_args, script_args, out / "eval_after", training_args.seed,
                                            device, eval_examples, split_record["evaluation_label"])
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    write_metrics_and_plots(out, summary["train"]["log_history"])
    return summary


def write_metrics_and_plots(out: Path, log_history: list[dict[str, Any]]) -> None:
    """metrics.jsonl from the Trainer's log history (the per-step rows), then the run's figures."""
    from pipeline.plots import plot_run

    rows = [{**{k: v for k, v in h.items() if isinstance(v, (int, float))}} for h in log_history if "loss" in h]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if rows:
        plot_run(out)
