"""The distributed engine a launch asked for, and the Accelerator that really runs it, on GPUs or on CPU.

``accelerate launch --config_file configs/accelerate/zero2.yaml`` exports the engine in its environment
(``ACCELERATE_USE_DEEPSPEED``, ``ACCELERATE_USE_FSDP``). Built with ``cpu=True``, an Accelerator ignores
them and runs plain DDP, silently; so on a machine without CUDA the engine's processes use gloo and the
Accelerator is built with ``cpu=False``, and a launch whose engine is not the one running stops in one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import torch

from pipeline.config import ConfigError

logger = logging.getLogger(__name__)

ENGINE_ENV = {"deepspeed": "ACCELERATE_USE_DEEPSPEED", "fsdp": "ACCELERATE_USE_FSDP"}


def launched_engine(environ: dict[str, str] | None = None) -> str | None:
    """``deepspeed`` or ``fsdp`` when the launch config asks for one, else None (DDP, or one process).

    >>> launched_engine({"ACCELERATE_USE_DEEPSPEED": "true"}), launched_engine({})
    ('deepspeed', None)
    """
    environ = os.environ if environ is None else environ
    for engine, variable in ENGINE_ENV.items():
        if environ.get(variable, "false").lower() in ("1", "true"):
            return engine
    return None


def make_accelerator(mixed_precision: str, *, micro_batch_size: int, max_grad_norm: float, **kwargs: Any):
    """The run's Accelerator, with the launched engine engaged (``kwargs`` go to ``Accelerator``).

    DeepSpeed's config gets what the loop decides: micro-batches of ``micro_batch_size`` (no dataloader is
    prepared to tell it), gradient clipping at ``max_grad_norm`` (DeepSpeed clips inside its step), and one
    accumulation step in its own counting, since the loop marks each update's last micro-batch itself.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, InitProcessGroupKwargs

    engine = launched_engine()
    on_gpu = torch.cuda.is_available()
    # DeepSpeed on CPU: its CPU accelerator over gloo (cpu=True would bypass it).
    handlers = [InitProcessGroupKwargs(backend="gloo")] if engine == "deepspeed" and not on_gpu else []
    if engine == "deepspeed" and not on_gpu:
        _skip_deepspeed_shared_memory_kernel()
    accelerator = Accelerator(cpu=not on_gpu and engine != "deepspeed", mixed_precision=mixed_precision,
                              kwargs_handlers=handlers, **kwargs)
    if engine == "fsdp" and not on_gpu and accelerator.distributed_type == DistributedType.MULTI_CPU:
        _fsdp_on_cpu(accelerator)
    running = accelerator.distributed_type
    expected = {"deepspeed": DistributedType.DEEPSPEED, "fsdp": DistributedType.FSDP}.get(engine)
    if expected is not None and running != expected:
        raise ConfigError(f"the launch config asks for {engine}, but accelerate runs {running.value}; "
                          f"check `accelerate env` and the config's distributed_type (no silent fallback)")
    if running == DistributedType.DEEPSPEED:
        config = accelerator.state.deepspeed_plugin.deepspeed_config
        config.update(train_micro_batch_size_per_gpu=micro_batch_size, gradient_accumulation_steps=1,
                      train_batch_size=micro_batch_size * accelerator.num_processes,
                      gradient_clipping=max_grad_norm if max_grad_norm > 0 else 0.0)
        logger.info("DeepSpeed ZeRO stage %s on %d processes (%s)", zero_stage(accelerator), accelerator.num_processes,
                    accelerator.device.type)
    return accelerator


def _skip_deepspeed_shared_memory_kernel() -> None:
    """DeepSpeed's CPU backend compiles a shared-memory all-reduce kernel as it starts (a C++ build: ~50 s on two
    cores, a compiler needed at run time, redone for each install path). Only its inference all-reduce uses it;
    training reduces through torch.distributed (gloo) either way. Marking the op unavailable skips the build."""
    import deepspeed.ops

    compatible = deepspeed.ops.__compatible_ops__  # DeepSpeed's own table of usable ops (0.19)
    if "deepspeed_shm_comm" in compatible:  # ShareMemCommBuilder.NAME
        compatible["deepspeed_shm_comm"] = False
    else:
        logger.warning("this DeepSpeed has no deepspeed_shm_comm op entry: it may compile kernels as it starts")


def _fsdp_on_cpu(accelerator) -> None:
    """accelerate builds FSDP only on GPUs; on CPU processes (gloo) its FSDP2 path runs as it is once the
    state says FSDP: ``fully_shard`` on a CPU device mesh, DTensor parameters, gathered state dicts."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # the launch config's fsdp_* settings, from the environment
    if plugin.fsdp_version != 2:
        raise ConfigError("FSDP on CPU processes runs FSDP2 only: set fsdp_version: 2 in the launch config")
    if accelerator.mixed_precision != "no":  # as accelerate does when it picks FSDP itself
        plugin.set_mixed_precision(accelerator.mixed_precision)
    PartialState().distributed_type = DistributedType.FSDP  # every later AcceleratorState() copies it from here
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin


def zero_stage(accelerator) -> int:
    """DeepSpeed's ZeRO stage, 0 when DeepSpeed is not running."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return int(plugin.zero_stage) if plugin is not None else 0


def shards_parameters(accelerator) -> bool:
    """Whether each process holds only a shard of the parameters (ZeRO-3, FSDP): then every process must run
    the same forward passes (generation and evaluation in step) and saving gathers the weights first."""
    from accelerate.utils import DistributedType

    return zero_stage(accelerator) == 3 or accelerator.distributed_type == DistributedType.FSDP


def finished_everywhere(accelerator):
    """A decoder's stop test for sharded parameters: given whether this process has finished, whether every
    process has (one all-reduce). Each forward pass gathers the parameters from every process, so a process
    that stopped decoding early would leave the others waiting in it."""
    def check(done: bool) -> bool:
        unfinished = torch.tensor([0.0 if done else 1.0], device=accelerator.device)
        return accelerator.reduce(unfinished, reduction="sum").item() == 0

    return check


@contextlib.contextmanager
def loading_on_this_process_only(accelerator):
    """Within it, ``from_pretrained`` loads a whole model on this process alone. Under ZeRO-3 transformers
    would partition it over every process (a collective the others do not join: a hang), e.g. when the main
    process merges the final adapter into full weights."""
    if zero_stage(accelerator) != 3:
        yield
        return
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(accelerator.state.deepspeed_plugin.dschf)


def engine_summary(accelerator, model) -> dict[str, Any]:
    """What is really running, for the run's config.json: accelerate's distributed type, DeepSpeed's ZeRO
    stage and optimizer, and the fraction of the parameters' elements this process holds (1.0 unsharded;
    1/processes under ZeRO-3 or FSDP, up to padding)."""
    local = total = 0
    for param in model.parameters():
        if hasattr(param, "ds_tensor"):  # ZeRO-3: a partition of the flattened parameter
            local, total = local + param.ds_tensor.numel(), total + param.ds_numel
        elif hasattr(param, "to_local"):  # FSDP2: a DTensor sharded over the mesh
            local, total = local + param.to_local().numel(), total + param.numel()
        else:
            local, total = local + param.numel(), total + param.numel()
    summary = {"distributed_type": accelerator.distributed_type.value, "processes": accelerator.num_processes,
               "device": accelerator.device.type, "mixed_precision": accelerator.mixed_precision,
               "local_parameter_fraction": local / max(total, 1)}
    if zero_stage(accelerator):
        summary.update(zero_stage=zero_stage(accelerator), optimizer=type(model.optimizer).__name__)
    return summary
