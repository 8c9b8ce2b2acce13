import torch

from pipeline.data import get_template, load_gsm8k, render_prompt
from pipeline.generation import eos_token_ids, generate
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
