"""The bf16-on-CPU check reads real /proc/cpuinfo-shaped files (lines copied from an AVX2 EPYC,
a Sapphire Rapids Xeon and a Graviton3)."""

import logging

import pytest

from pipeline.runtime import cpu_has_native_bf16, warn_if_cpu_bf16_is_slow

EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid sve svebf16 i8mm bf16
"""


@pytest.mark.parametrize("text, expected", [(EPYC_AVX2, False), (SAPPHIRE_RAPIDS, True), (GRAVITON3, True)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, text, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert cpu_has_native_bf16(cpuinfo) is expected


def test_unreadable_cpuinfo_is_unknown_and_warns_nobody(tmp_path, caplog):
    missing = tmp_path / "no-such-file"
    assert cpu_has_native_bf16(missing) is None
    with caplog.at_level(logging.WARNING):
        assert warn_if_cpu_bf16_is_slow("dtype: bfloat16", on_gpu=False, cpuinfo_path=missing) is False
    assert caplog.records == []


def test_bf16_on_an_avx2_cpu_warns_and_names_the_setting(tmp_path, caplog):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(EPYC_AVX2)
    with caplog.at_level(logging.WARNING):
        assert warn_if_cpu_bf16_is_slow("mixed_precision: bf16", on_gpu=False, cpuinfo_path=cpuinfo) is True
    (record,) = caplog.records
    assert "mixed_precision: bf16" in record.getMessage() and "use mixed_precision: no unless" in record.getMessage()


def test_no_warning_on_a_gpu_or_a_cpu_with_native_bf16(tmp_path, caplog):
    avx2, amx = tmp_path / "avx2", tmp_path / "amx"
    avx2.write_text(EPYC_AVX2)
    amx.write_text(SAPPHIRE_RAPIDS)
    with caplog.at_level(logging.WARNING):
        assert warn_if_cpu_bf16_is_slow("bf16: true", on_gpu=True, cpuinfo_path=avx2) is False
        assert warn_if_cpu_bf16_is_slow("bf16: true", on_gpu=False, cpuinfo_path=amx) is False
    assert caplog.records == []


QUIET_PROBE = """
import logging, sys, warnings
from pipeline.runtime import setup_logging
if sys.argv[3] == "quiet":
    setup_logging()
else:
    logging.basicConfig()
from transformers import AutoModelForCausalLM
AutoModelForCausalLM.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])
from deepspeed.accelerator import get_accelerator
get_accelerator()
warnings.warn("`gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
warnings.warn("a warning of ours", UserWarning)
logging.getLogger("pipeline.probe").warning("a logged warning of ours")
"""
LIBRARY_CHATTER = ("Loading weights", "Writing model shards", "Setting accelerator to CPU", "`gradient_checkpointing`")


def test_setup_logging_quiets_the_libraries_chatter_and_keeps_our_warnings(tiny_model_dir, tmp_path):
    """What every run printed (weight-loading and shard-writing bars, DeepSpeed's accelerator notice on a CPU,
    transformers' own deprecation notices) is gone after setup_logging; our warnings stay. Without it, the same
    probe prints every one of them (so the probe can see them)."""
    import os
    import sys

    import processes

    env = {k: v for k, v in os.environ.items() if k not in ("DS_ACCELERATOR", "HF_DATASETS_DISABLE_PROGRESS_BARS")}
    probe = tmp_path / "probe.py"
    probe.write_text(QUIET_PROBE)
    probes = {mode: processes.start([sys.executable, str(probe), str(tiny_model_dir), str(tmp_path / mode), mode],
                                    cwd=tmp_path, env=env, log=tmp_path / f"{mode}.log")
              for mode in ("loud", "quiet")}  # both at once: each mostly waits on its imports
    codes = processes.wait_all(list(probes.values()), timeout=120)
    stderr = {mode: (tmp_path / f"{mode}.log").read_text() for mode in probes}  # stdout too: DeepSpeed logs there
    assert codes == [0, 0], stderr
    assert [c for c in LIBRARY_CHATTER if c in stderr["loud"]] == list(LIBRARY_CHATTER)
    assert [c for c in LIBRARY_CHATTER if c in stderr["quiet"]] == [], stderr["quiet"]
    assert "a warning of ours" in stderr["quiet"] and "a logged warning of ours" in stderr["quiet"]


INTERRUPT_PROBE = """
import os, signal, threading, time, torch
from pipeline.runtime import GracefulInterrupt
a = torch.randn(1500, 1500) / 40
with GracefulInterrupt() as interrupt:
    os.kill(os.getpid(), signal.SIGINT)  # the first: a stop at the next step boundary is requested
    torch.mm(a, a)  # a few bytecodes, so that Python runs the handler
    print("requested", interrupt.requested, flush=True)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # long C calls (matmuls), as a backward pass is, for up to 20 s
        torch.mm(a, a)
print("survived the second interrupt", flush=True)
"""


def test_a_second_ctrl_c_stops_at_once_even_inside_a_long_c_call(tmp_path):
    """The first SIGINT only requests a stop (and says how to stop at once); the second, arriving while the
    main thread is busy in torch calls, ends the process by the signal itself, at once (a Python handler would
    run only after the C call returns, and a KeyboardInterrupt shows a traceback and exits with status 1)."""
    import signal
    import subprocess
    import sys

    probe = tmp_path / "probe.py"
    probe.write_text(INTERRUPT_PROBE)
    done = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=300)
    assert done.stdout == "requested SIGINT\n"
    assert done.returncode == -signal.SIGINT, done.stderr[-2000:]
    assert "Ctrl-C again stops at once" in done.stderr and "Traceback" not in done.stderr
