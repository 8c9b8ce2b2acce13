"""Group sampling for GRPO rollouts, written for decode speed.

``transformers``' ``generate`` with ``num_return_sequences=G`` copies each prompt G times before the
prefill and grows its KV cache by concatenation at every token. Here each prompt is prefilled once, its
keys/values are copied into the G rows of a preallocated (static) cache, and every prompt of the batch
decodes together. Each group draws from its own seeded generator, so a group's samples do not depend on
which other prompts share its batch or process.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    num_generations: int  # G samples per prompt
    max_new_tokens: int
    temperature: float  # 0: greedy decoding (argmax)
    top_p: float
    eos_ids: tuple[int, ...]
    pad_token_id: int
    ignore_eos: bool = False  # benchmark mode: EOS can never be drawn


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering as transformers' ``TopPLogitsWarper``: drop the least likely tokens whose total
    probability is at most ``1 - top_p``, always keeping the most likely one. logits: [B, V] → [B, V]."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=False)  # [B, V]
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - top_p)
    drop_sorted[:, -1] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def left_pad(prompts: list[torch.Tensor], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows → (ids [P, L], mask [P, L]) padded on the left."""
    width = max(p.numel() for p in prompts)
    ids = prompts[0].new_full((len(prompts), width), pad_token_id)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - prompt.numel() :] = prompt
        mask[row, width - prompt.numel() :] = 1
    return ids, mask


def right_pad(blocks: list[torch.Tensor], pad_token_id: int) -> torch.Tensor:
    """Row blocks of different widths ([n_i, T_i]) → one [sum n_i, max T_i] tensor padded on the right."""
    width = max(block.size(1) for block in blocks)
    return torch.cat([torch.nn.functional.pad(block, (0, width - block.size(1)), value=pad_token_id) for block in blocks])


def _draw(logits: torch.Tensor, params: SamplingParams, generators: list[torch.Generator]) -> torch.Tensor:
    """One token per row: [B, V] logits of B = len(generators) * G rows → [B]."""
    if params.ignore_eos:
        logits = logits.clone()
        logits[:, list(params.eos_ids)] = float("-inf")
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / params.temperature
    probs = top_p_filter(logits, params.top_p).softmax(dim=-1)  # [B, V]
    G = params.num_generations
    draws = [torch.multinomial(probs[i * G : (i + 1) * G], 1, generator=gen) for i, gen in enumerate(generators)]
    return torch.cat(draws).squeeze(1)  # [B]


def cache_keyword(model) -> str:
    """The keyword the model's forward takes its KV cache by: ``cache`` (transformers' new name, the old one
    warns) or ``past_key_values`` (older transformers, remote code). Read from the innermost model's signature
    (through PEFT and DDP wrappers): a keyword it does not take would be dropped silently, decoding with no cache."""
    inner = model
    while True:
        if hasattr(inner, "get_base_model"):
            inner = inner.get_base_model()
        elif isinstance(getattr(inner, "module", None), torch.nn.Module):
            inner = inner.module
        else:
            break
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


@torch.no_grad()
def sample_groups(model, prompts: list[torch.Tensor], seeds: list[int], params: SamplingParams,
                  finished_everywhere: Callable[[bool], bool] | None = None,
                  rows_done: Callable[[int], None] | None = None,
                  stopped: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
                  check_every: int | None = None) -> torch.Tensor:
    """G sampled completions for each prompt, groups contiguous: [P * G, T] with T <= max_new_tokens.

    prompts: P rows of token ids (any lengths); seeds: one per prompt. After a row's first EOS it holds
    ``pad_token_id``; decoding stops early once every row has finished, and groups whose rows have all
    finished leave the batch (see ``_groups_to_keep``).

    finished_everywhere: with parameters sharded over processes (ZeRO-3, FSDP) every process must run the
    same forward passes; this collective stop test (this process finished -> all have) keeps them in step,
    and finished groups then stay in the batch, so that no process decodes an empty one.
    rows_done: called with the number of rows finished so far whenever it grows (progress per completion).
    stopped: given the tokens so far of the rows still in the batch ([rows, t]) and how many arrived since its
    last call, which of them have reached a stop of their own (a stop sequence's text, say;
    ``pipeline.generation.StopStrings``): they finish as at EOS.
    check_every: decode steps between the checks that copy to the host (all finished? stops, progress);
    default 1 on a CPU, 8 on an accelerator, where each copy waits for the device. The tokens are the same.
    """
    from transformers import DynamicCache, StaticCache

    device, G = model.device, params.num_generations
    ids, mask = left_pad([p.to(device) for p in prompts], params.pad_token_id)  # [P, L]
    with torch.device(device):  # the caches make their counters on the default device
        prefill_cache = DynamicCache(config=model.config)
        cache = StaticCache(config=model.config, max_cache_len=ids.size(1) + params.max_new_tokens)
    keyword = cache_keyword(model)
    prefill = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1, **{keyword: prefill_cache})
    prompt_cache = prefill.cache if "cache" in prefill else prefill.past_key_values  # the output's name follows suit
    for static_layer, prompt_layer in zip(cache.layers, prompt_cache.layers):
        static_layer.update(prompt_layer.keys.repeat_interleave(G, 0), prompt_layer.values.repeat_interleave(G, 0))
    rows = ids.size(0) * G
    # The whole cache width is attendable except the prompts' left padding; causality hides the future.
    attention_mask = torch.cat([mask.repeat_interleave(G, 0), mask.new_ones(rows, params.max_new_tokens)], 1)
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    eos = torch.tensor(params.eos_ids, device=device)
    tokens = torch.full((rows, params.max_new_tokens), params.pad_token_id, dtype=torch.long, device=device)
    row_index = torch.arange(rows, device=device)  # the output row of each row still decoding
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    # Checking "all finished" copies to the host; on an accelerator only every few tokens, so the
    # decode loop queues work without waiting.
    check_every = check_every or (1 if device.type == "cpu" else 8)
    logits = prefill.logits[:, -1].repeat_interleave(G, 0)  # [P * G, V]
    reported = 0  # rows reported finished to rows_done
    for t in range(params.max_new_tokens):
        next_tokens = torch.where(finished, params.pad_token_id, _draw(logits, params, generators))  # [rows]
        tokens[row_index, t] = next_tokens
        finished |= torch.isin(next_tokens, eos)
        check = (t + 1) % check_every == 0
        if stopped is not None and check:  # decodes text on the host: every few tokens on an accelerator
            hit = stopped(tokens[row_index, : t + 1], check_every)
            if check_every > 1 and bool((hit & ~finished).any()):
                _pad_after_stops(tokens, row_index[hit & ~finished], t, check_every, stopped, params.pad_token_id)
            finished |= hit
        if rows_done is not None and check:
            done = rows - row_index.numel() + int(finished.sum())  # rows dropped from the batch had finished
            if done > reported:
                rows_done(reported := done)
        if t + 1 == params.max_new_tokens or (check and _all_finished(finished, finished_everywhere)):
            break
        if check and finished_everywhere is None:  # in step, groups stay: no process decodes an empty batch
            keep = _groups_to_keep(finished, G)
            if keep is not None:
                generators = [gen for gen, kept in zip(generators, keep.tolist()) if kept]
                keep_rows = keep.repeat_interleave(G)
                row_index, finished, next_tokens = row_index[keep_rows], finished[keep_rows], next_tokens[keep_rows]
                attention_mask = attention_mask[keep_rows]
                _drop_cache_rows(cache, keep_rows)
        logits = model(input_ids=next_tokens[:, None], attention_mask=attention_mask, use_cache=True,
                       **{keyword: cache}).logits[:, -1]  # [rows, V]
    if rows_done is not None and reported < rows:  # the cap ended the rest
        rows_done(rows)
    return tokens[:, : t + 1]


def _pad_after_stops(tokens: torch.Tensor, rows: torch.Tensor, t: int, new_tokens: int,
                     stopped: Callable[[torch.Tensor, int], torch.Tensor], pad_token_id: int) -> None:
    """Pad what ``rows`` decoded after their stop among the last ``new_tokens`` steps (up to step ``t``): their
    tokens then equal those of a check after every token, which would have ended them at the stop."""
    for row in rows.tolist():
        for end in range(t + 2 - new_tokens, t + 2):  # tokens[row, :end] as a check after step end - 1 saw them
            if bool(stopped(tokens[row : row + 1, :end], 1)[0]):
                tokens[row, end : t + 1] = pad_token_id
                break


def _all_finished(finished: torch.Tensor, finished_everywhere: Callable[[bool], bool] | None) -> bool:
    done = bool(finished.all())
    return done if finished_everywhere is None else finished_everywhere(done)


def _groups_to_keep(finished: torch.Tensor, G: int, min_fraction: float = 0.25) -> torch.Tensor | None:
    """Groups still decoding ([groups] bool), or None when too few have finished to be worth dropping.

    A finished group is dropped from the batch only once at least ``min_fraction`` of the rows are in
    finished groups: each drop copies the whole cache, so dropping in big bites bounds the copies. A
    group's draws come from its own generator, so dropping other groups never changes its samples.
    """
    done = finished.view(-1, G).all(dim=1)  # [groups]
    return ~done if done.float().mean().item() >= min_fraction else None


def _drop_cache_rows(cache, keep_rows: torch.Tensor) -> None:
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[keep_rows], layer.values[keep_rows]
        layer.batch_size = layer.keys.size(0)
