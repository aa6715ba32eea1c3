"""The README's quick start, run as written, so the README cannot drift from the code.

The block is the fenced one after the `<!-- quick-start -->` marker in README.md. It runs in a
temporary folder that holds tiny generated features (`feats/`, `train.csv`, `test.csv`), the
inputs the block names:

- every `scalevid ...` line runs through `scalevid.cli.main` with the arguments as written,
  followed by `SHRINK[command]`: settings that only make the work small enough for a test
  (fewer epochs, seeds and grid points, smaller heads), never paths or switches the line sets;
- the `python - <<'EOF'` snippet runs as written, and prints what its comment says;
- `cat FILE` checks that the file is there;
- the `./run.sh setup` line is what this suite already runs in.

Any other line fails the test, so a new kind of step in the quick start needs a way to run here.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from scalevid.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- quick-start"
CLIPS, DIM = 16, 16

pytestmark = pytest.mark.usefixtures("one_thread")

SHRINK = {
    "train": [
        *("--epochs", "2", "--batch-size", "8", "--device", "cpu", "--precision", "fp32"),
        *("--set", "model.set_head=[64,16]", "--set", "model.pred_head=[64,16]"),
        *("--set", "model.target_head=[64,16]"),
    ],
    "eval": [
        *("--seeds", "0", "--device", "cpu"),
        *("--set", "head_epochs=2", "--set", "head_lrs=[0.01]", "--set", "head_weight_decays=[0]"),
        *("--set", "linear_batchnorm=[false]", "--set", "mlp_hidden=[16]"),
        *("--set", "finetune_max_epochs=1", "--set", "finetune_min_steps=2"),
        *("--set", "finetune_max_steps=4", "--set", "finetune_heads=[set]"),
        *("--set", "finetune.batch_size=8", "--set", "finetune.num_views=4"),
        *("--set", "attentive_lrs=[0.001]", "--set", "attentive.heads=4"),
        *("--set", "cv_folds=2", "--set", "plots=false", "--set", "precision=fp32"),
    ],
}


def quick_start_lines() -> list[str]:
    """The lines of the fenced block after the marker, backslash continuations joined."""
    text = README.read_text()
    start = text.index(MARKER)
    fence = re.search(r"^```\w*\n(.*?)^```", text[start:], flags=re.S | re.M)
    assert fence is not None, "no fenced block after the quick-start marker"
    return fence.group(1).replace("\\\n", " ").splitlines()


def write_inputs(root: Path) -> None:
    """feats/<id>.npy (CLIPS, DIM) per video and `path label` lists for a train and a test split:
    two classes, each clip its class's centre plus noise."""
    rng = np.random.default_rng(0)
    centres = 4 * np.eye(2, DIM)
    (root / "feats").mkdir()
    for split, videos in (("train", 16), ("test", 8)):
        lines = []
        for i in range(videos):
            name = f"{split}{i:03d}"
            features = centres[i % 2] + rng.normal(size=(CLIPS, DIM))  # (CLIPS, DIM)
            np.save(root / "feats" / f"{name}.npy", features.astype(np.float32))
            lines.append(f"videos/{name}.mp4 {('jump', 'run')[i % 2]}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")


def test_the_readme_quick_start_runs_as_written(tmp_path, monkeypatch, capsys):
    write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    lines = iter(quick_start_lines())
    ran = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if line.startswith("./run.sh setup"):
            continue
        if words[0] == "scalevid":
            code = main([*words[1:], *SHRINK.get(words[1], [])])
            assert code == 0, line
        elif words[0] == "cat":
            assert all(Path(w).is_file() for w in words[1:]), line
        elif words[:3] == ["python", "-", "<<EOF"]:
            snippet = "\n".join(iter(lambda: next(lines), "EOF"))
            capsys.readouterr()
            exec(compile(snippet, str(README), "exec"), {"__name__": "__main__"})
            assert capsys.readouterr().out.strip() == f"({CLIPS}, 256) (256,)"
        else:
            pytest.fail(f"the quick start has a line this test cannot run: {line!r}")
        ran.append(words[0] if words[0] != "scalevid" else f"scalevid {words[1]}")
    # the path runs through to an evaluation, and its report carries the uncertainty
    assert ran.count("scalevid eval") == 1 and "python" in ran
    results = json.loads((tmp_path / "evals" / "scale" / "results.json").read_text())
    assert "best_probe" in results and "best_probe_reason" in results
    assert all("se" in entry for entry in results["probes"].values())
    assert "Chance: " in (tmp_path / "evals" / "scale" / "results.md").read_text()
