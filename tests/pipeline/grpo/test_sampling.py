import copy

import pytest
import torch

from pipeline.arguments import ModelArguments
from pipeline.data import get_template, render_prompt
from pipeline.generation import eos_token_ids
from pipeline.grpo.sampling import SamplingParams, left_pad, sample_groups, top_p_filter
from pipeline.models import load_model, load_tokenizer

QUESTIONS = ("What is 2+2?", "Tom has 3 apples and buys 4 more bags of 5 apples each. How many apples now?")


@pytest.fixture(scope="module")
def model_and_prompts(tiny_model_dir):
    args = ModelArguments(model_name_or_path=str(tiny_model_dir))
    model, tokenizer = load_model(args).eval(), load_tokenizer(args)
    texts = [render_prompt(tokenizer, get_template("reasoning").messages(q)) for q in QUESTIONS]
    prompts = [tokenizer(t, return_tensors="pt", add_special_tokens=False).input_ids[0] for t in texts]
    assert prompts[0].numel() != prompts[1].numel()  # the batch needs left padding
    return model, tokenizer, prompts


def params_for(model, tokenizer, **overrides) -> SamplingParams:
    values = dict(num_generations=3, max_new_tokens=10, temperature=1.0, top_p=1.0,
                  eos_ids=tuple(sorted(eos_token_ids(model, tokenizer))), pad_token_id=tokenizer.pad_token_id)
    return SamplingParams(**(values | overrides))


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 1.0])
def test_top_p_filter_matches_transformers(top_p):
    from transformers.generation.logits_process import TopPLogitsWarper

    logits = torch.randn(4, 300, generator=torch.Generator().manual_seed(0)) * 3
    expected = TopPLogitsWarper(top_p)(None, logits.clone())
    assert torch.equal(torch.isinf(top_p_filter(logits, top_p)), torch.isinf(expected))


def test_left_pad():
    ids, mask = left_pad([torch.tensor([5, 6, 7]), torch.tensor([8])], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_a_tiny_nucleus_decodes_like_greedy_generate(model_and_prompts):
    """top_p near 0 keeps only the most likely token: every sample must equal transformers' greedy
    decoding of its prompt alone, which checks the shared prefill, the static cache and the padding."""
    model, tokenizer, prompts = model_and_prompts
    params = params_for(model, tokenizer, top_p=1e-9, max_new_tokens=12)
    ours = sample_groups(model, prompts, [1, 2], params)  # [2 * 3, T]
    for index, prompt in enumerate(prompts):
        greedy = model.generate(input_ids=prompt[None], attention_mask=torch.ones_like(prompt[None]), do_sample=False,
                                max_new_tokens=12, pad_token_id=tokenizer.pad_token_id)[0, prompt.numel() :]
        for row in ours[index * 3 : (index + 1) * 3]:
            assert row[: greedy.numel()].tolist() == greedy.tolist()


def test_groups_are_seeded_and_independent_of_their_batch(model_and_prompts):
    model, tokenizer, prompts = model_and_prompts
    params = params_for(model, tokenizer)
    together = sample_groups(model, prompts, [1, 2], params)
    alone = [sample_groups(model, [p], [s], params) for p, s in zip(prompts, [1, 2])]
    for index, part in enumerate(alone):
        assert torch.equal(together[index * 3 : (index + 1) * 3, : part.size(1)], part)
    assert torch.equal(sample_groups(model, prompts[:1], [1], params), alone[0])
    assert not torch.equal(sample_groups(model, prompts[:1], [3], params), alone[0])


def test_rows_hold_padding_after_their_eos_and_ignore_eos_fills_the_cap(model_and_prompts):
    model, tokenizer, prompts = model_and_prompts
    eos = set(eos_token_ids(model, tokenizer))
    # A hot temperature makes EOS likely within a few tokens of a random model.
    tokens = sample_groups(model, prompts, [4, 5], params_for(model, tokenizer, temperature=5.0, max_new_tokens=40))
    ended = 0
    for row in tokens.tolist():
        first = next((i for i, t in enumerate(row) if t in eos), None)
        if first is not None:
            ended += 1
            assert all(t == tokenizer.pad_token_id for t in row[first + 1 :])
    assert ended > 0
    capped = sample_groups(model, prompts, [4, 5], params_for(model, tokenizer, temperature=5.0, max_new_tokens=40,
                                                                    ignore_eos=True))
    assert capped.shape == (6, 40) and not any(t in eos for t in capped.flatten().tolist())


def test_samples_follow_the_tempered_softmax(model_and_prompts):
    model, tokenizer, prompts = model_and_prompts
    peaked = copy.deepcopy(model)
    with torch.no_grad():  # a random model is nearly uniform over its vocabulary; sharpen it so 4000 draws tell
        peaked.lm_head.weight.mul_(6)
    params = params_for(peaked, tokenizer, num_generations=4000, max_new_tokens=1, temperature=0.7)
    first = sample_groups(peaked, prompts[:1], [11], params)[:, 0]  # [4000]
    with torch.no_grad():
        logits = peaked(input_ids=prompts[0][None]).logits[0, -1]  # [V]
    empirical = torch.bincount(first, minlength=logits.numel()).float() / first.numel()
    total_variation = lambda p: 0.5 * (empirical - p).abs().sum().item()  # noqa: E731
    assert total_variation(torch.softmax(logits / 0.7, dim=-1)) < 0.04
    assert total_variation(torch.softmax(logits, dim=-1)) > 0.15  # the check can tell the temperature apart


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_finished_groups_leave_the_batch_without_changing_any_sample(model_and_prompts, temperature):
    """With a third of the vocabulary counted as EOS, groups finish at different steps and leave the
    batch; every group must still equal the same group sampled alone (where nothing leaves)."""
    model, tokenizer, _ = model_and_prompts
    model = copy.deepcopy(model)
    with torch.no_grad():  # a random tiny model repeats one token; noisier weights make its rows differ
        generator = torch.Generator().manual_seed(0)
        for weight in model.parameters():
            weight.add_(torch.randn(weight.shape, generator=generator) * 0.2)
    texts = [f"Question {i}: what is {i} + {i * 7}?" * (1 + i % 3) for i in range(8)]
    prompts = [tokenizer(t, return_tensors="pt", add_special_tokens=False).input_ids[0] for t in texts]
    seeds = list(range(100, 108))
    if temperature == 0:  # EOS = a token each greedy row reaches at a different step
        free = sample_groups(model, prompts, seeds, params_for(model, tokenizer, temperature=0.0, max_new_tokens=24,
                                                                num_generations=1, ignore_eos=True))
        eos_ids = (_token_ending_rows_at_different_steps(free.tolist()),)
    else:
        eos_ids = tuple(range(5, model.config.vocab_size, 3))
    params = params_for(model, tokenizer, temperature=temperature, max_new_tokens=24,
                        num_generations=1 if temperature == 0 else 2, eos_ids=eos_ids)
    together = sample_groups(model, prompts, seeds, params)
    G = params.num_generations
    lengths = set()
    for index, (prompt, seed) in enumerate(zip(prompts, seeds)):
        alone = sample_groups(model, [prompt], [seed], params)
        assert torch.equal(together[index * G : (index + 1) * G, : alone.size(1)], alone)
        assert (together[index * G : (index + 1) * G, alone.size(1) :] == tokenizer.pad_token_id).all()
        lengths.add(alone.size(1))
    assert len(lengths) >= 3  # groups finished at different steps, so the batch shrank (>= 2 of 8 done first)


def _token_ending_rows_at_different_steps(rows: list[list[int]]) -> int:
    """A token whose first position differs most across the rows (absent counts as the row's end)."""
    def spread(token: int) -> int:
        return len({row.index(token) if token in row else len(row) for row in rows})
    return max(sorted({t for row in rows for t in row}), key=spread)


def test_in_step_decoding_waits_for_every_process_and_keeps_each_ones_samples(model_and_prompts):
    """With sharded parameters every process runs the same forward passes: while another process is still
    decoding (the collective stop test says so), this one goes on, its finished rows padded, and its samples
    are those it decodes alone."""
    model, tokenizer, prompts = model_and_prompts
    params = params_for(model, tokenizer, temperature=2.0, max_new_tokens=16, eos_ids=tuple(range(5, 200, 2)))
    alone = sample_groups(model, prompts, [1, 2], params)
    assert alone.size(1) < params.max_new_tokens  # on its own this process stops early
    asked = []

    def others_still_decoding(done: bool) -> bool:
        asked.append(done)
        return False

    in_step = sample_groups(model, prompts, [1, 2], params, others_still_decoding)
    assert in_step.size(1) == params.max_new_tokens and len(asked) == params.max_new_tokens - 1
    assert torch.equal(in_step[:, : alone.size(1)], alone)
    assert (in_step[:, alone.size(1) :] == tokenizer.pad_token_id).all()


def test_rows_done_reports_each_completion_as_it_finishes(model_and_prompts):
    """Sampled, 2 prompts x 3: with the first row's first token made an EOS, each row finishes at its first
    such token (or the cap); rows_done must report the count of finished rows each time it grows, as read off
    the samples drawn without that EOS (a row's samples do not depend on when others finish). Evaluation's
    progress bar moves so, a problem at a time."""
    model, tokenizer, prompts = model_and_prompts
    free = sample_groups(model, prompts, [3, 4], params_for(model, tokenizer, eos_ids=(tokenizer.vocab_size + 7,)))
    def counts(eos: int) -> list[int]:  # finished rows after each token, where it grows
        finish = [row.tolist().index(eos) if eos in row.tolist() else free.size(1) - 1 for row in free]
        return sorted({sum(f <= t for f in finish) for t in range(free.size(1))} - {0})

    eos = max(set(free.flatten().tolist()), key=lambda token: len(counts(token)))  # [6, 10] free: no EOS drawn
    expected = counts(eos)
    assert len(expected) >= 3  # rows finish at different tokens: the count grows in steps
    reports = []
    sample_groups(model, prompts, [3, 4], params_for(model, tokenizer, eos_ids=(eos,)), rows_done=reports.append)
    assert reports == expected and reports[-1] == 6


def test_cache_keyword_follows_the_models_forward(model_and_prompts):
    """transformers' own models take ``cache``; a forward that only knows ``past_key_values`` (older transformers,
    remote code) gets that: an unknown keyword would be swallowed by **kwargs and decode with no cache."""
    from pipeline.grpo.sampling import cache_keyword

    class OldStyle(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=None, **kwargs):
            raise NotImplementedError

    assert cache_keyword(model_and_prompts[0]) == "cache"
    assert cache_keyword(OldStyle()) == "past_key_values"
