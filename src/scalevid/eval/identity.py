"""What evaluation, embedding and search read must be one kind of feature: the train store, the
test store and the run's own training store come from the same backbone and preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

from scalevid.folders import CONFIG
from scalevid.store.manifest import Manifest, feature_differences, read_manifest

OVERRIDE_FLAG = "--allow-other-features"


class FeatureIdentityError(ValueError):
    """Stores or a run whose features come from different backbones or preprocessing."""


def _run_store_manifest(run: Path) -> Manifest | None:
    """The manifest of the store a run (or checkpoint) folder was trained on, if it says."""
    config_file = (run if run.is_dir() else run.parent) / CONFIG
    try:
        saved = json.loads(config_file.read_text()).get("store_manifest")
        return None if saved is None else Manifest.from_dict(saved, source=config_file)
    except (OSError, ValueError, AttributeError):
        return None  # a missing or damaged config is named when the model is loaded


def check_same_features(
    stores: dict[str, str | Path], run: str | Path | None = None, *, allow: bool = False
) -> None:
    """Refuse (FeatureIdentityError naming each difference) stores, and the run's training
    store, whose features differ in backbone, preprocessing, clip length or size. `allow`
    (the CLI's --allow-other-features) lets all but a different feature size through."""
    named = {f"{label} {path}": read_manifest(Path(path)) for label, path in stores.items()}
    if run is not None and (trained_on := _run_store_manifest(Path(run))) is not None:
        named[f"the run's training store ({run})"] = trained_on
    differences = feature_differences(named)
    if allow:
        differences = [d for d in differences if d.startswith("dim:")]
    if differences:
        fix = "use stores extracted with the run's backbone and settings"
        if not all(d.startswith("dim:") for d in differences):
            fix += f", or pass {OVERRIDE_FLAG} if you mean to mix them"
        raise FeatureIdentityError(
            f"the features are not of one kind ({'; '.join(differences)}); {fix}"
        )
