"""Rollout: G sampled completions per prompt, with the masks the loss needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.generation import completion_lengths
from pipeline.grpo.sampling import left_pad, right_pad


@dataclass
class Rollout:
    """A generation batch: prompts repeated G times (groups contiguous) and their completions."""

    prompt_ids: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, T] right-padded
    completion_mask: torch.Tensor  # [N, T] 1 up to and including the first EOS
    is_truncated: torch.Tensor  # [N] bool: no EOS within max_completion_length
    completions: list[str]  # [N] decoded text without special tokens
    group_size: int
    lengths: torch.Tensor  # [N] tokens generated through the first EOS, before mask_truncated_completions
    sampling_logps: torch.Tensor | None = None  # [N, T] the sampler's own log-probs (vLLM), else None

    @property
    def num_completions(self) -> int:
        return self.completion_ids.size(0)

    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)  # [N, P + T]

    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)  # [N, P + T]


def completion_mask(completion_ids: torch.Tensor, eos_ids: set[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask up to and including the first EOS, and whether each row never reached one.

    Works when pad == EOS: the first EOS is kept (and trained), what follows is masked.

    >>> mask, truncated = completion_mask(torch.tensor([[7, 2, 2], [7, 8, 9]]), {2})
    >>> mask.tolist(), truncated.tolist()
    ([[1, 1, 0], [1, 1, 1]], [False, True])
    """
    lengths = completion_lengths(completion_ids, eos_ids)  # [N]
    positions = torch.arange(completion_ids.size(1), device=completion_ids.device)  # [T]
    mask = (positions[None, :] < lengths[:, None]).long()  # [N, T]
    has_eos = torch.zeros_like(lengths, dtype=torch.bool)
    for eos in eos_ids:
        has_eos |= (completion_ids == eos).any(dim=1)
    return mask, ~has_eos


def group_seed(seed: int, step: int, prompt_index: int) -> int:
    """Sampling seed of one prompt's group: the same whichever process or batch generates it."""
    return (seed * 1_000_003 + step * 10_007 + prompt_index) % (2**63 - 1)


def collate_rollout(
    groups: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    pad_token_id: int,
    eos_ids: set[int],
    group_size: int,
    mask_truncated_completions: bool,
    tokenizer,
) -> Rollout:
    """Pad prompts on the left and completions on the right into one Rollout."""
    rows_per_group = torch.tensor([completions.size(0) for _, completions in groups], device=groups[0][0].device)
    prompt_ids, prompt_mask = left_pad([prompt for prompt, _ in groups], pad_token_id)  # [groups, P]
    prompt_ids = prompt_ids.repeat_interleave(rows_per_group, dim=0)  # [N, P]
    prompt_mask = prompt_mask.repeat_interleave(rows_per_group, dim=0)  # [N, P]
    completion_ids = right_pad([completions for _, completions in groups], pad_token_id)  # [N, T]
    mask, truncated = completion_mask(completion_ids, eos_ids)
    lengths = mask.sum(1)  # [N]
    # Rewards read the text and ids up to the first EOS, truncated or not (as TRL's); only the loss masks them.
    texts = tokenizer.batch_decode([row[: int(n)] for row, n in zip(completion_ids, lengths)], skip_special_tokens=True)
    if mask_truncated_completions:
        mask = mask * (~truncated).long()[:, None]
    return Rollout(prompt_ids, prompt_mask, completion_ids, mask, truncated, texts, group_size, lengths)
