"""grpo-pipeline: SFT then GRPO with verifiable rewards on the Hugging Face stack."""

__version__ = "0.1.0"
