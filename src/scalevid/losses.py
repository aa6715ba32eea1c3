"""SCALE's contrastive losses, the SET and masked clip modelling (MCM) InfoNCE losses, as small
modules.

All embeddings are expected L2-normalised; logits are cosine similarities / temperature. Each
loss returns the loss and the top-1 contrastive accuracy (a detached 0-d tensor), so callers can
log accuracy without extra host syncs.

`SetLoss` and `MaskedClipLoss` are built with their temperature and the process's `Gather`, as
open_clip's `ClipLoss` is with its rank and world size. In data-parallel training each process
scores its own queries against the keys of the *global* batch and returns its share of the
global mean, so that the processes' losses sum to the loss of one process holding the whole
batch; with one process it is the plain mean. The logits are scored a chunk at a time and never
held whole (`ChunkedInfoNCE`); the release's plain computation on whole logits lives on in the
tests (`tests/reference_losses.py`) as the reference every loss is checked against.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalevid.distributed import Gather

# The (M, K) logits are scored a chunk of rows at a time and recomputed in the backward pass, so
# memory holds one chunk instead of several whole (M, K) arrays (~1.2 GB each at batch 2048).
# On CPU a chunk of 16 MB (fp32) stays in cache; on GPUs, where each chunk costs kernel launches,
# 256 MB chunks keep their number small (batch 2048: 5 chunks).
CHUNK_ELEMENTS = {"cpu": 2**22}
CHUNK_ELEMENTS_OTHER = 2**26


class SetLoss(nn.Module):
    """The SET loss (paper eq. 2-4): symmetric InfoNCE between the SET embeddings of the two
    disjoint clip sets of each video.

    forward(a (B, E), b (B, E)) -> (loss, accuracy): row i of `a` and row i of `b` are a positive
    pair, every other video of the global batch is a negative, and the loss is
    (NCE(a -> b) + NCE(b -> a)) / 2: this process's share of the global batch's mean.
    """

    def __init__(self, *, temperature: float, gather: Gather | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.gather = gather or Gather()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, rank, world = a.shape[0], self.gather.rank, self.gather.world
        a_keys, b_keys = self.gather.all_gather(a), self.gather.all_gather(b)  # (world * B, E)
        positives = torch.arange(n, device=a.device) + rank * n  # (B,) rows of the global batch
        loss_ab, acc_ab = _reduce(
            *_per_query_losses(a, b_keys, positives, self.temperature, None), None, n * world
        )
        loss_ba, acc_ba = _reduce(
            *_per_query_losses(b, a_keys, positives, self.temperature, None), None, n * world
        )
        return (loss_ab + loss_ba) / 2, (acc_ab + acc_ba) / 2


class MaskedClipLoss(nn.Module):
    """Masked clip modelling: the prediction at each masked clip must pick out the target
    embedding of its own clip among the targets of *all* clips of the global batch (the other
    clips of the same video are hard negatives).

    forward(predictions (C, E), targets (K, E), positions, target_valid (K,) bool or None)
    -> (loss, accuracy).
    targets: target-head embeddings of every clip of this process's batch, flattened from (B, N).
    positions: (index (C,) int64, keep (C,) bool) from `pretext.masked_positions`: row c of
        `predictions` is the prediction at flattened clip `index[c]`, and counts only where
        `keep[c]` (a fixed number C of rows, so that no step waits for the host to count the
        masked clips).
    target_valid: False for padded clips, which are never candidates.
    The loss is this process's share of the mean over every counted query of the global batch
    (0 when there is none); the accuracy is over this process's counted queries.
    """

    def __init__(self, *, temperature: float, gather: Gather | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.gather = gather or Gather()

    def forward(
        self,
        predictions: torch.Tensor,
        targets: torch.Tensor,
        positions: tuple[torch.Tensor, torch.Tensor],
        target_valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        index, keep = positions
        # The global number of queries; none at all (likely only in tiny batches) gives a loss of
        # 0 / 1 = 0 where a mean over no queries would be NaN.
        count = self.gather.all_reduce(keep.sum().float()).clamp(min=1)
        key_mask = None
        if target_valid is not None:
            key_mask = self.gather.all_gather(target_valid.to(torch.uint8)).bool()  # (world * K,)
        keys = self.gather.all_gather(targets)  # (world * K, E)
        positives = index + self.gather.rank * targets.shape[0]  # (C,) rows of the global keys
        per_query, hits = _per_query_losses(
            predictions, keys, positives, self.temperature, key_mask
        )
        return _reduce(per_query, hits, keep, count)


def _per_query_losses(
    queries: torch.Tensor,
    keys: torch.Tensor,
    positives: torch.Tensor,
    temperature: float,
    key_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-query losses (M,), hits (M,) bool) by `ChunkedInfoNCE`, chunks sized for the device."""
    budget = CHUNK_ELEMENTS.get(queries.device.type, CHUNK_ELEMENTS_OTHER)
    rows = max(1, budget // max(1, keys.shape[0]))
    return ChunkedInfoNCE.apply(queries, keys, positives, key_mask, 1.0 / temperature, rows)


def _reduce(
    per_query: torch.Tensor,
    hits: torch.Tensor,
    query_mask: torch.Tensor | None,
    normalizer: float | torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of counted per-query losses / normalizer, accuracy over counted queries); the
    normalizer defaults to the number of counted queries."""
    hits = hits.float()
    if query_mask is None:
        loss, count, accuracy = per_query.sum(), per_query.shape[0], hits.mean()
    else:  # no host sync: padded rows are zeroed, not removed
        # `where`, not a product: a padded row's positive may be a masked-out key (inf loss)
        loss = torch.where(query_mask, per_query, 0.0).sum()
        count = query_mask.float().sum()
        accuracy = (hits * query_mask).sum() / count.clamp(min=1)
    denom = count if normalizer is None else normalizer
    return loss / denom, accuracy.detach()


class ChunkedInfoNCE(torch.autograd.Function):
    """Per-query InfoNCE losses -log softmax(scale * q @ k.T)[positive], `rows` queries at a time.

    forward(queries (M, E), keys (K, E), positives (M,), key_mask (K,) bool or None, scale,
    rows) -> (losses (M,), hits (M,) bool: the positive scored highest). Only the row-wise
    log-sum-exp is kept for the backward pass, which recomputes each chunk's logits: the
    gradient of a row's loss with respect to its logits is softmax - onehot(positive).
    """

    @staticmethod
    def forward(
        ctx: Any,
        queries: torch.Tensor,
        keys: torch.Tensor,
        positives: torch.Tensor,
        key_mask: torch.Tensor | None,
        scale: float,
        rows: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m, dtype = queries.shape[0], _loss_dtype(queries)
        losses = queries.new_empty(m, dtype=dtype)  # (M,)
        lse = queries.new_empty(m, dtype=dtype)  # (M,)
        hits = torch.empty(m, dtype=torch.bool, device=queries.device)  # (M,)
        keys_t = keys.to(dtype).t()  # (E, K), converted once for every chunk
        for lo in range(0, m, rows):
            hi = min(m, lo + rows)
            logits = _chunk_logits(queries[lo:hi], keys_t, scale, key_mask)
            pos = positives[lo:hi, None]  # (rows, 1)
            pos_logit = logits.gather(1, pos).squeeze(1)  # (rows,)
            hits[lo:hi] = logits.argmax(dim=1) == pos.squeeze(1)
            # Shift by the positive's logit before the log-sum-exp, not lse - positive after it:
            # no cancellation when the positive dominates (a small loss keeps its precision).
            # A masked-out positive (-inf, only on padded query rows) shifts by a finite value
            # and gives an infinite loss but a finite lse.
            shift = pos_logit.clamp(min=-1e4)
            shifted_lse = torch.logsumexp(logits.sub_(shift[:, None]), dim=1)
            losses[lo:hi] = shifted_lse - (pos_logit - shift)
            lse[lo:hi] = shifted_lse + shift
        ctx.save_for_backward(queries, keys, positives, lse)
        ctx.key_mask, ctx.scale, ctx.rows = key_mask, scale, rows
        ctx.mark_non_differentiable(hits)
        return losses, hits

    @staticmethod
    def backward(
        ctx: Any, grad_losses: torch.Tensor, _grad_hits: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        queries, keys, positives, lse = ctx.saved_tensors
        scale, rows = ctx.scale, ctx.rows
        grad_q = torch.zeros_like(queries) if ctx.needs_input_grad[0] else None  # (M, E)
        dtype = _loss_dtype(queries)
        grad_k = torch.zeros_like(keys, dtype=dtype) if ctx.needs_input_grad[1] else None  # (K, E)
        keys_t = keys.to(dtype).t()  # (E, K)
        for lo in range(0, queries.shape[0], rows):
            hi = min(queries.shape[0], lo + rows)
            logits = _chunk_logits(queries[lo:hi], keys_t, scale, ctx.key_mask)
            grad = torch.exp(logits - lse[lo:hi, None])  # (rows, K) softmax
            grad.scatter_add_(1, positives[lo:hi, None], grad.new_full((hi - lo, 1), -1.0))
            grad *= grad_losses[lo:hi, None]  # d loss / d logits, (rows, K)
            if grad_q is not None:
                grad_q[lo:hi] = (grad @ keys_t.t()).to(queries.dtype) * scale
            if grad_k is not None:
                grad_k.addmm_(grad.t(), queries[lo:hi].to(dtype), alpha=scale)
        if grad_k is not None:
            grad_k = grad_k.to(keys.dtype)
        return grad_q, grad_k, None, None, None, None


def _loss_dtype(x: torch.Tensor) -> torch.dtype:
    """Logits and losses in fp32 at least (fp64 stays fp64, for gradcheck)."""
    return torch.promote_types(x.dtype, torch.float32)


def _chunk_logits(
    queries: torch.Tensor, keys_t: torch.Tensor, scale: float, key_mask: torch.Tensor | None
) -> torch.Tensor:
    """(rows, K) logits of a chunk of queries against the transposed keys (E, K)."""
    logits = (queries.to(keys_t.dtype) * scale) @ keys_t  # (rows, K)
    if key_mask is not None:
        logits.masked_fill_(~key_mask[None, :], float("-inf"))
    return logits
