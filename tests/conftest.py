"""Shared fixtures: a tiny random Llama built from a real config, saved as a local HF folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.arguments import ModelArguments
from pipeline.data import load_gsm8k
from pipeline.tiny import build_tiny_llama

TAGS = "<reasoning>\n</reasoning>\n<answer>\n</answer>\n#### 0123456789"


def pytest_addoption(parser):
    parser.addoption("--lm-eval", action="store_true",
                     help="run the tests that run lm-evaluation-harness itself (make test-lm-eval; CI runs them)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--lm-eval"):
        return
    elsewhere = pytest.mark.skip(reason="lm-eval parity runs in `make test-lm-eval` (CI runs it), about 6 minutes")
    for item in items:
        if "lm_eval" in item.keywords:
            item.add_marker(elsewhere)


@pytest.fixture(scope="session")
def gsm8k_corpus() -> list[str]:
    examples = load_gsm8k(split="train").examples[:300]
    return [f"{e.question} {e.reasoning} {e.answer}" for e in examples] + [TAGS]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, gsm8k_corpus):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), gsm8k_corpus)


@pytest.fixture(scope="session")
def mini_gsm8k(tmp_path_factory):
    """A folder with train.jsonl (24 problems) and test.jsonl (4) in GSM8K's format."""
    folder = tmp_path_factory.mktemp("mini-gsm8k")
    for split, n in (("train", 24), ("test", 4)):
        rows = load_gsm8k(split=split).examples[:n]
        with (folder / f"{split}.jsonl").open("w") as handle:
            for e in rows:
                handle.write(json.dumps({"question": e.question, "answer": f"{e.reasoning}\n#### {e.answer}"}) + "\n")
    return folder


@pytest.fixture
def tiny_model_args(tiny_model_dir) -> ModelArguments:
    return ModelArguments(model_name_or_path=str(tiny_model_dir))


@pytest.fixture
def resume_and_run_unbroken():
    """After an interrupted training process: run ``command`` resumed from ``run``'s latest checkpoint and,
    from scratch, into ``straight``, both to ``max_steps``; each must exit 0."""
    root = Path(__file__).resolve().parents[1]

    def run_both(command: list[str], env: dict, run: Path, straight: Path, max_steps: int) -> None:
        import processes

        runs = {run: ["--output_dir", str(run), "--resume_from_checkpoint", "latest"],
                straight: ["--output_dir", str(straight)]}
        started = []
        try:  # both at once: each mostly waits on its imports; ended whatever happens
            for folder, extra in runs.items():
                started.append(processes.start([*command, "--max_steps", str(max_steps), *extra], cwd=root, env=env,
                                               log=folder.parent / f"{folder.name}.log"))
            codes = processes.wait_all(started, timeout=300)
        finally:
            for process in started:
                processes.end_group(process)
        for folder, code in zip(runs, codes):
            assert code == 0, (folder.parent / f"{folder.name}.log").read_text()[-2000:]

    return run_both


@pytest.fixture
def meta_default_device():
    """torch's default device is ``meta`` inside the test (restored after): a tensor made without an explicit
    device is a meta tensor, and meeting a model tensor raises, as a CPU tensor meeting a CUDA one does."""
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one state (mixed precision, device) per process: reset it before and after the test."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
