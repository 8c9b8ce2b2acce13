"""Rollouts from one vLLM engine in the training process (colocated), and TRL's correction for the
mismatch between vLLM's sampling probabilities and the trainer's.

The engine is built from the policy's starting weights (``model_name_or_path``) and, before every
generation that follows an optimizer update, receives the policy's current weights in place (LoRA merged
into the weights sent: W + ΔW in float32, the policy's own adapters untouched). The sampled token ids go
through our log-prob and loss path unchanged; vLLM's per-token log-probs of them (after temperature) are
kept for the importance-sampling correction. Per-request seeds do not work on CPU, so samples from vLLM
are not reproducible run to run there; the built-in sampler stays the exact, default path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from pipeline.grpo.sampling import SamplingParams, right_pad
from pipeline.vllm_generation import start_llm

logger = logging.getLogger(__name__)

IMPORTANCE_SAMPLING_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def vllm_weights(policy, merged_view=None) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's weights under Hugging Face names, as vLLM's weight loader takes them. With LoRA
    (``merged_view``: a MergedAdapterView, used inside its context) the base weights are W + ΔW and the
    adapter tensors are left out. A tied output embedding is sent as ``lm_head.weight`` too: vLLM's CPU
    build keeps its own copy of it after loading."""
    if merged_view is None:
        yield from ((name, param.detach()) for name, param in policy.named_parameters())
    else:
        with merged_view() as model:
            for name, param in model.named_parameters():
                if "lora_" not in name:
                    yield name.removeprefix("base_model.model.").replace(".base_layer.", "."), param.detach()
    output, embedding = policy.get_output_embeddings(), policy.get_input_embeddings()
    if output is not None and output.weight is embedding.weight:
        yield "lm_head.weight", output.weight.detach()


class VLLMEngine:
    """One in-process vLLM ``LLM``: G samples per prompt from token ids, with their sampling log-probs."""

    def __init__(self, model_dir: str, *, max_model_length: int, batch_sequences: int, gpu_memory_utilization: float,
                 seed: int, enable_sleep_mode: bool = False, kv_cache_memory_bytes: int | None = None):
        """``batch_sequences``: sequences generated at once; on CPU, with no ``kv_cache_memory_bytes``, the KV
        cache is sized for them (``kv_cache_bytes``), not ``gpu_memory_utilization`` of all RAM."""
        on_gpu = torch.cuda.is_available()
        self.sleep_mode = enable_sleep_mode and on_gpu
        self.llm = start_llm(model_dir, max_model_length=max_model_length, batch_sequences=batch_sequences,
                             gpu_memory_utilization=gpu_memory_utilization, seed=seed,
                             kv_cache_memory_bytes=kv_cache_memory_bytes, enable_sleep_mode=self.sleep_mode,
                             logprobs_mode="processed_logprobs")  # log-probs after temperature, as the trainer's
        self.synced_step: int | None = None  # the training step whose weights the engine holds (None: initial)
        self.asleep: set[str] = set()  # what sleep mode has released: "weights", "kv_cache"
        self._sleep()

    def _sleep(self) -> None:
        if self.sleep_mode:
            self.llm.sleep(level=1)
            self.asleep = {"weights", "kv_cache"}

    def _wake(self, tag: str) -> None:
        """Map back what sleep released, before it is written (weights) or used (kv_cache), as TRL does."""
        if tag in self.asleep:
            self.llm.wake_up(tags=[tag])
            self.asleep.discard(tag)

    def _model_runner(self):
        worker = self.llm.llm_engine.model_executor.driver_worker
        return getattr(worker, "worker", worker).model_runner

    @torch.no_grad()
    def load_weights(self, weights: Iterator[tuple[str, torch.Tensor]]) -> None:
        """Copy the given (name, tensor) pairs, checkpoint names, into the engine's model in place (vLLM's
        ``reload_weights``: it fuses q/k/v and gate/up as at load time) and drop its prefix cache."""
        self._wake("weights")
        self._model_runner().reload_weights(weights_iterator=list(weights))
        self.llm.reset_prefix_cache()

    def sample(self, prompts: list[torch.Tensor], params: SamplingParams,
               device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """G completions per prompt: ``(ids [P * G, T], sampling log-probs [P * G, T])`` on ``device``, groups
        contiguous, right-padded with ``params.pad_token_id`` (log-prob 0 there); EOS is kept as the last token."""
        from vllm import SamplingParams as VLLMSamplingParams

        sampling = VLLMSamplingParams(
            n=params.num_generations, max_tokens=params.max_new_tokens, temperature=params.temperature,
            top_p=params.top_p, logprobs=0, stop_token_ids=list(params.eos_ids), ignore_eos=params.ignore_eos,
            min_tokens=params.max_new_tokens if params.ignore_eos else 0)
        self._wake("weights")
        self._wake("kv_cache")
        outputs = self.llm.generate([{"prompt_token_ids": p.tolist()} for p in prompts], sampling, use_tqdm=False)
        self._sleep()
        ids, logps = [], []
        for output in outputs:
            for completion in output.outputs:
                tokens = list(completion.token_ids) or [params.pad_token_id]
                ids.append(torch.tensor(tokens, device=device).unsqueeze(0))
                values = [entry[token].logprob for entry, token in zip(completion.logprobs or [], tokens)]
                logps.append(torch.tensor(values or [0.0], dtype=torch.float32, device=device).unsqueeze(0))
        return right_pad(ids, params.pad_token_id), right_pad(logps, 0.0)


def sampling_importance_weights(old_logps: torch.Tensor, sampling_logps: torch.Tensor, mask: torch.Tensor,
                                mode: str, clip_min: float | None, clip_max: float | None) -> torch.Tensor:
    """TRL's ``vllm_importance_sampling_correction``: the ratio pi_trainer / pi_vllm of the sampled tokens,
    per token (``token_*``: [B, T]) or per sequence (``sequence_*``: [B, 1], the product over its tokens),
    clipped to [clip_min, clip_max] (``*_truncate``) or set to 0 outside it (``*_mask``).

    old_logps: the trainer's log-probs of the sampled tokens under the sampling weights; sampling_logps:
    vLLM's; mask: [B, T] completion mask. A NaN vLLM log-prob counts as no correction (ratio 1).

    >>> old, vllm = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.25, 0.5]]))
    >>> sampling_importance_weights(old, vllm, torch.ones(1, 2), "token_truncate", None, 1.5).tolist()
    [[1.5, 1.0]]
    >>> sampling_importance_weights(old, vllm, torch.ones(1, 2), "sequence_mask", None, 1.5).tolist()
    [[0.0]]
    """
    if mode not in IMPORTANCE_SAMPLING_MODES:
        raise ValueError(f"vllm_importance_sampling_mode must be one of {', '.join(IMPORTANCE_SAMPLING_MODES)}, "
                         f"got {mode!r}")
    diff = torch.nan_to_num((old_logps - sampling_logps) * mask, nan=0.0)  # [B, T]
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True)  # [B, 1]
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    low = clip_min if clip_min is not None else -float("inf")
    high = clip_max if clip_max is not None else float("inf")
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)
