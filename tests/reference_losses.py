"""The authors' release's plain computation of SCALE's losses: the reference that
`scalevid.losses` and `scalevid.pretext.pretext_step` are checked against.

Every logit is held whole, the prediction head runs at every clip and the masked rows are picked
out afterwards (by `nonzero`), and torch's own cross-entropy takes the mean. Nothing here is
chunked, gathered across processes or bounded by a fixed query capacity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scalevid.model import ScaleModel
from scalevid.pretext import ClipSets, PretextConfig


def release_info_nce(
    queries: torch.Tensor,
    keys: torch.Tensor,
    positives: torch.Tensor,
    temperature: float,
    key_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """queries (M, E), keys (K, E), positives (M,), key_mask (K,) bool or None ->
    (mean cross-entropy of the whole (M, K) logits, top-1 accuracy)."""
    logits = queries @ keys.t() / temperature  # (M, K)
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[None, :], float("-inf"))
    accuracy = (logits.argmax(dim=1) == positives).float().mean()
    return F.cross_entropy(logits, positives), accuracy


def release_set_loss(
    a: torch.Tensor, b: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """a, b (B, E), row i of each a positive pair: (NCE(a -> b) + NCE(b -> a)) / 2."""
    positives = torch.arange(a.shape[0], device=a.device)  # (B,)
    loss_ab, acc_ab = release_info_nce(a, b, positives, temperature)
    loss_ba, acc_ba = release_info_nce(b, a, positives, temperature)
    return (loss_ab + loss_ba) / 2, (acc_ab + acc_ba) / 2


def release_mcm_loss(
    every_prediction: torch.Tensor,
    targets: torch.Tensor,
    masked: torch.Tensor,
    temperature: float,
    target_valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """every_prediction (B*N, E) at every clip; targets (B*N, E); masked (B, N) bool;
    target_valid (B*N,) bool or None. All (B*N, B*N) logits, then the masked rows' InfoNCE."""
    logits = every_prediction @ targets.t() / temperature  # (B*N, B*N)
    if target_valid is not None:
        logits = logits.masked_fill(~target_valid[None, :], float("-inf"))
    rows = masked.flatten().nonzero().squeeze(1)  # (M,) the masked clips, row-major
    picked = logits[rows]  # (M, B*N)
    accuracy = (picked.argmax(dim=1) == rows).float().mean()
    return F.cross_entropy(picked, rows), accuracy


def release_pretext_losses(
    model: ScaleModel, sets: ClipSets, config: PretextConfig
) -> dict[str, torch.Tensor]:
    """ "loss", "mcm_loss", "set_loss" of one batch of clip sets (drawn by
    `scalevid.pretext.draw_clip_sets`), computed the release's way in fp32."""
    out = model(sets.features, sets.boxes, valid=sets.valid, masked=sets.masked)
    set_emb = F.normalize(model.set_head(out.set).float(), dim=-1)  # (2B, E)
    b = set_emb.shape[0] // 2
    set_loss, _ = release_set_loss(set_emb[:b], set_emb[b:], config.temperature)
    every_prediction = F.normalize(model.pred_head(out.clips).flatten(0, 1).float(), dim=-1)
    targets = F.normalize(model.target_head(sets.features.flatten(0, 1)).float(), dim=-1)
    mcm_loss, _ = release_mcm_loss(
        every_prediction, targets, sets.masked, config.temperature, sets.valid.flatten()
    )
    loss = config.mcm_weight * mcm_loss + config.set_weight * set_loss
    return {"loss": loss, "mcm_loss": mcm_loss, "set_loss": set_loss}
