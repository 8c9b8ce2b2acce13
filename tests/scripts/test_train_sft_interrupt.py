import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sigint_checkpoints_sft_and_resume_matches_an_unbroken_run(tiny_model_dir, tmp_path, resume_and_run_unbroken):
    """A real SFT process gets SIGINT mid-training: it saves, exits 130 saying how to resume, and the
    resumed run reaches the adapter of an uninterrupted run."""
    command = [sys.executable, "scripts/train_sft.py", "--model_name_or_path", str(tiny_model_dir), "--use_peft", "true",
               "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.1", "--max_train_samples", "64",
               "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--lr_scheduler_type", "constant",
               "--use_cpu", "true", "--bf16", "false", "--gradient_checkpointing", "false", "--report_to", "none",
               "--max_length", "512", "--save_steps", "1000", "--logging_steps", "1", "--seed", "0",
               "--merge_adapter", "false", "--disable_tqdm", "true"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = tmp_path / "interrupted"
    process = subprocess.Popen([*command, "--max_steps", "400", "--output_dir", str(run)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    deadline = time.time() + 300
    # Wait until training runs (the Trainer has logged a loss), then interrupt.
    log = []
    while time.time() < deadline:
        line = process.stdout.readline()
        log.append(line)
        if "'loss'" in line and "'epoch'" in line and len(log) > 3:
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    assert "Resume with: --resume_from_checkpoint latest" in stderr
    checkpoints = sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints, "no checkpoint was saved"
    stopped_at = int(checkpoints[-1].name.split("-")[1])
    assert 1 <= stopped_at < 400

    target = stopped_at + 2
    resume_and_run_unbroken(command, env, run, tmp_path / "straight", target)
    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(run / "adapter" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)
    assert json.loads((run / "sft_summary.json").read_text())["train"]["global_step"] == target
