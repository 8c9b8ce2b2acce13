"""The vLLM engine's KV-cache size on CPU; runs without vLLM (the engine: tests/pipeline/grpo/test_vllm_engine.py,
evaluation through it: tests/pipeline/evaluation/test_evaluate_vllm.py)."""

import pytest

from pipeline.tiny import build_char_llama
from pipeline.toy import ALPHABET, save_model
from pipeline.vllm_generation import KV_CACHE_FLOOR_BYTES, context_length, kv_cache_bytes


@pytest.fixture(scope="module")
def char_llama_dir(tmp_path_factory):
    model, tokenizer = build_char_llama(ALPHABET, seed=1)
    return str(save_model(model, tokenizer, tmp_path_factory.mktemp("char-llama")))


def test_kv_cache_holds_every_sequence_at_full_length(char_llama_dir):
    # 2 layers x 4 KV heads x head size 32, keys and values, float32: 2 * 2 * 4 * 32 * 4 = 2048 bytes a token.
    assert kv_cache_bytes(char_llama_dir, sequences=1000, max_model_length=64) == 1.25 * 1000 * 64 * 2048
    assert kv_cache_bytes(char_llama_dir, sequences=2000, max_model_length=64) == 1.25 * 2000 * 64 * 2048


def test_kv_cache_has_a_floor_for_small_batches(char_llama_dir):
    assert kv_cache_bytes(char_llama_dir, sequences=4, max_model_length=16) == KV_CACHE_FLOOR_BYTES == 64 * 2**20


def test_context_length_is_the_models_own(char_llama_dir):
    assert context_length(char_llama_dir) == 64  # build_char_llama's positions: the default KV cache's length
