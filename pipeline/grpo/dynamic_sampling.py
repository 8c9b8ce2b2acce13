"""DAPO's dynamic sampling: groups whose rewards do not differ are replaced by freshly sampled ones.

A group whose G completions all got the same reward has advantage 0 everywhere: it costs a generation
and a training pass and teaches nothing (only the KL term acts on it). DAPO (Yu et al. 2025) drops such
groups and samples more prompts until the batch is full. Here each extra round samples as many prompts
as the process's batch, from a seeded stream of its own (a pure function of seed, step, round and
process, so a resumed run samples the same), keeps the groups with a spread, and stops when the batch is
full or after ``max_dynamic_sampling_rounds``. A batch still short is completed with the first dropped
groups, so every process trains on the same number of completions (DDP and the gathers need that);
those carry no policy gradient. TRL 1.16 has no equivalent, so this is tested on its own terms.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.data import Example
from pipeline.grpo.advantages import per_function_rewards
from pipeline.grpo.inputs import prompt_indices
from pipeline.grpo.rollout import Rollout, collate_rollout
from pipeline.grpo.state import GRPOState
from rewards import RewardBreakdown

logger = logging.getLogger(__name__)
ROUND_POSITION_OFFSET = 10**7  # extra prompts' positions (group seeds) never meet the main stream's

Batch = list[tuple[int, Example]]


@dataclass(eq=False)  # compared by identity
class Scored:
    """One round's prompts, samples and rewards."""

    batch: Batch
    rollout: Rollout
    rewards: torch.Tensor  # [N]
    breakdown: RewardBreakdown


def informative_groups(rewards: torch.Tensor, group_size: int) -> list[bool]:
    """Per group: at least two scored completions whose rewards differ. ``rewards``: ``[N]`` totals, or
    ``[N, F]`` per reward function, where a spread in any one function counts (``normalize_then_sum`` gives
    such a group advantages even when its weighted totals are equal).

    >>> nan = float("nan")
    >>> informative_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, nan]), 2)
    [False, True, False]
    >>> informative_groups(torch.tensor([[1.0, 0.0], [0.0, 0.5]]), 2)  # totals 1.0 and 0.5 x 2: both 1.0
    [True]
    """
    columns = rewards.view(rewards.size(0), -1)  # [N, F]
    flags = []
    for group in columns.view(-1, group_size, columns.size(1)).unbind(0):  # [G, F] each
        spread = False
        for values in group.T:  # [G]
            scored = values[~torch.isnan(values)]
            spread |= bool(scored.numel() >= 2 and (scored.max() - scored.min()).item() > 0)
        flags.append(spread)
    return flags


def extra_prompts(examples: list[Example], step: int, round_index: int, count: int, seed: int,
                  process_index: int) -> Batch:
    """``count`` (position, example) pairs of a resampling round, from a stream seeded apart from the main one."""
    stream_seed = seed + 7919 * round_index + 104_729 * process_index
    indices = prompt_indices(len(examples), step, count, stream_seed)
    base = ROUND_POSITION_OFFSET * round_index + process_index * count
    return [(base + i, examples[index]) for i, index in enumerate(indices)]


def take_groups(picks: list[tuple[Scored, int]], *, pad_token_id: int, eos_ids: set[int],
                mask_truncated_completions: bool, tokenizer) -> Scored:
    """The chosen groups (round, group index) as one batch: prompts, a re-padded Rollout, rewards, breakdown."""
    G = picks[0][0].rollout.group_size
    groups, batch, rows = [], [], []
    for scored, g in picks:
        ro = scored.rollout
        groups.append((ro.prompt_ids[g * G][ro.prompt_mask[g * G].bool()], ro.completion_ids[g * G : (g + 1) * G]))
        batch.append(scored.batch[g])
        rows.append((scored, range(g * G, (g + 1) * G)))
    rollout = collate_rollout(groups, pad_token_id=pad_token_id, eos_ids=eos_ids, group_size=G,
                              mask_truncated_completions=mask_truncated_completions, tokenizer=tokenizer)
    rewards = torch.cat([scored.rewards[list(r)] for scored, r in rows])
    names = picks[0][0].breakdown.names
    per_function = [[v for scored, r in rows for v in (scored.breakdown.per_function[f][i] for i in r)]
                    for f in range(len(names))]
    total = [scored.breakdown.total[i] for scored, r in rows for i in r]
    return Scored(batch, rollout, rewards, RewardBreakdown(list(names), per_function, total))


def fill_with_informative_groups(first: Scored, sample: Callable[[Batch], Scored], more_prompts: Callable[[int], Batch],
                                 max_rounds: int, collate: Callable[[list[tuple[Scored, int]]], Scored],
                                 spread: Callable[[Scored], torch.Tensor] = lambda scored: scored.rewards
                                 ) -> tuple[Scored, dict[str, float]]:
    """Keep ``first``'s groups with a reward spread (in the values ``spread`` picks: totals by default); sample
    ``more_prompts(round)`` up to ``max_rounds`` times until there are as many as ``first`` has; complete with
    ``first``'s dropped groups. Returns the batch and its metrics (rounds used, groups kept with a spread,
    completions sampled)."""
    wanted, G = len(first.batch), first.rollout.group_size
    flags = informative_groups(spread(first), G)
    kept = [(first, g) for g in range(wanted) if flags[g]]
    dropped = [(first, g) for g in range(wanted) if not flags[g]]
    rounds, sampled = 0, first.rollout.num_completions
    started = time.perf_counter()
    while len(kept) < wanted and rounds < max_rounds:
        rounds += 1
        extra = sample(more_prompts(rounds))
        sampled += extra.rollout.num_completions
        kept += [(extra, g) for g, ok in enumerate(informative_groups(spread(extra), G)) if ok]
    informative = min(len(kept), wanted)
    if informative < wanted:
        logger.info("dynamic sampling: %d of %d groups with a reward spread after %d extra rounds; the rest "
                    "are groups without one", informative, wanted, rounds)
    chosen = kept[:wanted] + dropped[: wanted - informative]
    unchanged = all(scored is first and g == i for i, (scored, g) in enumerate(chosen))
    result = first if unchanged else collate(chosen)
    return result, {"dynamic_sampling/rounds": float(rounds), "dynamic_sampling/informative_groups": float(informative),
                    "dynamic_sampling/completions_sampled": float(sampled),
                    "dynamic_sampling/seconds": time.perf_counter() - started}


def replace_flat_groups(state: GRPOState, first: Scored, sample: Callable[[Batch], Scored]) -> tuple[Scored, dict[str, float]]:
    """A run's dynamic sampling step: ``first`` with its zero-spread groups replaced by groups that ``sample``
    (generate + score) draws from this step's extra prompt stream, within the run's round cap."""
    args, tokenizer = state.args, state.tokenizer

    def more_prompts(round_index: int) -> Batch:
        return extra_prompts(state.examples, state.step, round_index, len(first.batch), args.seed,
                             state.accelerator.process_index)

    def collate(picks: list[tuple[Scored, int]]) -> Scored:
        return take_groups(picks, pad_token_id=tokenizer.pad_token_id, eos_ids=state.eos_ids,
                           mask_truncated_completions=args.mask_truncated_completions, tokenizer=tokenizer)

    def spread(scored: Scored) -> torch.Tensor:  # what the advantages normalise: totals, or each function
        if args.multi_objective_aggregation == "normalize_then_sum":
            return per_function_rewards(scored.breakdown, scored.rewards.device)  # [N, F]
        return scored.rewards  # [N]

    return fill_with_informative_groups(first, sample, more_prompts, args.max_dynamic_sampling_rounds, collate,
                                        spread)
