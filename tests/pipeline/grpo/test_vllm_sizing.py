"""The vLLM engine's KV-cache size on CPU; runs without vLLM (the engine tests are in test_vllm_engine.py)."""

import pytest

from pipeline.config import ConfigError
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.vllm_engine import KV_CACHE_FLOOR_BYTES, kv_cache_bytes
from pipeline.tiny import build_char_llama
from pipeline.toy import ALPHABET, save_model


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


def test_kv_cache_size_option_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="option --vllm_kv_cache_gib: must be > 0 GiB"):
        GRPOArguments(output_dir=str(tmp_path), use_vllm=True, vllm_kv_cache_gib=0)
