"""run_all's table from each benchmark's JSON: ratios against the plain row of the same run and
fractions of the matmul peak, checked against the benchmarks' own figures and hand arithmetic."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
import torch

import run_all
from tests.benchmarks.test_machine import AVX2, AVX512_BF16, fake_machine

RESULTS = Path(run_all.__file__).parent / "results"


def test_training_rows_match_the_benchmarks_own_ratios_and_fractions():
    result = json.loads((RESULTS / "train_throughput_cpu.json").read_text())
    peaks = {r["precision"]: r["peak_flops_per_s"] for r in result}
    rows = run_all.train_rows(result, peaks)
    assert len(rows) == len(result) == 10
    for row, raw in zip(rows, result, strict=True):
        assert row.vs_plain == pytest.approx(raw["speedup_vs_plain"])
        assert row.of_peak == pytest.approx(raw["flops_fraction"])
        assert row.value == raw["samples_per_s"] and row.precision == raw["precision"]


def test_training_rows_without_a_peak_leave_the_fraction_out():
    result = json.loads((RESULTS / "train_throughput_cpu.json").read_text())
    rows = run_all.train_rows(result, {"fp32": 1e11})  # no bf16 peak: bf16 not native
    assert {r.precision for r in rows if r.of_peak is None} == {"bf16"}


def test_extraction_rows():
    result = json.loads((RESULTS / "extract_throughput_cpu_64.json").read_text())
    plain, default = run_all.extract_rows(result, {"fp32": 1e11})
    assert default.vs_plain == pytest.approx(result["backbone"][0]["fast_over_plain"])
    assert plain.vs_plain == 1.0 and default.of_peak is None  # that run counted no FLOPs
    entry = {
        "clip": "16x64x64",
        "fast_dtype": "bfloat16",
        "flops_per_clip": 4.5e9,
        "clips_per_s": {"plain": 10.0, "fast": 20.0},
    }
    plain, default = run_all.extract_rows({"backbone": [entry]}, {"fp32": 9e10, "bf16": 3e11})
    assert (plain.precision, default.precision) == ("fp32", "bf16")
    assert plain.of_peak == pytest.approx(0.5) and default.of_peak == pytest.approx(0.3)
    assert default.vs_plain == pytest.approx(2.0)


def test_evaluation_rows_compare_seconds_with_fp32_where_bf16_is_native():
    runs = [{"precision": "fp32", "seconds": 100.0}, {"precision": "auto", "seconds": 80.0}]
    plain, default = run_all.eval_rows({"runs": {"HEAD": runs}}, {})
    assert (plain.precision, plain.vs_plain) == ("fp32", 1.0)
    assert default.precision == "bf16" and default.vs_plain == pytest.approx(1.25)
    (only,) = run_all.eval_rows({"runs": {"HEAD": [{"precision": "auto", "seconds": 90}]}}, {})
    assert (only.precision, only.vs_plain, only.value) == ("fp32", 1.0, 90)


def test_evaluation_asks_for_fp32_apart_only_where_auto_is_bf16(tmp_path):
    for cpuinfo, precisions in ((AVX2, ["auto"]), (AVX512_BF16, ["fp32", "auto"])):
        ctx = run_all.Context("cpu", fake_machine(cpuinfo), tmp_path, 2)
        argv = run_all.eval_argv(ctx)
        assert argv[argv.index("--precisions") + 1 :] == precisions


def test_verification_rows():
    result = {
        "features_gib": 0.25,
        "hash_threads": 2,
        "seconds_per_gib": {"verified-1": 2.0, "verified": 0.8},
    }
    plain, default = run_all.verify_rows(result, {})
    assert (plain.value, plain.vs_plain) == (0.5, 1.0)
    assert default.value == pytest.approx(1.25) and default.vs_plain == pytest.approx(2.5)


def test_table_names_the_machine_and_every_row():
    here = fake_machine(AVX2)
    rows = [
        run_all.Row("train", "training step, batch 512: fast", "fp32", 141.0, "videos/s", 1.4, 0.79)
    ]
    text = run_all.table(here, {"fp32": 1.35e11}, rows, {"eval": "exit 1"})
    assert here.line() in text and "fp32 0.135 TFLOP/s" in text
    assert "| training step, batch 512: fast | fp32 | 141 videos/s | 1.40 | 79 |" in text
    assert "Not measured: eval (exit 1)" in text


def test_every_part_has_a_script_whose_options_it_passes(tmp_path):
    ctx = run_all.Context(
        "cuda", dataclasses.replace(fake_machine(AVX2), device="cuda"), tmp_path, 2
    )
    for part in run_all.PARTS.values():
        assert (Path(run_all.__file__).parent / part.script).exists()
        assert "--device" in part.argv(ctx) or part.name == "verify"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_card_fails_in_one_line(capsys):
    assert run_all.main(["--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_a_part_past_its_timeout_is_stopped_with_its_children(tmp_path, monkeypatch):
    script = tmp_path / "hangs.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(tmp_path / 'pid')!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    part = run_all.Part("hangs", str(script), lambda ctx: [], run_all.verify_rows)
    monkeypatch.setattr(run_all, "PART_TIMEOUT_S", 2)
    ctx = run_all.Context("cpu", fake_machine(AVX2), tmp_path, 1)
    report = run_all.run_part(part, ctx, tmp_path)
    assert report["error"] == "stopped after 2 s" and "result" not in report
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # the killed grandchild is reaped by init shortly after
            os.kill(pid, 0)
            time.sleep(0.1)
