"""Which precisions a benchmark measures on which CPU, on fake /proc/cpuinfo texts of each kind."""

from __future__ import annotations

import dataclasses

import pytest

import machine
from scalevid.hardware import cpu_has_bf16_matmul

AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx fma avx2\n"
AVX512 = "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: avx2 avx512f avx512_vnni\n"
AVX512_BF16 = "model name\t: AMD EPYC\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16\n"
AMX = "model name\t: Intel Xeon Platinum\nflags\t: avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve i8mm bf16\nCPU part\t: 0xd4f\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd crc32\n"

KINDS = [
    (AVX2, "fp32 only", ("fp32",)),
    (AVX512, "AVX512 without bf16", ("fp32",)),
    (AVX512_BF16, "bf16 units", ("fp32", "bf16")),
    (AMX, "bf16 units (AMX)", ("fp32", "bf16")),
    (ARM_BF16, "bf16 units", ("fp32", "bf16")),
    (ARM, "fp32 only", ("fp32",)),
]


def fake_machine(cpuinfo: str) -> machine.Machine:
    return dataclasses.replace(
        machine.describe("cpu"),
        name=machine.cpu_name(cpuinfo),
        kind=machine.cpu_kind(cpuinfo),
        native=machine.native_precisions("cpu", cpuinfo),
    )


@pytest.mark.parametrize(("cpuinfo", "kind", "native"), KINDS)
def test_kind_and_native_precisions_follow_the_flags(cpuinfo, kind, native):
    assert machine.cpu_kind(cpuinfo) == kind
    assert machine.native_precisions("cpu", cpuinfo) == native


def test_a_cpu_without_bf16_units_skips_bf16_in_one_line_unless_asked():
    for cpuinfo in (AVX2, AVX512, ARM):
        fake = fake_machine(cpuinfo)
        keep, skipped = machine.choose_precisions(["fp32", "bf16"], fake)
        assert keep == ["fp32"]
        assert len(skipped) == 1 and skipped[0].startswith("bf16: not measured")
        assert "--emulated" in skipped[0]
        keep, skipped = machine.choose_precisions(["fp32", "bf16"], fake, emulated=True)
        assert (keep, skipped) == (["fp32", "bf16"], [])


def test_a_cpu_with_bf16_units_measures_bf16():
    for cpuinfo in (AVX512_BF16, AMX, ARM_BF16):
        assert machine.choose_precisions(["fp32", "bf16"], fake_machine(cpuinfo)) == (
            ["fp32", "bf16"],
            [],
        )


def test_cuda_runs_fp16_and_bf16_where_the_card_has_it():
    assert machine.native_precisions("cuda", AVX2, cuda_bf16=True) == ("fp32", "bf16", "fp16")
    assert machine.native_precisions("cuda", AVX512_BF16, cuda_bf16=False) == ("fp32", "fp16")


def test_the_names_and_flags_shown():
    assert machine.cpu_name(AVX2) == "AMD EPYC 7B12"
    assert machine.cpu_flags(ARM_BF16) >= {"asimd", "bf16", "i8mm"}
    assert "bf16 units (AMX)" in fake_machine(AMX).line()


def test_this_machine_agrees_with_the_library_on_bf16():
    """The benchmarks' bf16 decision is the one `precision: auto` takes in training."""
    here = machine.describe("cpu")
    assert ("bf16" in here.native) == cpu_has_bf16_matmul()
    assert set(here.flags) <= set(machine.SHOWN_FLAGS)
