"""Shared fixtures: a tiny random Llama built from a real config, saved as a local HF folder."""

from __future__ import annotations

import pytest

from pipeline.arguments import ModelArguments
from pipeline.data import load_gsm8k
from pipeline.tiny import build_tiny_llama

TAGS = "<reasoning>\n</reasoning>\n<answer>\n</answer>\n#### 0123456789"


@pytest.fixture(scope="session")
def gsm8k_corpus() -> list[str]:
    examples = load_gsm8k(split="train").examples[:300]
    return [f"{e.question} {e.reasoning} {e.answer}" for e in examples] + [TAGS]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, gsm8k_corpus):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), gsm8k_corpus)


@pytest.fixture
def tiny_model_args(tiny_model_dir) -> ModelArguments:
    return ModelArguments(model_name_or_path=str(tiny_model_dir))
