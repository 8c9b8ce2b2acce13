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
