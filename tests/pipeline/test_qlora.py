"""QLoRA on CPU: gradients through 4-bit weights must equal those through their dequantized twin."""

import pytest
import torch

from pipeline.arguments import ModelArguments
from pipeline.models import add_lora, load_model

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is a declared dependency; install the project")


def lora_grads_and_logits(model, ids):
    model.train()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    return grads, out.logits.detach()


def test_qlora_gradients_match_a_dequantized_twin(tiny_model_dir):
    args = ModelArguments(model_name_or_path=str(tiny_model_dir), use_peft=True, load_in_4bit=True,
                          lora_r=4, lora_dropout=0.0)
    quantized = load_model(args)
    linear4bit = {n: m for n, m in quantized.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert linear4bit, "no 4-bit layers were created"
    assert all(m.support_avx512bf16_for_cpu is False for m in linear4bit.values())

    twin = load_model(ModelArguments(model_name_or_path=str(tiny_model_dir)))
    for name, module in linear4bit.items():
        dequantized = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
        twin.get_submodule(name).weight.data = dequantized.to(torch.float32).reshape(module.out_features, -1)

    torch.manual_seed(0)
    quantized = add_lora(quantized, args)
    twin = add_lora(twin, ModelArguments(model_name_or_path=str(tiny_model_dir), use_peft=True, lora_r=4, lora_dropout=0.0))
    # LoRA B starts at zero; give both the same non-zero adapter so every LoRA gradient is non-trivial.
    torch.manual_seed(1)
    for (name, q_param), (_, t_param) in zip(
        ((n, p) for n, p in quantized.named_parameters() if "lora_" in n),
        ((n, p) for n, p in twin.named_parameters() if "lora_" in n),
    ):
        value = torch.randn_like(q_param) * 0.05
        q_param.data.copy_(value)
        t_param.data.copy_(value)

    ids = torch.tensor([[3, 17, 99, 250, 8, 41, 7, 300]])
    # The trap: an eval-mode no-grad forward makes bitsandbytes repack its weights on avx512-bf16 CPUs,
    # after which LoRA gradients through them are wrong unless the repacking is disabled.
    quantized.eval()
    with torch.no_grad():
        quantized(input_ids=ids)

    q_grads, q_logits = lora_grads_and_logits(quantized, ids)
    t_grads, t_logits = lora_grads_and_logits(twin, ids)
    torch.testing.assert_close(q_logits, t_logits, rtol=1e-4, atol=1e-4)
    assert q_grads.keys() == t_grads.keys() and q_grads
    for name, grad in t_grads.items():
        assert grad.abs().sum() > 0, name
        rel = (q_grads[name] - grad).norm() / grad.norm()
        assert rel < 1e-3, f"{name}: relative gradient error {rel:.2e}"
