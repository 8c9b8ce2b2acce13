"""The GPU smoke checks (pipeline/gpu_smoke.py) as gpu-marked tests, skipped without CUDA; and two of them on
CPU in float32, so that the checks themselves keep working between GPU runs."""

from pathlib import Path

import pytest
import torch

from pipeline.arguments import ModelArguments
from pipeline.gpu_smoke import CHECKS, Smoke, build_smollm2_shaped
from pipeline.models import resolve_model_path

CARRIED_TOKENIZER = Path(__file__).resolve().parents[2] / ".gpu-smoke" / "tokenizer"


def smoke_for(tmp_path_factory, on_gpu: bool) -> Smoke:
    tokenizer_dir = CARRIED_TOKENIZER if CARRIED_TOKENIZER.is_dir() else Path(resolve_model_path(ModelArguments()))
    work = tmp_path_factory.mktemp("gpu-smoke")
    return Smoke(build_smollm2_shaped(work / "model", tokenizer_dir, num_layers=30 if on_gpu else 2), work, on_gpu)


@pytest.fixture(scope="module")
def gpu_smoke(tmp_path_factory) -> Smoke:
    return smoke_for(tmp_path_factory, on_gpu=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", list(CHECKS))
def test_gpu_check(gpu_smoke, name):
    assert CHECKS[name](gpu_smoke)


@pytest.mark.slow
def test_the_smoke_checks_run_on_cpu(tmp_path_factory):
    smoke = smoke_for(tmp_path_factory, on_gpu=False)
    assert "32 problems" in CHECKS["evaluation_32"](smoke)
    assert "of 8 greedy completions equal" in CHECKS["sampler_vs_generate"](smoke)
    assert smoke.model_dir.joinpath("tokenizer.json").is_file()
