"""File names inside the folders scalevid writes, spelled once.

A training run folder (`scalevid train --out RUN`):
    config.json            the resolved TrainConfig (its "model" entry rebuilds the model)
    model.safetensors      final weights, beside config.json so the folder loads directly
    checkpoints/last/      model.safetensors + config.json + trainer_state.pt, rewritten atomically
    metrics.jsonl          one row per log interval
    curves.png             loss and accuracy curves, drawn at the end
    tensorboard/           when enabled
An evaluation folder (`scalevid eval --out DIR`):
    results.json           every row, seed, chosen config and the EvalConfig
    results.md             the same as markdown tables
    predictions.npz        test predictions per row and seed
    splits/seed<S>.npz     the train rows each seed fits, validates and retrains on
    curves_<row>.png       validation and training curves of a set / attentive row
A recipe's output folder (`scalevid recipe --out DIR`, `scalevid demo --out DIR`):
    steps/<output>.json    per output (a store, a run, an evaluation), the settings it was made
                           with and its outcome (`scalevid.steps`)
"""

from __future__ import annotations

from pathlib import Path

# a training run
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer_state.pt"
LAST_CHECKPOINT = Path("checkpoints") / "last"
METRICS_LOG = "metrics.jsonl"
CURVES = "curves.png"
# an evaluation
RESULTS = "results.json"
RESULTS_TABLE = "results.md"
PREDICTIONS = "predictions.npz"
SPLITS = "splits"


def split_file(seed: int) -> Path:
    """splits/seed<S>.npz inside an evaluation folder."""
    return Path(SPLITS) / f"seed{seed}.npz"


def learning_curves_file(row: str) -> str:
    """The learning-curve figure of one row inside an evaluation folder."""
    return f"curves_{row}.png"


# a recipe
STEPS = "steps"
