"""GRPO: rollout, group advantages, clipped loss with KL, and our training loop."""

from pipeline.grpo.advantages import Advantages, group_advantages
from pipeline.grpo.loss import LOSS_TYPES, LossNormalizer, LossOutput, grpo_loss, per_token_kl

__all__ = ["LOSS_TYPES", "Advantages", "LossNormalizer", "LossOutput", "group_advantages", "grpo_loss", "per_token_kl"]
