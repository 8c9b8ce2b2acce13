"""Per-token log-probabilities of completions, without full-vocabulary float32 logits for a whole batch."""

from __future__ import annotations

import torch


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)[..., index]`` one row at a time, so only one row's float32 copy exists.

    logits: [B, T, V]; index: [B, T] → [B, T]
    """
    rows = []
    for row_logits, row_index in zip(logits, index):  # [T, V], [T]
        row_logits = _at_least_float32(row_logits)
        picked = torch.gather(row_logits, -1, row_index.unsqueeze(-1)).squeeze(-1)  # [T]
        rows.append(picked - torch.logsumexp(row_logits, dim=-1))
    return torch.stack(rows)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's distribution, one row at a time: [B, T, V] → [B, T]."""
    rows = []
    for row_logits in logits:  # [T, V]
        logp = torch.log_softmax(_at_least_float32(row_logits), dim=-1)
        rows.append(-(logp.exp() * logp).sum(-1))
    return torch.stack(rows)


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_length: int
                 ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Drop the columns that are padding in every row: the prompts' shared left padding and the
    completion positions after every row has ended. The kept tokens' log-probs do not change (padding
    is masked out of attention, and rotary positions are relative), but the model sees fewer tokens.

    input_ids, attention_mask: [B, P + T] left-padded prompt then right-padded completion.
    Returns the trimmed [B, P' + T'] pair and T'.

    >>> ids = torch.tensor([[0, 0, 5, 6, 7, 0], [0, 4, 5, 6, 0, 0]])  # P = 3, T = 3, pad 0
    >>> trimmed, mask, kept = trim_padding(ids, (ids != 0).long(), 3)
    >>> trimmed.tolist(), kept
    ([[0, 5, 6, 7], [4, 5, 6, 0]], 2)
    """
    prompt_width = input_ids.size(1) - completion_length
    first = int(attention_mask[:, :prompt_width].any(dim=0).int().argmax())  # first column any prompt uses
    kept = max(1, int(attention_mask[:, prompt_width:].sum(dim=1).max()))  # completion masks are prefixes
    end = prompt_width + kept
    return input_ids[:, first:end], attention_mask[:, first:end], kept


def completion_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_length: int,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and optionally entropies) of the last ``completion_length`` tokens of each row.

    input_ids, attention_mask: [B, P + T] prompt then completion; returns [B, T] (and [B, T]).
    Logits are divided by the sampling temperature, as the sampler's distribution was.
    ``chunk_size`` rows go through the model at a time (``None``: all at once), each chunk trimmed of
    its all-padding columns (see ``trim_padding``); trimmed positions get log-prob and entropy 0.
    Entropies are detached unless ``entropy_grad`` (an entropy bonus trains on them; it keeps each row's
    float32 log-softmax for the backward pass).
    """
    chunk_size = chunk_size or input_ids.size(0)
    all_logps, all_entropy = [], []
    for start in range(0, input_ids.size(0), chunk_size):
        ids, mask, kept = trim_padding(input_ids[start : start + chunk_size],
                                       attention_mask[start : start + chunk_size], completion_length)  # [b, P' + T']
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=kept + 1).logits  # [b, T' + 1, V]
        logits = logits[:, :-1, :]  # [b, T', V]: position t predicts completion token t
        if temperature != 1.0:  # a division at 1.0 would only copy the logits
            logits = logits / temperature
        targets = ids[:, -kept:]  # [b, T']
        pad = (0, completion_length - kept)
        all_logps.append(torch.nn.functional.pad(selective_log_softmax(logits, targets), pad))  # [b, T]
        if with_entropy:
            with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
                source = logits if entropy_grad else logits.detach()
                all_entropy.append(torch.nn.functional.pad(entropy_from_logits(source), pad))
    return torch.cat(all_logps), (torch.cat(all_entropy) if with_entropy else None)
