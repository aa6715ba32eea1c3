"""attention_cpu.py: both paths timed at a small size, and lengths the explicit path never
takes refused."""

import json

import pytest

import attention_cpu


def test_both_paths_are_timed_and_written(tmp_path):
    out = tmp_path / "attention.json"
    assert (
        attention_cpu.main(["--lengths", "9", "--calls", "1", "--repeats", "1", "--json", str(out)])
        == 0
    )
    (row,) = json.loads(out.read_text())["rows"]
    assert row["dtype"] == "bfloat16" and row["n"] == 9
    for path in ("fused", "explicit"):
        for what in ("train p=0.1", "train p=0.0", "forward"):
            assert row["ms"][f"{path} {what}"] > 0


def test_lengths_past_the_short_set_limit_are_refused():
    from scalevid.model import SHORT_SET_TOKENS

    with pytest.raises(SystemExit):
        attention_cpu.main(["--lengths", str(SHORT_SET_TOKENS + 1)])
