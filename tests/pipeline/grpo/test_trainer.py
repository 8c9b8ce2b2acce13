import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.inputs import local_prompts, prompt_indices
from pipeline.grpo.trainer import reference_logps, setup, train

HERE = Path(__file__).resolve().parent
REWARD = "toy_rewards:digit_fraction"  # a module:function plug-in from this folder


@pytest.fixture(autouse=True)
def plugin_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def grpo_args(output_dir, **overrides):
    values = dict(output_dir=str(output_dir), max_steps=4, prompts_per_step=2, num_generations=4, micro_batch_size=4,
                  max_completion_length=8, reward_funcs=[REWARD, "accuracy"],
                  beta=0.04, learning_rate=5e-3, loss_type="dapo", save_steps=2, logging_steps=1, seed=3)
    values.update(overrides)
    return GRPOArguments(**values)


def lora(path, **overrides):
    return ModelArguments(model_name_or_path=str(path), use_peft=True, lora_r=4, lora_alpha=8, **overrides)


def test_data_order_is_a_seeded_permutation_per_epoch():
    seen = [i for step in range(5) for i in prompt_indices(10, step, 2, seed=0)]
    assert sorted(seen) == list(range(10))  # one epoch: every problem once
    assert prompt_indices(10, 1, 2, seed=0) == prompt_indices(10, 1, 2, seed=0)
    assert prompt_indices(10, 1, 2, seed=1) != prompt_indices(10, 1, 2, seed=0)


def test_reference_is_the_disabled_adapter_and_equals_the_sft_model(tiny_model_dir, mini_gsm8k, tmp_path):
    from pipeline.data import load_gsm8k
    from pipeline.models import load_model

    data = DataArguments(dataset_name=str(mini_gsm8k), grpo_holdout_size=8)
    args = grpo_args(tmp_path, num_iterations=2)
    examples = load_gsm8k(str(mini_gsm8k), "train").examples
    state = setup(args, lora(tiny_model_dir), data, examples)
    with torch.no_grad():  # a non-zero adapter, so policy and reference differ
        for name, p in state.policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    from pipeline.grpo.trainer import generate

    rollout = generate(state, local_prompts(state, 0))
    old, ref = reference_logps(state, rollout)
    sft = load_model(ModelArguments(model_name_or_path=str(tiny_model_dir))).eval()
    from pipeline.grpo.logprobs import completion_logps

    with torch.no_grad():
        expected_ref, _ = completion_logps(sft, rollout.input_ids(), rollout.attention_mask(), rollout.completion_ids.size(1))
    mask = rollout.completion_mask.bool()
    torch.testing.assert_close(ref[mask], expected_ref[mask])
    assert not torch.allclose(old[mask], ref[mask])  # old = the adapted policy, not the reference
    assert sum(p.numel() for p in state.policy.parameters()) < 2 * sum(p.numel() for p in sft.parameters())


def test_decoding_through_a_merged_copy_samples_what_the_adapter_samples(tiny_model_dir, mini_gsm8k, tmp_path):
    from pipeline.data import load_gsm8k
    from pipeline.grpo.trainer import generate

    examples = load_gsm8k(str(mini_gsm8k), "train").examples
    rollouts = {}
    for merge in (True, False):
        state = setup(grpo_args(tmp_path / str(merge), merge_adapter_for_generation=merge, max_completion_length=16),
                      lora(tiny_model_dir), DataArguments(), examples)
        assert (state.merged_view is not None) == merge
        with torch.no_grad():  # the same non-zero adapter in both runs
            generator = torch.Generator().manual_seed(0)
            for name, p in state.policy.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
        rollouts[merge] = generate(state, local_prompts(state, 0))
    assert torch.equal(rollouts[True].completion_ids, rollouts[False].completion_ids)
    from pipeline.grpo.trainer import decoding_view

    assert decoding_view(state.policy, grpo_args(tmp_path, mixed_precision="no")) is not None
    assert decoding_view(state.policy, grpo_args(tmp_path, mixed_precision="bf16")) is None  # autocast rounds W + ΔW


def test_beta_zero_without_lora_loads_no_reference(tiny_model_dir, mini_gsm8k, tmp_path):
    from pipeline.data import load_gsm8k

    examples = load_gsm8k(str(mini_gsm8k), "train").examples
    state = setup(grpo_args(tmp_path, beta=0.0), ModelArguments(model_name_or_path=str(tiny_model_dir)),
                  DataArguments(), examples)
    assert state.ref_model is None and not state.uses_lora
    state = setup(grpo_args(tmp_path / "b", beta=0.1), ModelArguments(model_name_or_path=str(tiny_model_dir)),
                  DataArguments(), examples)
    assert state.ref_model is not None and not any(p.requires_grad for p in state.ref_model.parameters())


def adapter(run_dir):
    return load_file(Path(run_dir) / "adapter" / "adapter_model.safetensors")


def test_resume_reaches_the_same_weights_as_an_unbroken_run(tiny_model_dir, mini_gsm8k, tmp_path):
    from pipeline.data import load_gsm8k

    examples = load_gsm8k(str(mini_gsm8k), "train").examples
    model = lora(tiny_model_dir, lora_dropout=0.1)  # dropout: the resumed random numbers must match too
    straight = train(grpo_args(tmp_path / "straight"), model, DataArguments(), examples)
    broken_dir = tmp_path / "broken"
    train(grpo_args(broken_dir, max_steps=2), model, DataArguments(), examples)  # "interrupted" after step 2
    resumed = train(grpo_args(broken_dir, resume_from_checkpoint="latest"), model, DataArguments(), examples)
    assert resumed["start_step"] == 2 and resumed["steps"] == 4
    a, b = adapter(tmp_path / "straight"), adapter(broken_dir)
    assert a.keys() == b.keys()
    # Bit-identical computation (one process, same order, the checkpoint restores weights, optimizer and RNG
    # exactly): any difference is a bug, not rounding; hence rtol=0 and a tight atol, here and for the losses below.
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
    assert any((a[k] != 0).any() for k in a if "lora_B" in k)  # it did train
    rows = [json.loads(line) for line in (broken_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r, s in zip(rows, straight["history"]):  # bit-identical steps (above): a tight abs, not a rounding bound
        assert r["reward"] == pytest.approx(s["reward"]) and r["loss"] == pytest.approx(s["loss"], abs=1e-6)


def test_gradient_checkpointing_trains_the_same_weights(tiny_model_dir, mini_gsm8k, tmp_path):
    from pipeline.data import load_gsm8k

    examples = load_gsm8k(str(mini_gsm8k), "train").examples
    plain = train(grpo_args(tmp_path / "plain", max_steps=2), lora(tiny_model_dir), DataArguments(), examples)
    recomputed = train(grpo_args(tmp_path / "recomputed", max_steps=2, gradient_checkpointing=True),
                       lora(tiny_model_dir), DataArguments(), examples)
    a, b = adapter(tmp_path / "plain"), adapter(tmp_path / "recomputed")
    # Bit-identical computation (recomputing a forward runs the same kernels on the same shapes, and each LoRA
    # weight gets one gradient term per micro-batch, in the same order): any difference is a bug, not rounding.
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
    assert any((a[k] != 0).any() for k in a if "lora_B" in k)
    # The loss comes from the same first forward (bit-identical, as above): a tight abs, not a rounding bound.
    assert [h["loss"] for h in recomputed["history"]] == pytest.approx([h["loss"] for h in plain["history"]], abs=1e-6)
    state = setup(grpo_args(tmp_path / "on", gradient_checkpointing=True), lora(tiny_model_dir), DataArguments(), examples)
    assert state.policy.get_base_model().is_gradient_checkpointing  # it really recomputed




def test_eval_protocol_evaluates_the_policy_as_lm_evals_task(tiny_model_dir, mini_gsm8k, tmp_path):
    """eval_protocol: gsm8k: the periodic evaluation prompts as lm-eval's 5-shot task (five training problems
    with their whole solutions, then the test question), and its summary says so."""
    from pipeline.grpo.inputs import preflight

    args = grpo_args(tmp_path, max_steps=1, save_steps=0, eval_limit=2, eval_protocol="gsm8k", eval_batch_size=2)
    data = DataArguments(dataset_name=str(mini_gsm8k), grpo_holdout_size=8)
    examples, problems, label = preflight(args, lora(tiny_model_dir), data)
    summary = train(args, lora(tiny_model_dir), data, examples, problems, label)
    records = [json.loads(line) for line in (tmp_path / "eval" / "step-0" / "predictions.jsonl").read_text().splitlines()]
    tests = [json.loads(line) for line in (mini_gsm8k / "test.jsonl").read_text().splitlines()][:2]
    train_rows = [json.loads(line) for line in (mini_gsm8k / "train.jsonl").read_text().splitlines()]
    for record, test in zip(records, tests, strict=True):
        *shots, last = record["prompt"].split("\n\n")
        assert last == f"Question: {test['question']}\nAnswer:" and len(shots) == 5
        for shot in shots:
            question, solution = shot.removeprefix("Question: ").split("\nAnswer: ", 1)
            assert {"question": question, "answer": solution} in train_rows
    assert summary["eval_after"]["protocol"]["name"] == "gsm8k" and summary["eval_after"]["num_problems"] == 2
    assert "gsm8k (lm-eval)" in summary["eval_after"]["split"]
    with pytest.raises(Exception, match="--eval_protocol"):
        grpo_args(tmp_path, eval_protocol="gsm8k_5shot")


def test_sft_and_grpo_leave_their_model_in_the_same_layout(tiny_model_dir, mini_gsm8k, tmp_path):
    """SFT and GRPO both write <output_dir>/adapter and <output_dir>/merged: GRPO starts from SFT's merged/, and
    its own merged/ is loaded the same way by the next stage or an evaluation."""
    from trl import SFTConfig

    from pipeline.data import load_gsm8k
    from pipeline.models import load_model
    from pipeline.sft import SFTScriptArguments, run_sft

    sft, grpo = tmp_path / "sft", tmp_path / "grpo"
    run_sft(SFTScriptArguments(eval_limit=0),
            SFTConfig(output_dir=str(sft), max_steps=1, per_device_train_batch_size=2, bf16=False, use_cpu=True,
                      gradient_checkpointing=False, report_to="none", max_length=256, save_steps=10,
                      disable_tqdm=True),
            lora(tiny_model_dir), DataArguments(max_train_samples=2, grpo_holdout_size=1000))
    examples = load_gsm8k(str(mini_gsm8k), "train").examples
    summary = train(grpo_args(grpo, max_steps=1, save_steps=0), lora(sft / "merged"), DataArguments(), examples)
    assert summary["final"] == str(grpo / "merged")
    for out in (sft, grpo):
        assert (out / "merged" / "config.json").is_file() and (out / "merged" / "tokenizer_config.json").is_file()
        assert (out / "adapter" / "adapter_config.json").is_file()
        assert not (out / "final").exists()
    assert (grpo / "merged" / "README.md").is_file() and (grpo / "merged" / "grpo_config.yaml").is_file()
    load_model(ModelArguments(model_name_or_path=str(grpo / "merged")))
