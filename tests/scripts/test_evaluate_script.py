import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_readme_evaluation_on_embedded_model_offline(tmp_path):
    """The README's main job on the real embedded SmolLM2, with the hub unreachable."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--config", "configs/eval_smollm2_cpu.yaml",
         "--limit", "2", "--max_new_tokens", "24", "--output_dir", str(out)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GSM8K test · 2 problems · embedded:SmolLM2-135M-Instruct" in result.stdout
    assert "pass@1 (greedy)" in result.stdout
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in records] == ["18", "3"]
    assert all(r["completion"].strip() for r in records)  # the real model writes text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_problems"] == 2 and 0 < summary["generated_tokens"] <= 48


@pytest.mark.parametrize("num_samples", [0, 2], ids=["greedy", "sampled"])
def test_evaluate_places_every_tensor_on_the_model_device(tiny_model_dir, mini_gsm8k, tmp_path, meta_default_device,
                                                          num_samples):
    """scripts/evaluate.py's main under torch's default device `meta` (see conftest): loading, prompts and
    decoding must all name the evaluation device, as on a GPU."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    evaluate_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate_script)
    from pipeline.arguments import DataArguments, EvalArguments, ModelArguments

    summary = evaluate_script.main(
        ModelArguments(model_name_or_path=str(tiny_model_dir)), DataArguments(dataset_name=str(mini_gsm8k)),
        EvalArguments(limit=2, max_new_tokens=4, num_samples=num_samples, device="cpu", output_dir=str(tmp_path)))
    assert summary["num_problems"] == 2 and summary["generated_tokens"] > 0


def test_evaluate_loads_the_model_on_the_accelerator_by_default(monkeypatch):
    """With no --device, evaluation runs where a GPU machine's user expects it: on CUDA when there is one."""
    from pipeline.arguments import EvalArguments
    from pipeline.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(EvalArguments().device) == torch.device("cuda")
    assert resolve_device(EvalArguments(device="cpu").device) == torch.device("cpu")


def test_a_bad_data_row_is_one_line_before_any_weights_load(tiny_model_dir, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.jsonl").write_text('{"question": "What is 1+1?", "answer": "#### 2"}\n{"question": "q"}\n')
    result = subprocess.run([sys.executable, "scripts/evaluate.py", "--model_name_or_path", str(tiny_model_dir),
                             "--dataset_name", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {tmp_path / 'data' / 'test.jsonl'}:2: missing field 'answer'"), last
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stderr


def run_evaluate(*options: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/evaluate.py", *options], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_use_vllm_on_an_adapter_folder_is_one_line_before_any_weights_load(tiny_model_dir, tmp_path):
    """vLLM takes full weights: an adapter folder is refused by name, pointing at the run's merged/ folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                   LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    result = run_evaluate("--model_name_or_path", str(adapter), "--use_vllm", "true", "--limit", "2",
                          "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"error: option --use_vllm: {adapter} is a LoRA adapter folder; vLLM evaluates full weights: "
                    "give the run's merged/ folder (or leave --use_vllm false)"), last
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed in this venv")
def test_use_vllm_without_vllm_says_which_venv_has_it(tiny_model_dir, tmp_path):
    result = run_evaluate("--model_name_or_path", str(tiny_model_dir), "--use_vllm", "true", "--protocol",
                          "gsm8k_cot_zeroshot", "--limit", "2", "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: option --use_vllm: vLLM is not installed here; run with .venv-vllm/bin/python"), last
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stderr


def test_use_vllm_refuses_what_vllm_would_not_load_or_would_cut_short(tiny_model_dir, tmp_path):
    """A GGUF file inside the folder (vLLM loads the folder's own weights), and a model length that cannot hold
    a protocol's 256 new tokens (vLLM would end such rows early without a word): one line each, before loading."""
    from pipeline.arguments import EvalArguments
    from pipeline.config import ConfigError

    result = run_evaluate("--model_name_or_path", str(tiny_model_dir), "--gguf_file", "model.gguf", "--use_vllm",
                          "true", "--limit", "2", "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == ("error: option --gguf_file: not with --use_vllm (vLLM loads the "
                                                      "folder's own weights); leave one of them out")
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stderr
    result = run_evaluate("--model_name_or_path", str(tiny_model_dir), "--device", "cuda:1", "--use_vllm", "true",
                          "--limit", "2", "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "error: option --device: vLLM runs on cpu here"), result.stderr[-2000:]
    with pytest.raises(ConfigError, match="option --vllm_max_model_length: must exceed the 256 new tokens"):
        EvalArguments(protocol="gsm8k", use_vllm=True, vllm_max_model_length=256)
    EvalArguments(use_vllm=True, vllm_max_model_length=256, max_new_tokens=200)  # the project's template: 200 fit
    EvalArguments(max_new_tokens=4096)  # the built-in decoder has no such length
