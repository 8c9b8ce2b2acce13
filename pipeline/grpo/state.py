"""The runtime state of a GRPO run (built by ``pipeline.grpo.trainer.setup``) and the policy it decodes with."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.data import Example, PromptTemplate
from pipeline.grpo.config import GRPOArguments
from pipeline.models import MergedAdapterView
from rewards.guard import RewardFaults

logger = logging.getLogger(__name__)


@dataclass
class RewardLog:
    """What reward functions log through TRL's callbacks: ``log_extra`` (one value per completion, into
    samples.jsonl) and ``log_metric`` (a scalar, averaged into the step's metrics)."""

    columns: dict[str, list[Any]] = field(default_factory=dict)
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def log_extra(self, name: str, values: list[Any]) -> None:
        self.columns[name] = list(values)

    def log_metric(self, name: str, value: float) -> None:
        self.metrics.setdefault(name, []).append(float(value))

    def take_metrics(self) -> dict[str, float]:
        """The step's logged metrics (means), cleared for the next step."""
        means = {name: sum(values) / len(values) for name, values in self.metrics.items() if values}
        self.metrics.clear()
        return means


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
    examples: list[Example]
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
    entropy_controller: Any | None = None  # use_adaptive_entropy's EntropyController
    vllm: Any | None = None  # use_vllm's VLLMEngine
    reward_loop: Any | None = None  # the AsyncRewardLoop of the run's async reward functions (None: none async)
    reward_log: RewardLog = field(default_factory=lambda: RewardLog())  # TRL's log_extra / log_metric callbacks
    eval_label: str = "held-out problems"  # what the evaluation problems are, for its tables
    finished_everywhere: Any | None = None  # sharded parameters: the decoders' collective stop test (in step)
    show_phase: Callable[[str], None] = lambda phase: None  # what the step is doing now, for the progress bar

    @property
    def policy(self):
        return self.accelerator.unwrap_model(self.model)


def decoding_view(policy, args: GRPOArguments) -> MergedAdapterView | None:
    """A merged-weight view of a LoRA policy to decode with, or None to decode through the adapters."""
    if not args.merge_adapter_for_generation:
        return None
    view = MergedAdapterView(policy)
    # Under bf16/fp16 autocast the merged weight is rounded as a whole, losing a small ΔW.
    if view.supported and args.precision == "no":
        return view
    logger.info("decoding through the LoRA adapters: a merged copy needs float32 weights and no mixed precision")
    return None


def sampling_model(state: GRPOState):
    """The policy to decode with: LoRA merged into a weight copy when allowed, else the policy itself."""
    # decoding_view only keeps a view that is supported.
    return state.merged_view() if state.merged_view is not None else contextlib.nullcontext(state.policy)
