"""In-training validation on device: encode a dev split, exact top-k, nDCG@10 / Recall@100.

Everything after tokenization stays on device: fixed-shape encode batches (one compiled
program per tower), ``q @ d.T`` with ``lax.top_k``, and the metrics of
:mod:`jaxir.eval.metrics` on the retrieved labels. Only the means come back to the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxir.data.pipeline import tokenize_fixed
from jaxir.eval import metrics as M

_BATCH = 64


@dataclasses.dataclass(frozen=True)
class ValidationSet:
    """Tokenized dev queries ``[Q, Lq]``, dev passages ``[N, Lp]`` and graded labels ``[Q, N]``."""

    query_ids: np.ndarray
    query_mask: np.ndarray
    passage_ids: np.ndarray
    passage_mask: np.ndarray
    labels_qn: np.ndarray
    num_relevant_q: np.ndarray
    ideal_labels_qr: np.ndarray

    @classmethod
    def build(
        cls,
        queries: Mapping[str, str],
        passages: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        tokenizer: Any,
        *,
        max_query_length: int,
        max_passage_length: int,
        query_prefix: str = "",
        passage_prefix: str = "",
    ) -> ValidationSet:
        """Tokenizes ``queries`` / ``passages`` (texts by id) and lays ``qrels`` out as a dense label matrix.

        Relevant documents missing from ``passages`` still count in ``num_relevant_q``
        (recall is measured against the full qrels).
        """
        qids, dids = list(queries), list(passages)
        col = {d: i for i, d in enumerate(dids)}
        labels = np.zeros((len(qids), len(dids)), np.int32)
        grades = [
            sorted((g for g in qrels.get(q, {}).values() if g > 0), reverse=True) for q in qids
        ]
        ideal = np.zeros((len(qids), max(1, max(map(len, grades), default=1))), np.int32)
        for i, q in enumerate(qids):
            ideal[i, : len(grades[i])] = grades[i]
            for d, g in qrels.get(q, {}).items():
                if d in col and g > 0:
                    labels[i, col[d]] = g

        q_ids, q_mask = tokenize_fixed(
            tokenizer, [query_prefix + queries[q] for q in qids], max_query_length
        )
        p_ids, p_mask = tokenize_fixed(
            tokenizer, [passage_prefix + passages[d] for d in dids], max_passage_length
        )
        return cls(q_ids, q_mask, p_ids, p_mask, labels, (ideal > 0).sum(1).astype(np.int32), ideal)


def _pad_rows(x: np.ndarray, multiple: int) -> np.ndarray:
    extra = -len(x) % multiple
    return np.concatenate([x, np.zeros((extra, *x.shape[1:]), x.dtype)]) if extra else x


@nnx.jit(static_argnames="queries")
def _encode(model, ids, mask, queries: bool):
    return model.encode_queries(ids, mask) if queries else model.encode_passages(ids, mask)


def _encode_all(model, ids: np.ndarray, mask: np.ndarray, *, queries: bool) -> jax.Array:
    ids, mask = _pad_rows(ids, _BATCH), _pad_rows(mask, _BATCH)
    parts = [
        _encode(model, ids[i : i + _BATCH], mask[i : i + _BATCH], queries=queries)
        for i in range(0, len(ids), _BATCH)
    ]
    return jnp.concatenate(parts)


@jax.jit
def _metrics(q_qd, p_nd, labels_qn, num_relevant_q, ideal_labels_qr, num_passages):
    scores = q_qd @ p_nd.T
    scores = jnp.where(jnp.arange(p_nd.shape[0])[None] < num_passages, scores, -jnp.inf)
    k = min(100, p_nd.shape[0])
    top_scores, top_index = jax.lax.top_k(scores, k)
    top_labels = jnp.take_along_axis(labels_qn, top_index, axis=1)
    ndcg = M.ndcg_at_k(top_scores, top_labels, k=10, ideal_labels_qr=ideal_labels_qr)
    recall = M.recall_at_k(top_scores, top_labels, k=k, num_relevant_q=num_relevant_q)
    valid = num_relevant_q > 0
    count = jnp.maximum(valid.sum(), 1)
    return {"nDCG@10": (ndcg * valid).sum() / count, "R@100": (recall * valid).sum() / count}


def validate(model: nnx.Module, data: ValidationSet) -> dict[str, float]:
    """nDCG@10 and R@100 of ``model`` (a :class:`~jaxir.models.dual_encoder.DualEncoder`) on ``data``."""
    q = _encode_all(model, data.query_ids, data.query_mask, queries=True)[: len(data.query_ids)]
    p = _encode_all(model, data.passage_ids, data.passage_mask, queries=False)
    labels = _pad_rows(data.labels_qn.T, _BATCH).T
    out = _metrics(q, p, labels, data.num_relevant_q, data.ideal_labels_qr, len(data.passage_ids))
    return {k: float(v) for k, v in out.items()}
