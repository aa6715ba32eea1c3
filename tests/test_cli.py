"""The command line end to end on small local files: import -> check -> train -> load."""

import json

import numpy as np
import pytest

from scalevid import ScaleModel
from scalevid.cli import main
from scalevid.store import FeatureStore


def write_npy_folder(root, videos=40, clips=6, dim=16, *, classes=("jump", "run"), seed=0):
    """Per-video .npy clip features and a `path label` list; vid005.npy is broken. Each clip is
    its class's centre (8 along the class's own axis, the same for every seed) plus unit noise:
    nearest neighbours share their class, so any sound probe is right on nearly every video."""
    centres = 8 * np.eye(len(classes), dim)  # (C, D)
    rng = np.random.default_rng(seed)
    feats = root / "feats"
    feats.mkdir()
    lines = []
    for i in range(videos):
        c = i % len(classes)
        clip_features = centres[c] + rng.normal(size=(clips, dim))  # (clips, D)
        np.save(feats / f"vid{i:03d}.npy", clip_features.astype(np.float32))
        lines.append(f"videos/vid{i:03d}.mp4 {classes[c]}")
    (feats / "vid005.npy").write_bytes(b"not an npy file")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return feats, root / "train.csv"


def import_npy(feats, listing, store) -> int:
    return main(
        [
            "-q",
            "import",
            "--features",
            str(feats),
            "--list",
            str(listing),
            "--out",
            str(store),
            "--no-progress",
        ]
    )


@pytest.mark.slow
def test_import_check_train_load(tmp_path, capsys):
    feats, listing = write_npy_folder(tmp_path)
    store = tmp_path / "store"
    code = import_npy(feats, listing, store)
    assert code == 1  # one broken .npy: recorded, the rest imported
    assert "vid005" in (store / "failures.jsonl").read_text()
    opened = FeatureStore.open(store)
    assert len(opened) == 39 and opened.manifest.class_names == ["jump", "run"]
    t0 = opened.boxes[0, :, 1]
    assert np.allclose(t0, np.arange(6) / 6)  # uniform temporal positions, full frame

    assert main(["store", "check", str(store), "--no-progress"]) == 0
    assert "OK" in capsys.readouterr().out

    run = tmp_path / "run"
    args = [
        "-q",
        "train",
        "--store",
        str(store),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--num-views",
        "3",
        "--no-progress",
    ]
    assert main(args) == 0
    model = ScaleModel.from_pretrained(run)
    out = model.embed(opened.features(0).astype(np.float32), opened.boxes[0])
    assert out.clips.shape == (6, 256) and out.set.shape == (256,)


def test_store_check_reports_a_truncated_shard(tmp_path, capsys):
    feats, listing = write_npy_folder(tmp_path)
    store = tmp_path / "store"
    import_npy(feats, listing, store)
    shard = next((store / "shards").iterdir())
    data = (shard / "features.npy").read_bytes()
    (shard / "features.npy").write_bytes(data[: len(data) // 2])
    assert main(["store", "check", str(store), "--no-progress"]) == 1
    assert shard.name in capsys.readouterr().out
    assert main(["-q", "train", "--store", str(store), "--out", str(tmp_path / "r")]) == 2


CLASSES = ("jump", "run", "swim", "throw")


@pytest.fixture(scope="module")
def separable(tmp_path_factory):
    """Train and test stores of separable classes (fresh videos in each, vid005 of each broken)
    and a small run trained on the train store: (train store, test store, run)."""
    root = tmp_path_factory.mktemp("separable")
    stores = {}
    for split, videos, seed in (("train", 48, 0), ("test", 25, 1)):
        (root / split).mkdir()
        feats, listing = write_npy_folder(root / split, videos=videos, classes=CLASSES, seed=seed)
        stores[split] = root / f"{split}_store"
        import_npy(feats, listing, stores[split])
    config = root / "small.yaml"
    config.write_text(
        "model: {hidden: 32, heads: 4, set_head: [64, 16], pred_head: [64, 16], "
        "target_head: [64, 16]}\n"
    )
    run = root / "run"
    train = ["-q", "train", "--store", str(stores["train"]), "--out", str(run)]
    options = ["--config", str(config), "--epochs", "2", "--batch-size", "16", "--num-views", "3"]
    assert main([*train, *options, "--no-progress"]) == 0
    return stores["train"], stores["test"], run


def test_eval_classifies_a_store_of_separable_classes(separable, tmp_path, capsys):
    """Both kNN rows must classify the fresh test videos (24 readable, chance 25%)."""
    store, test_store, run = separable
    report = tmp_path / "report"
    code = main(
        [
            "-q",
            "eval",
            "--train",
            str(store),
            "--test",
            str(test_store),
            "--run",
            str(run),
            "--out",
            str(report),
            "--probes",
            "knn",
            "scale_knn",
            "--seeds",
            "0",
            "--baseline-cache",
            str(tmp_path / "baselines"),
            "--no-progress",
        ]
    )
    assert code == 0
    assert "SCALE_kNN" in capsys.readouterr().out
    results = json.loads((report / "results.json").read_text())
    assert results["num_test_videos"] == 24
    for row in ("knn", "scale_knn"):
        assert results["probes"][row]["mean"]["top1"] >= 90.0, row
    assert [p.name.split("-")[0] for p in (tmp_path / "baselines").iterdir()] == ["knn"]


def test_embed_and_search_find_neighbours_of_the_same_class(separable, tmp_path, capsys):
    store, _, run = separable
    emb = tmp_path / "emb"
    embed = ["-q", "embed", "--store", str(store), "--run", str(run), "--out", str(emb)]
    assert main([*embed, "--no-progress"]) == 0
    capsys.readouterr()
    search = ["search", "--store", str(store), "--embeddings", str(emb)]
    assert main([*search, "--query", "videos/vid007", "-k", "4"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[0][1] == "+1.0000" and lines[0][2] == "videos/vid007"
    neighbours = [int(line[2].removeprefix("videos/vid")) for line in lines[1:4]]
    assert len(neighbours) == 3 and all(i % 4 == 7 % 4 for i in neighbours)  # vid007 is "throw"
