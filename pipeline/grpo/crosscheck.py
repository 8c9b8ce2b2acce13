"""Cross-checks against TRL 1.16's GRPOTrainer: the loss and gradients on one batch, for every variant."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from pipeline.grpo.logprobs import completion_logps
from pipeline.grpo.loss import LOSS_TYPES, LossNormalizer, PolicyObjective, grpo_loss, high_entropy_mask
from pipeline.grpo.vllm_engine import sampling_importance_weights

BATCH, WIDTH, GROUP = 6, 5, 3
OBJECTIVE_OPTIONS = {f.name for f in fields(PolicyObjective)}  # the variant options our loss takes directly
# Padding, EOS at several places and one truncated row (no EOS) in every case.
COMPLETION_MASK = torch.tensor(
    [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
)
# Every loss type x beta x mu; TRL's KL importance correction only exists when beta > 0.
PARITY_CASES = [
    (loss_type, beta, mu, kl_correction)
    for loss_type in LOSS_TYPES
    for beta in (0.0, 0.04)
    for mu in (1, 2)
    for kl_correction in ((False, True) if beta else (False,))
]
VLLM_CLIP = {"vllm_importance_sampling_clip_min": 0.8, "vllm_importance_sampling_clip_max": 1.2}
# The variant options, each on the loss types it changes, with beta > 0, KL correction and mu 1 and 2.
VARIANT_CASES = [
    (loss_type, mu, variant)
    for variant, loss_types in (
        ({"importance_sampling_level": "sequence"}, ("grpo", "dapo", "cispo", "sapo", "luspo")),
        ({"delta": 1.5}, ("grpo", "dapo")),
        ({"sapo_temperature_pos": 0.5, "sapo_temperature_neg": 2.0}, ("sapo",)),
        ({"top_entropy_quantile": 0.4}, ("grpo", "dapo", "cispo")),
        ({"entropy_coef": 0.05}, ("grpo", "dr_grpo", "dapo")),
        ({"entropy_coef": 0.05, "top_entropy_quantile": 0.5}, ("bnpo", "sapo")),
        ({"off_policy_mask_threshold": 0.02}, ("grpo", "dapo", "cispo")),
        ({"vespo_k_pos": 1.5, "vespo_lambda_pos": 2.0, "vespo_k_neg": 2.5, "vespo_lambda_neg": 3.5}, ("vespo",)),
        # One update of two per generation batch: TRL rescales num_items_in_batch (the whole batch's tokens).
        ({"steps_per_generation": 2}, ("grpo", "bnpo", "dapo", "cispo", "vespo")),
        # vLLM rollouts: the policy term times TRL's truncated / masked importance ratio pi_trainer / pi_vllm.
        *(({"vllm_importance_sampling_mode": mode, **VLLM_CLIP}, types) for mode, types in (
            ("token_truncate", ("grpo", "dapo", "vespo")), ("sequence_mask", ("grpo", "dapo")),
            ("token_mask", ("dapo", "vespo")), ("sequence_truncate", ("dapo",)))),
        ({"vllm_importance_sampling_mode": "token_truncate", **VLLM_CLIP, "off_policy_mask_threshold": 0.02}, ("dapo",)),
    )
    for loss_type in loss_types
    for mu in (1, 2)
]


@dataclass
class ParityResult:
    case: tuple
    our_loss: float
    trl_loss: float
    max_grad_error: float  # max over tensors of max|ours - trl| / max|trl|
    clip_low: float
    clip_high: float

    def ok(self, rtol: float = 1e-5) -> bool:
        return losses_agree(self.our_loss, self.trl_loss, rtol) and self.max_grad_error <= rtol


def losses_agree(ours: float, trl: float, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """Within ``atol + rtol * |trl|``: TRL's fused LM head gives float32 log-probs even for a float64 model,
    which sets an absolute floor."""
    return abs(ours - trl) <= atol + rtol * abs(trl)


def trl_trainer_for_loss(model, tokenizer, output_dir, loss_type, beta, mu, temperature, kl_correction, variant):
    """A GRPOTrainer around ``model`` whose ``_compute_loss`` serves as the reference loss (one micro-batch
    per optimizer step); ``variant``: further GRPOConfig options."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=BATCH, num_generations=GROUP,
        max_completion_length=WIDTH, beta=beta, epsilon=0.2, epsilon_high=0.28, loss_type=loss_type,
        num_iterations=mu, temperature=temperature, use_cpu=True, bf16=False, report_to="none",
        gradient_checkpointing=False, use_bias_correction_kl=kl_correction, **variant,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=lambda prompts, completions, **kw: [0.0] * len(prompts),
                          args=args, train_dataset=Dataset.from_list([{"prompt": "hi"}] * BATCH),
                          processing_class=tokenizer)
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def _batch(tokenizer, seed: int):
    g = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(3, len(tokenizer) - 1, (BATCH, 4), generator=g)
    prompt_mask = torch.ones(BATCH, 4, dtype=torch.long)
    prompt_mask[1, :2] = 0  # left padding
    prompt_ids[1, :2] = tokenizer.pad_token_id
    completion_ids = torch.randint(3, len(tokenizer) - 1, (BATCH, WIDTH), generator=g)
    completion_ids[COMPLETION_MASK == 0] = tokenizer.pad_token_id
    for row in range(BATCH):
        length = int(COMPLETION_MASK[row].sum())
        if length < WIDTH:
            completion_ids[row, length - 1] = tokenizer.eos_token_id  # pad may equal EOS: it is still trained
    return prompt_ids, prompt_mask, completion_ids, COMPLETION_MASK.clone(), g


def parity_case(model_dir: str | Path, output_dir: str | Path, loss_type: str, beta: float, mu: int,
                kl_correction: bool, seed: int = 1, temperature: float = 0.9,
                variant: dict | None = None) -> ParityResult:
    """Our loss and gradients vs TRL's ``_compute_loss`` on one float64 batch with the same log-prob inputs.

    variant: PolicyObjective options under TRL's names (importance_sampling_level, delta, sapo temperatures,
    top_entropy_quantile, entropy_coef, off_policy_mask_threshold, vespo's k and lambda), and
    steps_per_generation: the batch is then one update's part of a generation batch whose other parts hold
    11 more tokens each (TRL's num_items_in_batch counts them all)."""
    variant = dict(variant or {})
    updates = variant.get("steps_per_generation", 1)
    vllm_mode = variant.get("vllm_importance_sampling_mode")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64)
    trainer = trl_trainer_for_loss(model, tokenizer, output_dir, loss_type, beta, mu, temperature, kl_correction, variant)
    model = trainer.model.train()  # TRL's training-mode normalisers (the tiny models have no dropout)
    if vllm_mode:  # what GRPOTrainer sets up with a vLLM engine, without starting one
        trainer.use_vllm, trainer.vllm_importance_sampling_correction = True, True
    prompt_ids, prompt_mask, completion_ids, completion_mask, g = _batch(tokenizer, seed)
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    attention_mask = torch.cat([prompt_mask, completion_mask], 1)
    with torch.no_grad():
        current, _ = completion_logps(model, input_ids, attention_mask, WIDTH, temperature=temperature)
    # Old and reference log-probs away from the current ones, so the ratio clips both ways.
    old = current + (torch.rand(BATCH, WIDTH, generator=g, dtype=torch.float64) - 0.5) if mu > 1 else None
    ref = current + (torch.rand(BATCH, WIDTH, generator=g, dtype=torch.float64) - 0.5) * 0.4
    advantages = torch.tensor([1.1, -0.6, 0.3, -1.4, 0.8, -0.2], dtype=torch.float64)
    tokens = completion_mask.sum()
    generation_tokens = tokens + 11 * (updates - 1)

    inputs = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
              "completion_mask": completion_mask, "advantages": advantages, "num_items_in_batch": generation_tokens,
              "ref_per_token_logps": ref if beta else None}
    if old is not None:
        inputs["old_per_token_logps"] = old
    sampling_ratio = sampling = None
    if vllm_mode:  # vLLM's log-probs a little off (and above) the trainer's: ratios clip / mask both ways,
        sampled_under = old if old is not None else current  # and the off-policy mask sees the drift from them
        sampling = sampled_under + 0.04 + (torch.rand(BATCH, WIDTH, generator=g, dtype=torch.float64) - 0.5) * 0.3
        sampling_ratio = sampling_importance_weights(sampled_under, sampling, completion_mask, vllm_mode,
                                                     VLLM_CLIP["vllm_importance_sampling_clip_min"],
                                                     VLLM_CLIP["vllm_importance_sampling_clip_max"])
        inputs["importance_sampling_ratio"], inputs["sampling_per_token_logps"] = sampling_ratio, sampling
    model.zero_grad()
    trl_loss = trainer._compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    objective = PolicyObjective(**{k: v for k, v in variant.items() if k in OBJECTIVE_OPTIONS})
    logps, entropy = completion_logps(model, input_ids, attention_mask, WIDTH, temperature=temperature,
                                      with_entropy=True, entropy_grad=objective.entropy_coef != 0.0)
    entropy_mask = None
    if objective.top_entropy_quantile < 1.0:
        entropy_mask = high_entropy_mask(entropy.detach(), completion_mask, objective.top_entropy_quantile)
    ours = grpo_loss(logps, old, ref if beta else None, advantages, completion_mask, beta=beta, epsilon_low=0.2,
                     epsilon_high=0.28, loss_type=loss_type,
                     normalizer=LossNormalizer(1, tokens_per_process=generation_tokens.item() / updates,
                                               max_completion_length=WIDTH),
                     kl_importance_correction=kl_correction, objective=objective, entropy=entropy,
                     entropy_mask=entropy_mask, sampling_ratio=sampling_ratio, sampling_logps=sampling)
    ours.loss.backward()
    params = dict(model.named_parameters())
    errors = [((params[n].grad - grad).abs().max() / grad.abs().max().clamp(min=1e-30)).item()
              for n, grad in trl_grads.items()]
    return ParityResult((loss_type, beta, mu, kl_correction, *variant.items()), ours.loss.item(), trl_loss.item(),
                        max(errors) if errors else float("inf"), ours.clip_low.item(), ours.clip_high.item())


def adaptive_entropy_case(model_dir: str | Path, output_dir: str | Path, loss_type: str = "dapo",
                          updates: int = 5) -> list[dict[str, float]]:
    """TRL's adaptive entropy coefficient against our EntropyController over ``updates`` training-mode
    ``_compute_loss`` calls on different batches (one optimizer update each, no weight change between them),
    the target set at the batches' median entropy so the bonus switches on and off. Per update: both losses
    and both coefficients after it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.grpo.update import EntropyController

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64)
    batches, entropies = [], []
    for seed in range(1, updates + 1):
        prompt_ids, prompt_mask, completion_ids, mask, _ = _batch(tokenizer, seed)
        input_ids, attention_mask = torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, mask], 1)
        with torch.no_grad():
            _, entropy = completion_logps(model, input_ids, attention_mask, WIDTH, temperature=0.9, with_entropy=True)
        entropies.append(((entropy * mask).sum() / mask.sum()).item())
        batches.append(({"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
                         "completion_mask": mask}, input_ids, attention_mask))
    target = sorted(entropies)[updates // 2]
    options = {"use_adaptive_entropy": True, "entropy_coef": 0.05, "entropy_target": target,
               "entropy_coef_delta": 0.02, "entropy_coef_max": 0.09}
    trainer = trl_trainer_for_loss(model, tokenizer, output_dir, loss_type, 0.0, 1, 0.9, False, options)
    model = trainer.model.train()
    ours = EntropyController(0.05, target, 0.02, 0.0, 0.09)
    advantages = torch.tensor([1.1, -0.6, 0.3, -1.4, 0.8, -0.2], dtype=torch.float64)
    rows = []
    for tensors, input_ids, attention_mask in batches:
        mask = tensors["completion_mask"]
        inputs = tensors | {"advantages": advantages, "num_items_in_batch": mask.sum()}
        trl_loss = trainer._compute_loss(model, inputs).item()
        with torch.no_grad():
            logps, entropy = completion_logps(model, input_ids, attention_mask, WIDTH, temperature=0.9,
                                              with_entropy=True)
            out = grpo_loss(logps, None, None, advantages, mask, beta=0.0, epsilon_low=0.2, epsilon_high=0.28,
                            loss_type=loss_type, normalizer=LossNormalizer(1, mask.sum().item(), WIDTH),
                            objective=PolicyObjective(entropy_coef=ours.applied()), entropy=entropy)
        ours.update(((entropy * mask).sum() / mask.sum()).item())
        rows.append({"our_loss": out.loss.item(), "trl_loss": trl_loss, "our_coef": ours.coef,
                     "trl_coef": trainer.entropy_coef})
    return rows
