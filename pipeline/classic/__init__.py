"""Classic-control examples trained with the same GRPO functions as the language model."""
