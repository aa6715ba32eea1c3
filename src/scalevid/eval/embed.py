"""`scalevid embed` and `scalevid search`: per-video SCALE embeddings and nearest videos.

A video's embedding is the vector the SCALE_kNN probe uses, (D + H,): columns [0, D) the mean of
its valid clips' features (D: the backbone's feature size), columns [D, D + H) its SET output
(H: the run's `model.hidden`, 256 by default), not normalised; similarity is cosine.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from scalevid.eval.representations import load_model, open_store, video_embeddings
from scalevid.hardware import resolve_device
from scalevid.model import ScaleModel
from scalevid.outfiles import replace_file, write_text
from scalevid.store import FeatureStore

logger = logging.getLogger(__name__)

EMBEDDINGS = "embeddings.npy"
VIDEO_IDS = "video_ids.txt"


def export_embeddings(
    *,
    store: FeatureStore | str | Path,
    run: ScaleModel | str | Path,
    out: str | Path,
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = True,
    verify_checksums: bool = True,
) -> tuple[Path, Path]:
    """Write `out`/embeddings.npy (N, D + H) float32 (the mean clip feature, then the SET
    output: see the module docstring) and `out`/video_ids.txt (one id per line, same order);
    returns both paths. A store path is opened with its checksums verified unless
    `verify_checksums` is False."""
    store = open_store(store, verify_checksums=verify_checksums)
    model = load_model(run, resolve_device(device))
    assert model is not None
    vectors = video_embeddings(
        store, model, batch_size=batch_size, device=device, progress=progress
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    replace_file(out / EMBEDDINGS, lambda f: np.save(f, vectors.astype(np.float32)))
    write_text(out / VIDEO_IDS, "".join(f"{v}\n" for v in store.video_ids))
    n, width = vectors.shape
    logger.info(
        "wrote %s (%d, %d): columns 0-%d the mean clip feature, %d-%d the SET output",
        out / EMBEDDINGS,
        n,
        width,
        store.dim - 1,
        store.dim,
        width - 1,
    )
    return out / EMBEDDINGS, out / VIDEO_IDS


def load_embeddings(folder: str | Path) -> tuple[np.ndarray, list[str]]:
    """(embeddings (N, F), video ids) as written by :func:`export_embeddings`."""
    folder = Path(folder)
    vectors = np.load(folder / EMBEDDINGS, allow_pickle=False)
    ids = (folder / VIDEO_IDS).read_text().splitlines()
    if len(ids) != len(vectors):
        raise ValueError(f"{folder}: {len(vectors)} embeddings but {len(ids)} video ids")
    return vectors, ids


def search(
    *,
    store: FeatureStore | str | Path,
    query: str,
    k: int = 10,
    run: ScaleModel | str | Path | None = None,
    embeddings: str | Path | None = None,
    batch_size: int = 256,
    device: str = "auto",
    verify_checksums: bool = True,
) -> list[tuple[str, str, float]]:
    """The k videos of `store` most similar to video `query` (cosine of the SCALE embeddings),
    best first, as (video_id, path, similarity); the query itself is not one of them (fewer
    than k when the store holds k videos or fewer).

    Embeddings come from an :func:`export_embeddings` folder when given, else from `run`. A
    store path is opened with its checksums verified unless `verify_checksums` is False.
    """
    store = open_store(store, verify_checksums=verify_checksums)
    if embeddings is not None:
        vectors, ids = load_embeddings(embeddings)
        if ids != store.video_ids:
            raise ValueError(f"{embeddings}: its video ids are not those of {store.path}")
    elif run is not None:
        model = load_model(run, resolve_device(device))
        assert model is not None
        vectors = video_embeddings(store, model, batch_size=batch_size, device=device)
    else:
        raise ValueError("search needs a run or an embeddings folder")
    try:
        q = store.video_ids.index(query)
    except ValueError:
        raise ValueError(f"video {query!r} is not in {store.path}") from None
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit[q]  # (N,)
    others = np.delete(np.arange(len(sims)), q)  # by index: an identical video still counts
    order = others[np.argsort(-sims[others], kind="stable")][: max(0, k)]
    return [(store.video_ids[i], store.paths[i], float(sims[i])) for i in order]
