"""The SPLADE family (learned sparse retrieval) as the training loop runs it.

:class:`SpladeObjective` is the loss of a :class:`~jaxir.models.splade.Splade` model::

    loss = in_batch_softmax(q_bv, p_nv)                       # raw dot products, tau = 1
         + distill_weight * distillation                      # train.distill, as for dense
         + w(step) * (query_weight * R(q_bv) + document_weight * R(p_nv))

with ``R`` FLOPS (``sum_v (mean_n |w_nv|)^2``, the default) or L1, the document term
over every passage of the batch (positives and hard negatives, as
sentence-transformers' ``SpladeLoss``), and ``w(step) = min(1, step /
warmup_steps) ** 2`` (:func:`jaxir.losses.regularizers.quadratic_warmup`; ``step``
is the batch's ``"step"``, absent in a direct call: fully warmed up). SPLADE scores
are plain dot products of non-negative vectors: no temperature, no normalization
(sentence-transformers' ``SparseMultipleNegativesRankingLoss`` uses ``scale=1`` on
the dot product). An inference-free model has no query encoder to sparsify: its query
regularizer is off (``regularize_queries=False``; its value is still logged). The
objective factors through the representations (``represent`` -> ``loss_from_reps``),
so GradCache applies.

:class:`SpladeFamily` adds what the loop needs around it: the model (a preset or a
Hugging Face ``*ForMaskedLM`` directory), batches from training groups, the dev set and
its validation on device (:func:`validate_sparse`: the saved model's encode program,
exact sparse top-k of :mod:`jaxir.index.sparse_device`, the dense family's metric code),
guards that stop a degenerate run (:meth:`SpladeFamily.check_metrics`) and the saved
model (:func:`jaxir.models.splade.save_splade`).

**Inference-free query weights** start from the IDF of the training passages
(:func:`passage_idf`): :meth:`SpladeFamily.training_data` -- the one hook that sees the
tokenizer and the training texts, and the loop calls it before building the model --
tokenizes the groups' unique positive and negative passages and records their document
frequencies; :meth:`SpladeFamily.init_model` then initialises the weights from them
(``Splade.create(idf=...)``), and ``[CLS]`` / ``[SEP]`` / ``[PAD]`` (the tokenizer's
special ids) never count in a query. Without ``training_data`` (a model built directly)
the weights start at 1. A run resumed from a checkpoint restores the trained weights.

Example:
    >>> import numpy as np
    >>> from flax import nnx
    >>> from jaxir.models.bert import PRESETS
    >>> from jaxir.models.splade import Splade, SpladeSpec
    >>> model = Splade.create(PRESETS["tiny"], SpladeSpec(), rngs=nnx.Rngs(0))
    >>> ids = np.full((2, 4), 5, np.int32)
    >>> batch = {"query_ids": ids, "query_mask": ids > 0,
    ...          "passage_ids": ids[:, None], "passage_mask": ids[:, None] > 0,
    ...          "passage_key": np.array([[0], [1]]), "query_key": np.array([0, 1])}
    >>> loss, aux = SpladeObjective().loss(model, batch, nnx.Rngs(dropout=0))
    >>> sorted(aux)  # doctest: +NORMALIZE_WHITESPACE
    ['accuracy', 'active_vocab', 'contrastive', 'density_document', 'density_query',
     'flops_document', 'flops_query', 'nnz_document', 'nnz_query', 'reg_weight']
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from jaxir.data.pipeline import TrainingData
from jaxir.families.text_inputs import TextPairInputs, is_hf_dir
from jaxir.index import sparse_device
from jaxir.layers.linear import LinearSpec, parameterize_pretrained
from jaxir.losses.contrastive import in_batch_softmax
from jaxir.losses.distill import GROUP_DISTILLATION, group_distillation
from jaxir.losses.regularizers import flops, l1, quadratic_warmup
from jaxir.models import hf
from jaxir.models.splade import FORWARD, Splade, SpladeSpec, save_splade
from jaxir.training.family import Aux, Batch, TrainingGuardError
from jaxir.training.validation import ValidationSet, top_docs_metrics

__all__ = [
    "DISTILL",
    "REGULARIZERS",
    "SpladeFamily",
    "SpladeObjective",
    "passage_idf",
    "sparsity_metrics",
    "validate_sparse",
]

DISTILL = ("none", *GROUP_DISTILLATION)

#: ``model.splade.regularizer`` -> the regularizer of :mod:`jaxir.losses.regularizers`.
REGULARIZERS = {"flops": flops, "l1": l1}

_BATCH = 64  # dev texts per encode call (as jaxir.training.validation)


def sparsity_metrics(q_bv: jax.Array, p_nv: jax.Array) -> dict[str, jax.Array]:
    """How sparse a batch's vectors are: the diagnostics every SPLADE step logs.

    ``nnz_query`` / ``nnz_document``: average non-zeros per query / document row;
    ``density_query`` / ``density_document``: the same over ``V`` (share of the
    vocabulary an average text activates); ``active_vocab``: share of the vocabulary
    active in at least one document of the batch (the posting lists the batch touches).

    Args:
      q_bv: [B, V] query vectors.
      p_nv: [N, V] document vectors.

    Returns:
      dict of float32 scalars.

    Example:
      >>> import jax.numpy as jnp
      >>> q = jnp.array([[1.0, 0.0, 0.0, 0.0]])
      >>> p = jnp.array([[0.5, 2.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
      >>> {k: float(v) for k, v in sparsity_metrics(q, p).items()}  # doctest: +NORMALIZE_WHITESPACE
      {'nnz_query': 1.0, 'nnz_document': 1.5, 'density_query': 0.25,
       'density_document': 0.375, 'active_vocab': 0.5}
    """
    vocab = q_bv.shape[-1]
    nnz_query = (q_bv != 0).sum(-1).astype(jnp.float32).mean()
    nnz_document = (p_nv != 0).sum(-1).astype(jnp.float32).mean()
    return {
        "nnz_query": nnz_query,
        "nnz_document": nnz_document,
        "density_query": nnz_query / vocab,
        "density_document": nnz_document / vocab,
        "active_vocab": (p_nv != 0).any(0).astype(jnp.float32).mean(),
    }


@dataclasses.dataclass(frozen=True)
class SpladeObjective:
    """In-batch softmax + distillation + warmed-up sparsity regularizers of a :class:`Splade`.

    Attributes:
      symmetric: add the passage-to-query direction to the in-batch softmax.
      distill: ``"none"``, ``"kl"`` or ``"margin_mse"`` over each query's group, as the
        dense family (:func:`jaxir.losses.distill.group_distillation`; student scores
        are the dot products); the batch must hold ``teacher_scores`` ``[B, G]``.
      distill_weight: weight of the distillation term.
      distill_temperature: divides student and teacher scores in the KL.
      regularizer: ``"flops"`` or ``"l1"`` (:data:`REGULARIZERS`).
      query_weight: final weight of the query regularizer (sentence-transformers'
        ``query_regularizer_weight``).
      document_weight: final weight of the document regularizer.
      warmup_steps: steps of the quadratic warm-up of both weights (0: none).
      regularize_queries: False for inference-free models (no query encoder).

    Aux metrics: ``contrastive``, ``accuracy`` (as dense), ``flops_query`` /
    ``flops_document`` (the unweighted regularizer values, FLOPS or L1 as chosen),
    ``reg_weight`` (the warm-up factor ``w(step)``), the :func:`sparsity_metrics`, and
    ``distill`` when distilling.
    """

    symmetric: bool = False
    distill: str = "none"
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    regularizer: str = "flops"
    query_weight: float = 5e-5
    document_weight: float = 3e-5
    warmup_steps: int = 0
    regularize_queries: bool = True

    def __post_init__(self) -> None:
        if self.distill not in DISTILL:
            raise ValueError(
                f"train.distill must be 'none', 'kl' or 'margin_mse', got {self.distill!r}."
            )
        if self.regularizer not in REGULARIZERS:
            raise ValueError(
                f"model.splade.regularizer must be one of {sorted(REGULARIZERS)}, got "
                f"{self.regularizer!r}."
            )
        for name in ("query_weight", "document_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"model.splade.{name} must be a finite number >= 0, got {value}.")
        if self.warmup_steps < 0:
            raise ValueError(
                f"the regularizer warm-up must be >= 0 steps, got {self.warmup_steps}."
            )

    def represent(self, model: Splade, batch: Batch, rngs: nnx.Rngs) -> tuple:
        """``(q_bv, p_bgv)``: query vectors and each query's group of passage vectors."""
        ids = batch["passage_ids"]
        b, g, length = ids.shape
        q_bv = model.encode_queries(batch["query_ids"], batch["query_mask"], rngs=rngs)
        p_nv = model.encode_passages(
            ids.reshape(-1, length), batch["passage_mask"].reshape(-1, length), rngs=rngs
        )
        return q_bv, p_nv.reshape(b, g, -1)

    def loss_from_reps(self, model: Splade, reps: tuple, batch: Batch) -> tuple[jax.Array, Aux]:
        """The objective of the whole batch from :meth:`represent`'s vectors (``model`` unused)."""
        q_bv, p_bgv = reps
        b, g, v = p_bgv.shape
        p_nv = p_bgv.reshape(b * g, v)
        contrastive = in_batch_softmax(
            q_bv,
            p_nv,
            temperature=1.0,
            group_size=g,
            positive_ids=batch["passage_key"].reshape(-1),
            query_ids=batch["query_key"],
            symmetric=self.symmetric,
        )
        scores_bn = jnp.einsum("bv,nv->bn", q_bv, p_nv, preferred_element_type=jnp.float32)
        accuracy = (scores_bn.argmax(-1) == jnp.arange(b) * g).mean()
        regularize = REGULARIZERS[self.regularizer]
        reg_query, reg_document = regularize(q_bv), regularize(p_nv)
        factor = quadratic_warmup(batch.get("step"), self.warmup_steps)
        penalty = self.document_weight * reg_document
        if self.regularize_queries:
            penalty = penalty + self.query_weight * reg_query
        loss = contrastive + factor * penalty
        aux = {
            "contrastive": contrastive,
            "accuracy": accuracy,
            "flops_query": reg_query,
            "flops_document": reg_document,
            "reg_weight": factor,
            **sparsity_metrics(q_bv, p_nv),
        }
        if self.distill == "none":
            return loss, aux
        student_bg = jnp.einsum("bv,bgv->bg", q_bv, p_bgv, preferred_element_type=jnp.float32)
        term = group_distillation(
            self.distill,
            student_bg,
            batch.get("teacher_scores"),
            temperature=self.distill_temperature,
        )
        return loss + self.distill_weight * term, aux | {"distill": term}

    def loss(self, model: Splade, batch: Batch, rngs: nnx.Rngs) -> tuple[jax.Array, Aux]:
        """``loss_from_reps(model, represent(model, batch, rngs), batch)``."""
        return self.loss_from_reps(model, self.represent(model, batch, rngs), batch)


def passage_idf(
    ids_nl: np.ndarray, mask_nl: np.ndarray, vocab_size: int, *, num_passages: int | None = None
) -> np.ndarray:
    """BM25's IDF of every vocabulary token over tokenized passages: ``[V]`` float32.

    ``idf_v = log(1 + (N - df_v + 0.5) / (df_v + 0.5))`` (Robertson / Lucene), ``df_v``
    the number of passages containing token ``v`` (padding left out). Positive for every
    token, so every query token keeps some weight; a token no passage contains gets the
    largest value, ``log(2N + 2)``. The initial query weights of inference-free SPLADE.

    Args:
      ids_nl: [N, L] token ids of ``N`` passages.
      mask_nl: [N, L], nonzero for real tokens.
      vocab_size: ``V``, the model's vocabulary.
      num_passages: ``N`` (default ``len(ids_nl)``).

    Raises:
      ValueError: a token id outside ``[0, V)`` (the tokenizer does not fit the model).

    Example:
      >>> ids = np.array([[2, 5, 3], [2, 6, 0]])
      >>> [round(float(x), 3) for x in passage_idf(ids, ids > 0, 7)]
      [1.792, 1.792, 0.182, 0.693, 1.792, 0.693, 0.693]
    """
    ids_nl = np.asarray(ids_nl)
    real = np.asarray(mask_nl) > 0
    n = len(ids_nl) if num_passages is None else num_passages
    rows = np.broadcast_to(np.arange(len(ids_nl))[:, None], ids_nl.shape)[real]
    tokens = ids_nl[real]
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(
            f"token id {int(tokens.max())} is outside the model's vocabulary of {vocab_size}; "
            "the tokenizer does not fit the model (check model.init / model.vocab)."
        )
    pairs = np.unique(rows.astype(np.int64) * vocab_size + tokens)
    df = np.bincount(pairs % vocab_size, minlength=vocab_size).astype(np.float64)
    return np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)


def _dev_batches(model: Splade, ids: np.ndarray, mask: np.ndarray, *, role: str, bar: tqdm):
    """``(rows, [_BATCH, V] vectors)`` of the dev texts through the saved model's encode program."""
    graphdef, state = nnx.split(model)
    forward = FORWARD[model.document_encoder.config.dtype]
    prune = model.spec.max_active_dims if role == "passage" else 0
    for i in range(0, len(ids), _BATCH):
        rows = min(_BATCH, len(ids) - i)
        pad = ((0, _BATCH - rows), (0, 0))  # one shape: one compiled program per role
        reps = forward(
            graphdef,
            state,
            np.pad(ids[i : i + _BATCH], pad),
            np.pad(mask[i : i + _BATCH], pad),
            role=role,
            max_active_dims=prune,
        )
        bar.update(rows)
        yield rows, reps


def _pack_passages(batches, vocab_size: int) -> sparse_device.PackedDocs:
    """The passages packed batch by batch: ``[N, K]``, ``K`` >= the densest passage's count.

    Each batch is packed to the next power of two of its largest non-zero count (few
    compiled programs) and padded to the widest batch; the dense ``[N, V]`` matrix of
    the whole dev corpus (1.2 GB for 10k passages over a 30k vocabulary) never exists.
    """
    parts = []
    for rows, reps_bv in batches:
        nnz = max(1, int((reps_bv[:rows] != 0).sum(-1).max()))
        width = min(reps_bv.shape[1], 1 << (nnz - 1).bit_length())
        packed = sparse_device.pack_dense(reps_bv, width)
        parts.append((packed.ids_nk[:rows], packed.weights_nk[:rows]))
    if not parts:
        raise ValueError("The dev set has no passages to search; check data.validation_corpus.")
    width = max(ids.shape[1] for ids, _ in parts)
    pad = lambda x: jnp.pad(x, ((0, 0), (0, width - x.shape[1])))  # noqa: E731
    return sparse_device.PackedDocs(
        jnp.concatenate([pad(ids) for ids, _ in parts]),
        jnp.concatenate([pad(weights) for _, weights in parts]),
        vocab_size,
    )


@jax.jit
def _doc_metrics(scores_qk, passages_qk, passage_doc, labels_qd, num_relevant_q, ideal_labels_qr):
    """Each document's best passage among the retrieved ones, its top documents, metrics."""
    q, d = labels_qd.shape
    # Slots past the last passage (index -1) map past the last document and drop out.
    docs_qk = jnp.where(passages_qk >= 0, passage_doc[passages_qk], d)
    rows_qk = jnp.broadcast_to(jnp.arange(q)[:, None], docs_qk.shape)
    scores_qd = jnp.full((q, d), -jnp.inf, jnp.float32)
    scores_qd = scores_qd.at[rows_qk, docs_qk].max(scores_qk, mode="drop")
    top_scores, top_docs = jax.lax.top_k(scores_qd, min(100, d))
    return top_docs_metrics(top_scores, top_docs, labels_qd, num_relevant_q, ideal_labels_qr)


def validate_sparse(
    model: Splade, data: ValidationSet, *, progress: bool = False
) -> dict[str, float]:
    """nDCG@10 and R@100 of exact sparse search with ``model`` over ``data``, on device.

    Dev passages and queries go through :data:`jaxir.models.splade.FORWARD` (the program
    corpus encoding runs; passages pruned to ``spec.max_active_dims`` as the index sees
    them), passages are packed batch by batch (:func:`jaxir.index.sparse_device.pack_dense`,
    every non-zero kept) and searched exactly (:func:`jaxir.index.sparse_device.search`).
    A document split into passages scores its best one (MaxP): with at most ``m``
    passages per document, the top ``100 m`` passages hold the best passage of each of
    the top 100 documents, so retrieving that many passages gives the same documents as
    scoring them all. The metrics are :func:`jaxir.training.validation.top_docs_metrics`,
    the dense family's. Ties between documents go to the lower dev-set column (as
    ``lax.top_k``); only the means come back to the host.
    """
    total = len(data.query_ids) + len(data.passage_ids)
    with tqdm(total=total, desc="validate", unit="text", disable=not progress) as bar:
        queries = _dev_batches(model, data.query_ids, data.query_mask, role="query", bar=bar)
        q_qv = jnp.concatenate([reps[:rows] for rows, reps in queries])
        packed = _pack_passages(
            _dev_batches(model, data.passage_ids, data.passage_mask, role="passage", bar=bar),
            model.vocab_size,
        )
    num_docs = data.labels_qd.shape[1]
    per_doc = int(np.bincount(data.passage_doc, minlength=num_docs).max())
    k = min(len(data.passage_doc), min(100, num_docs) * per_doc)
    scores_qk, passages_qk = sparse_device.search(packed, q_qv, k)
    out = _doc_metrics(
        scores_qk,
        passages_qk,
        data.passage_doc,
        data.labels_qd,
        data.num_relevant_q,
        data.ideal_labels_qr,
    )
    return {name: float(value) for name, value in out.items()}


@dataclasses.dataclass(frozen=True)
class SpladeFamily(TextPairInputs, SpladeObjective):
    """SPLADE as a :class:`~jaxir.training.family.Family` (mirrors :class:`~jaxir.families.dense.DenseFamily`).

    Attributes (besides :class:`SpladeObjective`'s):
      spec: the model's serving contract (pooling, tied, inference-free, pruning, ...).
      init: a preset name (:data:`jaxir.models.bert.PRESETS`, random weights with an MLM
        head) or a Hugging Face ``*ForMaskedLM`` directory both towers start from.
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"``.
      dropout_mask, attention: the encoder's dropout-mask generator and attention kernel
        (``model.dropout_mask`` / ``model.attention``, :class:`jaxir.models.bert.EncoderConfig`).
      linear: the projections' parameterization (:class:`jaxir.layers.linear.LinearSpec`);
        with a Hugging Face ``init`` the encoders load dense and are then parameterized
        (:func:`jaxir.layers.linear.parameterize_linears`).
      seed: seeds what that parameterization draws (LoRA's ``lora_a``); ``train.seed``.
      fresh_head: allow an ``init`` directory without an MLM head (fresh transform and
        bias, decoder tied to the word embeddings).
      head_bias: the initial output bias of a fresh MLM head (``model.splade.head_bias``).
      collapse_nnz, saturation_share, saturation_after: the guards'
        thresholds (:class:`jaxir.config.SpladeConfig`, :meth:`check_metrics`).
      query_init: not a constructor argument: what :meth:`training_data` records for
        an inference-free model's query weights, ``{"df_source": (ids, mask),
        "special_ids": (...)}`` (module docstring).
    """

    spec: SpladeSpec = dataclasses.field(default_factory=SpladeSpec)
    init: str = "small"
    dtype: str = "float32"
    dropout_mask: str = "stored"
    attention: str = "xla"
    linear: LinearSpec = dataclasses.field(default_factory=LinearSpec)
    mlm_head: ClassVar[bool] = True
    fresh_head: bool = False
    head_bias: float = 0.0
    collapse_nnz: float = 1.0
    saturation_share: float = 0.5
    saturation_after: int = 0
    seed: int = 0
    query_init: dict = dataclasses.field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not math.isfinite(self.head_bias):
            raise ValueError(
                f"model.splade.head_bias must be a finite number, got {self.head_bias}."
            )

    @classmethod
    def from_config(cls, config: Any) -> SpladeFamily:
        """The family a run config describes (``model.splade.*``, ``model.*``, ``data.*`` lengths, ``train.*``)."""
        mc, dc, tc = config.model, config.data, config.train
        sc = mc.splade
        warmup = tc.steps // 3 if sc.warmup_steps < 0 else sc.warmup_steps
        spec = SpladeSpec(
            pooling=sc.pooling,
            tied=mc.tied,
            inference_free=sc.inference_free,
            max_active_dims=sc.max_active_dims,
            query_max_length=dc.max_query_length,
            passage_max_length=dc.max_passage_length,
            query_prefix=mc.query_prefix,
            passage_prefix=mc.passage_prefix,
            chunk=sc.chunk,
        )
        return cls(
            symmetric=tc.symmetric,
            distill=tc.distill,
            distill_weight=tc.distill_weight,
            distill_temperature=tc.distill_temperature,
            regularizer=sc.regularizer,
            query_weight=sc.query_weight,
            document_weight=sc.document_weight,
            warmup_steps=warmup,
            regularize_queries=not sc.inference_free,
            spec=spec,
            init=mc.init,
            dtype=mc.dtype,
            dropout_mask=mc.dropout_mask,
            attention=mc.attention,
            linear=mc.linear_spec(),
            fresh_head=sc.fresh_head,
            head_bias=sc.head_bias,
            collapse_nnz=sc.collapse_nnz,
            saturation_share=sc.saturation_share,
            saturation_after=warmup if sc.saturation_after < 0 else sc.saturation_after,
            seed=tc.seed,
        )

    def init_model(self, *, vocab_size: int, rngs: nnx.Rngs) -> Splade:
        """A randomly initialised :class:`Splade` (inference-free: query weights = training-passage IDF).

        Every MLM head's output bias starts at ``head_bias`` (a loaded head replaces it
        in :meth:`pretrained`).
        """
        config = self.encoder_config(vocab_size)
        idf, special = None, ()
        if self.spec.inference_free and self.query_init:
            ids, mask = self.query_init["df_source"]
            idf = passage_idf(ids, mask, config.vocab_size)
            special = self.query_init["special_ids"]
        model = Splade.create(config, self.spec, rngs=rngs, idf=idf, special_token_ids=special)
        for encoder in (model.document_encoder, model.query_encoder):
            if encoder is not None:
                encoder.mlm.bias[...] = jnp.full_like(encoder.mlm.bias[...], self.head_bias)
        return model

    def pretrained(self, model: Splade) -> tuple[nnx.State, str] | None:
        """The encoders (with their MLM head) from ``init`` when it is a Hugging Face directory, else ``None``.

        Raises:
          ValueError: ``init`` has no MLM head and ``fresh_head`` is off.
        """
        if not is_hf_dir(self.init):
            return None
        has_head = "MLM head" in hf.unused_heads(self.init, mlm_head=False, pooler=False)
        if not has_head and not self.fresh_head:
            raise ValueError(
                f"model.init={self.init} has no MLM head (not a *ForMaskedLM checkpoint); "
                "SPLADE's vocabulary projection is that head. Start from a checkpoint with "
                "one, or set model.splade.fresh_head=true to train a fresh head (its decoder "
                "tied to the word embeddings, its transform and bias newly initialised)."
            )
        if "pooler" in hf.unused_heads(self.init, mlm_head=True, pooler=False):
            print(f"{self.init}: not used by SPLADE, dropped: pooler.")
        if not has_head:
            print(
                f"{self.init}: no MLM head; training a fresh one (decoder tied to the word "
                "embeddings, transform and bias newly initialised: model.splade.fresh_head)."
            )
        state = nnx.state(model)
        for i, name in enumerate(("document_encoder", "query_encoder")):
            if getattr(model, name) is None:
                continue
            tower = hf.load_pretrained(self.init, dtype=self.dtype, mlm_head=has_head, pooler=False)
            spec = model.document_encoder.config.linear
            if not has_head:  # no head weights to parameterize: the fresh head keeps its own
                spec = dataclasses.replace(
                    spec, layer_types=tuple(t for t in spec.layer_types if t != "head")
                )
            key = jax.random.fold_in(jax.random.key(self.seed), i)
            tower = parameterize_pretrained(tower, spec, key=key, source=self.init, warn=i == 0)
            loaded = nnx.state(tower)
            if not has_head:
                loaded["mlm"] = state[name]["mlm"]
            state[name] = loaded
        return state, self.init

    def training_data(self, groups: Sequence[Any], tokenizer: Any) -> TrainingData:
        """Tokenized queries and passages of ``groups`` (teacher scores when distilling).

        Inference-free: also records the passages for the IDF the query weights start
        from (module docstring).
        """
        data = super().training_data(groups, tokenizer)
        if self.spec.inference_free:
            self.query_init.update(
                df_source=(data.passage_ids, data.passage_mask),
                special_ids=tuple(tokenizer.all_special_ids),
            )
        return data

    def validate(
        self, model: Splade, dev: ValidationSet, *, progress: bool = False
    ) -> dict[str, float]:
        """nDCG@10 and R@100 of exact sparse search over the dev set, on device (:func:`validate_sparse`)."""
        return validate_sparse(model, dev, progress=progress)

    def check_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Stops a degenerate run: representations collapsed to zero, or saturating the vocabulary.

        Collapse (any step): average non-zeros per document -- or per query, unless the
        model is inference-free -- below ``collapse_nnz``. Saturation (from step
        ``saturation_after``, when the regularizer is at full weight): the average
        document or query activates more than ``saturation_share`` of the vocabulary.

        Raises:
          TrainingGuardError: naming the step, the metric values and what to change.
        """
        sides = ("document", "query") if self.regularize_queries else ("document",)
        state = (
            f"(flops_document={metrics['flops_document']:.4g}, flops_query="
            f"{metrics['flops_query']:.4g}, reg_weight={metrics['reg_weight']:.3g}, "
            f"contrastive={metrics['contrastive']:.4g})"
        )
        for side in sides:
            nnz = metrics[f"nnz_{side}"]
            if self.collapse_nnz > 0 and nnz < self.collapse_nnz:
                raise TrainingGuardError(
                    f"Step {step}: SPLADE {side} representations collapsed to {nnz:.3g} "
                    f"non-zeros per {side} on average (threshold model.splade.collapse_nnz="
                    f"{self.collapse_nnz:g}) {state}. The regularizer is too strong this "
                    f"early: lower model.splade.{side}_weight (now "
                    f"{getattr(self, f'{side}_weight'):g}), lengthen model.splade.warmup_steps "
                    f"(now {self.warmup_steps}) or lower train.learning_rate."
                )
        if step < self.saturation_after:
            return
        for side in sides:
            share = metrics[f"density_{side}"]
            if share > self.saturation_share:
                raise TrainingGuardError(
                    f"Step {step}: SPLADE {side} representations saturate the vocabulary: an "
                    f"average {side} activates {share:.1%} of it ({metrics[f'nnz_{side}']:.0f} "
                    f"terms; active_vocab={metrics['active_vocab']:.1%}; threshold "
                    f"model.splade.saturation_share={self.saturation_share:g}) {state}. The "
                    f"regularizer is too weak: raise model.splade.{side}_weight (now "
                    f"{getattr(self, f'{side}_weight'):g}) or shorten "
                    f"model.splade.warmup_steps (now {self.warmup_steps})."
                )

    def save(self, model: Splade, directory: pathlib.Path, tokenizer: Any) -> None:
        """The model as a Hugging Face ``*ForMaskedLM`` directory plus its SPLADE contract."""
        save_splade(model, directory, tokenizer=tokenizer)
