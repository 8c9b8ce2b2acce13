import torch

from pipeline.data import get_template, load_gsm8k, render_prompt
from pipeline.generation import StopStrings, eos_token_ids, generate
from pipeline.models import load_model, load_tokenizer


def test_greedy_generation_equals_transformers_generate(tiny_model_args):
    """Greedy evaluation runs on the static-cache sampler; it must give transformers' greedy tokens for
    each prompt decoded alone (no padding), for prompts of different lengths in one batch."""
    model, tokenizer = load_model(tiny_model_args).eval(), load_tokenizer(tiny_model_args)
    questions = [e.question for e in load_gsm8k(split="test").examples[:3]]
    prompts = [render_prompt(tokenizer, get_template("reasoning").messages(q)) for q in questions]
    ours = generate(model, tokenizer, prompts, max_new_tokens=20, do_sample=False)
    eos = sorted(eos_token_ids(model, tokenizer))
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=eos,
                                 pad_token_id=tokenizer.pad_token_id)
        completion = out[0, ids.shape[1]:]
        assert ours.texts[i] == [tokenizer.decode(completion, skip_special_tokens=True)]
        assert ours.num_tokens[i] == [completion.numel()]
    assert len({len(tokenizer(p).input_ids) for p in prompts}) > 1  # the batch needed left padding


def test_stop_strings_end_greedy_rows_at_the_stop_text_and_keep_the_tokens_before_it(tiny_model_args):
    """A stop sequence taken from the middle of each prompt's unconstrained greedy text: decoding then ends
    where that text has appeared (fewer tokens), on the same tokens up to there (lm-eval's stopping rule)."""
    from pipeline.evaluation.protocols import cut_at_stop

    model, tokenizer = load_model(tiny_model_args).eval(), load_tokenizer(tiny_model_args)
    prompts = [f"Question {i}: how many apples?" for i in range(3)]
    free = generate(model, tokenizer, prompts, max_new_tokens=40, do_sample=False)
    texts = [t[0] for t in free.texts]
    stop = texts[0][len(texts[0]) // 3 : len(texts[0]) // 3 + 4]  # 4 characters from the first third of row 0
    assert len(texts[0]) >= 12 and stop.strip()
    stopped = generate(model, tokenizer, prompts, max_new_tokens=40, do_sample=False, stop_strings=[stop])
    got = [t[0] for t in stopped.texts]
    assert all(text.startswith(g) for text, g in zip(texts, got))  # the same greedy tokens, up to the stop
    assert [cut_at_stop(g, [stop]) for g in got] == [cut_at_stop(text, [stop]) for text in texts]
    holds_stop = [stop in text for text in texts]
    assert holds_stop[0] and [stop in g for g in got] == holds_stop
    shorter = [stopped.num_tokens[i][0] < free.num_tokens[i][0] for i in range(len(prompts))]
    assert shorter == holds_stop  # only the rows whose text reached the stop ended early


def test_rows_ended_by_a_stop_string_count_their_tokens_through_the_stop(tiny_model_args):
    """The length of each row that decoding ended (padded after its end, while other rows went on): through the
    token that completed the stop text or through its EOS, found here by decoding the unstopped tokens one
    prefix at a time. The tiny model's pad token is its EOS: the padding after a stop must not count."""
    from pipeline.grpo.sampling import SamplingParams, sample_groups

    model, tokenizer = load_model(tiny_model_args).eval(), load_tokenizer(tiny_model_args)
    questions = [e.question for e in load_gsm8k(split="test").examples[:4]]
    prompts = [render_prompt(tokenizer, get_template("reasoning").messages(q)) for q in questions]
    ids = [torch.tensor(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    eos = eos_token_ids(model, tokenizer)
    params = SamplingParams(1, 40, 1.0, 1.0, tuple(sorted(eos)), tokenizer.pad_token_id)
    free = sample_groups(model, ids, [0, 1, 2, 3], params).tolist()  # [4, 40]: sampled, so rows differ
    stop_text = tokenizer.decode(free[0][12:14])
    stop = StopStrings(tokenizer, [stop_text])
    stopped = sample_groups(model, ids, [0, 1, 2, 3], params, stopped=stop)  # [4, T]
    expected = [next((k for k in range(1, len(row) + 1) if stop_text in tokenizer.decode(row[:k]) or row[k - 1] in eos),
                     stopped.size(1)) for row in free]
    assert tokenizer.pad_token_id in eos and expected[0] <= 14 < max(expected)  # row 0 was padded while others went on
    assert stop.lengths(stopped, eos) == expected


def test_stop_strings_look_back_over_every_token_since_the_last_check(tiny_model_args):
    """On an accelerator the sampler checks for stops every 8 tokens, not every token: a stop sequence that
    arrived several tokens before a check must still be seen then."""
    tokenizer = load_tokenizer(tiny_model_args)
    stop = StopStrings(tokenizer, ["Question:"])
    after = " and then some more words follow"  # more tokens than the look-back's 2 spare ones
    ids = torch.tensor([tokenizer("4 apples.\n\nQuestion:" + after, add_special_tokens=False).input_ids])  # [1, T]
    arrived_since = len(tokenizer(after, add_special_tokens=False).input_ids)
    assert arrived_since > 2 and stop(ids).tolist() == [False]  # a per-token check would have seen it long ago
    assert stop(ids, new_tokens=arrived_since + 1).tolist() == [True]
    assert stop(ids[:, : ids.size(1) - arrived_since]).tolist() == [True]  # the check when it arrived


def test_checking_for_stops_every_8_tokens_gives_the_tokens_of_a_check_after_every_token(tiny_model_args):
    """The accelerator's cadence, run on the CPU: rows that met their stop between two checks end at the
    stop (padded after it), as a check after every token ends them. (Decoding itself may then end up to 7
    steps later: the extra columns are all padding.) Sampled, for text varied enough to stop mid-row."""
    from pipeline.grpo.sampling import SamplingParams, sample_groups

    model, tokenizer = load_model(tiny_model_args).eval(), load_tokenizer(tiny_model_args)
    questions = [e.question for e in load_gsm8k(split="test").examples[:4]]
    prompts = [render_prompt(tokenizer, get_template("reasoning").messages(q)) for q in questions]
    ids = [torch.tensor(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    pad = tokenizer.pad_token_id
    params = SamplingParams(1, 40, 1.0, 1.0, tuple(sorted(eos_token_ids(model, tokenizer))), pad)
    free = sample_groups(model, ids, [0, 1, 2, 3], params)  # [4, 40]: no stop
    stop = StopStrings(tokenizer, [tokenizer.decode(free[0, 12:14])])  # row 0's 13th and 14th tokens' text
    every_token, every_8 = (sample_groups(model, ids, [0, 1, 2, 3], params, stopped=stop, check_every=n)
                            for n in (1, 8))
    width = every_token.size(1)
    assert torch.equal(every_8[:, :width], every_token) and (every_8[:, width:] == pad).all()
    row_0_end = int((every_token[0] == pad).int().argmax())  # where row 0's padding starts
    assert 0 < row_0_end <= 14 and row_0_end % 8 != 0  # it stopped between two checks of the 8-token cadence
    assert torch.equal(every_token[0, :row_0_end], free[0, :row_0_end])
