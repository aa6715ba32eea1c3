"""SCALE's losses as pure functions: InfoNCE, masked clip modelling (MCM) and the SET loss.

All embeddings are expected L2-normalised; logits are cosine similarities / temperature.
Each loss returns the mean loss and the top-1 contrastive accuracy (a detached 0-d tensor), so
callers can log accuracy without extra host syncs.

In data-parallel training a rank holds only its own queries but scores them against the keys of
the *global* batch; `query_offset` says where the rank's positives sit among those keys and
`normalizer` is the global number of queries, so summing the per-rank losses gives the global
mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    queries: torch.Tensor,
    keys: torch.Tensor,
    positives: torch.Tensor,
    *,
    temperature: float,
    key_mask: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE: each query must pick out its positive key among all keys.

    queries (M, E); keys (K, E); positives (M,) int64 index of each query's key in `keys`;
    key_mask (K,) bool, False for keys that are not candidates (padding).
    Returns (sum of per-query losses / normalizer, accuracy); normalizer defaults to M.
    """
    logits = queries @ keys.t() / temperature  # (M, K)
    return info_nce_from_logits(logits, positives, key_mask=key_mask, normalizer=normalizer)


def info_nce_from_logits(
    logits: torch.Tensor,
    positives: torch.Tensor,
    *,
    key_mask: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE on precomputed logits (M, K) (similarities / temperature); see `info_nce`."""
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[None, :], float("-inf"))
    logits = logits.float()
    loss = F.cross_entropy(logits, positives, reduction="sum")
    denom = logits.shape[0] if normalizer is None else normalizer
    accuracy = (logits.argmax(dim=1) == positives).float().mean().detach()
    return loss / denom, accuracy


def symmetric_info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    temperature: float,
    a_keys: torch.Tensor | None = None,
    b_keys: torch.Tensor | None = None,
    query_offset: int = 0,
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE between paired embeddings (paper eq. 2-4).

    a, b (B, E): row i of `a` and row i of `b` are a positive pair; every other row of the other
    side is a negative. Loss = (NCE(a -> b) + NCE(b -> a)) / 2.
    a_keys, b_keys (Bg, E): the keys to score against (default: a and b themselves); in
    data-parallel training they are the gathered global batch and row i of the local batch is
    row `query_offset + i` of the keys.
    """
    a_keys = a if a_keys is None else a_keys
    b_keys = b if b_keys is None else b_keys
    positives = torch.arange(a.shape[0], device=a.device) + query_offset
    loss_ab, acc_ab = info_nce(a, b_keys, positives, temperature=temperature, normalizer=normalizer)
    loss_ba, acc_ba = info_nce(b, a_keys, positives, temperature=temperature, normalizer=normalizer)
    return (loss_ab + loss_ba) / 2, (acc_ab + acc_ba) / 2


# SET loss: the SET embeddings (B, E) of two disjoint clip sets of each video must match each
# other and not those of the other videos of the batch: exactly the symmetric InfoNCE.
set_loss = symmetric_info_nce


def masked_clip_loss(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    masked: torch.Tensor,
    *,
    temperature: float,
    target_valid: torch.Tensor | None = None,
    key_offset: int = 0,
    normalizer: float | torch.Tensor | None = None,
    dense: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked clip modelling: the prediction at each masked position must pick out the target
    embedding of its own clip among the targets of *all* clips of the batch.

    predictions (M, E): prediction-head outputs at the masked positions only, in the row-major
        order of `masked.nonzero()` (output sparsity: nothing is computed at visible clips).
    targets (K, E): target-head embeddings of every clip of the (global) batch, flattened from
        (B_global, N); other clips of the same video are hard negatives.
    masked (B, N) bool: the local batch's masked clips; its first clip is row `key_offset` of
        `targets`. target_valid (K,) bool: False for padded clips, which are never candidates.
    dense: the reference release's plain computation, kept as a baseline: `predictions` are
        (B*N, E) for *every* clip, all (B*N, K) logits are computed, and the rows of the masked
        clips are kept. Same value as the sparse form, more work.
    """
    positives = masked.flatten().nonzero().squeeze(1) + key_offset  # (M,)
    if dense:
        logits = predictions @ targets.t() / temperature  # (B*N, K)
        return info_nce_from_logits(
            logits[masked.flatten()], positives, key_mask=target_valid, normalizer=normalizer
        )
    return info_nce(
        predictions,
        targets,
        positives,
        temperature=temperature,
        key_mask=target_valid,
        normalizer=normalizer,
    )
