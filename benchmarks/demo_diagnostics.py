"""How much of the demo's labels the frozen clip features can carry, from a finished demo folder.

Three scikit-learn logistic regressions on the demo's stores (features standardised):
  clip motion    per train clip: which motion (sweep / bounce / orbit / none) its frames show,
                 from the generator's ground-truth schedule; 5-fold cross-validation
  mean pool      per video: the mean of its clip features -> class (train -> test)
  oracle halves  per video: [mean of the early clips, mean of the late clips] -> class; this knows
                 the clips' order, which a bag of clips does not, so it bounds what order-aware
                 aggregation of these features can reach with this many videos

    python benchmarks/demo_diagnostics.py scalevid-demo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.preprocessing import StandardScaler

from scalevid.demo.synthetic import DatasetConfig, video_schedule, visible_events
from scalevid.store import FeatureStore


def clip_motions(store: FeatureStore, config: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """(clip features, motion label) for clips that show at most one motion."""
    features, motions = [], []
    for i, video_id in enumerate(store.video_ids):
        events = video_schedule(config, "train", int(video_id.rsplit("_", 1)[-1])).events
        clips = store.features(i).astype(np.float32)
        for k in range(int(store.num_clips[i])):
            t0, t1 = store.boxes[i, k, 1], store.boxes[i, k, 4]
            seen = sorted(
                {
                    e.kind
                    for e in visible_events(
                        events, int(t0 * config.frames), int(t1 * config.frames)
                    )
                }
            )
            if len(seen) <= 1:
                features.append(clips[k])
                motions.append(seen[0] if seen else "none")
    return np.array(features), np.array(motions)


def halves(store: FeatureStore) -> np.ndarray:
    """Per video: [mean feature of clips starting before the median start, of the rest]."""
    feats = store.features().astype(np.float32)
    starts = store.boxes[:, :, 1]
    rows = []
    for i in range(len(store)):
        n = int(store.num_clips[i])
        early = starts[i, :n] < np.median(starts[i, :n])
        late = ~early
        early = early if early.any() else late
        rows.append(np.concatenate([feats[i, :n][early].mean(0), feats[i, :n][late].mean(0)]))
    return np.array(rows)


def fit_score(train_x, train_y, test_x, test_y, c: float) -> float:
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=3000, C=c).fit(scaler.transform(train_x), train_y)
    return float(clf.score(scaler.transform(test_x), test_y))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("demo", type=Path, help="a `scalevid demo` output folder")
    p.add_argument("--c", type=float, default=0.01, help="inverse L2 strength of the regressions")
    args = p.parse_args(argv)
    config = DatasetConfig.from_dict(
        json.loads((args.demo / "data" / "dataset.json").read_text())["config"]
    )
    train = FeatureStore.open(args.demo / "stores" / "train")
    test = FeatureStore.open(args.demo / "stores" / "test")

    x, y = clip_motions(train, config)
    _, counts = np.unique(y, return_counts=True)
    scaled = StandardScaler().fit_transform(x)
    clip_acc = cross_val_score(LogisticRegression(max_iter=3000, C=args.c), scaled, y, cv=5).mean()
    mean_acc = fit_score(
        train.features().astype(np.float32).mean(1),
        train.labels,
        test.features().astype(np.float32).mean(1),
        test.labels,
        args.c,
    )
    oracle_acc = fit_score(halves(train), train.labels, halves(test), test.labels, args.c)
    result = {
        "train_videos": len(train),
        "test_videos": len(test),
        "classes": len(train.manifest.class_names),
        "clip_motion_accuracy": float(clip_acc),
        "clip_motion_majority": float(counts.max() / counts.sum()),
        "mean_pool_test_accuracy": mean_acc,
        "oracle_halves_test_accuracy": oracle_acc,
        "chance": 1 / len(train.manifest.class_names),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
