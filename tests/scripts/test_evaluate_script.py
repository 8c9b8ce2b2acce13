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


def load_evaluate_script():
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def write_rows(path, answers):
    path.write_text("".join(json.dumps({"prompt": f"Question {i}?", "answer": a}) + "\n" for i, a in enumerate(answers)))
    return path


def test_a_file_given_for_evaluation_is_evaluated_whole_and_the_first_line_says_so(tiny_model_dir, tmp_path):
    """Three text answers: every row evaluated (no hidden hold-out), judged as text, and the first line of the
    output says which rows and why, before the model loads."""
    data = write_rows(tmp_path / "mine.jsonl", ["Paris", "B", "New York"])
    result = run_evaluate("--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(data),
                          "--max_new_tokens", "4", "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    first = result.stderr.splitlines()[0]
    assert first.endswith(f"INFO evaluate: evaluating all 3 rows of {data} (a single file given for evaluation; "
                          "--eval_holdout_size N evaluates a seeded hold-out of N rows instead)"), first
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [r["source"] for r in records] == [f"{data}:{i}" for i in (1, 2, 3)]
    assert [r["gold"] for r in records] == ["Paris", "B", "New York"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["num_problems"], summary["answer_match"], summary["split"]) == (3, "text", str(data))


def test_a_one_row_file_is_evaluated_and_an_explicit_holdout_holds_rows_out(tiny_model_dir, tmp_path, caplog):
    from pipeline.arguments import DataArguments, EvalArguments, ModelArguments

    script, model = load_evaluate_script(), ModelArguments(model_name_or_path=str(tiny_model_dir))
    one = write_rows(tmp_path / "one.jsonl", [7])
    with caplog.at_level("INFO", logger="evaluate"):
        summary = script.main(model, DataArguments(dataset_name=str(one)),
                              EvalArguments(max_new_tokens=2, device="cpu", output_dir=str(tmp_path / "one")))
    assert summary["num_problems"] == 1 and summary["answer_match"] == "numeric"
    assert caplog.messages[0].startswith(f"evaluating the one row of {one} (a single file given for evaluation")
    five = write_rows(tmp_path / "five.jsonl", [1, 2, 3, 4, 5])
    caplog.clear()
    with caplog.at_level("INFO", logger="evaluate"):
        summary = script.main(model, DataArguments(dataset_name=str(five), eval_holdout_size=2),
                              EvalArguments(max_new_tokens=2, device="cpu", output_dir=str(tmp_path / "five")))
    records = [json.loads(line) for line in (tmp_path / "five" / "predictions.jsonl").read_text().splitlines()]
    training = DataArguments(dataset_name=str(five), eval_holdout_size=2).load_splits()  # a training run's split
    assert len(records) == 2 and [r["source"] for r in records] == [e.source for e in training.eval]
    assert caplog.messages[0] == (f"evaluating 2 of the 5 rows of {five}, held out with seed 1234 (--eval_holdout_size "
                                  "2: the rows a training run on this file with that size evaluates on)")


@pytest.mark.parametrize("rows, options, expected", [
    (3, ["--eval_holdout_size", "3"], "error: option --eval_holdout_size: 3, but {data} has only 3 rows; leave it "
                                      "unset to evaluate all 3 rows, or set it below 3"),
    (1, ["--eval_holdout_size", "1"], "error: option --eval_holdout_size: 1, but {data} has only 1 row; leave it "
                                      "unset to evaluate the one row"),
    (0, [], "error: {data}: no usable rows: it holds none; add rows"),
    (3, ["--answer_match", "numeric"], "error: {data}:1: gold answer 'Paris' is not one number and has no '#### N' "
                                       "line; pass the final number (e.g. '18') or the full GSM8K solution; fix the "
                                       "row, or judge answers as text with --answer_match text"),
], ids=["holdout-of-all", "holdout-of-one", "empty", "numeric-on-text"])
def test_tiny_files_and_a_wrong_reading_are_one_line_naming_the_file_and_the_fix(tiny_model_dir, tmp_path, capsys,
                                                                                  rows, options, expected):
    from pipeline.config import run_script

    script = load_evaluate_script()
    data = write_rows(tmp_path / "tiny.jsonl", ["Paris", "B", "New York"][:rows])
    argv = sys.argv
    sys.argv = ["evaluate.py", "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(data),
                "--output_dir", str(tmp_path / "out"), *options]
    try:
        with pytest.raises(SystemExit) as stop:
            run_script(script.main, script.CONFIG_TYPES, description=script.__doc__)
    finally:
        sys.argv = argv
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.strip().splitlines()[-1] == expected.format(data=data), err
    assert "Loading weights" not in err and not (tmp_path / "out").exists()
