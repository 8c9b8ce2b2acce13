import math

import pytest
import torch

from pipeline.grpo.crosscheck import PARITY_CASES, VARIANT_CASES, adaptive_entropy_case, parity_case
from pipeline.grpo.loss import (
    LOSS_TYPES,
    LossNormalizer,
    PolicyObjective,
    grpo_loss,
    high_entropy_mask,
    importance_ratio,
    per_token_kl,
    sequence_denominators,
)

B, T = 6, 5
MASK = torch.tensor(
    [
        [1, 1, 1, 1, 1],  # truncated: no EOS within T
        [1, 1, 0, 0, 0],  # EOS at position 1, then padding
        [1, 1, 1, 1, 0],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1],
    ],
    dtype=torch.float64,
)


def reference_loss(logps, old, ref, adv, mask, beta, eps_low, eps_high, loss_type, tokens_total, max_len):
    """The formula written out position by position, in float64."""
    per_seq, seq_sums, total, count = [], [], 0.0, 0.0
    for i in range(B):
        seq_sum, seq_count = 0.0, 0.0
        for t in range(T):
            if mask[i, t] == 0:
                continue
            ratio = torch.exp(logps[i, t] - old[i, t])
            surrogate = min(ratio * adv[i], torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv[i])
            token = -surrogate
            if beta:
                d = ref[i, t] - logps[i, t]
                token = token + beta * (torch.exp(d) - d - 1)
            seq_sum, seq_count = seq_sum + token, seq_count + 1
        per_seq.append(seq_sum / max(seq_count, 1))
        seq_sums.append(seq_sum)
        total, count = total + seq_sum, count + seq_count
    if loss_type == "grpo":
        return sum(per_seq) / B
    if loss_type == "bnpo":
        return total / count
    if loss_type == "dr_grpo":
        return total / (B * max_len)
    if loss_type == "luspo":
        return sum(seq_sums) / B
    return total / tokens_total


def random_batch(seed):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logps + (torch.rand(B, T, generator=g, dtype=torch.float64) - 0.5)  # ratios well away from 1
    ref = logps + (torch.rand(B, T, generator=g, dtype=torch.float64) - 0.5)
    adv = torch.tensor([1.2, -0.7, 0.4, -1.5, 0.0, 0.9], dtype=torch.float64)
    return logps.requires_grad_(), old, ref, adv


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo", "luspo"])  # the clipped surrogate
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradient_match_the_float64_formula(loss_type, beta):
    logps, old, ref, adv = random_batch(0)
    tokens = MASK.sum().item()
    out = grpo_loss(logps, old, ref, adv, MASK, beta=beta, epsilon_low=0.2, epsilon_high=0.28, loss_type=loss_type,
                    normalizer=LossNormalizer(1, tokens_per_process=tokens, max_completion_length=8))
    (grad,) = torch.autograd.grad(out.loss, logps)
    logps_ref = logps.detach().clone().requires_grad_()
    expected = reference_loss(logps_ref, old, ref, adv, MASK, beta, 0.2, 0.28, loss_type, tokens, 8)
    (expected_grad,) = torch.autograd.grad(expected, logps_ref)
    torch.testing.assert_close(out.loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    assert out.clip_low > 0 and out.clip_high > 0  # the batch clips both ways
    assert (grad[MASK == 0] == 0).all()  # padding after EOS gets no gradient


def test_k3_kl_is_non_negative_and_zero_only_at_equality():
    logps = torch.linspace(-5, 0, 50)
    ref = torch.linspace(-4, -1, 50)
    kl = per_token_kl(logps, ref)
    assert (kl >= 0).all() and (per_token_kl(ref, ref) == 0).all()
    assert (kl[(logps - ref).abs() > 1e-3] > 0).all()


def test_dapo_is_the_token_mean_of_the_whole_batch_under_accumulation():
    logps, old, ref, adv = random_batch(1)
    tokens = MASK.sum().item()
    kwargs = dict(beta=0.04, epsilon_low=0.2, epsilon_high=0.2, loss_type="dapo")
    whole = grpo_loss(logps, old, ref, adv, MASK, normalizer=LossNormalizer(1, tokens), **kwargs).loss
    halves = sum(
        grpo_loss(logps[s], old[s], ref[s], adv[s], MASK[s], normalizer=LossNormalizer(2, tokens), **kwargs).loss
        for s in (slice(0, 3), slice(3, 6))
    )
    torch.testing.assert_close(halves, whole, rtol=1e-12, atol=1e-12)


def test_grpo_accumulation_averages_micro_batch_losses():
    logps, old, ref, adv = random_batch(2)
    kwargs = dict(beta=0.0, epsilon_low=0.2, epsilon_high=0.2, loss_type="grpo")
    whole = grpo_loss(logps, old, ref, adv, MASK, normalizer=LossNormalizer(1), **kwargs).loss
    halves = sum(
        grpo_loss(logps[s], old[s], ref[s], adv[s], MASK[s], normalizer=LossNormalizer(2), **kwargs).loss
        for s in (slice(0, 3), slice(3, 6))
    )
    torch.testing.assert_close(halves, whole, rtol=1e-12, atol=1e-12)  # equal-size micro-batches


CUTS = [[6], [4, 2], [1] * 6, [2, 3, 1], [5, 1]]


def cut_loss(logps, old, ref, adv, cut, loss_type, micro_batch_size, **kwargs):
    """The generation batch's loss as the trainer accumulates it over micro-batches of the given sizes."""
    tokens = MASK.sum().item()
    denominators = sequence_denominators(MASK, loss_type, micro_batch_size=micro_batch_size, max_completion_length=8,
                                         tokens_per_process=tokens)
    bounds = [sum(cut[:i]) for i in range(len(cut) + 1)]
    return sum(
        grpo_loss(logps[s], old[s], ref[s], adv[s], MASK[s], loss_type=loss_type, normalizer=LossNormalizer(),
                  denominators=denominators[s], **kwargs).loss
        for s in (slice(a, b) for a, b in zip(bounds, bounds[1:]))
    )


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("cut", CUTS, ids=str)
def test_update_does_not_depend_on_the_micro_batch_cut(loss_type, cut):
    """Loss and gradient of any cut, uneven ones included, equal the whole generation batch's in float64. The
    expectation is the single-batch path (TRL-checked); for bnpo, defined per configured micro-batch (3 rows
    here), TRL's accumulation over those micro-batches."""
    logps, old, ref, adv = random_batch(5)
    kwargs = dict(beta=0.04, epsilon_low=0.2, epsilon_high=0.28)
    tokens = MASK.sum().item()
    if loss_type == "bnpo":
        expected = sum(grpo_loss(logps[s], old[s], ref[s], adv[s], MASK[s], loss_type="bnpo",
                                 normalizer=LossNormalizer(2), **kwargs).loss for s in (slice(0, 3), slice(3, 6)))
    else:
        expected = grpo_loss(logps, old, ref, adv, MASK, loss_type=loss_type,
                             normalizer=LossNormalizer(1, tokens, max_completion_length=8), **kwargs).loss
    (expected_grad,) = torch.autograd.grad(expected, logps)
    ours = cut_loss(logps, old, ref, adv, cut, loss_type, micro_batch_size=3, **kwargs)
    (grad,) = torch.autograd.grad(ours, logps)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)


def test_uneven_cut_by_hand():
    """mu = 1, six sequences of 5 tokens, advantages 4, 4, 4, 4, 1, 1: every token's loss is -A, so the grpo
    loss is -(4 * 4 + 2 * 1) / 6 = -3.0. Averaging a 4 + 2 cut with equal weights would give -(4 + 1) / 2 = -2.5."""
    logps = torch.zeros(6, 5, dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([4.0, 4, 4, 4, 1, 1], dtype=torch.float64)
    mask = torch.ones(6, 5, dtype=torch.float64)
    denominators = sequence_denominators(mask, "grpo", micro_batch_size=4, max_completion_length=5, tokens_per_process=30)
    kwargs = dict(beta=0.0, epsilon_low=0.2, epsilon_high=0.2, loss_type="grpo")
    ours = sum(grpo_loss(logps[s], None, None, adv[s], mask[s], normalizer=LossNormalizer(2),
                         denominators=denominators[s], **kwargs).loss for s in (slice(0, 4), slice(4, 6)))
    equal_weights = sum(grpo_loss(logps[s], None, None, adv[s], mask[s], normalizer=LossNormalizer(2), **kwargs).loss
                        for s in (slice(0, 4), slice(4, 6)))
    assert ours.item() == pytest.approx(-3.0) and equal_weights.item() == pytest.approx(-2.5)


def test_mu_one_ratio_is_one_but_gradient_flows():
    logps, _, ref, adv = random_batch(3)
    out = grpo_loss(logps, None, ref, adv, MASK, beta=0.0, epsilon_low=0.2, epsilon_high=0.2, loss_type="bnpo",
                    normalizer=LossNormalizer(1))
    (grad,) = torch.autograd.grad(out.loss, logps)
    expected = -(adv[:, None] * MASK) / MASK.sum()  # d/dlogp of -A * exp(logp - sg(logp)) at ratio 1
    torch.testing.assert_close(grad, expected)
    assert out.clip_low == 0 and out.clip_high == 0


def test_bad_arguments():
    logps, old, ref, adv = random_batch(4)
    with pytest.raises(ValueError, match="loss_type must be one of grpo, bnpo, dr_grpo, dapo"):
        grpo_loss(logps, old, ref, adv, MASK, beta=0, epsilon_low=0.2, epsilon_high=0.2, loss_type="ppo",
                  normalizer=LossNormalizer())
    with pytest.raises(ValueError, match="beta > 0 needs ref_logps"):
        grpo_loss(logps, old, None, adv, MASK, beta=0.1, epsilon_low=0.2, epsilon_high=0.2, loss_type="grpo",
                  normalizer=LossNormalizer())


# --- parity with TRL 1.16's GRPOTrainer._compute_loss on a real model -------------------------------------------


@pytest.mark.parametrize("loss_type, beta, mu, kl_correction", PARITY_CASES)
def test_loss_and_gradients_equal_trl_compute_loss(tiny_model_dir, tmp_path, loss_type, beta, mu, kl_correction):
    result = parity_case(tiny_model_dir, tmp_path, loss_type, beta, mu, kl_correction)
    # TRL 1.16's fused LM head returns float32 log-probs even for a float64 model (~4e-7 per token), so the
    # loss has an absolute floor at float32 resolution and each gradient is compared relative to its scale.
    assert abs(result.our_loss - result.trl_loss) <= 1e-6 + 1e-5 * abs(result.trl_loss), result
    assert result.max_grad_error <= 1e-5, result
    assert result.ok()
    if mu > 1:
        assert result.clip_low > 0 and result.clip_high > 0  # clipping fired both ways


@pytest.mark.parametrize("loss_type, mu, variant", VARIANT_CASES, ids=str)
def test_variants_equal_trl_compute_loss(tiny_model_dir, tmp_path, loss_type, mu, variant):
    """GSPO's sequence-level ratio, two-sided clipping (delta), cispo, sapo and luspo, with beta > 0 and TRL's KL
    importance correction (which multiplies by the sequence-level ratio too)."""
    result = parity_case(tiny_model_dir, tmp_path, loss_type, 0.04, mu, True, variant=variant)
    assert abs(result.our_loss - result.trl_loss) <= 1e-6 + 1e-5 * abs(result.trl_loss), result
    assert result.max_grad_error <= 1e-5, result


def test_adaptive_entropy_coefficient_follows_trl(tiny_model_dir, tmp_path):
    rows = adaptive_entropy_case(tiny_model_dir, tmp_path)
    for row in rows:
        assert row["our_loss"] == pytest.approx(row["trl_loss"], rel=1e-5, abs=1e-6), rows
        assert row["our_coef"] == pytest.approx(row["trl_coef"], abs=1e-12), rows
    coefs = [0.05] + [row["our_coef"] for row in rows]
    steps = [b - a for a, b in zip(coefs, coefs[1:])]
    assert max(steps) > 0 and min(steps) < 0, coefs  # the controller moved both ways: the target was crossed


def one_token_loss(ratio, advantage, loss_type, eps=(0.2, 0.28), **objective):
    """Loss and d loss / d logp of one token with the given ratio pi/pi_old (mu > 1), eps 0.2 / 0.28."""
    logps = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    old = torch.full((1, 1), -math.log(ratio), dtype=torch.float64)
    out = grpo_loss(logps, old, None, torch.tensor([advantage], dtype=torch.float64), torch.ones(1, 1), beta=0.0,
                    epsilon_low=eps[0], epsilon_high=eps[1], loss_type=loss_type, normalizer=LossNormalizer(1, 1.0, 1),
                    objective=PolicyObjective(**objective))
    (grad,) = torch.autograd.grad(out.loss, logps)
    return out.loss.item(), grad.item()


def test_variants_by_hand():
    # Clipped surrogate, A = -1, ratio 2: -min(-2, -1.28) = 2, gradient -A * r = 2; delta = 1.5 caps it at 1.5.
    assert one_token_loss(2.0, -1.0, "grpo") == pytest.approx((2.0, 2.0))
    assert one_token_loss(2.0, -1.0, "grpo", delta=1.5) == pytest.approx((1.5, 0.0))
    # cispo: -sg(min(r, eps_high)) * A * log p; at log p = 0 the loss is 0 and the gradient -min(2, 0.28) * A.
    assert one_token_loss(2.0, -1.0, "cispo") == pytest.approx((0.0, 0.28))
    # sapo: -sigmoid(tau (r - 1)) * 4 / tau * A; at r = 1, A = 1, tau = 1: -2, gradient -sigmoid'(0) * 4 * r = -1.
    assert one_token_loss(1.0, 1.0, "sapo") == pytest.approx((-2.0, -1.0))
    # A <= 0 uses tau_neg = 2: loss -sigmoid(0) * 4 / 2 * (-1) = 1.
    assert one_token_loss(1.0, -1.0, "sapo", sapo_temperature_neg=2.0)[0] == pytest.approx(1.0)
    # No clipping (eps = inf): ratio 2, A = 1 gives -2 with gradient -r A = -2; eps 0.2 / 0.28 clips it to -1.28, 0.
    assert one_token_loss(2.0, 1.0, "grpo", eps=(math.inf, math.inf)) == pytest.approx((-2.0, -2.0))
    assert one_token_loss(2.0, 1.0, "grpo") == pytest.approx((-1.28, 0.0))
    # vespo: -sg(phi(w)) A log p, phi(w) = e^lambda w^k e^(-lambda w). One token, w = 2 (log p = 0, loss 0):
    # A = 1 (k 2, lambda 3): gradient -4 e^-3; A = -1 (k 3, lambda 2): gradient +8 e^-2.
    assert one_token_loss(2.0, 1.0, "vespo") == pytest.approx((0.0, -4 * math.exp(-3)))
    assert one_token_loss(2.0, -1.0, "vespo") == pytest.approx((0.0, 8 * math.exp(-2)))


def test_sequence_level_ratio_is_the_geometric_mean_over_the_sequence():
    """GSPO: token ratios 2 and 8 on a sequence of 2 tokens (and padding) give one ratio sqrt(16) = 4 for both."""
    logps = torch.log(torch.tensor([[2.0, 8.0, 100.0]], dtype=torch.float64))
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    ratio = importance_ratio(logps, torch.zeros_like(logps), mask, "sequence")
    assert ratio.shape == (1, 1) and ratio.item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="importance_sampling_level must be one of token, sequence"):
        importance_ratio(logps, logps, mask, "group")


def test_high_entropy_mask_keeps_the_top_fraction_of_real_tokens():
    """Five real tokens with entropies 0.1..0.5 (and padding with a large entropy that must not count):
    quantile 0.4 keeps the tokens at or above the 60th percentile of the five, i.e. 0.34 -> 0.4 and 0.5."""
    entropy = torch.tensor([[0.1, 0.5, 0.3, 9.0], [0.2, 0.4, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert high_entropy_mask(entropy, mask, 0.4).tolist() == [[False, True, False, False], [False, True, False, False]]
    # The threshold can come from a larger (gathered) set: against entropies up to 1.0 nothing here is kept.
    assert not high_entropy_mask(entropy, mask, 0.4, all_entropies=torch.tensor([0.1, 0.5, 0.8, 0.9, 1.0])).any()
    assert high_entropy_mask(entropy, mask, 1.0).tolist() == mask.bool().tolist()


def test_entropy_mask_stops_the_policy_gradient_on_masked_tokens_only():
    logps = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    old = torch.full((1, 2), -math.log(1.1), dtype=torch.float64)  # ratio 1.1 on both tokens, inside the clip
    out = grpo_loss(logps, old, None, torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 2), beta=0.0,
                    epsilon_low=0.2, epsilon_high=0.28, loss_type="grpo", normalizer=LossNormalizer(1, 2.0, 2),
                    entropy_mask=torch.tensor([[True, False]]))
    (grad,) = torch.autograd.grad(out.loss, logps)
    # mean over the sequence's 2 tokens of -r A on the kept token only: d/dlogp = -1.1 / 2 there, 0 elsewhere.
    assert grad[0].tolist() == pytest.approx([-0.55, 0.0])


def test_entropy_bonus_by_hand():
    """Advantage 0, beta 0: the loss is only -coef x the mean entropy over the micro-batch's tokens, divided by
    the 2 micro-batches: -0.1 * (1 + 3) / 2 / 2 = -0.1; each entropy's gradient is -0.1 / 2 / 2."""
    logps = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    entropy = torch.tensor([[1.0, 3.0, 7.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    out = grpo_loss(logps, None, None, torch.zeros(1, dtype=torch.float64), mask, beta=0.0, epsilon_low=0.2,
                    epsilon_high=0.28, loss_type="grpo", normalizer=LossNormalizer(2, 2.0, 3),
                    objective=PolicyObjective(entropy_coef=0.1), entropy=entropy)
    assert out.loss.item() == pytest.approx(-0.1)
    (grad,) = torch.autograd.grad(out.loss, entropy)
    assert grad[0].tolist() == pytest.approx([-0.025, -0.025, 0.0])
    with pytest.raises(ValueError, match="entropy_coef != 0 needs"):
        grpo_loss(logps, None, None, torch.zeros(1, dtype=torch.float64), mask, beta=0.0, epsilon_low=0.2,
                  epsilon_high=0.28, loss_type="grpo", normalizer=LossNormalizer(1, 2.0, 3),
                  objective=PolicyObjective(entropy_coef=0.1))


@pytest.mark.parametrize("variant, mu", [({"top_entropy_quantile": 0.4}, 1), ({"entropy_coef": 0.05}, 1),
                                       ({"off_policy_mask_threshold": 0.02}, 2)], ids=str)
def test_masking_and_entropy_variants_change_trls_loss(tiny_model_dir, tmp_path, variant, mu):
    """These parity cases are not vacuous: in TRL itself the option moves the loss of the same batch."""
    plain = parity_case(tiny_model_dir, tmp_path / "plain", "dapo", 0.04, mu, True)
    varied = parity_case(tiny_model_dir, tmp_path / "varied", "dapo", 0.04, mu, True, variant=variant)
    assert abs(varied.trl_loss - plain.trl_loss) > 1e-4, (plain, varied)
