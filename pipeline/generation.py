"""Batched text generation with Hugging Face ``generate`` for evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Generated:
    """Completions for a batch of prompts: ``texts[i][j]`` is sample j of prompt i."""

    texts: list[list[str]]
    num_tokens: list[list[int]]  # tokens up to and including the first EOS, or the token that completed a stop string


def completion_lengths(completion_ids: torch.Tensor, eos_token_ids: set[int]) -> torch.Tensor:
    """Length of each completion up to and including its first EOS (full width if none).

    >>> completion_lengths(torch.tensor([[5, 2, 2], [5, 6, 7]]), {2}).tolist()
    [2, 3]
    """
    is_eos = torch.zeros_like(completion_ids, dtype=torch.bool)  # [N, T]
    for eos in eos_token_ids:
        is_eos |= completion_ids == eos
    width = completion_ids.shape[1]
    first_eos = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), torch.full_like(is_eos[:, 0], width, dtype=torch.long))
    return torch.clamp(first_eos + 1, max=width)


class StopStrings:
    """Which rows' completions so far contain a stop sequence, read from the text of their last few tokens (as
    lm-eval's stopping criterion does): ``[rows, t]`` token ids -> ``[rows]`` bool. ``new_tokens``: how many
    tokens arrived since the last call (a sampler that checks every few tokens, to spare an accelerator a
    host copy per token, looks back over all of them; the text after the stop is cut off afterwards)."""

    def __init__(self, tokenizer, strings: Sequence[str]):
        self.tokenizer, self.strings = tokenizer, [s for s in strings if s]
        # a stop sequence's own token count, and two more for the tokens a boundary can split it over
        self.lookback = max((len(tokenizer(s, add_special_tokens=False).input_ids) for s in self.strings), default=0) + 2

    def __call__(self, tokens: torch.Tensor, new_tokens: int = 1) -> torch.Tensor:
        tails = self.tokenizer.batch_decode(tokens[:, -(self.lookback + new_tokens - 1) :].tolist())
        return torch.tensor([any(s in tail for s in self.strings) for tail in tails], device=tokens.device)

    def lengths(self, completion_ids: torch.Tensor, eos_ids: set[int]) -> list[int]:
        """How many tokens each finished completion ([N, T], padded after its end) took: through its first EOS
        or through the token that completed a stop sequence, whichever came first; T when neither did.

        Padding is no measure where the pad token is an EOS token (a stopped row's first pad would count).
        """
        lengths = []
        for row, through_eos in zip(completion_ids.tolist(), completion_lengths(completion_ids, eos_ids).tolist()):
            def stops_within(k: int, row=row) -> bool:
                return any(s in self.tokenizer.decode(row[:k]) for s in self.strings)

            low, high = 1, through_eos  # the fewest tokens whose text holds a stop: a search, as it only grows
            if not stops_within(high):
                lengths.append(through_eos)
                continue
            while low < high:
                middle = (low + high) // 2
                low, high = (low, middle) if stops_within(middle) else (middle + 1, high)
            lengths.append(low)
        return lengths


def encode(tokenizer, text: str, device: torch.device | str, add_special_tokens: bool = False) -> torch.Tensor:
    """Token ids ``[L]`` of a rendered prompt, on ``device`` (chat-templated text holds its special tokens).

    The tokenizer's own tensors would be made on torch's default device, not the model's.

    >>> from transformers import PreTrainedTokenizerFast
    >>> from tokenizers import Tokenizer, models
    >>> tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "b": 1}, "a")))
    >>> encode(tok, "b", "cpu")
    tensor([1])
    """
    ids = tokenizer(text, add_special_tokens=add_special_tokens).input_ids
    return torch.tensor(ids, dtype=torch.long, device=device)


def eos_token_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    finished_everywhere=None,
    rows_done=None,
    stop_strings: Sequence[str] = (),
    add_special_tokens: bool = False,
) -> Generated:
    """Generate ``num_return_sequences`` completions for each prompt text (left-padded batch).

    Greedy decoding runs on the rollout sampler (one prefill, a static cache, early stop when every row
    has finished), which gives ``generate``'s tokens faster; sampling uses ``generate``.
    ``finished_everywhere``: with sharded parameters, the collective stop test that keeps processes in step
    (greedy decoding; ``generate``'s own is ``synced_gpus``). See ``sample_groups``.
    ``rows_done``: greedy decoding calls it with the number of prompts finished so far, as it grows.
    ``stop_strings``: greedy decoding also ends a row once its text holds one of these (the text keeps it: cut
    it with ``pipeline.evaluation.protocols.cut_at_stop``). ``add_special_tokens``: greedy decoding encodes the
    prompts with the tokenizer's special tokens (lm-eval's rule for text without a chat template's BOS).
    """
    from transformers import GenerationConfig

    eos_ids = eos_token_ids(model, tokenizer)
    if not do_sample and num_return_sequences == 1:
        stopped = StopStrings(tokenizer, stop_strings) if stop_strings else None
        return _greedy(model, tokenizer, prompts, max_new_tokens, eos_ids, finished_everywhere, rows_done, stopped,
                       add_special_tokens)
    if stop_strings or add_special_tokens:
        raise ValueError("stop_strings and add_special_tokens: greedy decoding of one completion per prompt only")
    # Chat-templated prompts already hold their special tokens.
    encoded = tokenizer(prompts, padding=True, add_special_tokens=False)  # lists: tensors are made on the model's device
    batch = {key: torch.tensor(encoded[key], device=model.device) for key in ("input_ids", "attention_mask")}
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=top_p if do_sample else None,
        top_k=None,
        num_return_sequences=num_return_sequences,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=sorted(eos_ids),
    )
    output = model.generate(**batch, generation_config=config,  # [P * n, prompt_len + T]
                            synced_gpus=finished_everywhere is not None)
    completion_ids = output[:, batch["input_ids"].shape[1] :]  # [P * n, T]
    lengths = completion_lengths(completion_ids, eos_ids).tolist()
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    n = num_return_sequences
    return Generated(
        texts=[texts[i * n : (i + 1) * n] for i in range(len(prompts))],
        num_tokens=[lengths[i * n : (i + 1) * n] for i in range(len(prompts))],
    )


def _greedy(model, tokenizer, prompts: list[str], max_new_tokens: int, eos_ids: set[int],
            finished_everywhere=None, rows_done=None, stopped=None, add_special_tokens: bool = False) -> Generated:
    from pipeline.grpo.sampling import SamplingParams, sample_groups

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
    params = SamplingParams(1, max_new_tokens, 0.0, 1.0, tuple(sorted(eos_ids)), pad)
    ids = [encode(tokenizer, p, model.device, add_special_tokens) for p in prompts]
    completion_ids = sample_groups(model, ids, [0] * len(ids), params, finished_everywhere, rows_done,  # [P, T]
                                   stopped)
    lengths = (stopped.lengths(completion_ids, eos_ids) if stopped is not None
               else completion_lengths(completion_ids, eos_ids).tolist())
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Generated(texts=[[t] for t in texts], num_tokens=[[n] for n in lengths])
