"""Verifiable-answer reward plug-ins with TRL's reward signature.

``fn(prompts, completions, **kwargs) -> list[float | None]``: one plug-in serves both
grpo-pipeline's own loop and TRL's ``GRPOTrainer``.
"""

from rewards.accuracy import accuracy_reward
from rewards.combine import RewardBreakdown, combine_rewards
from rewards.exact import digit_match_reward, exact_match_reward
from rewards.format import make_format_reward, make_hash_format_reward
from rewards.overlong import make_overlong_reward
from rewards.registry import ENTRY_POINT_GROUP, load_reward, register, registered_names

__all__ = [
    "ENTRY_POINT_GROUP",
    "RewardBreakdown",
    "accuracy_reward",
    "combine_rewards",
    "digit_match_reward",
    "exact_match_reward",
    "load_reward",
    "make_format_reward",
    "make_hash_format_reward",
    "make_overlong_reward",
    "register",
    "registered_names",
]
