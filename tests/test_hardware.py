import pytest
import torch

from scalevid.hardware import cpuinfo_has_bf16, flush_denormals
from tests.conftest import subnormal_product


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n", True),
        ("flags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n", True),
        ("flags\t\t: fpu sse sse2 avx avx2 fma\n", False),  # no bf16 matrix units
        ("flags\t\t: fpu avx512f avx512_fp16\n", False),  # a near miss is not a match
        ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n", True),
        ("Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n", False),
        ("model name\t: bf16 marketing name\nflags\t\t: fpu\n", False),  # only flag lines count
        ("", False),
    ],
)
def test_bf16_matrix_units_from_cpuinfo(text, expected):
    assert cpuinfo_has_bf16(text) is expected


def test_flush_denormals_makes_subnormal_results_zero():
    assert subnormal_product() > 0  # IEEE arithmetic before (conftest restores it after each test)
    if not flush_denormals():
        pytest.skip("this CPU cannot flush subnormal floats")
    assert subnormal_product() == 0.0
    assert (torch.tensor([2e-38]) * 0.5).item() == 0.0  # a normal input whose result is subnormal
    assert (torch.tensor([1e-20]) * torch.tensor([1e-10])).item() == pytest.approx(1e-30)
