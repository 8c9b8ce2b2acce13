import torch

from pipeline.grpo.logprobs import completion_logps, selective_log_softmax, trim_padding
from pipeline.models import load_model

PAD = 0


def padded_batch():
    """Three rows: prompts of 2, 4 and 3 tokens (left-padded to 5), completions of 4, 1 and 2 (right-padded
    to 6), so every chunk has some all-padding columns on both sides."""
    prompts, completions = [[11, 12], [21, 22, 23, 24], [31, 32, 33]], [[41, 42, 43, 44], [51], [61, 62]]
    ids, mask = [], []
    for prompt, completion in zip(prompts, completions):
        left, right = 5 - len(prompt), 6 - len(completion)
        ids.append([PAD] * left + prompt + completion + [PAD] * right)
        mask.append([0] * left + [1] * (len(prompt) + len(completion)) + [0] * right)
    return torch.tensor(ids), torch.tensor(mask)


def test_trim_padding_keeps_every_real_token():
    ids, mask = padded_batch()
    trimmed, trimmed_mask, kept = trim_padding(ids, mask, 6)
    assert kept == 4 and trimmed.shape == (3, 4 + 4)
    assert trimmed_mask.sum() == mask.sum()  # only padding went
    assert torch.equal(trim_padding(ids[1:2], mask[1:2], 6)[0], torch.tensor([[21, 22, 23, 24, 51]]))


def test_trimmed_log_probs_equal_the_untrimmed_forward(tiny_model_dir):
    from pipeline.arguments import ModelArguments

    model = load_model(ModelArguments(model_name_or_path=str(tiny_model_dir))).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=7).logits[:, :-1] / 0.7  # [3, 6, V]
        expected = selective_log_softmax(logits, ids[:, -6:])  # [3, 6]
        completion_mask = mask[:, -6:].bool()
        for chunk_size in (None, 1, 2):  # each chunk trims its own padding
            logps, entropy = completion_logps(model, ids, mask, 6, temperature=0.7, chunk_size=chunk_size,
                                              with_entropy=True)
            assert logps.shape == entropy.shape == (3, 6)
            torch.testing.assert_close(logps[completion_mask], expected[completion_mask], rtol=1e-5, atol=1e-5)
            assert (entropy[completion_mask] > 0).all()
    one_row, _ = completion_logps(model, ids[1:2], mask[1:2], 6, temperature=0.7)
    assert torch.equal(one_row[0, 1:], torch.zeros(5))  # positions trimmed away are 0, and masked in the loss
