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

from typing import Any

import torch
import torch.nn.functional as F

# The (M, K) logits are scored a chunk of rows at a time and recomputed in the backward pass, so
# memory holds one chunk instead of several whole (M, K) arrays (~1.2 GB each at batch 2048).
# On CPU a chunk of 16 MB (fp32) stays in cache; on GPUs, where each chunk costs kernel launches,
# 256 MB chunks keep their number small (batch 2048: 5 chunks).
CHUNK_ELEMENTS = {"cpu": 2**22}
CHUNK_ELEMENTS_OTHER = 2**26


def info_nce(
    queries: torch.Tensor,
    keys: torch.Tensor,
    positives: torch.Tensor,
    *,
    temperature: float,
    key_mask: torch.Tensor | None = None,
    query_mask: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE: each query must pick out its positive key among all keys.

    queries (M, E); keys (K, E); positives (M,) int64 index of each query's key in `keys`;
    key_mask (K,) bool, False for keys that are not candidates (padding); query_mask (M,) bool,
    False for query rows that are padding and count for nothing.
    Returns (sum of per-query losses / normalizer, accuracy); normalizer defaults to the number
    of counted queries. The logits are never held whole (see `ChunkedInfoNCE`).
    """
    budget = CHUNK_ELEMENTS.get(queries.device.type, CHUNK_ELEMENTS_OTHER)
    rows = max(1, budget // max(1, keys.shape[0]))
    per_query, hits = ChunkedInfoNCE.apply(
        queries, keys, positives, key_mask, 1.0 / temperature, rows
    )
    return _reduce(per_query, hits, query_mask, normalizer)


def info_nce_from_logits(
    logits: torch.Tensor,
    positives: torch.Tensor,
    *,
    key_mask: torch.Tensor | None = None,
    query_mask: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE on precomputed logits (M, K) (similarities / temperature); see `info_nce`."""
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[None, :], float("-inf"))
    logits = logits.float()
    per_query = F.cross_entropy(logits, positives, reduction="none")
    return _reduce(per_query, logits.argmax(dim=1) == positives, query_mask, normalizer)


def _reduce(
    per_query: torch.Tensor,
    hits: torch.Tensor,
    query_mask: torch.Tensor | None,
    normalizer: float | torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of counted per-query losses / normalizer, accuracy over counted queries)."""
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
    positives = torch.arange(a.shape[0], device=a.device) + query_offset  # (B,)
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
    positions: tuple[torch.Tensor, torch.Tensor] | None = None,
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
    positions: (index (C,), keep (C,) bool) from `pretext.masked_positions`: `predictions` are
        (C, E) at flattened positions `index`, of which only rows with `keep` count. This is the
        fixed-size form that needs no host sync; without it the masked positions are found with
        `nonzero`, whose result size the host must wait for.
    """
    if positions is not None:
        index, keep = positions
        return info_nce(
            predictions,
            targets,
            index + key_offset,
            temperature=temperature,
            key_mask=target_valid,
            query_mask=keep,
            normalizer=normalizer,
        )
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
