"""The KV-cache size option of GRPO's vLLM engine; runs without vLLM (the size itself: tests/pipeline/test_vllm_generation.py)."""

import pytest

from pipeline.config import ConfigError
from pipeline.grpo.config import GRPOArguments


def test_kv_cache_size_option_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="option --vllm_kv_cache_gib: must be > 0 GiB"):
        GRPOArguments(output_dir=str(tmp_path), use_vllm=True, vllm_kv_cache_gib=0)
