import torch

from pipeline.arguments import ModelArguments
from pipeline.data import get_template, render_prompt
from pipeline.generation import eos_token_ids
from pipeline.grpo.rollout import collate_rollout, completion_mask
from pipeline.grpo.sampling import SamplingParams, sample_groups
from pipeline.models import load_model, load_tokenizer

EOS = 2


def test_mask_runs_through_the_first_eos_when_pad_is_eos():
    ids = torch.tensor([[5, 6, EOS, EOS, EOS], [5, EOS, 7, 8, EOS], [5, 6, 7, 8, 9], [EOS, EOS, EOS, EOS, EOS]])
    mask, truncated = completion_mask(ids, {EOS})
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert truncated.tolist() == [False, False, True, False]


def test_several_eos_ids():
    mask, truncated = completion_mask(torch.tensor([[4, 9, 3], [4, 4, 4]]), {2, 9})
    assert mask.tolist() == [[1, 1, 0], [1, 1, 1]] and truncated.tolist() == [False, True]


def test_collated_groups_are_left_padded_and_truncated_rows_masked(tiny_model_dir):
    args = ModelArguments(model_name_or_path=str(tiny_model_dir))
    model, tokenizer = load_model(args).eval(), load_tokenizer(args)
    eos = eos_token_ids(model, tokenizer)
    texts = [render_prompt(tokenizer, get_template("reasoning").messages(q)) for q in ("What is 2+2?", "Add 3 and 4.")]
    prompts = [tokenizer(t, return_tensors="pt", add_special_tokens=False).input_ids[0] for t in texts]
    params = SamplingParams(3, 6, 1.0, 1.0, tuple(sorted(eos)), tokenizer.pad_token_id)
    completions = sample_groups(model, prompts, [7, 9], params)  # [6, T]
    groups = [(prompts[0], completions[:3]), (prompts[1], completions[3:])]
    rollout = collate_rollout(groups, pad_token_id=tokenizer.pad_token_id, eos_ids=eos, group_size=3,
                              mask_truncated_completions=True, tokenizer=tokenizer)
    assert rollout.num_completions == 6
    assert rollout.prompt_ids.shape[0] == 6 and (rollout.prompt_mask[:3].sum(1) == prompts[0].numel()).all()
    # Left padding: the shorter prompt's pads come first and are masked.
    short = rollout.prompt_mask.sum(1).min().item()
    assert rollout.prompt_mask[rollout.prompt_mask.sum(1).argmin(), : rollout.prompt_ids.size(1) - short].sum() == 0
    # Truncated rows are masked out entirely; their text is still decoded for the rewards.
    assert (rollout.completion_mask[rollout.is_truncated].sum(1) == 0).all()
    for row, text in zip(rollout.completion_ids[rollout.is_truncated], [t for t, tr in zip(rollout.completions, rollout.is_truncated) if tr]):
        assert text == tokenizer.decode(row, skip_special_tokens=True)
