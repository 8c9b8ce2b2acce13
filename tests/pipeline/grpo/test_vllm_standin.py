"""The engine's calls into vLLM, checked with a stand-in ``vllm`` module whose LLM records every call, the
weights it is sent, and what sleep mode released (the real vLLM runs in `make test-vllm`)."""

import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipeline.grpo.sampling import SamplingParams
from pipeline.grpo.vllm_engine import VLLMEngine


class RecordingLLM:
    """Stands in for vllm.LLM: records calls; level-1 sleep releases weights and KV cache until woken."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.loaded: dict[str, torch.Tensor] = {}
        self.calls: list[tuple] = []
        self.released: set[str] = set()
        runner = SimpleNamespace(reload_weights=self._reload_weights)
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner)))

    def sleep(self, level):
        self.calls.append(("sleep", level))
        self.released = {"weights", "kv_cache"}

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tuple(tags or ("weights", "kv_cache"))))
        self.released -= set(tags or ("weights", "kv_cache"))

    def _reload_weights(self, weights_iterator):
        self.calls.append(("reload_weights", "weights" in self.released))
        self.loaded.update((name, tensor.clone()) for name, tensor in weights_iterator)

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))

    def generate(self, prompts, sampling, use_tqdm):
        self.calls.append(("generate", sorted(self.released)))
        done = SimpleNamespace(token_ids=[5, 2], logprobs=[{5: SimpleNamespace(logprob=-0.5)}, {2: SimpleNamespace(logprob=-1.0)}])
        return [SimpleNamespace(outputs=[done] * sampling.n) for _ in prompts]


@pytest.fixture
def recording_vllm(monkeypatch):
    fake = types.ModuleType("vllm")
    fake.LLM = RecordingLLM
    fake.SamplingParams = lambda **kwargs: SimpleNamespace(**kwargs)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    return fake


def test_sleep_mode_wakes_the_weights_before_loading_and_the_cache_before_generating(recording_vllm, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # sleep mode is offered on a GPU only
    engine = VLLMEngine("unused", max_model_length=16, batch_sequences=4, gpu_memory_utilization=0.3, seed=0,
                        enable_sleep_mode=True)
    params = SamplingParams(2, 4, 1.0, 1.0, (2,), 0)
    engine.load_weights([("w", torch.zeros(1))])
    ids, logps = engine.sample([torch.tensor([7, 8])], params, device="cpu")
    engine.sample([torch.tensor([7, 8])], params, device="cpu")  # no update in between: nothing to load
    assert engine.llm.calls == [
        ("sleep", 1),  # after start
        ("wake_up", ("weights",)), ("reload_weights", False), ("reset_prefix_cache",),  # written while mapped
        ("wake_up", ("kv_cache",)), ("generate", []), ("sleep", 1),
        ("wake_up", ("weights",)), ("wake_up", ("kv_cache",)), ("generate", []), ("sleep", 1),
    ]
    assert ids.tolist() == [[5, 2], [5, 2]] and logps.tolist() == [[-0.5, -1.0], [-0.5, -1.0]]


def test_an_adapter_folder_starts_the_engine_from_its_base_and_sends_base_plus_adapter(
        recording_vllm, tiny_model_dir, mini_gsm8k, tmp_path, monkeypatch):
    """GRPO from an SFT adapter folder with use_vllm: vLLM cannot load an adapter folder, so the engine starts
    from the adapter's base model, and the weights sent before the first generation are base + SFT adapter
    (the GRPO adapter starts at zero)."""
    from peft import LoraConfig, get_peft_model

    from pipeline.arguments import DataArguments, ModelArguments
    from pipeline.data import load_gsm8k
    from pipeline.grpo.config import GRPOArguments
    from pipeline.grpo.inputs import local_prompts
    from pipeline.grpo.trainer import generate, setup
    from pipeline.models import load_model

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    torch.manual_seed(1)
    sft = get_peft_model(load_model(ModelArguments(model_name_or_path=str(tiny_model_dir))),
                         LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))  # a non-zero adapter
    sft.save_pretrained(tmp_path / "sft-adapter")
    expected = {k: v.detach().clone() for k, v in sft.merge_and_unload().state_dict().items()}
    args = GRPOArguments(output_dir=str(tmp_path / "run"), use_vllm=True, max_steps=1, prompts_per_step=1,
                         num_generations=2, max_completion_length=4, reward_funcs=["toy_rewards:text_length"],
                         save_steps=0, seed=0)
    model_args = ModelArguments(model_name_or_path=str(tmp_path / "sft-adapter"), use_peft=True, lora_r=4, lora_alpha=8)
    state = setup(args, model_args, DataArguments(dataset_name=str(mini_gsm8k)),
                  load_gsm8k(str(mini_gsm8k), "train").examples)
    assert state.vllm.llm.kwargs["model"] == str(tiny_model_dir)
    generate(state, local_prompts(state, 0))
    sent = state.vllm.llm.loaded
    assert not any("lora" in name for name in sent)
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(expected[q_proj], load_model(ModelArguments(model_name_or_path=str(tiny_model_dir)))
                              .state_dict()[q_proj])  # the SFT adapter changed it
    for name, value in expected.items():
        if name in sent:
            torch.testing.assert_close(sent[name], value, rtol=1e-6, atol=1e-6, msg=name)
    assert q_proj in sent
