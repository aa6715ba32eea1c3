"""The command line end to end on small local files: import -> check -> train -> load."""

import numpy as np

from scalevid import ScaleModel
from scalevid.cli import main
from scalevid.store import FeatureStore


def write_npy_folder(root, videos=40, clips=6, dim=16):
    rng = np.random.default_rng(0)
    feats = root / "feats"
    feats.mkdir()
    lines = []
    for i in range(videos):
        label = ["jump", "run"][i % 2]
        np.save(feats / f"vid{i:03d}.npy", rng.normal(size=(clips, dim)).astype(np.float32))
        lines.append(f"videos/vid{i:03d}.mp4 {label}")
    (feats / "vid005.npy").write_bytes(b"not an npy file")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return feats, root / "train.csv"


def test_import_check_train_load(tmp_path, capsys):
    feats, listing = write_npy_folder(tmp_path)
    store = tmp_path / "store"
    code = main(
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
    main(
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
    shard = next((store / "shards").iterdir())
    data = (shard / "features.npy").read_bytes()
    (shard / "features.npy").write_bytes(data[: len(data) // 2])
    assert main(["store", "check", str(store), "--no-progress"]) == 1
    assert shard.name in capsys.readouterr().out
    assert main(["-q", "train", "--store", str(store), "--out", str(tmp_path / "r")]) == 2
