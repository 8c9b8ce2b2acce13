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
    assert "mixed_precision: bf16" in record.getMessage() and "float32" in record.getMessage()


def test_no_warning_on_a_gpu_or_a_cpu_with_native_bf16(tmp_path, caplog):
    avx2, amx = tmp_path / "avx2", tmp_path / "amx"
    avx2.write_text(EPYC_AVX2)
    amx.write_text(SAPPHIRE_RAPIDS)
    with caplog.at_level(logging.WARNING):
        assert warn_if_cpu_bf16_is_slow("bf16: true", on_gpu=True, cpuinfo_path=avx2) is False
        assert warn_if_cpu_bf16_is_slow("bf16: true", on_gpu=False, cpuinfo_path=amx) is False
    assert caplog.records == []
