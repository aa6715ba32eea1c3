"""The reliability contract of scalevid: what survives what (issue 11; docs/reliability.md).

One test (or a small group) per fault, in the order of the issue. Each docstring names the
fault and the promise: a damaged or incomplete store is never trained or evaluated on, a second
writer is refused before it touches anything, a killed job loses nothing it had committed, and
bad input gives a one-line error naming the file and the fix (exit code 2, no traceback).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from scalevid.cli import main
from scalevid.data.lists import DatasetFormatError, parse_csv
from scalevid.extract import ExtractConfig, extract
from scalevid.model import ScaleModel
from scalevid.store import (
    MANIFEST_FILE,
    CorruptShardError,
    FeatureStore,
    Manifest,
    StoreWriter,
    check_store,
)
from scalevid.store.files import file_crc32 as real_crc32
from scalevid.store.importer import import_npy_folder
from scalevid.train import checkpoint as checkpoint_module
from scalevid.train import engine, load_config, train
from scalevid.train.checkpoint import load_checkpoint, save_checkpoint
from scalevid.train.schedule import adamw
from tests.conftest import write_video

# Names added for this contract (StoreLock, recover_checkpoint, NonFiniteLossError, ...) are
# imported inside the tests that use them, so that on a scalevid without them each test fails
# on its own instead of the whole module failing to import.

pytestmark = pytest.mark.usefixtures("one_thread")

VIDEOS, CLIPS, DIM, CLASSES = 48, 8, 16, 4
TINY_MODEL = {
    "hidden": 16,
    "heads": 2,
    "depth": 1,
    "set_head": [16, 8],
    "pred_head": [16, 8],
    "target_head": [16, 8],
}


def _boxes(k: int) -> np.ndarray:
    i = np.arange(k, dtype=np.float32)
    boxes = np.zeros((k, 7), np.float32)
    boxes[:, 0] = 1
    boxes[:, 1], boxes[:, 4] = i / k, (i + 1) / k
    boxes[:, 5:] = 1
    return boxes


def make_store(
    path: Path,
    *,
    videos: int = VIDEOS,
    clips: int = CLIPS,
    class_names: list[str] | None = None,
    shard_size: int = 16,
    seed: int = 0,
    by_class_name: bool = False,
    backbone: str = "toy",
    dim: int = DIM,
) -> Path:
    """A store of `videos` videos in shards of `shard_size` (3 shards by default). With
    `by_class_name` a video's features are near a centre chosen by its class *name*, so a
    probe scores well only if train and test agree on what each name's label is."""
    rng = np.random.default_rng(seed)
    names = class_names if class_names is not None else [f"c{i}" for i in range(CLASSES)]
    manifest = Manifest(
        dim=dim,
        clips_per_video=clips,
        backbone=backbone,
        sampling={"mode": "train"},
        dataset="toy",
        class_names=names,
    )
    with StoreWriter(path, manifest, shard_size=shard_size) as w:
        for i in range(videos):
            label = i % len(names)
            features = rng.standard_normal((clips, dim))
            if by_class_name:
                centre = np.random.default_rng(zlib.crc32(names[label].encode()))
                features = 0.3 * features + 3 * centre.standard_normal(dim)
            w.add(
                video_id=f"v{i:03d}",
                path=f"v{i:03d}.mp4",
                label=label,
                features=features,
                boxes=_boxes(clips),
            )
    return path


def config(store: Path, out: Path, **kw):
    options = {"epochs": 1, "batch_size": 16, "log_every": 1, "progress": False, "device": "cpu"}
    cfg = load_config(None, store=str(store), out=str(out), **{**options, **kw})
    cfg.model = type(cfg.model).from_dict({**cfg.model.to_dict(), **TINY_MODEL})
    return cfg


def flip_a_bit(path: Path) -> None:
    """Change the last byte of a float16 file's data by one bit: the value stays finite, so
    only a checksum can tell."""
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01  # the low byte of the last float16: a mantissa bit
    path.write_bytes(bytes(data))


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's error output: exactly one line, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "ERROR" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("clean") / "store")


@pytest.fixture(scope="module")
def run_folder(clean_store, tmp_path_factory) -> Path:
    return train(config(clean_store, tmp_path_factory.mktemp("run") / "run"))


@pytest.fixture
def store(clean_store, tmp_path) -> Path:
    return Path(shutil.copytree(clean_store, tmp_path / "store"))


# ------------------------------------------------------------------ 1. a damaged shard


def test_damaged_shard_is_never_trained_evaluated_embedded_or_searched(
    store, run_folder, tmp_path, capsys
):
    """Fault 1: bytes flipped in one shard. Train, eval, embed and search verify the checksums
    on open by default and refuse the store, naming the shard and the fix."""
    damaged = store / "shards" / "r0-000001" / "features.npy"
    flip_a_bit(damaged)
    commands = {
        "train": ["train", "--store", str(store), "--out", str(tmp_path / "r"), "--epochs", "1"],
        "eval": [
            "eval",
            "--train",
            str(store),
            "--test",
            str(store),
            "--out",
            str(tmp_path / "e"),
            "--probes",
            "knn",
            "--seeds",
            "0",
        ],
        "embed": [
            "embed",
            "--store",
            str(store),
            "--run",
            str(run_folder),
            "--out",
            str(tmp_path / "m"),
        ],
        "search": ["search", "--store", str(store), "--run", str(run_folder), "--query", "v000"],
    }
    for name, argv in commands.items():
        assert main(["--quiet", *argv]) == 2, name
        line = one_line_error(capsys)
        assert "r0-000001" in line and "features.npy" in line and "crc32" in line, name
        assert "store check" in line, name
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
    assert not (tmp_path / "e" / "results.json").exists()


def test_opting_out_of_verification_is_explicit_and_logged(store, tmp_path, capsys):
    """Fault 1, opt-out: --no-verify (verify_store / verify_checksums=False) skips the hashing
    for very large stores, and says so in a warning: never silently."""
    flip_a_bit(store / "shards" / "r0-000002" / "features.npy")
    assert (
        main(
            [
                "-q",
                "train",
                "--store",
                str(store),
                "--out",
                str(tmp_path / "r"),
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--no-progress",
                "--no-verify",
            ]
        )
        == 0
    )
    assert "checksums NOT verified" in capsys.readouterr().err


def test_verification_hashes_each_file_once_per_process(store, monkeypatch):
    """Fault 1, cost: opening a store verifies every file; opening it again in the same
    process (eval opens train and test, recipes open a store per sweep point) does not hash
    the same unchanged file twice, while `store check` always does."""
    calls = []

    def counting(path):
        calls.append(path)
        return real_crc32(path)

    monkeypatch.setattr("scalevid.store.check.file_crc32", counting)
    FeatureStore.open(store)
    first = len(calls)
    assert first >= 3 * 4  # 3 shards x 4 files
    FeatureStore.open(store)
    assert len(calls) == first
    flip_a_bit(store / "shards" / "r0-000000" / "features.npy")  # a rewritten file: new mtime
    with pytest.raises(CorruptShardError, match="r0-000000"):
        FeatureStore.open(store)
    assert check_store(store)


# ------------------------------------------------------------------- 2. a deleted shard


def test_manifest_records_the_shards_and_their_videos(store):
    """Fault 2, the record: manifest.json lists every committed shard with its video count."""
    manifest = json.loads((store / MANIFEST_FILE).read_text())
    assert {k: v["videos"] for k, v in manifest["shards"].items()} == {
        "r0-000000": 16,
        "r0-000001": 16,
        "r0-000002": 16,
    }
    assert FeatureStore.open(store).manifest.num_videos == VIDEOS


def test_deleted_shard_is_noticed_by_check_and_every_reader(store, tmp_path, capsys):
    """Fault 2: `rm -rf STORE/shards/<one>`. `store check` reports it, opening the store
    fails naming the shard, and training refuses instead of using 32 of 48 videos."""
    shutil.rmtree(store / "shards" / "r0-000001")
    problems = check_store(store)
    assert len(problems) == 1 and "r0-000001" in problems[0].message
    assert "16 videos" in problems[0].message
    with pytest.raises(CorruptShardError, match="r0-000001.*missing"):
        FeatureStore.open(store)
    assert main(["-q", "train", "--store", str(store), "--out", str(tmp_path / "r")]) == 2
    assert "r0-000001" in one_line_error(capsys)


def test_rerunning_the_writer_restores_a_deleted_shard(tmp_path):
    """Fault 2, the fix: re-running the same import notices the deleted shard, drops it from
    the manifest and imports its videos again; the store is whole."""
    features, listing = tmp_path / "npy", tmp_path / "list.txt"
    features.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        np.save(features / f"v{i}.npy", rng.standard_normal((4, DIM)).astype(np.float32))
    listing.write_text("".join(f"v{i}.mp4 {i % 3}\n" for i in range(12)))
    kw = dict(features_dir=features, list_file=listing, out=tmp_path / "s", progress=False)
    import_npy_folder(**kw, shard_size=5)
    shutil.rmtree(tmp_path / "s" / "shards" / "import-000001")
    with pytest.raises(CorruptShardError):
        FeatureStore.open(tmp_path / "s")
    report = import_npy_folder(**kw, shard_size=5)
    assert report.imported == 5 and report.skipped_existing == 7
    assert sorted(FeatureStore.open(tmp_path / "s").video_ids) == sorted(f"v{i}" for i in range(12))


def test_shard_published_but_not_committed_is_refused_then_adopted(tmp_path, monkeypatch):
    """Fault 2, the crash in between: a writer killed after publishing a shard but before
    committing it to the manifest leaves a shard no reader trusts; the next writer verifies and
    adopts it, so nothing is lost or stored twice."""
    root = make_store(tmp_path / "s", videos=16, shard_size=8)
    manifest = FeatureStore.open(root).manifest

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    writer = StoreWriter(root, manifest, shard_prefix="r1", shard_size=4)
    monkeypatch.setattr("scalevid.store.writer.update_manifest_shards", killed)
    with pytest.raises(KeyboardInterrupt):
        for i in range(4):
            writer.add(video_id=f"late{i}", path="p", features=np.ones((2, DIM)), boxes=_boxes(2))
    monkeypatch.undo()
    writer._lock.release()  # the killed process's lock goes with it
    assert (root / "shards" / "r1-000000").is_dir()
    with pytest.raises(CorruptShardError, match="r1-000000 is not listed"):
        FeatureStore.open(root)
    with StoreWriter(root, manifest, shard_prefix="r1") as again:
        assert {f"late{i}" for i in range(4)} <= again.done_ids()
    assert len(FeatureStore.open(root)) == 20


def test_store_written_by_format_1_opens_and_upgrades(store, caplog, capsys):
    """Fault 2, old stores: a store written before the manifest listed its shards (format 1)
    still opens, with a warning that a deleted shard cannot be noticed; `scalevid store
    upgrade` records its shards, after which a deletion is noticed."""
    path = store / MANIFEST_FILE
    data = json.loads(path.read_text())
    del data["shards"]
    path.write_text(json.dumps({**data, "format_version": 1}))
    with caplog.at_level("WARNING"):
        assert len(FeatureStore.open(store)) == VIDEOS
    assert "store upgrade" in caplog.text
    assert main(["-q", "store", "upgrade", str(store)]) == 0
    assert f"{VIDEOS} videos" in capsys.readouterr().out
    assert json.loads(path.read_text())["format_version"] == 2
    shutil.rmtree(store / "shards" / "r0-000002")
    with pytest.raises(CorruptShardError, match="r0-000002"):
        FeatureStore.open(store)


# ---------------------------------------------------------------- 3. two writers at once

HOLDER = """
import sys, numpy as np
from pathlib import Path
from scalevid.store import FeatureStore, StoreWriter
root = Path(sys.argv[1])
manifest = FeatureStore.open(root).manifest
with StoreWriter(root, manifest, shard_prefix="import", shard_size=100) as w:
    work = root / "shards" / ".tmp-import-000099-1"  # a shard being written
    work.mkdir()
    print("ready", flush=True)
    sys.stdin.readline()
    assert work.is_dir()
    work.rmdir()
    box = np.array([[1, 0, 0, 0, 1, 1, 1]], np.float32)
    for i in range(3):
        w.add(video_id=f"first{i}", path="p", features=np.ones((1, %d)), boxes=box)
"""


def test_second_writer_is_refused_at_once_and_harms_nothing(store, tmp_path, capsys):
    """Fault 3: while one process writes a store, a second `import` (or `extract`) on the same
    --out stops at once with a clear error, removes none of the first writer's temporary
    shards, and stores nothing; the first writer finishes normally. A killed holder's lock
    goes with it."""
    from scalevid.store import StoreLock, StoreLockedError

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER % DIM, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        npy = tmp_path / "npy"
        npy.mkdir()
        np.save(npy / "x.npy", np.ones((CLIPS, DIM), np.float32))
        (tmp_path / "list.txt").write_text("x.mp4 0\n")
        argv = [
            "-q",
            "import",
            "--features",
            str(npy),
            "--list",
            str(tmp_path / "list.txt"),
            "--out",
            str(store),
            "--no-progress",
        ]
        assert main(argv) == 2
        line = one_line_error(capsys)
        assert "being written by another process" in line and str(store) in line
        with pytest.raises(StoreLockedError):
            extract(ExtractConfig(list=str(tmp_path / "list.txt"), out=str(store), workers=0))
        assert (store / "shards" / ".tmp-import-000099-1").is_dir()
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
    opened = FeatureStore.open(store)
    assert len(opened) == VIDEOS + 3 and "x" not in opened.video_ids
    assert check_store(store) == []
    with StoreLock(store):  # the lock went with the first writer
        pass


def test_a_killed_writer_leaves_no_stale_lock(store):
    """Fault 3, kill -9: the OS drops the lock of a killed writer; nobody deletes a lock file."""
    from scalevid.store import StoreLock, StoreLockedError

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from scalevid.store import StoreLock; "
            f"lock = StoreLock({str(store)!r}).acquire(); print('ready', flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "ready"
    with pytest.raises(StoreLockedError, match=str(holder.pid)):
        StoreLock(store).acquire()
    holder.kill()
    holder.wait(timeout=30)
    with StoreLock(store):
        pass


# -------------------------------------------------------- 4. a duplicate line in a list


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("videos")
    return [write_video(root / f"clip{i}.mp4", num_frames=24) for i in range(2)]


def test_duplicate_list_line_is_recorded_skipped_and_extract_goes_on(two_videos, tmp_path, capsys):
    """Fault 4: a video listed twice. Extract records it as "listed twice" in failures.jsonl,
    skips the repeat and extracts the rest (exit code 1, as `import` does), instead of
    stopping after the first video."""
    a, b = two_videos
    listing = tmp_path / "list.csv"
    listing.write_text(f"{a} 0\n{a} 0\n{b} 1\n")
    argv = [
        "-q",
        "extract",
        "--list",
        str(listing),
        "--out",
        str(tmp_path / "s"),
        "--workers",
        "0",
        "--num-clips",
        "2",
        "--backbone",
        "module",
        "--weights",
        "tests.tiny_backbone:build_pair",
        "--no-progress",
    ]
    assert main(argv) == 1
    failures = [
        json.loads(x) for x in (tmp_path / "s" / "failures.jsonl").read_text().split("\n") if x
    ]
    assert [f["reason"] for f in failures] == ["listed twice"]
    assert len(FeatureStore.open(tmp_path / "s")) == 2


# ------------------------------------------------- 5. a path with spaces and no label


def test_path_with_spaces_and_no_label_is_an_error_naming_the_line(tmp_path):
    """Fault 5: `my clip ü.mp4` with no label used to become the path `my clip` with a class
    called `ü.mp4`, shifting every label. The rule: the label is the last field; a label that
    looks like a file name, or class names mixed with integer labels, is an error naming
    file:line and the fix; a quoted path may hold spaces."""
    listing = tmp_path / "list.txt"
    listing.write_text("a.mp4 0\nb.mp4 1\nmy clip ü.mp4\n")
    with pytest.raises(DatasetFormatError, match=r"list.txt:3: label 'ü.mp4' looks like a file"):
        parse_csv(listing)
    listing.write_text("a.mp4 0\nb.mp4 1\nmy clip 2 walking\n")
    with pytest.raises(DatasetFormatError, match=r"list.txt:3: label 'walking' mixes"):
        parse_csv(listing)
    listing.write_text('a.mp4 0\n"my clip ü.mp4",1\nmy other clip.mp4 1\n')
    videos = parse_csv(listing)
    assert [(i.video_id, i.label) for i in videos] == [
        ("a", 0),
        ("my clip ü", 1),
        ("my other clip", 1),
    ]
    assert videos.class_names == ["0", "1"]


# ------------------------------------------------------------- 6. nothing to mask


def test_settings_with_nothing_to_mask_are_refused_up_front(store, tmp_path, capsys):
    """Fault 6: with --num-views 1, or 2 clips per video, every set holds one clip and nothing
    can be masked: the MCM loss was NaN every step and the run silently SET-only. Both are
    refused before training, with the fix."""
    out = str(tmp_path / "r")
    assert main(["-q", "train", "--store", str(store), "--out", out, "--num-views", "1"]) == 2
    assert "--num-views 1" in one_line_error(capsys)
    two = make_store(tmp_path / "two", videos=16, clips=2)
    assert main(["-q", "train", "--store", str(two), "--out", out]) == 2
    line = one_line_error(capsys)
    assert "nothing can be masked" in line and "--mcm-weight 0" in line
    assert (
        main(
            [
                "-q",
                "train",
                "--store",
                str(two),
                "--out",
                out,
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--mcm-weight",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    store, tmp_path, monkeypatch
):
    """Fault 6, divergence: a loss that turns NaN stops the run (naming the step) instead of
    training on, and the last checkpoint written before it is kept as it was."""
    from scalevid.train.engine import NonFiniteLossError

    real = engine.pretext_step
    calls = []

    def nan_from_step_6(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) >= 6:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(engine, "pretext_step", nan_from_step_6)
    cfg = config(store, tmp_path / "r", epochs=3, checkpoint_every=4, log_every=100)
    with pytest.raises(NonFiniteLossError, match=r"NaN/Inf at step 6.*step 4\), is kept"):
        train(cfg)
    saved = json.loads((tmp_path / "r" / "checkpoints" / "last" / "config.json").read_text())
    model = ScaleModel(cfg.model)
    state = load_checkpoint(
        tmp_path / "r" / "checkpoints" / "last",
        model=model,
        optimizer=adamw(model, lr=cfg.lr, weight_decay=cfg.weight_decay),
    )
    assert state["step"] == 4 and saved["train"]["epochs"] == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ------------------------------------------------------ 7. killed runs and checkpoints


def test_resume_before_the_first_checkpoint_does_not_duplicate_metrics(
    store, tmp_path, monkeypatch
):
    """Fault 7a: a run killed before its first checkpoint, then resumed, starts from scratch;
    its metrics.jsonl must not keep the killed run's rows (each step once)."""

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        train(config(store, tmp_path / "r"))
    assert len(rows(tmp_path / "r")) == 3  # 3 steps logged, then killed at the checkpoint
    monkeypatch.undo()
    train(config(store, tmp_path / "r"), resume=True)
    assert [r["step"] for r in rows(tmp_path / "r")] == [1, 2, 3]


def _model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.AdamW(model.parameters())


KILL_POINTS = {  # what raises, at its n-th call during the second save, and the step kept
    "while writing the trainer state": (checkpoint_module.torch, "save", 1, 4),
    "between the two renames": (Path, "rename", 2, 8),
    "before deleting the old one": (checkpoint_module.shutil, "rmtree", 1, 8),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_save_killed_at_any_point_loses_no_checkpoint(point, tmp_path, monkeypatch):
    """Fault 7b/7c: a process killed anywhere in a checkpoint save, including between its two
    renames, loses no checkpoint: the next start finishes or undoes the save (the newest
    complete checkpoint wins) and removes the leftover `.tmp-*` / `.old-*` folders."""
    from scalevid.train.checkpoint import recover_checkpoint

    owner, name, nth, kept = KILL_POINTS[point]
    directory = tmp_path / "checkpoints" / "last"
    model, optimizer = _model_and_optimizer()
    save = dict(model=model, config={"x": 1}, optimizer=optimizer)
    save_checkpoint(directory, **save, trainer_state={"step": 4})
    real = getattr(owner, name)
    calls = []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, dies)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(directory, **save, trainer_state={"step": 8})
    monkeypatch.undo()
    recover_checkpoint(directory)
    assert sorted(p.name for p in directory.parent.iterdir()) == ["last"]
    model, optimizer = _model_and_optimizer()
    assert load_checkpoint(directory, model=model, optimizer=optimizer)["step"] == kept


def test_leftover_temporary_checkpoint_is_removed_on_the_next_start(store, tmp_path):
    """Fault 7c: a killed save left `.tmp-last-PID` (52 MB in the issue), or a half-written
    final `.tmp-model.safetensors-PID`; the next start of the run removes them."""
    run = train(config(store, tmp_path / "r"))
    junk = run / "checkpoints" / ".tmp-last-99999"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"\0" * 1000)
    stray = run / ".tmp-model.safetensors-99999"  # the final weights, killed mid-write
    stray.write_bytes(b"\0" * 1000)
    train(config(store, tmp_path / "r"), resume=True)
    assert not junk.exists() and not stray.exists()


# ---------------------------------------------------------------- 8. clear errors


def test_epochs_zero_is_a_clear_error(store, tmp_path, capsys):
    """Fault 8: `--epochs 0` is refused as such (it used to fail on a missing metrics.jsonl)."""
    assert (
        main(["-q", "train", "--store", str(store), "--out", str(tmp_path / "r"), "--epochs", "0"])
        == 2
    )
    assert "epochs must be a positive integer" in one_line_error(capsys)


def test_test_store_with_classes_train_lacks_is_a_clear_error(tmp_path, capsys):
    """Fault 8: a test store with classes the train store lacks is refused before any probe
    runs (it used to train the probes, then end in an IndexError with no results)."""
    train_store = make_store(tmp_path / "train", class_names=["a", "b", "c"])
    test_store = make_store(tmp_path / "test", videos=16, class_names=["a", "b", "c", "d"])
    argv = [
        "-q",
        "eval",
        "--train",
        str(train_store),
        "--test",
        str(test_store),
        "--out",
        str(tmp_path / "e"),
        "--probes",
        "knn",
        "--seeds",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert str(test_store) in line and "lacks" in line and "'d'" in line


def test_test_store_classes_in_another_order_are_mapped_by_name(tmp_path):
    """Fault 8, the quiet variant: the same classes in another order are matched by name."""
    from scalevid.eval.config import EvalConfig
    from scalevid.eval.protocol import evaluate

    names = ["a", "b", "c"]
    train_store = make_store(tmp_path / "train", class_names=names, by_class_name=True)
    test_store = make_store(
        tmp_path / "test", videos=15, class_names=names[::-1], by_class_name=True, seed=1
    )
    results = evaluate(
        train_store=train_store,
        test_store=test_store,
        out=tmp_path / "e",
        config=EvalConfig(probes=("knn",), seeds=(0,), progress=False),
    )
    assert results["probes"]["knn"]["mean"]["top1"] > 90  # (%): labels matched by name
    # predictions.npz (and the confusion matrix) give labels in the classes the predictions use
    saved = np.load(tmp_path / "e" / "predictions.npz")
    as_train = {2: 0, 1: 1, 0: 2}  # test index -> the train store's index of the same name
    expected = [as_train[int(y)] for y in FeatureStore.open(test_store).labels]
    np.testing.assert_array_equal(saved["labels"], expected)
    assert (saved["knn"][0] == saved["labels"]).mean() > 0.9


@pytest.mark.parametrize("damage", ["config.json", "model.safetensors"])
def test_garbled_run_folder_file_is_named(damage, run_folder, store, tmp_path, capsys):
    """Fault 8: a garbled config.json or model.safetensors in a run folder is named in the
    error (it used to be a bare JSON / safetensors message)."""
    run = Path(shutil.copytree(run_folder, tmp_path / "run"))
    (run / damage).write_bytes(b"{not json or safetensors")
    argv = ["-q", "embed", "--store", str(store), "--run", str(run), "--out", str(tmp_path / "m")]
    assert main(argv) == 2
    assert str(run / damage) in one_line_error(capsys)


class Payload:
    """Any object: unpickling it would run code of the pickler's choice."""


def test_pickled_trainer_state_is_refused_without_a_traceback(run_folder, store, tmp_path, capsys):
    """Fault 8: a trainer_state.pt holding pickled objects is refused (weights_only) with a
    one-line error naming the file, not a traceback."""
    run = Path(shutil.copytree(run_folder, tmp_path / "run"))
    state = run / "checkpoints" / "last" / "trainer_state.pt"
    torch.save({"optimizer": {}, "trainer": Payload(), "torch_rng": torch.get_rng_state()}, state)
    settings = tmp_path / "tiny.yaml"
    settings.write_text(json.dumps({"model": TINY_MODEL, "epochs": 1, "batch_size": 16}))
    assert (
        main(
            [
                "-q",
                "train",
                "--store",
                str(store),
                "--out",
                str(run),
                "--resume",
                "--config",
                str(settings),
            ]
        )
        == 2
    )
    line = one_line_error(capsys)
    assert str(state) in line and "never unpickles" in line


def test_object_array_npy_given_to_import_is_reported_as_such(tmp_path):
    """Fault 8: an object-array .npy given to `import` is reported as holding Python objects
    (never unpickled), not as "truncated"."""
    npy = tmp_path / "npy"
    npy.mkdir()
    np.save(npy / "good.npy", np.ones((2, DIM), np.float32))
    with open(npy / "evil.npy", "wb") as f:
        np.save(f, np.array([{"code": "any"}, "x"], dtype=object), allow_pickle=True)
    (tmp_path / "list.txt").write_text("good.mp4 0\nevil.mp4 1\n")
    report = import_npy_folder(
        features_dir=npy, list_file=tmp_path / "list.txt", out=tmp_path / "s", progress=False
    )
    [failure] = report.failures
    assert "Python objects" in failure.reason and "truncated" not in failure.reason


# ====================================================================== round 2 (issue 20)

TINY_YAML = {"model": TINY_MODEL, "epochs": 1, "batch_size": 16, "log_every": 1}


def tiny_settings(tmp_path: Path) -> Path:
    settings = tmp_path / "tiny.yaml"
    settings.write_text(json.dumps(TINY_YAML))
    return settings


def train_argv(store: Path, run: Path, settings: Path, *extra: str) -> list[str]:
    return [
        "-q",
        "train",
        "--store",
        str(store),
        "--out",
        str(run),
        "--config",
        str(settings),
        "--no-progress",
        *extra,
    ]


def plant_link(path: Path, outside: Path) -> None:
    """A symbolic link at an output path, pointing at a file outside the output folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.symlink_to(outside)


def assert_not_written_through(outside: Path, code: int, link: Path, capsys) -> None:
    """The file behind the link is untouched; the command either replaced the link by its own
    file (exit 0) or refused in one line naming the link (exit 2)."""
    assert outside.read_text() == "precious", link
    if code == 0:
        assert not link.is_symlink() and link.is_file(), link
    else:
        assert code == 2, link
        line = one_line_error(capsys)
        assert str(link) in line and "symbolic link" in line, line


# ---------------------------------------------------- R1-2. writes never follow a link


def _import_argv(tmp_path: Path, out: Path) -> list[str]:
    npy = tmp_path / "npy"
    npy.mkdir(exist_ok=True)
    np.save(npy / "a.npy", np.ones((CLIPS, DIM), np.float32))
    (tmp_path / "list.txt").write_text("a.mp4 0\nmissing.mp4 1\n")
    return [
        "-q",
        "import",
        "--features",
        str(npy),
        "--list",
        str(tmp_path / "list.txt"),
        "--out",
        str(out),
        "--no-progress",
    ]


@pytest.mark.parametrize("name", ["failures.jsonl", ".writer.lock", ".commit.lock"])
def test_import_never_writes_through_a_link(name, tmp_path, capsys):
    """R1: `STORE/failures.jsonl` (or a lock file) replaced by a link to a file outside the
    store: `import` used to truncate the outside file. Now nothing outside is written."""
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "s"
    plant_link(out / name, outside)
    code = main(_import_argv(tmp_path, out))
    assert_not_written_through(outside, code, out / name, capsys)


RUN_FILES = ["curves.png", "config.json", "metrics.jsonl"]


@pytest.mark.parametrize("name", RUN_FILES)
def test_train_never_writes_through_a_link(name, store, tmp_path, capsys):
    """R2: `RUN/curves.png` (or any other file of a run folder) replaced by a link to an
    outside file: `train --resume` overwrote it. Now the link is replaced, or refused."""
    settings, run = tiny_settings(tmp_path), tmp_path / "run"
    assert main(train_argv(store, run, settings)) == 0
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    plant_link(run / name, outside)
    code = main(train_argv(store, run, settings, "--resume"))
    assert_not_written_through(outside, code, run / name, capsys)


def test_checkpoint_save_never_writes_through_a_link(store, tmp_path):
    """R2, checkpoints: a link planted at the checkpoint's temporary folder, or at the
    checkpoint folder itself, is removed or renamed, never written through or deleted into."""
    settings, run = tiny_settings(tmp_path), tmp_path / "run"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    plant_link(run / "checkpoints" / f".tmp-last-{os.getpid()}", outside)
    assert main(train_argv(store, run, settings)) == 0
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    run = tmp_path / "run2"
    plant_link(run / "checkpoints" / "last", outside)
    assert main(train_argv(store, run, settings)) == 0
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert (run / "checkpoints" / "last" / "model.safetensors").is_file()
    assert (outside / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("command", ["import", "train", "eval"])
def test_a_link_in_place_of_an_output_subfolder_is_refused(command, store, tmp_path, capsys):
    """R1-2, folders: a link planted in place of a folder the tools create inside the output
    folder (`STORE/shards`, `RUN/checkpoints`, `EVAL/splits`) would take every file written
    into it outside; it is refused in one line naming it, and nothing lands outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    link, argv = {
        "import": (out / "shards", _import_argv(tmp_path, out)),
        "train": (out / "checkpoints", train_argv(store, out, tiny_settings(tmp_path))),
        "eval": (out / "splits", _eval_argv(store, store, out)),
    }[command]
    plant_link(link, outside)
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert str(link) in line and "symbolic link" in line
    assert list(outside.iterdir()) == []


EVAL_FILES = ["results.json", "results.md", "predictions.npz", "splits/seed0.npz", "probes.png"]
EVAL_FILES += ["curves_attentive.png"]  # a set / attentive row's learning curves


@pytest.mark.parametrize("name", EVAL_FILES)
def test_eval_never_writes_through_a_link(name, store, tmp_path, capsys):
    """R1-2, evaluation: a link at any file of the report folder is replaced, not followed."""
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "e"
    plant_link(out / name, outside)
    argv = ["-q", "eval", "--train", str(store), "--test", str(store), "--out", str(out)]
    probe = "attentive" if name.startswith("curves_") else "knn"
    code = main([*argv, "--probes", probe, "--seeds", "0", "--no-progress"])
    assert_not_written_through(outside, code, out / name, capsys)


@pytest.mark.parametrize("name", ["embeddings.npy", "video_ids.txt"])
def test_embed_never_writes_through_a_link(name, store, run_folder, tmp_path, capsys):
    """R1-2, embeddings: a link at either output file is replaced, not followed."""
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "m"
    plant_link(out / name, outside)
    argv = ["-q", "embed", "--store", str(store), "--run", str(run_folder), "--out", str(out)]
    code = main([*argv, "--no-progress"])
    assert_not_written_through(outside, code, out / name, capsys)


@pytest.mark.parametrize("name", ["extract-config.json", "failures.jsonl"])
def test_extract_never_writes_through_a_link(name, two_videos, tmp_path, capsys):
    """R1-2, extraction: a link at the store's config record or failure logs is replaced or
    refused, never followed."""
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    listing = tmp_path / "list.csv"
    listing.write_text(f"{two_videos[0]} 0\n{tmp_path / 'gone.mp4'} 1\n")
    out = tmp_path / "s"
    plant_link(out / name, outside)
    argv = ["-q", "extract", "--list", str(listing), "--out", str(out), "--workers", "0"]
    argv += ["--num-clips", "2", "--backbone", "module", "--no-progress"]
    code = main([*argv, "--weights", "tests.tiny_backbone:build_pair"])
    if code == 1:  # finished with the missing video recorded
        code = 0
    assert_not_written_through(outside, code, out / name, capsys)


# -------------------------------------------------------- R3. a label with spaces


def test_unquoted_label_with_spaces_is_an_error_naming_the_line(tmp_path, capsys):
    """R3: `v1.mp4 class a` used to become the path `v1.mp4 class` with the class `a`, merging
    "class a" and "type a". An unquoted label with spaces is an error naming file:line; a
    quoted one is read as written."""
    features = tmp_path / "npy"
    features.mkdir()
    for i in (1, 2, 3):
        np.save(features / f"v{i}.npy", np.ones((2, DIM), np.float32))
    listing = tmp_path / "list.txt"
    listing.write_text("v1.mp4 class a\nv2.mp4 type a\nv3.mp4 class b\n")
    argv = ["-q", "import", "--features", str(features), "--list", str(listing)]
    assert main([*argv, "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    line = one_line_error(capsys)
    assert f"{listing}:1:" in line and "quote the label" in line
    assert not (tmp_path / "s" / MANIFEST_FILE).exists()
    listing.write_text('v1.mp4 "class a"\nv2.mp4 "type a"\nv3.mp4,class b\n')
    assert [(v.video_id, v.label) for v in parse_csv(listing)] == [("v1", 0), ("v2", 2), ("v3", 1)]
    assert parse_csv(listing).class_names == ["class a", "class b", "type a"]


# ------------------------------------------- R4. a re-import that would change a video


def _reimport(tmp_path: Path, listing: str, dim: int = DIM) -> int:
    features = tmp_path / f"npy{dim}"
    features.mkdir(exist_ok=True)
    for i in range(3):
        np.save(features / f"v{i}.npy", np.ones((2, dim), np.float32))
    (tmp_path / "list.txt").write_text(listing)
    argv = ["-q", "import", "--features", str(features), "--list", str(tmp_path / "list.txt")]
    return main([*argv, "--out", str(tmp_path / "s"), "--no-progress"])


def test_reimport_with_other_labels_or_feature_size_is_an_error_naming_the_ids(tmp_path, capsys):
    """R4: re-importing a list with corrected labels (or features of another dimension) for
    ids already in the store said "3 already there" and kept the old ones. Now it is an error
    naming the ids, and the store is unchanged; an identical re-run still resumes."""
    assert _reimport(tmp_path, "v0.mp4 a\nv1.mp4 b\nv2.mp4 a\n") == 0
    before = json.loads((tmp_path / "s" / MANIFEST_FILE).read_text())
    assert _reimport(tmp_path, "v0.mp4 a\nv1.mp4 a\nv2.mp4 b\n") == 2
    line = one_line_error(capsys)
    assert "another label" in line and "v1 ('b' -> 'a')" in line and "v2" in line
    assert str(tmp_path / "s") in line and "v0 " not in line
    assert _reimport(tmp_path, "v0.mp4 a\nv1.mp4 b\nv2.mp4 a\n", dim=DIM * 2) == 2
    line = one_line_error(capsys)
    assert "features of another size" in line and f"v0 (2x{DIM} -> 2x{2 * DIM})" in line
    assert json.loads((tmp_path / "s" / MANIFEST_FILE).read_text()) == before
    assert _reimport(tmp_path, "v0.mp4 a\nv1.mp4 b\nv2.mp4 a\n") == 0
    assert "3 already there" in capsys.readouterr().out


# ------------------------------------------ R5. stores and runs of different backbones


def _eval_argv(train_store: Path, test_store: Path, out: Path, *extra: str) -> list[str]:
    argv = ["-q", "eval", "--train", str(train_store), "--test", str(test_store)]
    return [*argv, "--out", str(out), "--probes", "knn", "--seeds", "0", "--no-progress", *extra]


def test_stores_and_runs_of_other_backbones_are_refused_unless_asked(
    store, run_folder, tmp_path, capsys
):
    """R5: a train store, test store and run from different backbones (same D) were evaluated
    without a word. Now eval, embed and search refuse in one line naming what differs, unless
    --allow-other-features says it is meant."""
    other = make_store(tmp_path / "other", videos=16, backbone="videomae")
    assert main(_eval_argv(store, other, tmp_path / "e")) == 2
    line = one_line_error(capsys)
    assert "backbone" in line and "'toy'" in line and "'videomae'" in line
    assert str(other) in line and "--allow-other-features" in line
    assert not (tmp_path / "e" / "results.json").exists()
    for command in (
        ["embed", "--store", str(other), "--run", str(run_folder), "--out", str(tmp_path / "m")],
        ["search", "--store", str(other), "--run", str(run_folder), "--query", "v000"],
    ):
        assert main(["-q", *command]) == 2, command
        line = one_line_error(capsys)
        assert "the run's training store" in line and "'videomae'" in line, command
    assert main(_eval_argv(store, other, tmp_path / "e", "--allow-other-features")) == 0


# ------------------------------------------------ R6. a run that is still training


def test_a_run_without_final_weights_is_refused_and_the_step_is_recorded(
    store, run_folder, tmp_path, capsys
):
    """R6: `eval --run RUN` while RUN was still training loaded checkpoints/last at an unknown
    step. Now a run folder without its final weights is refused (naming the checkpoint to pass
    instead), and results.json records the training step of the weights it used."""
    run = Path(shutil.copytree(run_folder, tmp_path / "run"))
    (run / "model.safetensors").unlink()  # as while training: only checkpoints/last exists
    for argv in (
        _eval_argv(store, store, tmp_path / "e", "--run", str(run)),
        ["-q", "embed", "--store", str(store), "--run", str(run), "--out", str(tmp_path / "m")],
    ):
        assert main(argv) == 2
        line = one_line_error(capsys)
        assert "no final model.safetensors" in line and str(run / "checkpoints" / "last") in line
    last = run / "checkpoints" / "last"
    assert main(_eval_argv(store, store, tmp_path / "e", "--run", str(last))) == 0
    assert json.loads((tmp_path / "e" / "results.json").read_text())["run_step"] == 3
    assert main(_eval_argv(store, store, tmp_path / "f", "--run", str(run_folder))) == 0
    assert json.loads((tmp_path / "f" / "results.json").read_text())["run_step"] == 3


# ------------------------------------------------ R7. two trainers on one run folder


def test_second_trainer_on_one_run_folder_is_refused_at_once(store, tmp_path, capsys):
    """R7: two `scalevid train` on the same --out both exited 0 and metrics.jsonl held every
    step twice. A run folder has an OS lock as a store does: the second trainer stops at once,
    naming the first one's pid, and writes nothing."""
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from scalevid.train.run import RUN_REFUSAL; from scalevid.store import StoreLock; "
            f"lock = StoreLock({str(run)!r}, refusal=RUN_REFUSAL).acquire(); "
            "print('ready', flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert main(train_argv(store, run, tiny_settings(tmp_path))) == 2
        line = one_line_error(capsys)
        assert "being trained by another process" in line and str(holder.pid) in line
        assert str(run) in line
        assert not (run / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert main(train_argv(store, run, tiny_settings(tmp_path))) == 0


# ----------------------------------------- R8-9, R15-18. one line for every user mistake


def test_negative_loss_weights_are_refused_up_front(store, tmp_path, capsys):
    """R8: `--mcm-weight -1` switched MCM off silently and config.json recorded -1."""
    for flag in ("--mcm-weight", "--set-weight"):
        argv = train_argv(store, tmp_path / "r", tiny_settings(tmp_path), flag, "-1")
        assert main(argv) == 2, flag
        line = one_line_error(capsys)
        assert flag in line and "must be >= 0" in line, flag
        assert not (tmp_path / "r" / "config.json").exists()


def test_search_k_below_one_is_refused(store, run_folder, capsys):
    """R9: `search -k 0` / `-k -5` exited 0 with no output."""
    for k in ("0", "-5"):
        argv = ["-q", "search", "--store", str(store), "--run", str(run_folder), "--query", "v000"]
        assert main([*argv, "-k", k]) == 2, k
        assert f"-k {k}" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [("model: {hidden: [1, 2]}\n", "'model.hidden' must be an integer"), ("model: 5\n", "'model'")],
)
def test_config_values_of_the_wrong_kind_are_named(yaml_text, key, store, tmp_path, capsys):
    """R15: YAML `model: {hidden: [1, 2]}` and `model: 5` gave raw TypeError / AttributeError
    tracebacks. Now one line names the file and the key."""
    settings = tmp_path / "bad.yaml"
    settings.write_text(yaml_text)
    assert main(train_argv(store, tmp_path / "r", settings)) == 2
    line = one_line_error(capsys)
    assert str(settings) in line and key in line


def test_cuda_device_without_cuda_is_one_line(store, tmp_path, capsys, monkeypatch):
    """R16: `--device cuda` on a machine without CUDA ended in a 16-line traceback."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = train_argv(store, tmp_path / "r", tiny_settings(tmp_path), "--device", "cuda")
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert "--device 'cuda'" in line and "CUDA is not available" in line


def test_embed_and_search_with_a_run_of_another_feature_size_are_one_line(
    run_folder, tmp_path, capsys
):
    """R17: embed / search with a run of one D on a store of another ended in a raw matmul
    traceback (eval refused the same mismatch in one line)."""
    wide = make_store(tmp_path / "wide", videos=16, dim=2 * DIM)
    for command in (
        ["embed", "--store", str(wide), "--run", str(run_folder), "--out", str(tmp_path / "m")],
        ["search", "--store", str(wide), "--run", str(run_folder), "--query", "v000"],
    ):
        assert main(["-q", *command, "--allow-other-features"]) == 2, command
        line = one_line_error(capsys)
        assert f"dim: store {wide} has {2 * DIM}" in line and f"has {DIM}" in line, command


def test_repeated_probe_names_are_refused_before_any_probe_runs(store, tmp_path, capsys):
    """R18: `eval --probes knn knn` failed with "zip() argument 2 is longer than argument 1"
    after the probes ran."""
    argv = _eval_argv(store, store, tmp_path / "e")
    argv.insert(argv.index("knn") + 1, "knn")
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert "--probes" in line and "knn" in line and "more than once" in line
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())


# ------------------------------------------------------- R19. a file name too long


def test_a_file_name_too_long_fails_that_video_only(tmp_path, capsys):
    """R19: a 300-character file name in an import list aborted the whole import (Errno 36).
    Now that one video is recorded as failed and the others are imported."""
    features = tmp_path / "npy"
    features.mkdir()
    np.save(features / "ok.npy", np.ones((2, DIM), np.float32))
    listing = tmp_path / "list.txt"
    listing.write_text(f"ok.mp4 0\n{'x' * 300}.mp4 1\n")
    argv = ["-q", "import", "--features", str(features), "--list", str(listing)]
    assert main([*argv, "--out", str(tmp_path / "s"), "--no-progress"]) == 1
    assert "Traceback" not in capsys.readouterr().err
    [failure] = [
        json.loads(x) for x in (tmp_path / "s" / "failures.jsonl").read_text().splitlines()
    ]
    assert failure["video_id"] == "x" * 300 and "too long" in failure["reason"]
    assert FeatureStore.open(tmp_path / "s").video_ids == ["ok"]


# ------------------------------------------- R10. a killed job's workers keep no lock

FORKING_HOLDER = """
import multiprocessing, sys, time
from scalevid.store import StoreLock
lock = StoreLock(sys.argv[1]).acquire()
worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
worker.start()  # as a DataLoader decode worker is
print(worker.pid, flush=True)
input()
"""


def test_a_killed_jobs_forked_worker_keeps_no_lock(store):
    """R10: kill -9 of `extract` left its orphaned decode worker holding `.writer.lock` for
    seconds, and an immediate re-run was refused naming the dead pid. Forked workers close
    their copy of the lock, so the lock dies with the job."""
    from scalevid.store import StoreLock

    holder = subprocess.Popen(
        [sys.executable, "-c", FORKING_HOLDER, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    worker = int(holder.stdout.readline())
    try:
        holder.kill()
        holder.wait(timeout=30)
        with StoreLock(store):  # at once: the orphaned worker is still alive
            os.kill(worker, 0)
    finally:
        os.kill(worker, 9)


# ---------------------------------------------------------------- R13-14. a full disk


class _FullDisk:
    """Files written through `scalevid.outfiles` whose name contains `name` fail with ENOSPC
    from the `nth` such file on, after a few bytes, as a write on a full disk does."""

    def __init__(self, name: str, nth: int) -> None:
        self.name, self.nth, self.seen = name, nth, 0

    def __call__(self, fd: int, mode: str, path: Path):
        f = os.fdopen(fd, mode)
        if self.name not in str(path):
            return f
        self.seen += 1
        if self.seen < self.nth:
            return f
        real_write = f.write

        def write(data):
            real_write(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

        f.write = write
        return f


def test_import_on_a_full_disk_names_the_file_keeps_the_store_and_resumes(
    tmp_path, monkeypatch, capsys
):
    """R13: import (or extract) on a full disk said "1228800 requested and 260032 written",
    naming no file. Now one line says "no space left on device" and names the shard; no
    half-written shard is left, the store stays valid, and the next run resumes."""
    from scalevid import outfiles

    features = tmp_path / "npy"
    features.mkdir()
    for i in range(12):
        np.save(features / f"v{i}.npy", np.ones((CLIPS, DIM), np.float32))
    (tmp_path / "list.txt").write_text("".join(f"v{i}.mp4 {i % 3}\n" for i in range(12)))
    kw = dict(features_dir=features, list_file=tmp_path / "list.txt", out=tmp_path / "s")
    monkeypatch.setattr(outfiles, "_file", _FullDisk("features.npy", nth=2))
    with pytest.raises(OSError, match=r"import-000001: no space left on device"):
        import_npy_folder(**kw, shard_size=5, progress=False)
    monkeypatch.undo()
    shards = tmp_path / "s" / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["import-000000"]
    assert len(FeatureStore.open(tmp_path / "s")) == 5
    report = import_npy_folder(**kw, shard_size=5, progress=False)
    assert report.imported == 7 and report.skipped_existing == 5
    monkeypatch.setattr(outfiles, "_file", _FullDisk("features.npy", nth=1))
    argv = ["-q", "import", "--features", str(features), "--list", str(tmp_path / "list.txt")]
    (tmp_path / "list.txt").write_text("".join(f"v{i}.mp4 {i % 3}\n" for i in range(12)) + "x 0\n")
    np.save(features / "x.npy", np.ones((CLIPS, DIM), np.float32))
    assert main([*argv, "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    line = one_line_error(capsys)
    assert "no space left on device" in line and str(shards) in line


def test_checkpoint_on_a_full_disk_is_one_line_leaves_nothing_and_resumes(
    store, tmp_path, monkeypatch, capsys
):
    """R14: a checkpoint save on a full disk ended in a 30-line SafetensorError traceback and
    left an empty `checkpoints/.tmp-last-PID`. Now one line names the checkpoint, nothing
    half-written is left, and `--resume` continues from the last good checkpoint."""
    from scalevid import outfiles

    run, settings = tmp_path / "run", tiny_settings(tmp_path)
    monkeypatch.setattr(outfiles, "_file", _FullDisk("model.safetensors", nth=2))
    assert main(train_argv(store, run, settings, "--checkpoint-every", "1")) == 2
    line = one_line_error(capsys)
    assert "no space left on device" in line and str(run / "checkpoints" / "last") in line
    monkeypatch.undo()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last"]
    assert main(train_argv(store, run, settings, "--checkpoint-every", "1", "--resume")) == 0
    assert [r["step"] for r in rows(run)] == [1, 2, 3]


# ------------------------------------------ R11. a reader while a writer appends


def test_a_reader_sees_one_snapshot_while_a_writer_appends(tmp_path, monkeypatch):
    """R11: a reader opening a store while `import` appended to it failed about 1 open in 200
    with "shard ... is not listed in manifest.json (a writer was interrupted)" though the writer
    was healthy. A reader now reads the manifest again while a published shard awaits its
    commit: no open fails, and each sees whole committed shards only."""
    import threading
    import time

    from scalevid.store import writer as writer_module

    root = make_store(tmp_path / "s", videos=8, shard_size=8)
    manifest = FeatureStore.open(root).manifest
    commit = writer_module.update_manifest_shards

    def slow_commit(*args, **kwargs):  # as on a slow disk: 20 ms from publish to commit
        time.sleep(0.02)
        return commit(*args, **kwargs)

    monkeypatch.setattr(writer_module, "update_manifest_shards", slow_commit)

    def append() -> None:
        with StoreWriter(root, manifest, shard_prefix="import", shard_size=1) as w:
            for i in range(25):
                w.add(video_id=f"late{i}", path="p", features=np.ones((1, DIM)), boxes=_boxes(1))

    writer = threading.Thread(target=append)
    writer.start()
    opens, failures = 0, []
    while writer.is_alive():
        try:
            opened = FeatureStore.open(root, check_values=False, verify_checksums=False)
            assert len(opened) == opened.manifest.num_videos
        except CorruptShardError as e:
            failures.append(str(e))
        opens += 1
    writer.join()
    assert failures == [] and opens >= 3, (opens, failures[:3])
    assert len(FeatureStore.open(root)) == 8 + 25


# ------------------------------------------------------- R12. a frozen torchrun rank

FROZEN_RANK = """
import time, torch
from scalevid.distributed import process_group
print("ready", flush=True)
with process_group(torch.device("cpu"), timeout_s=60):
    print("joined", flush=True)
    time.sleep(60)  # frozen: never reaches the next collective
"""


def test_a_frozen_rank_stops_the_job_after_the_timeout(tmp_path, monkeypatch):
    """R12: under torchrun, with one rank frozen (SIGSTOP), the other waited silently for
    minutes. Jobs take a timeout (dist_timeout / --dist-timeout, default a few minutes); a rank
    that waits longer stops with an error saying so."""
    import socket

    import torch.distributed as dist

    from scalevid.distributed import DistributedTimeoutError, process_group

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    frozen = subprocess.Popen(
        [sys.executable, "-c", FROZEN_RANK],
        env={**os.environ, **env, "RANK": "1", "LOCAL_RANK": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    monkeypatch.setenv("RANK", "0")
    expected = pytest.raises(DistributedTimeoutError, match=r"rank 0 of 2 waited more than 1 s")
    try:
        assert frozen.stdout.readline().strip() == "ready"  # imported: joins at once
        with expected, process_group(torch.device("cpu"), timeout_s=1):
            assert frozen.stdout.readline().strip() == "joined"
            dist.barrier()
        assert not dist.is_initialized()
    finally:
        frozen.kill()
        frozen.wait()
    with (
        pytest.raises(ValueError, match="--dist-timeout"),
        process_group(torch.device("cpu"), timeout_s=0),
    ):
        pass
