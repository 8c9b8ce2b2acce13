"""Faults that must not cost a run: misbehaving rewards, NaN losses, signals, crashes while saving."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import processes
import pytest
import torch
from safetensors.torch import load_file

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.checkpoint import find_checkpoint, save_checkpoint
from pipeline.data import load_gsm8k
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.run_files import TrainingStopped
from pipeline.grpo.trainer import train
from tolerances import sgd_weight_tolerance

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
REWARD = "toy_rewards:digit_fraction"


@pytest.fixture(autouse=True)
def plugin_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture(scope="module")
def examples():
    return load_gsm8k(split="train").examples[:12]


def args(output_dir, **overrides):
    values = dict(output_dir=str(output_dir), max_steps=4, prompts_per_step=2, num_generations=4, micro_batch_size=4,
                  max_completion_length=8, reward_funcs=[REWARD], beta=0.04, learning_rate=5e-3, save_steps=0,
                  seed=3, max_prompt_length=1024)
    values.update(overrides)
    return GRPOArguments(**values)


def lora(path):
    return ModelArguments(model_name_or_path=str(path), use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0)


def test_a_reward_that_always_raises_stops_the_run_with_a_checkpoint(tiny_model_dir, examples, tmp_path):
    with pytest.raises(TrainingStopped) as info:
        train(args(tmp_path, reward_funcs=[REWARD, "toy_rewards:always_raises"]), lora(tiny_model_dir), DataArguments(),
              examples)
    message = str(info.value)
    assert "reward 'toy_rewards:always_raises' lost 100% of its values" in message
    assert "ValueError: broken plug-in" in message and "--resume_from_checkpoint latest" in message
    assert find_checkpoint(tmp_path, "latest").name == "step-0000001"


def test_occasional_reward_faults_are_tolerated(tiny_model_dir, examples, tmp_path):
    summary = train(args(tmp_path, reward_funcs=[REWARD, "toy_rewards:flaky"], max_reward_error_rate=0.6),
                    lora(tiny_model_dir), DataArguments(), examples)
    assert summary["steps"] == 4 and not summary["interrupted"]


def test_nan_loss_skips_the_update_and_stops_after_m_steps(tiny_model_dir, examples, tmp_path, monkeypatch):
    import pipeline.grpo.update as trainer  # the module whose optimizer updates call grpo_loss

    real_loss = trainer.grpo_loss
    calls = {"n": 0}

    def poisoned(*a, **kw):  # from step 3 on, NaN losses (fault injection; 2 micro-batches per step)
        out = real_loss(*a, **kw)
        calls["n"] += 1
        if calls["n"] > 4:
            out.loss = out.loss * torch.nan
        return out

    monkeypatch.setattr(trainer, "grpo_loss", poisoned)
    with pytest.raises(TrainingStopped, match="2 consecutive steps had a NaN/inf loss"):
        train(args(tmp_path, max_steps=10, max_nonfinite_steps=2), lora(tiny_model_dir), DataArguments(), examples)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_updates"] for r in rows] == [0.0, 0.0, 1.0, 1.0]
    saved = load_file(find_checkpoint(tmp_path, "latest") / "model" / "adapter_model.safetensors")
    assert all(torch.isfinite(v).all() for v in saved.values())  # the last good weights, no NaN

    # The saved weights are those after step 2: the same as a clean 2-step run.
    monkeypatch.setattr(trainer, "grpo_loss", real_loss)
    train(args(tmp_path / "clean", max_steps=2), lora(tiny_model_dir), DataArguments(), examples)
    clean = load_file(tmp_path / "clean" / "adapter" / "adapter_model.safetensors")
    for key, value in clean.items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=1e-6)


def test_a_crash_while_saving_leaves_the_previous_checkpoint_whole(tiny_model_dir, tmp_path, monkeypatch):
    from pipeline.models import add_lora, load_model

    model = add_lora(load_model(lora(tiny_model_dir)), lora(tiny_model_dir))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {}, keep=3)

    def disk_full(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path, 2, model, optimizer, scheduler, {}, keep=3)
    latest = find_checkpoint(tmp_path, "latest")
    assert latest.name == "step-0000001"
    assert {p.name for p in latest.iterdir()} == {"model", "optimizer.pt", "scheduler.pt", "trainer_state.json"}
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith((".step", "step"))] == ["step-0000001"]


def test_only_the_newest_k_checkpoints_are_kept(tiny_model_dir, tmp_path):
    from pipeline.models import load_model

    model = load_model(ModelArguments(model_name_or_path=str(tiny_model_dir)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for step in range(1, 5):
        save_checkpoint(tmp_path, step, model, optimizer, scheduler, {}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert names == ["step-0000003", "step-0000004"] and find_checkpoint(tmp_path, "latest").name == "step-0000004"


@pytest.mark.slow
def test_sigint_saves_at_a_step_boundary_and_resume_matches_an_unbroken_run(tiny_model_dir, mini_gsm8k, tmp_path,
                                                                              resume_and_run_unbroken):
    """A real process gets SIGINT mid-run; it checkpoints, says how to resume, and the resumed run
    reaches the same weights as a run that was never interrupted."""
    command = [sys.executable, "scripts/train_grpo.py", "--model_name_or_path", str(tiny_model_dir), "--use_peft", "true",
               "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.0", "--dataset_name", str(mini_gsm8k),
               "--grpo_holdout_size", "12", "--prompts_per_step", "2", "--num_generations", "4",
               "--micro_batch_size", "4", "--max_completion_length", "8", "--reward_funcs", REWARD,
               "--beta", "0.04", "--learning_rate", "5e-3", "--save_steps", "0", "--seed", "3"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    run = tmp_path / "interrupted"
    log, metrics = tmp_path / "interrupted.log", run / "metrics.jsonl"  # a file: a full pipe would stall the run
    process = processes.start([*command, "--max_steps", "200", "--output_dir", str(run)], cwd=ROOT, env=env, log=log)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 2):
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=300)
    finally:
        processes.end_group(process)  # gone, even when it did not stop
    stderr = log.read_text()
    assert process.returncode == 130, stderr[-2000:]
    assert "Resume with: --resume_from_checkpoint latest" in stderr
    stopped_at = int(json.loads((find_checkpoint(run, "latest") / "trainer_state.json").read_text())["step"])
    assert 2 <= stopped_at < 200 and len(metrics.read_text().splitlines()) == stopped_at

    target = stopped_at + 2
    resume_and_run_unbroken(command, env, run, tmp_path / "straight", target)
    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(run / "adapter" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)


@pytest.mark.dispatch
@pytest.mark.parametrize("loss_type", ["dapo", "bnpo", "grpo"])
def test_out_of_memory_halves_the_micro_batch_and_keeps_the_update(tiny_model_dir, examples, tmp_path, monkeypatch,
                                                                     loss_type):
    """An OOM in the training forward (injected: CPU has none) retries the step with half the micro-batch;
    the weights must match the same run that never ran out of memory, for bnpo too (defined per configured
    micro-batch: its denominators stay those of the configured cut).

    Plain SGD in place of the run's AdamW, as in test_update.py: AdamW divides each gradient element by its own
    RMS + 1e-8, so the rounding of an element near 0 comes out times up to lr / 1e-8 (no float32 tolerance
    covers that), and its first step would hide a wrong loss scale (bnpo's denominators)."""
    import pipeline.grpo.trainer as trainer
    import pipeline.grpo.update as update  # the optimizer updates' forward passes

    real, largest = update.completion_logps, {}

    def sgd(run):
        def make(params, lr, weight_decay=0.0):  # as trainer.setup calls torch.optim.AdamW
            optimizer = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
            steps = largest.setdefault(run, [])  # the largest gradient element of each step, clipped as applied
            optimizer.register_step_pre_hook(lambda opt, a, kw: steps.append(
                max(p.grad.abs().max().item() for g in opt.param_groups for p in g["params"] if p.grad is not None)))
            return optimizer
        return make

    def limited_memory(model, input_ids, *a, **kw):
        if torch.is_grad_enabled() and input_ids.size(0) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(model, input_ids, *a, **kw)

    # A tenth of the vocabulary counted as EOS makes completions end at different lengths, so bnpo's
    # per-micro-batch token counts differ between a cut of 4 and a cut of 2.
    monkeypatch.setattr(trainer, "eos_token_ids", lambda model, tokenizer: set(range(5, model.config.vocab_size, 10)))
    settings = dict(max_steps=2, micro_batch_size=4, loss_type=loss_type)
    monkeypatch.setattr(torch.optim, "AdamW", sgd("reference"))
    reference = train(args(tmp_path / "reference", **settings), lora(tiny_model_dir), DataArguments(), examples)
    assert any(0 < h["truncated_rate"] < 1 for h in reference["history"])  # lengths differ
    monkeypatch.setattr(update, "completion_logps", limited_memory)
    monkeypatch.setattr(torch.optim, "AdamW", sgd("oom"))
    summary = train(args(tmp_path / "oom", **settings), lora(tiny_model_dir), DataArguments(), examples)
    assert [h["micro_batch_size"] for h in summary["history"]] == [2.0, 2.0]
    assert len(largest["reference"]) == len(largest["oom"]) == 2  # one update a step, both stepped
    a = load_file(tmp_path / "reference" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "oom" / "adapter" / "adapter_model.safetensors")
    # The same two SGD steps of exact values, the gradients summed in another order (micro-batches 2 + 2 + 2 + 2
    # against 4 + 4): each element a float32 sum over the step's 8 rows, n = train_tokens (every prompt +
    # completion token of the batch), of terms up to the largest gradient element (scale).
    rtol, atol = sgd_weight_tolerance(lr=args(tmp_path).learning_rate, updates=2,
                                      tokens=max(h["train_tokens"] for h in reference["history"]),
                                      grad_scale=max(largest["reference"] + largest["oom"]))
    moved = max(a[key].abs().max().item() for key in a if "lora_B" in key)  # LoRA's B starts at 0
    assert moved > 1e3 * atol, (moved, atol)  # training moved the weights far beyond the rounding allowed
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=rtol, atol=atol, msg=lambda m, key=key: f"{key}: {m}")


def test_out_of_memory_while_generating_halves_the_samples_per_call(tiny_model_dir, examples, tmp_path, monkeypatch, caplog):
    import pipeline.grpo.trainer as trainer

    real = trainer.sample_groups

    def limited_memory(model, prompts, seeds, params, *rest):
        if len(prompts) * params.num_generations > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(model, prompts, seeds, params, *rest)

    monkeypatch.setattr(trainer, "sample_groups", limited_memory)
    summary = train(args(tmp_path, max_steps=1), lora(tiny_model_dir), DataArguments(), examples)
    assert summary["steps"] == 1
    assert "out of memory while generating: retrying with 1 samples at a time" in caplog.text


def test_out_of_memory_building_the_merged_copy_falls_back_to_the_adapters(tiny_model_dir, examples, tmp_path,
                                                                             monkeypatch, caplog):
    from pipeline.models import MergedAdapterView

    def no_memory(self):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(MergedAdapterView, "_merged_weights", no_memory)
    summary = train(args(tmp_path, max_steps=2), lora(tiny_model_dir), DataArguments(), examples)
    assert summary["steps"] == 2
    assert caplog.text.count("decoding through the LoRA adapters from now on") == 1  # given up once, not per step


@pytest.mark.parametrize("phase", ["generate", "train"])
def test_a_signal_in_each_phase_finishes_the_step_then_checkpoints(tiny_model_dir, examples, tmp_path, monkeypatch, phase):
    """SIGINT delivered to this (real) process while step 2 is generating, or while it is in the training
    forward: the step completes, is checkpointed, and resuming reaches the unbroken run's weights."""
    import pipeline.grpo.trainer as trainer
    import pipeline.grpo.update as update  # the optimizer updates' forward passes

    module = trainer if phase == "generate" else update
    target = "sample_groups" if phase == "generate" else "completion_logps"
    real = getattr(module, target)
    sent = {"done": False}

    def send_sigint_once(*a, **kw):
        in_phase = phase == "generate" or torch.is_grad_enabled()
        metrics = tmp_path / "run" / "metrics.jsonl"
        step_one_done = metrics.is_file() and len(metrics.read_text().splitlines()) == 1
        if in_phase and not sent["done"] and step_one_done:
            sent["done"] = True
            os.kill(os.getpid(), signal.SIGINT)  # the handler only sets a flag: this call carries on
        return real(*a, **kw)

    monkeypatch.setattr(module, target, send_sigint_once)
    summary = train(args(tmp_path / "run", max_steps=4), lora(tiny_model_dir), DataArguments(), examples)
    assert sent["done"] and summary["interrupted"] and summary["steps"] == 2
    assert find_checkpoint(tmp_path / "run", "latest").name == "step-0000002"

    monkeypatch.setattr(trainer, target, real)
    train(args(tmp_path / "run", max_steps=4, resume_from_checkpoint="latest"), lora(tiny_model_dir), DataArguments(),
          examples)
    train(args(tmp_path / "straight", max_steps=4), lora(tiny_model_dir), DataArguments(), examples)
    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)


def test_an_async_reward_keeps_its_event_loop_from_step_to_step(tiny_model_dir, examples, tmp_path):
    """TRL runs async rewards on one persistent loop; a reward bound to its first loop must score every step."""
    import toy_rewards

    toy_rewards._judge_loop.clear()
    summary = train(args(tmp_path, max_steps=3, reward_funcs=["toy_rewards:loop_bound_judge"]),
                    lora(tiny_model_dir), DataArguments(), examples)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 3 and all(r["reward"] is not None for r in rows)
