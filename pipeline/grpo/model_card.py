"""What a GRPO run leaves beside its weights for others: a model card (README.md, as TRL writes one for a
trained model) with the config that reproduces it, and the optional upload of the final model to the hub."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from pipeline.data.in_memory import IN_MEMORY_PREFIX

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
CONFIG_FILE = "grpo_config.yaml"
# The hub ids behind this project's offline names (the card's metadata takes hub ids only)
HUB_IDS = {"embedded:SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct", "bundled": "openai/gsm8k"}
# Options a re-run must not take over from the finished run: it would resume it or upload over it
NOT_REPRODUCED = {"resume_from_checkpoint": None, "push_to_hub": False}


def _reproduce(data: dict) -> str:
    if data["dataset_name"].startswith(IN_MEMORY_PREFIX):
        return (f"Trained from Python (`pipeline.api.train_grpo`) on rows held in memory: {CONFIG_FILE} records every "
                "option; the rows and the reward callables are the caller's.")
    return (f"Reproduce: `python scripts/train_grpo.py --config {CONFIG_FILE} --output_dir <a new folder>` (every "
            "option of this run; it neither resumes this run nor uploads).")


def hub_id(name: str) -> str | None:
    """``name`` as a hub repository id for the card's metadata, or None (a local folder, ``reasoning_gym:...``):
    the hub refuses an upload whose card names an invalid id.

    >>> hub_id("embedded:SmolLM2-135M-Instruct"), hub_id("runs/chain_sum/sft/merged"), hub_id("python:dataset")
    ('HuggingFaceTB/SmolLM2-135M-Instruct', None, None)
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    name = HUB_IDS.get(name, name)
    if Path(name).exists():
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def publish(state, merged: Path, summary: dict[str, Any]) -> None:
    """The model card and config beside a run's final weights (``merged``, the run's merged/ folder), then
    (push_to_hub) their upload; the hub's URL, or None after a failed upload, goes into ``summary["hub_url"]``.
    ``state``: the run's GRPOState."""
    try:  # the card describes files already saved: a fault there must not fail a finished run
        write_model_card(merged, json.loads((state.run_dir / "config.json").read_text()), summary)
    except Exception as error:
        logger.warning("model card not written (%s: %s)", type(error).__name__, error)
    if state.args.push_to_hub:
        repo_id = state.args.hub_model_id or state.run_dir.resolve().name
        summary["hub_url"] = push_to_hub(merged, repo_id, state.args.hub_private_repo, state.step)


def write_model_card(folder: Path, config: dict[str, dict[str, Any]], summary: dict[str, Any]) -> Path:
    """README.md and grpo_config.yaml in ``folder``, the run's merged/ (the folder a user loads or pushes).
    ``config``: the run's ``grpo`` / ``model`` / ``data`` option dicts; ``summary``: the run's, with
    its ``steps`` and, when it evaluated, ``eval_before`` / ``eval_after``. Returns the card's path."""
    grpo, model, data = config["grpo"], config["model"], config["data"]
    flat = {**data, **model, **grpo, **NOT_REPRODUCED}  # one YAML for --config: every option under its own name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(flat, sort_keys=False))
    metadata = {"library_name": "transformers", "tags": ["grpo", "grpo-pipeline", "reasoning"]}
    if hub_id(model["model_name_or_path"]):
        metadata["base_model"] = hub_id(model["model_name_or_path"])
    if hub_id(data["dataset_name"]):
        metadata["datasets"] = [hub_id(data["dataset_name"])]
    rewards = ", ".join(f"`{name}` × {weight:g}" for name, weight in
                        zip(grpo["reward_funcs"], grpo["reward_weights"] or [1.0] * len(grpo["reward_funcs"])))
    lines = [
        "---",
        yaml.safe_dump(metadata, sort_keys=False).strip(),
        "---",
        "",
        f"# {Path(grpo['output_dir']).name}: GRPO with grpo-pipeline",
        "",
        f"Trained from `{model['model_name_or_path']}` with GRPO ({summary['steps']} steps) by grpo-pipeline "
        "(its own loop, cross-checked against TRL's `GRPOTrainer`).",
        "",
        "## Training",
        "",
        f"- Data: `{data['dataset_name']}`" + (f" (config `{data['dataset_config']}`)" if data.get("dataset_config")
                                             else "") + f", prompt template `{data['prompt_template']}`.",
        f"- Each step: {grpo['prompts_per_step']} prompts × {grpo['num_generations']} sampled completions "
        f"(temperature {grpo['temperature']:g}, at most {grpo['max_completion_length']} tokens).",
        f"- Rewards: {rewards}; advantages scaled by `{grpo['scale_rewards']}`; loss `{grpo['loss_type']}`, "
        f"β {grpo['beta']:g}, ε {grpo['epsilon_low']:g}/{grpo['epsilon_high']:g}; lr {grpo['learning_rate']:g} "
        f"({grpo['lr_scheduler_type']}).",
        f"- {'LoRA r ' + str(model['lora_r']) + ', merged into' if model['use_peft'] else 'Full fine-tuning of'} "
        "the weights in this folder.",
        "",
        _reproduce(data),
        "",
        "## Evaluation",
        "",
        *_evaluation(summary),
    ]
    card = folder / CARD_FILE
    card.write_text("\n".join(lines) + "\n")
    return card


def _evaluation(summary: dict[str, Any]) -> list[str]:
    from pipeline.evaluation.evaluate import format_comparison

    rows = [(name, summary[key]) for name, key in (("before GRPO", "eval_before"), ("after GRPO", "eval_after"))
            if summary.get(key)]
    if not rows:
        return ["Not evaluated in this run (`eval_limit` 0); see `scripts/evaluate.py`."]
    after = rows[-1][1]
    title = f"pass@1 (greedy) on {after['split']}, {after['num_problems']} problems"
    return ["```", format_comparison(title, rows).strip("\n"), "```"]


def push_to_hub(folder: Path, repo_id: str, private: bool, step: int) -> str | None:
    """Upload ``folder`` (the model, its card and config) to the hub repository ``repo_id``, made if need be.
    Returns the repository's URL, or None after logging why it failed and the command that retries it: the
    run's files are saved already, so an unreachable hub costs nothing but the upload."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo.repo_id,
                          commit_message=f"grpo-pipeline: GRPO, step {step}")
    except Exception as error:  # network, auth, permissions: reported, never a lost run
        logger.error("push_to_hub %s failed (%s: %s); the model is saved in %s. Retry with: "
                     "hf upload %s %s", repo_id, type(error).__name__, error, folder, repo_id, folder)
        return None
    logger.info("pushed %s to %s", folder, repo.url)
    return str(repo.url)
