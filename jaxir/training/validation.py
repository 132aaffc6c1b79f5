"""In-training validation on device: encode a dev split, exact top-k, nDCG@10 / Recall@100.

Everything after tokenization stays on device: fixed-shape encode batches through the
same jitted forward as corpus encoding and serving (:data:`jaxir.reps.dense.FORWARD`, one
compiled program per tower and length), ``q @ p.T``, each document's best passage (MaxP, when documents are
split into several passages), ``lax.top_k``, and the metrics of :mod:`jaxir.eval.metrics`
on the retrieved labels. Only the means come back to the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from jaxir.data.pipeline import tokenize_fixed
from jaxir.eval import metrics as M
from jaxir.reps.dense import FORWARD

_BATCH = 64


@dataclasses.dataclass(frozen=True)
class ValidationSet:
    """Tokenized dev queries ``[Q, Lq]`` and passages ``[N, Lp]``, graded labels ``[Q, D]``.

    ``passage_doc[n]`` is the document column ``[0, D)`` of passage row ``n``: a
    document split into several passages is scored by its best one (MaxP).
    """

    query_ids: np.ndarray
    query_mask: np.ndarray
    passage_ids: np.ndarray
    passage_mask: np.ndarray
    passage_doc: np.ndarray
    labels_qd: np.ndarray
    num_relevant_q: np.ndarray
    ideal_labels_qr: np.ndarray

    @classmethod
    def build(
        cls,
        queries: Mapping[str, str],
        passages: Iterable[tuple[str, str]],
        qrels: Mapping[str, Mapping[str, int]],
        tokenizer: Any,
        *,
        max_query_length: int,
        max_passage_length: int,
        query_prefix: str = "",
        passage_prefix: str = "",
    ) -> ValidationSet:
        """Tokenizes the texts and lays ``qrels`` out as a dense ``[Q, D]`` label matrix.

        Args:
          queries: ``{query_id: text}``.
          passages: ``(doc_id, text)`` rows, any number per document (e.g. from
            :func:`jaxir.data.passages.split_passages`, or ``texts.items()``).
          qrels: ``{query_id: {doc_id: grade}}``; relevant documents missing from
            ``passages`` still count in ``num_relevant_q`` (recall is measured against
            the full qrels).

        >>> import tempfile
        >>> from jaxir.data.tokenizer import train_wordpiece
        >>> tok = train_wordpiece(["cats purr", "dogs bark"], tempfile.mkdtemp(), vocab_size=40)
        >>> rows = [("d1", "cats purr"), ("d1", "and nap"), ("d2", "dogs bark")]
        >>> v = ValidationSet.build({"q": "cats"}, rows, {"q": {"d1": 1}}, tok,
        ...                         max_query_length=8, max_passage_length=8)
        >>> v.passage_doc.tolist(), v.labels_qd.tolist()
        ([0, 0, 1], [[1, 0]])
        """
        rows = list(passages)
        qids = list(queries)
        col: dict[str, int] = {}
        passage_doc = np.asarray([col.setdefault(d, len(col)) for d, _ in rows], np.int32)
        labels = np.zeros((len(qids), len(col)), np.int32)
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
            tokenizer, [passage_prefix + text for _, text in rows], max_passage_length
        )
        relevant = (ideal > 0).sum(1).astype(np.int32)
        return cls(q_ids, q_mask, p_ids, p_mask, passage_doc, labels, relevant, ideal)


def _pad_rows(x: np.ndarray, multiple: int) -> np.ndarray:
    extra = -len(x) % multiple
    return np.concatenate([x, np.zeros((extra, *x.shape[1:]), x.dtype)]) if extra else x


def _encode_all(tower, spec, ids: np.ndarray, mask: np.ndarray, bar: tqdm) -> jax.Array:
    """Vectors ``[N', D]`` (``N'`` = ``N`` rounded up to the batch) of one tower."""
    graphdef, state = nnx.split(tower)
    forward = FORWARD[tower.config.dtype]
    ids, mask = _pad_rows(ids, _BATCH), _pad_rows(mask, _BATCH)
    parts = []
    for i in range(0, len(ids), _BATCH):
        parts.append(
            forward(
                graphdef,
                state,
                ids[i : i + _BATCH],
                mask[i : i + _BATCH],
                pooling=spec.pooling,
                normalize=spec.normalize,
            )
        )
        bar.update(min(_BATCH, bar.total - bar.n))
    return jnp.concatenate(parts)


def top_docs_metrics(
    top_scores_qk: jax.Array,
    top_docs_qk: jax.Array,
    labels_qd: jax.Array,
    num_relevant_q: jax.Array,
    ideal_labels_qr: jax.Array,
) -> dict[str, jax.Array]:
    """Mean nDCG@10 and R@100 over queries with relevant documents, from their top documents.

    Every family's validation ends here (dense: :func:`validate`; SPLADE:
    :mod:`jaxir.families.splade`), so the dev numbers of all families are one metric code.

    Args:
      top_scores_qk: [Q, K] scores of each query's top ``K = min(100, D)`` documents.
      top_docs_qk: [Q, K] int their document columns in ``[0, D)``.
      labels_qd, num_relevant_q, ideal_labels_qr: as in :class:`ValidationSet`.

    Returns:
      ``{"nDCG@10": [], "R@100": []}`` float32 scalars.

    Example (document 1, the relevant one, ranked first):
      >>> import jax.numpy as jnp
      >>> out = top_docs_metrics(jnp.array([[2.0, 1.0]]), jnp.array([[1, 0]]),
      ...                        jnp.array([[0, 1]]), jnp.array([1]), jnp.array([[1]]))
      >>> {name: float(value) for name, value in out.items()}
      {'nDCG@10': 1.0, 'R@100': 1.0}
    """
    k = top_docs_qk.shape[1]
    top_labels = jnp.take_along_axis(labels_qd, top_docs_qk, axis=1)
    ndcg = M.ndcg_at_k(top_scores_qk, top_labels, k=10, ideal_labels_qr=ideal_labels_qr)
    recall = M.recall_at_k(top_scores_qk, top_labels, k=k, num_relevant_q=num_relevant_q)
    valid = num_relevant_q > 0
    count = jnp.maximum(valid.sum(), 1)
    return {"nDCG@10": (ndcg * valid).sum() / count, "R@100": (recall * valid).sum() / count}


@jax.jit
def _metrics(q_qd, p_nd, passage_doc, labels_qd, num_relevant_q, ideal_labels_qr):
    scores_qn = q_qd @ p_nd.T
    # Each document's best passage; padding rows map past the last document and drop out.
    scores_qd = jax.ops.segment_max(scores_qn.T, passage_doc, labels_qd.shape[1]).T
    top_scores, top_index = jax.lax.top_k(scores_qd, min(100, labels_qd.shape[1]))
    return top_docs_metrics(top_scores, top_index, labels_qd, num_relevant_q, ideal_labels_qr)


def validate(model: nnx.Module, data: ValidationSet, *, progress: bool = False) -> dict[str, float]:
    """nDCG@10 and R@100 of ``model`` (a :class:`~jaxir.models.dual_encoder.DualEncoder`) on ``data``.

    ``progress`` shows a bar over the dev texts (the final validation of a long run
    encodes a whole corpus).
    """
    passage_tower = model.query_encoder if model.passage_encoder is None else model.passage_encoder
    total = len(data.query_ids) + len(data.passage_ids)
    with tqdm(total=total, desc="validate", unit="text", disable=not progress) as bar:
        q = _encode_all(model.query_encoder, model.spec, data.query_ids, data.query_mask, bar)
        p = _encode_all(passage_tower, model.spec, data.passage_ids, data.passage_mask, bar)
    q = q[: len(data.query_ids)]
    num_docs = data.labels_qd.shape[1]
    doc = np.full(len(p), num_docs, np.int32)
    doc[: len(data.passage_doc)] = data.passage_doc
    out = _metrics(q, p, doc, data.labels_qd, data.num_relevant_q, data.ideal_labels_qr)
    return {k: float(v) for k, v in out.items()}
