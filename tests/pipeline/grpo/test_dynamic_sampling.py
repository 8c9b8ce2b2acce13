"""DAPO's dynamic sampling (no TRL equivalent): zero-spread groups are replaced, within a round cap."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.data import load_gsm8k
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.dynamic_sampling import Scored, extra_prompts, informative_groups, take_groups
from pipeline.grpo.rollout import collate_rollout
from pipeline.grpo.trainer import train
from pipeline.models import load_tokenizer
from rewards import RewardBreakdown
from tolerances import float32_sum_atol

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def plugin_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture(scope="module")
def examples():
    return load_gsm8k(split="train").examples[:40]


def run(tmp_path, name, examples, tiny_model_dir, lora_dropout=0.05, **overrides):
    values = dict(output_dir=str(tmp_path / name), max_steps=3, prompts_per_step=4, num_generations=2,
                  micro_batch_size=8, max_completion_length=6, reward_funcs=["toy_rewards:half_constant"],
                  learning_rate=1e-3, beta=0.0, save_steps=0, seed=5, num_logged_samples=8)
    values.update(overrides)
    train(GRPOArguments(**values), ModelArguments(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=2,
                                                  lora_alpha=4, lora_dropout=lora_dropout), DataArguments(), examples)
    metrics = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (tmp_path / name / "samples.jsonl").read_text().splitlines()]
    return metrics, samples


def test_zero_spread_groups_are_replaced_until_the_batch_is_full(tiny_model_dir, examples, tmp_path):
    plain, _ = run(tmp_path, "plain", examples, tiny_model_dir)
    assert any(m["frac_reward_zero_std"] > 0 for m in plain)  # the reward really leaves some groups flat

    dynamic, samples = run(tmp_path, "dynamic", examples, tiny_model_dir, dynamic_sampling=True,
                           max_dynamic_sampling_rounds=8)
    assert [m["frac_reward_zero_std"] for m in dynamic] == [0.0, 0.0, 0.0]
    assert [m["dynamic_sampling/informative_groups"] for m in dynamic] == [4.0, 4.0, 4.0]
    assert any(m["dynamic_sampling/rounds"] >= 1 for m in dynamic)
    for m in dynamic:  # every extra round samples a whole batch: 4 prompts x 2
        assert m["dynamic_sampling/completions_sampled"] == 8 * (1 + m["dynamic_sampling/rounds"])
    # The step's logged samples (the whole batch) are the kept groups: none of them flat.
    for step in (1, 2, 3):
        rewards = [x["reward"] for x in samples if x["step"] == step]
        assert len(rewards) == 8 and all(rewards[i] != rewards[i + 1] for i in range(0, 8, 2))

    again, _ = run(tmp_path, "again", examples, tiny_model_dir, dynamic_sampling=True, max_dynamic_sampling_rounds=8)
    timing = ("time/", "per_second", "seconds")
    assert [{k: v for k, v in m.items() if not any(t in k for t in timing)} for m in again] == \
        [{k: v for k, v in m.items() if not any(t in k for t in timing)} for m in dynamic]  # reproducible


@pytest.mark.dispatch
def test_the_round_cap_leaves_flat_groups_in_the_batch(tiny_model_dir, examples, tmp_path):
    # No LoRA dropout: its random masks follow the row order, which the capped batch changes (informative groups
    # first), and the updates are compared below.
    capped, _ = run(tmp_path, "capped", examples, tiny_model_dir, lora_dropout=0.0, dynamic_sampling=True,
                    max_dynamic_sampling_rounds=0)
    plain, _ = run(tmp_path, "plain", examples, tiny_model_dir, lora_dropout=0.0)
    assert [m["dynamic_sampling/rounds"] for m in capped] == [0.0, 0.0, 0.0]
    # Nothing resampled: the same batch, rewards and update as without dynamic sampling.
    assert [m["reward"] for m in capped] == [m["reward"] for m in plain]
    # The same rows summed in another order. The loss: a float32 mean over at most train_tokens token terms
    # -A * ratio, with ratio 1 (one update on the batch sampled) and |A| <= 1 (groups of 2 scaled by their std:
    # A = +-1/sqrt(2)): float32_sum_atol(train_tokens, scale=1).
    # grad_norm = sqrt(sum of the squares of all `elements` trainable gradient elements), rounded twice over:
    # - each element g_i is a sum over the same at most train_tokens token terms, here in another order, of
    #   random sign (A = +-1/sqrt(2)) so partial sums of about |g_i|: |dg_i| <= float32_sum_atol(train_tokens,
    #   |g_i|), and |d grad_norm| <= |dg| (triangle inequality) <= float32_sum_atol(train_tokens, grad_norm);
    # - the norm itself: a float32 sum of `elements` squares, partial sums up to grad_norm**2, off by
    #   float32_sum_atol(elements, grad_norm**2), which the square root halves relative to grad_norm:
    #   float32_sum_atol(elements, grad_norm) / 2.
    # An absolute bound of k * eps32 * grad_norm * (sqrt(train_tokens) + sqrt(elements) / 2), about 4e-5 of it.
    elements = sum(t.numel() for t in load_file(tmp_path / "plain" / "adapter" / "adapter_model.safetensors").values())
    assert elements > 0  # the LoRA adapters: the only trainable weights, all in the norm
    for c, p in zip(capped, plain, strict=True):
        assert c["loss"] == pytest.approx(p["loss"], abs=float32_sum_atol(p["train_tokens"], scale=1.0))
        norm = p["grad_norm"]
        assert norm > 0
        tolerance = float32_sum_atol(p["train_tokens"], scale=norm) + float32_sum_atol(elements, scale=norm) / 2
        assert c["grad_norm"] == pytest.approx(norm, abs=tolerance)
    assert [m["dynamic_sampling/informative_groups"] for m in capped] == [
        4 * (1 - m["frac_reward_zero_std"]) for m in plain]


def test_take_groups_reassembles_the_chosen_groups(tiny_model_dir, examples):
    from pipeline.arguments import ModelArguments as MA

    tokenizer = load_tokenizer(MA(model_name_or_path=str(tiny_model_dir)))
    eos = {tokenizer.eos_token_id}

    def scored(seed, lengths):
        g = torch.Generator().manual_seed(seed)
        prompts = [torch.randint(5, 50, (n,), generator=g) for n in lengths]
        groups = [(p, torch.randint(5, 50, (2, 3 + i), generator=g)) for i, p in enumerate(prompts)]
        rollout = collate_rollout(groups, pad_token_id=tokenizer.pad_token_id, eos_ids=eos, group_size=2,
                                  mask_truncated_completions=False, tokenizer=tokenizer)
        rewards = torch.arange(2 * len(lengths), dtype=torch.float32) + 10 * seed
        breakdown = RewardBreakdown(["r"], [rewards.tolist()], rewards.tolist())
        return Scored([(seed * 100 + i, examples[i]) for i in range(len(lengths))], rollout, rewards, breakdown), groups

    (a, a_groups), (b, b_groups) = scored(1, [3, 5]), scored(2, [4])
    out = take_groups([(a, 1), (b, 0)], pad_token_id=tokenizer.pad_token_id, eos_ids=eos,
                      mask_truncated_completions=False, tokenizer=tokenizer)
    assert [position for position, _ in out.batch] == [101, 200]
    assert out.rewards.tolist() == [12.0, 13.0, 20.0, 21.0] == out.breakdown.total == out.breakdown.per_function[0]
    for row, (prompt, completion) in zip(range(0, 4, 2), [a_groups[1], b_groups[0]]):
        assert out.rollout.prompt_ids[row][out.rollout.prompt_mask[row].bool()].tolist() == prompt.tolist()
        width = completion.size(1)
        assert out.rollout.completion_ids[row : row + 2, :width].tolist() == completion.tolist()
    assert out.rollout.completions[2:] == b.rollout.completions


def test_extra_prompts_are_seeded_apart_from_the_main_stream(examples):
    first = extra_prompts(examples, step=3, round_index=1, count=4, seed=5, process_index=0)
    assert first == extra_prompts(examples, step=3, round_index=1, count=4, seed=5, process_index=0)
    assert first != extra_prompts(examples, step=3, round_index=2, count=4, seed=5, process_index=0)
    assert first != extra_prompts(examples, step=3, round_index=1, count=4, seed=5, process_index=1)
    assert all(position >= 10**7 for position, _ in first)
    assert informative_groups(torch.tensor([0.0, 0.0, float("nan"), 1.0]), 2) == [False, False]


def test_normalize_then_sum_keeps_groups_whose_functions_differ_though_their_totals_do_not(tiny_model_dir, examples,
                                                                                           tmp_path):
    """even_length + 2 x odd_length_half is 1 for every completion, so every total is flat; yet each function
    differs inside a group whose completions' lengths differ in parity, and normalize_then_sum gives those groups
    advantages: they are informative, and dynamic sampling must keep them."""
    metrics, samples = run(tmp_path, "nts", examples, tiny_model_dir, dynamic_sampling=True,
                           max_dynamic_sampling_rounds=0, multi_objective_aggregation="normalize_then_sum",
                           reward_funcs=["toy_rewards:even_length", "toy_rewards:odd_length_half"],
                           reward_weights=[1.0, 2.0])
    assert {x["reward"] for x in samples} == {1.0}
    mixed_parity = []
    for step in (1, 2, 3):
        lengths = [len(x["completion"]) % 2 for x in samples if x["step"] == step]  # the whole batch: 4 groups of 2
        mixed_parity.append(float(sum(lengths[i] != lengths[i + 1] for i in range(0, 8, 2))))
    assert any(mixed_parity)
    assert [m["dynamic_sampling/informative_groups"] for m in metrics] == mixed_parity
