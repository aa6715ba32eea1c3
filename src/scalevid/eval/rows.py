"""The probe rows of an evaluation, each declared once: its name, label, family, whether it reads
the SCALE run's representation, the baseline it pairs with, and the EvalConfig fields that only
its cached runs depend on. Adding a row is one entry here and one runner per family
(``eval/families.py``); nothing else dispatches on row names.

Families: ``knn`` (a temperature-weighted vote on one vector per video), ``head`` (linear or MLP
heads per clip, softmax averaged over views), ``set`` (the SCALE architecture trained on clip
sets) and ``attentive`` (a learned query cross-attending over the clip vectors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

ProbeName = Literal[
    "knn",
    "scale_knn",
    "linear",
    "scale_linear",
    "mlp",
    "transformer",
    "scale_ft",
    "attentive",
    "scale_attentive",
]
Family = Literal["knn", "head", "set", "attentive"]

_HEAD_FIELDS = (
    "head_lrs",
    "head_weight_decays",
    "head_epochs",
    "head_batch_size",
    "clips_per_sample",
    "mlp_hidden",  # the linear head's config carries the MLP settings too (unused there)
    "mlp_dropout",
)
_STOPPING_FIELDS = (
    "finetune",
    "finetune_max_epochs",
    "finetune_min_steps",
    "finetune_max_steps",
    "validate_every",
    "patience",
    "median_stop",
    "precision",
)


@dataclass(frozen=True)
class ProbeRow:
    """One row of the results table.

    scale: reads the SCALE run (its SET output or contextualised tokens), so it needs a run;
    baseline: the row it is compared with (its delta); classification_only: skipped for
    regression targets; cache_fields: the EvalConfig fields that this row's cached runs depend
    on and no other row's do (a field named by no row keys every baseline row).
    """

    name: ProbeName
    label: str
    family: Family
    scale: bool = False
    baseline: ProbeName | None = None
    classification_only: bool = False
    cache_fields: tuple[str, ...] = ()

    @property
    def needs_run(self) -> bool:
        return self.scale


_ROWS = (
    ProbeRow(
        "knn", "kNN", "knn", classification_only=True, cache_fields=("knn_k", "knn_temperature")
    ),
    ProbeRow("scale_knn", "SCALE_kNN", "knn", scale=True, baseline="knn", classification_only=True),
    ProbeRow("linear", "Linear", "head", cache_fields=(*_HEAD_FIELDS, "linear_batchnorm")),
    ProbeRow("scale_linear", "SCALE_linear", "head", scale=True, baseline="linear"),
    ProbeRow("mlp", "MLP", "head", cache_fields=(*_HEAD_FIELDS, "precision")),
    ProbeRow(
        "transformer",
        "Transformer",
        "set",
        cache_fields=(
            *_STOPPING_FIELDS,
            "finetune_lrs",
            "finetune_heads",
            "transformer_hidden",
            "transformer_depth",
            "transformer_heads",
            "input_pca",
        ),
    ),
    ProbeRow("scale_ft", "SCALE_ft", "set", scale=True, baseline="transformer"),
    ProbeRow(
        "attentive",
        "Attentive",
        "attentive",
        cache_fields=(
            *_STOPPING_FIELDS,
            "attentive",
            "attentive_lrs",
            "attentive_weight_decays",
            "input_pca",
        ),
    ),
    ProbeRow("scale_attentive", "SCALE_attentive", "attentive", scale=True, baseline="attentive"),
)

ROWS: dict[str, ProbeRow] = {r.name: r for r in _ROWS}
PROBES: tuple[ProbeName, ...] = get_args(ProbeName)
LABELS: dict[str, str] = {r.name: r.label for r in _ROWS}
BASELINE_OF: dict[str, str] = {r.name: r.baseline for r in _ROWS if r.baseline is not None}
# The rows that do not depend on the SCALE weights, whose runs a baseline cache keeps.
BASELINES: tuple[ProbeName, ...] = tuple(r.name for r in _ROWS if not r.scale)
