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


def completion_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_length: int,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and optionally entropies) of the last ``completion_length`` tokens of each row.

    input_ids, attention_mask: [B, P + T] prompt then completion; returns [B, T] (and [B, T]).
    Logits are divided by the sampling temperature, as the sampler's distribution was.
    ``chunk_size`` rows go through the model at a time (``None``: all at once).
    """
    chunk_size = chunk_size or input_ids.size(0)
    all_logps, all_entropy = [], []
    for start in range(0, input_ids.size(0), chunk_size):
        ids = input_ids[start : start + chunk_size]  # [b, P + T]
        logits = model(
            input_ids=ids, attention_mask=attention_mask[start : start + chunk_size], logits_to_keep=completion_length + 1
        ).logits  # [b, T + 1, V]
        logits = logits[:, :-1, :] / temperature  # [b, T, V]: position t predicts completion token t
        targets = ids[:, -completion_length:]  # [b, T]
        all_logps.append(selective_log_softmax(logits, targets))
        if with_entropy:
            with torch.no_grad():
                all_entropy.append(entropy_from_logits(logits.detach()))
    return torch.cat(all_logps), (torch.cat(all_entropy) if with_entropy else None)
