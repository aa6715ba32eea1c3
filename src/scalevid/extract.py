"""Videos -> frozen backbone -> feature store (`scalevid extract`).

DataLoader workers decode and sample clips (one video per item) while the main process runs the
backbone on batches of clips gathered across videos. Finished videos go to the store through a
`StoreWriter`, which publishes a shard atomically every `shard_size` videos or `flush_seconds`,
so an interrupted run loses at most the videos since the last flush, and re-running skips every
video already in the store. A video that cannot be read is recorded in
`failures-<prefix>.jsonl` with its reason (merged into `failures.jsonl` at the end) and never
stops the run.

Under torchrun each rank takes every world-th video of the list (no video twice) and writes its
own shards (prefix r000, r001, ...); all ranks write the same manifest.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from scalevid import __version__
from scalevid.backbones import (
    Backbone,
    CompileUnavailableError,
    cpp_compiler_available,
    create_backbone,
)
from scalevid.config import runtime
from scalevid.data.clips import ColourJitter, SamplingConfig
from scalevid.data.decode import VideoError
from scalevid.data.list_formats import Format, load_video_list
from scalevid.data.lists import VideoItem, VideoList
from scalevid.data.read import sample_and_read
from scalevid.distributed import DEFAULT_TIMEOUT_S, process_group
from scalevid.hardware import resolve_device
from scalevid.outfiles import open_append, write_text
from scalevid.progress import progress_bar
from scalevid.store import Manifest, StoreLock, StoreLockedError, StoreWriter
from scalevid.store.layout import (
    EXTRACT_CONFIG_FILE,
    FAILURES_FILE,
    RANK_FAILURES_GLOB,
    rank_failures_file,
    rank_prefix,
)

logger = logging.getLogger(__name__)


@dataclass
class ExtractConfig:
    """Everything `scalevid extract` needs; saved as `extract-config.json` in the store.

    Fields declared with `runtime(...)` do not change the features written (see
    `scalevid.config.result_settings`).
    """

    # Paths are recorded, not compared: a store stays valid when the videos move.
    list: str = runtime()
    out: str = runtime()
    root: str | None = runtime(None)
    format: Format = "auto"
    split: Literal["train", "val", "test"] = "train"
    fold: int = 1
    sampling: Literal["auto", "train", "test"] = "auto"  # auto: train for train, else test
    preset: Literal["default", "ssv2"] = "default"
    backbone: str = "i3d"
    weights: str | None = None
    num_clips: int = 16  # train clips per pass
    passes: int = 1  # augmented passes per video (train)
    frames: int | None = None  # default: the backbone's input frames
    stride: int | None = None  # default: the preset's (4; 2 for SSv2)
    crop_size: int | None = None  # default: the backbone's input size
    temporal_views: int | None = None  # default: the preset's (5; 2 for SSv2)
    spatial_views: int = 3
    flip: bool | None = None  # default: the preset's (True; False for SSv2)
    colour_jitter: bool = False
    batch_size: int = runtime(32)  # clips per backbone call
    workers: int = runtime(2)
    device: str = runtime("auto")
    # auto: fp16 on CUDA, bf16 on CPUs with bf16 units (i3d), else fp32; fp32: exact features
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    # torch.compile the backbone once, for batches of batch_size (smaller ones zero-padded):
    # features within cosine 0.999 of eager; it pays only over many clips (docs/performance.md).
    # auto: for jobs of at least AUTO_COMPILE_CLIPS clips on a CPU backbone computing in fp32
    # (the case docs/performance.md times), falling back to eager if it cannot compile; on / off:
    # always, never
    compile: Literal["auto", "on", "off"] = runtime("auto")
    seed: int = 0
    shard_size: int = runtime(256)
    flush_seconds: float = runtime(120.0)
    dist_timeout: float = runtime(DEFAULT_TIMEOUT_S)  # s a torchrun rank waits for the others
    limit: int | None = None  # only the first N videos of the list (smoke tests)
    progress: bool = runtime(True)

    def __post_init__(self) -> None:
        if isinstance(self.compile, bool):  # `compile: true` in a YAML file
            self.compile = "on" if self.compile else "off"
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"compile must be auto, on or off, got {self.compile!r}")

    @property
    def mode(self) -> Literal["train", "test"]:
        if self.sampling != "auto":
            return self.sampling
        return "train" if self.split == "train" else "test"


@dataclass
class ExtractReport:
    """What one rank's `extract` did: videos listed for it, skipped (already in the store),
    extracted, and failed (with reasons); `summary()` is the text the CLI prints."""

    store: Path
    listed: int
    skipped_existing: int
    extracted: int = 0
    clips: int = 0
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def summary(self) -> str:
        rate = self.extracted / self.seconds if self.seconds else 0.0
        lines = [
            f"{self.store}: {self.extracted} videos extracted ({self.clips} clips, "
            f"{rate:.2f} videos/s), {self.skipped_existing} already in the store, "
            f"{self.failed} failed, {self.listed} listed"
        ]
        for failure in self.failures[:10]:
            lines.append(f"  failed: {failure['path']}: {failure['reason']}")
        if self.failed > 10:
            lines.append(f"  ... and {self.failed - 10} more (see {FAILURES_FILE} in the store)")
        return "\n".join(lines)


def sampling_config(config: ExtractConfig, backbone: Backbone) -> SamplingConfig:
    """The clip sampling for this extraction: preset, then the backbone's input, then options."""
    spec = backbone.input_spec
    base = SamplingConfig.preset(config.preset, crop_size=spec.size)
    return SamplingConfig(
        frames=spec.frames,
        stride=config.stride or base.stride,
        crop_size=base.crop_size,
        num_clips=config.num_clips,
        passes=config.passes,
        flip=base.flip if config.flip is None else config.flip,
        scale_range=base.scale_range,
        temporal_views=config.temporal_views or base.temporal_views,
        spatial_views=config.spatial_views,
        colour_jitter=ColourJitter() if config.colour_jitter else None,
    )


def video_rng(seed: int, video_id: str) -> np.random.Generator:
    """A video's sampling randomness depends only on (seed, video id): not on rank or order."""
    return np.random.default_rng([seed, zlib.crc32(video_id.encode())])


class ClipDataset(Dataset):
    """Decodes one video per item; a broken video comes back as a failure, not an exception."""

    def __init__(
        self,
        items: list[VideoItem],
        *,
        mode: Literal["train", "test"],
        sampling: SamplingConfig,
        seed: int,
    ) -> None:
        self.items, self.mode, self.sampling, self.seed = items, mode, sampling, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        try:
            clips, boxes = sample_and_read(
                item.path,
                mode=self.mode,
                config=self.sampling,
                rng=video_rng(self.seed, item.video_id),
            )
        except VideoError as err:
            return {"item": item, "error": f"{type(err).__name__}: {err}"}
        except Exception as err:  # a decoder bug must not end a long run either
            return {"item": item, "error": f"unexpected {type(err).__name__}: {err}"}
        return {"item": item, "clips": torch.from_numpy(clips), "boxes": boxes}


@dataclass
class _Job:
    """One decoded video waiting in the batch queue for the features of its clips."""

    item: VideoItem
    clips: torch.Tensor  # (K, T, S, S, 3) uint8
    boxes: np.ndarray  # (K, 7)
    features: np.ndarray  # (K, D) float32, filled batch by batch
    filled: int = 0

    @property
    def done(self) -> bool:
        return self.filled == len(self.boxes)


class _BatchQueue:
    """Clips of decoded videos wait here until a backbone batch is full.

    Videos enter whole (`add`); the backbone runs on `batch_size` clips at a time, gathered
    across videos in arrival order; each batch's features go back to their videos, and a video
    whose clips are all done goes to `finished`, in arrival order. `drain` runs the last,
    partial batch.
    """

    def __init__(
        self,
        backbone: Backbone,
        device: torch.device,
        *,
        batch_size: int,
        finished: Callable[[_Job], None],
    ) -> None:
        self.backbone, self.device, self.batch_size = backbone, device, batch_size
        self.finished = finished
        self.jobs: deque[_Job] = deque()
        self.queued = 0  # clips waiting for the backbone

    def add(self, item: VideoItem, clips: torch.Tensor, boxes: np.ndarray) -> None:
        """Queue one video's clips (K, T, S, S, 3) and run every batch they complete."""
        features = np.zeros((len(boxes), self.backbone.dim), np.float32)
        self.jobs.append(_Job(item, clips, boxes, features))
        self.queued += len(boxes)
        while self.queued >= self.batch_size:
            self._run_batch(self.batch_size)

    def drain(self) -> None:
        """Run the clips still waiting (fewer than a batch)."""
        if self.queued:
            self._run_batch(self.queued)

    def _run_batch(self, n: int) -> None:
        """Run the backbone on the first n queued clips and hand the features back."""
        parts, owners = [], []
        remaining = n
        for job in self.jobs:
            if remaining == 0:
                break
            take = min(remaining, len(job.boxes) - job.filled)
            parts.append(job.clips[job.filled : job.filled + take])
            owners.append((job, take))
            remaining -= take
        clips = torch.cat(parts).to(self.device)  # (n, T, S, S, 3)
        feats = self.backbone.forward_clips(clips).float().cpu().numpy()  # (n, D)
        offset = 0
        for job, take in owners:
            job.features[job.filled : job.filled + take] = feats[offset : offset + take]
            job.filled += take
            offset += take
        self.queued -= n
        while self.jobs and self.jobs[0].done:
            self.finished(self.jobs.popleft())


class _Outcomes:
    """Where each video ends: its features in the store (through the writer) or its failure in
    this rank's failures file; both counted in the report, finished ones on the progress bar."""

    def __init__(
        self, writer: StoreWriter, report: ExtractReport, bar: Any, *, failures_file: Path
    ) -> None:
        self.writer, self.report, self.bar = writer, report, bar
        self.failures_file = failures_file
        failures_file.unlink(missing_ok=True)  # failed videos are retried: record this run's only
        self.start = time.perf_counter()  # reset when the first video is asked for

    def finished(self, job: _Job) -> None:
        self.writer.add(
            video_id=job.item.video_id,
            path=str(job.item.path),
            features=job.features.astype(np.float16),
            boxes=job.boxes,
            label=job.item.label,
            target=job.item.target,
        )
        self.report.extracted += 1
        self.report.clips += len(job.boxes)
        self.bar.update(1)
        elapsed = time.perf_counter() - self.start
        self.bar.set_postfix(clips_per_s=f"{self.report.clips / elapsed:.1f}")

    def failed(self, item: VideoItem, reason: str) -> None:
        """Record a video that is skipped; the run goes on."""
        failure = {"video_id": item.video_id, "path": str(item.path), "reason": reason}
        self.report.failures.append(failure)
        with open_append(self.failures_file) as f:
            f.write(json.dumps(failure) + "\n")
        logger.warning("skipping %s: %s", item.path, reason)


def extract(config: ExtractConfig) -> ExtractReport:
    """Extract the clip features of every listed video into the store `config.out`. Under
    torchrun every process calls this and takes every world-th video."""
    with process_group(resolve_device(config.device), timeout_s=config.dist_timeout) as procs:
        lock = _lock_store(Path(config.out), procs.rank, procs.world)
        try:
            return _extract(config, procs.rank, procs.world, procs.device)
        finally:
            lock.release()


def _lock_store(out: Path, rank: int, world: int) -> StoreLock:
    """One writing job per store: rank 0 takes the store's OS lock for the whole job and tells
    the other ranks whether it got it, so every rank of a second job stops before writing."""
    lock = StoreLock(out)
    error: StoreLockedError | None = None
    if rank == 0:
        try:
            lock.acquire()
        except StoreLockedError as e:
            error = e
    if world > 1:
        import torch.distributed as dist

        flag = [error is None]
        dist.broadcast_object_list(flag, src=0)
        if not flag[0] and error is None:
            raise StoreLockedError(f"{out} is being written by another job", path=out)
    if error is not None:
        raise error
    return lock


def _extract(config: ExtractConfig, rank: int, world: int, device: torch.device) -> ExtractReport:
    videos = load_video_list(
        config.list, format=config.format, split=config.split, fold=config.fold, root=config.root
    )
    items, duplicates = _drop_duplicates(list(videos.items)[: config.limit])
    backbone = _create_backbone(config, device)
    sampling = sampling_config(config, backbone)
    manifest = _manifest(config, backbone, sampling, videos)
    prefix = rank_prefix(rank)
    out = Path(config.out)
    writer = StoreWriter(
        out, manifest, shard_prefix=prefix, shard_size=config.shard_size, lock=False
    )  # the job's lock is held by `extract`
    if rank == 0:
        write_text(
            out / EXTRACT_CONFIG_FILE,
            json.dumps({**asdict(config), "scalevid_version": __version__}, indent=2),
        )
    done = writer.done_ids()
    mine = [it for i, it in enumerate(items) if i % world == rank]
    todo = [it for it in mine if it.video_id not in done]
    report = ExtractReport(store=out, listed=len(mine), skipped_existing=len(mine) - len(todo))
    logger.info(
        "rank %d/%d: %d videos to extract (%d already done), %d clips each, backbone %s on %s",
        rank,
        world,
        len(todo),
        report.skipped_existing,
        manifest.clips_per_video,
        config.backbone,
        device,
    )
    bar = progress_bar(
        total=len(todo),
        enabled=(config.progress and rank == 0),
        desc=f"extract {config.split}",
        unit="video",
    )
    outcomes = _Outcomes(writer, report, bar, failures_file=out / rank_failures_file(prefix))
    if rank == 0:
        for item in duplicates:  # recorded, skipped, and the run goes on (as `import` does)
            outcomes.failed(item, "listed twice")
    _compile(config, backbone, clips=len(todo) * manifest.clips_per_video)
    _extract_videos(todo, config, backbone, sampling, outcomes, device)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # every rank's failures are written before rank 0 merges them
    if rank == 0:
        merge_failures(out)
    return report


def _create_backbone(config: ExtractConfig, device: torch.device) -> Backbone:
    # Clip length and size are the backbone's input; asking for others builds the backbone
    # for them (families that take `frames` / `size`, e.g. i3d).
    shape = {k: v for k, v in (("frames", config.frames), ("size", config.crop_size)) if v}
    return create_backbone(
        config.backbone,
        weights=config.weights,
        device=device,
        precision=config.precision,
        **shape,
    )


def _manifest(
    config: ExtractConfig, backbone: Backbone, sampling: SamplingConfig, videos: VideoList
) -> Manifest:
    """The store's manifest: the backbone, its preprocessing and how clips were sampled."""
    mode = config.mode
    sampling_info: dict[str, Any] = {"mode": mode, "crop_size": sampling.crop_size}
    if mode == "train":
        clips_per_video = sampling.num_clips * sampling.passes
        sampling_info.update(
            num_clips=sampling.num_clips,
            passes=sampling.passes,
            flip=sampling.flip,
            scale_range=list(sampling.scale_range) if sampling.scale_range else None,
            colour_jitter=config.colour_jitter,
            seed=config.seed,
        )
    else:
        clips_per_video = sampling.temporal_views * sampling.spatial_views
        sampling_info.update(
            temporal_views=sampling.temporal_views, spatial_views=sampling.spatial_views
        )
    return Manifest(
        dim=backbone.dim,
        clips_per_video=clips_per_video,
        backbone=config.backbone,
        preprocessing=backbone.preprocessing(),
        clip_frames=sampling.frames,
        clip_stride=sampling.stride,
        sampling=sampling_info,
        dataset=videos.name,
        class_names=list(videos.class_names),
    )


# `compile: auto` compiles for jobs of at least this many clips: compiling pays for itself in fp32
# on a CPU after about 7,600 clips of 16 x 64 x 64 and 260 of 16 x 224 x 224
# (docs/performance.md), so this is past that with room for a slower compiler.
AUTO_COMPILE_CLIPS = 20_000


def _compile(config: ExtractConfig, backbone: Backbone, *, clips: int) -> None:
    """Compile the backbone before extracting `clips` clips when `config.compile` says so (its
    time is logged, not counted in the report's). `auto` leaves out what was not measured: GPU
    backbones and reduced precision stay eager; a failed compile falls back to eager."""
    if clips == 0 or config.compile == "off":
        return
    if config.compile == "on":
        backbone.compile_network(config.batch_size)
        return
    if backbone.device.type != "cpu" or backbone.dtype != torch.float32:
        return
    if clips < AUTO_COMPILE_CLIPS or not cpp_compiler_available():
        return
    try:
        backbone.compile_network(config.batch_size)
    except CompileUnavailableError as err:
        logger.warning("%s; extracting without torch.compile", err)


def _extract_videos(
    todo: list[VideoItem],
    config: ExtractConfig,
    backbone: Backbone,
    sampling: SamplingConfig,
    outcomes: _Outcomes,
    device: torch.device,
) -> None:
    """Decode (in DataLoader workers), batch through the backbone, write; flush the writer
    every `config.flush_seconds`, and publish whatever is finished also when interrupted."""
    loader = DataLoader(
        ClipDataset(todo, mode=config.mode, sampling=sampling, seed=config.seed),
        batch_size=None,
        shuffle=False,
        num_workers=config.workers,
        prefetch_factor=4 if config.workers else None,
        persistent_workers=False,
    )
    queue = _BatchQueue(backbone, device, batch_size=config.batch_size, finished=outcomes.finished)
    bar, writer = outcomes.bar, outcomes.writer
    outcomes.start = last_flush = time.perf_counter()
    try:
        for sample in loader:
            if "error" in sample:
                outcomes.failed(sample["item"], sample["error"])
                bar.update(1)
                continue
            queue.add(sample["item"], sample["clips"], sample["boxes"])
            if time.perf_counter() - last_flush > config.flush_seconds:
                writer.flush()
                last_flush = time.perf_counter()
        queue.drain()
    finally:
        bar.close()
        writer.close()  # publishes every finished video, also when interrupted
    outcomes.report.seconds = time.perf_counter() - outcomes.start


def _drop_duplicates(items: list[VideoItem]) -> tuple[list[VideoItem], list[VideoItem]]:
    """(first occurrence of every video id, the later repeats) in list order."""
    seen: set[str] = set()
    kept, repeats = [], []
    for item in items:
        (repeats if item.video_id in seen else kept).append(item)
        seen.add(item.video_id)
    return kept, repeats


def merge_failures(store: Path) -> Path:
    """Write STORE/failures.jsonl: every rank's failures of its latest run, in one file."""
    rows = []
    for part in sorted(store.glob(RANK_FAILURES_GLOB)):
        rows.extend(line for line in part.read_text().splitlines() if line.strip())
    path = store / FAILURES_FILE
    write_text(path, "".join(row + "\n" for row in rows))
    return path
