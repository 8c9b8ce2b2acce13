"""GRPO's effect, shown on a CPU in about a minute: char-level 2-digit addition.

The SFT start point answers ``sum + 1`` by greedy decoding but samples the true sum about a third
of the time; only the verifiable reward separates the two.
"""

import pytest

from pipeline.arguments import DataArguments, ModelArguments
from pipeline.grpo.config import GRPOArguments
from pipeline.grpo.trainer import train
from pipeline.models import load_model, load_tokenizer
from pipeline.tiny import build_char_llama
from pipeline.toy import ALPHABET, addition_examples, greedy_exact_match, noisy_sft, save_model, split_pairs
from rewards import exact_match_reward, register
from rewards.registry import _REGISTRY


@pytest.fixture(scope="module")
def start_point(tmp_path_factory):
    train_pairs, held_pairs = split_pairs(seed=0, held_out=200)
    model, tokenizer = build_char_llama(ALPHABET)
    noisy_sft(model, tokenizer, addition_examples(train_pairs), wrong_fraction=0.6, steps=1500)
    path = save_model(model, tokenizer, tmp_path_factory.mktemp("toy") / "sft")
    return path, addition_examples(train_pairs), addition_examples(held_pairs)


@pytest.fixture
def negated_reward():
    @register("negated_exact_match")
    def negated(prompts, completions, **kwargs):
        return [-r for r in exact_match_reward(prompts, completions, **kwargs)]

    yield "negated_exact_match"
    _REGISTRY.pop("negated_exact_match")


def held_out_score(model_dir, tokenizer_dir, examples):
    model = load_model(ModelArguments(model_name_or_path=str(model_dir))).eval()
    return greedy_exact_match(model, load_tokenizer(ModelArguments(model_name_or_path=str(tokenizer_dir))), examples)


def run_grpo(start, train_examples, output_dir, reward):
    args = GRPOArguments(
        output_dir=str(output_dir), max_steps=60, prompts_per_step=16, num_generations=8, micro_batch_size=64,
        max_completion_length=4, max_prompt_length=16, reward_funcs=[reward], beta=0.0, learning_rate=3e-4,
        loss_type="dapo", save_steps=0, logging_steps=10,
    )
    summary = train(args, ModelArguments(model_name_or_path=str(start)), DataArguments(), train_examples)
    return summary, output_dir / "final" / "merged"


@pytest.mark.slow
def test_grpo_raises_held_out_exact_match_and_flipped_advantages_do_not(start_point, negated_reward, tmp_path):
    start, train_examples, held_out = start_point
    before = held_out_score(start, start, held_out)
    assert before < 0.5, f"the start point should mostly answer sum+1, got {before}"

    summary, trained = run_grpo(start, train_examples, tmp_path / "grpo", "exact_match")
    after = held_out_score(trained, start, held_out)
    rewards = [h["reward"] for h in summary["history"]]
    assert sum(rewards[-10:]) / 10 > sum(rewards[:10]) / 10 + 0.2  # training reward climbs
    assert after >= before + 0.2, (before, after)  # measured: 0.215 -> 0.955 (200 held-out problems)

    _, flipped = run_grpo(start, train_examples, tmp_path / "flipped", negated_reward)
    flipped_score = held_out_score(flipped, start, held_out)
    assert flipped_score <= before + 0.05, (before, flipped_score)  # measured: 0.215 -> 0.0
    assert after - flipped_score >= 0.5
