"""Texts -> SPLADE vectors (``scipy.sparse`` CSR rows over the vocabulary): :func:`load_splade` and :class:`SparseEncoder`.

``load_splade(path)`` takes any Hugging Face ``*ForMaskedLM`` directory (BERT,
DistilBERT, RoBERTa, XLM-R; e.g. a SPLADE checkpoint such as ``naver/splade-v3`` saved
locally), a model written by :func:`jaxir.models.splade.save_splade`, or a training
run's workdir (its ``model/``), and returns a :class:`SparseEncoder`:

* :meth:`SparseEncoder.encode` -- ``csr_matrix [N, V]`` float32, rows in input order,
  explicit zeros removed; documents pruned to ``max_active_dims`` weights when set.
* :meth:`SparseEncoder.decode` -- a vector as ``[(token, weight), ...]``, heaviest first.

**Batching** is the dense :class:`jaxir.encode.TextEncoder`'s: texts are tokenized
once and sorted by length (:func:`jaxir.data.tokenizer.tokenize_texts_sorted`),
batches are padded to the length buckets, and every batch runs through one jitted
program (:data:`jaxir.models.splade.FORWARD`), so a call compiles at most
``len(length_buckets(buckets, max_length))`` programs per role and batch size. The MLM
logits are pooled ``spec.chunk`` tokens at a time inside that program
(:func:`jaxir.reps.sparse.pool_mlm`): no ``[B, L, V]`` array is ever materialized whole.

**Edge cases** (documented behaviour, never NaN): an empty list gives a ``[0, V]``
matrix; an empty string is encoded as its special tokens alone (a document's vector
comes from ``[CLS] [SEP]``; an inference-free query's is all zeros); an all-zero vector
is a valid, empty CSR row, and decodes to ``[]``. A model that produces non-finite
weights (a diverged training run) raises instead of returning them.

Example:
    >>> import tempfile
    >>> from flax import nnx
    >>> from tokenizers import Tokenizer, models, pre_tokenizers, processors
    >>> from transformers import PreTrainedTokenizerFast
    >>> from jaxir.models.bert import PRESETS
    >>> from jaxir.models.splade import Splade, SpladeSpec
    >>> vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "cats": 4, "purr": 5}
    >>> vocab |= {f"w{i}": i for i in range(6, 128)}
    >>> core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    >>> core.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> core.post_processor = processors.TemplateProcessing(
    ...     single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    >>> tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]")
    >>> spec = SpladeSpec(max_active_dims=5, passage_max_length=64)  # tiny: 64 positions
    >>> encoder = SparseEncoder(Splade.create(PRESETS["tiny"], spec, rngs=nnx.Rngs(0)), tok)
    >>> vecs = encoder.encode(["cats purr", "purr", ""])
    >>> vecs.shape, vecs.dtype, vecs.getnnz(axis=1).tolist()
    ((3, 128), dtype('float32'), [5, 5, 5])
    >>> [token for token, _ in encoder.decode(vecs[0], top=2)] == [
    ...     encoder.terms[i] for i in np.argsort(-vecs[0].toarray()[0])[:2]]
    True
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import scipy.sparse
import transformers
from flax import nnx
from tqdm.auto import tqdm

from jaxir.data.errors import DataError
from jaxir.data.tokenizer import (
    DEFAULT_BUCKETS,
    TokenizerContract,
    check_tokenizer_contract,
    load_tokenizer,
    tokenize_texts_sorted,
)
from jaxir.encode import default_max_length
from jaxir.models import hf
from jaxir.models.splade import (
    CONTRACT_FILE,
    FORWARD,
    ROLES,
    Splade,
    SpladeSpec,
    is_splade_dir,
    load_splade_model,
    read_splade_contract,
)
from jaxir.reps.contract import TOKENIZER_FIELDS, sentence_transformers_defaults
from jaxir.reps.sparse import KIND, POOLINGS

__all__ = ["SparseEncoder", "load_splade"]


class SparseEncoder:
    """A text -> SPLADE vector encoder: a :class:`~jaxir.models.splade.Splade` model and its tokenizer.

    Args:
      model: the SPLADE model; its ``spec`` gives pooling, per-role prefixes and
        maximum lengths, and ``max_active_dims``.
      tokenizer: a fast Hugging Face tokenizer with a pad token and exactly
        ``model.vocab_size`` tokens (term id = token id).
      max_length: overrides both roles' maximum lengths (``None``: the spec's).
      batch_size: default rows per forward pass of :meth:`encode`.
      buckets: sequence lengths batches are padded to (capped at the maximum length).
      role: the default role of :meth:`encode` (``"passage"`` or ``"query"``); a
        query-role encoder is what :func:`jaxir.search.retrieve.retrieve` takes, like a
        dense :class:`~jaxir.encode.TextEncoder` loaded with ``role="query"``.

    The parameters are read from ``model`` at every :meth:`encode` call, so a model
    trained in place is encoded with its current weights.
    """

    def __init__(
        self,
        model: Splade,
        tokenizer: transformers.PreTrainedTokenizerBase,
        *,
        max_length: int | None = None,
        batch_size: int = 32,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        role: str = "passage",
    ):
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}.")
        self.role = role
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "The tokenizer has no pad token; set tokenizer.pad_token (e.g. '[PAD]')."
            )
        if len(tokenizer) != model.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the model's MLM head scores "
                f"{model.vocab_size}; SPLADE term ids are token ids, so use the tokenizer the "
                "model was trained with."
            )
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = _positive("batch_size", batch_size)
        self.buckets = tuple(buckets)
        self.max_lengths = {
            role: self._check_max_length(
                model.spec.max_length(role) if max_length is None else max_length
            )
            for role in ROLES
        }
        self._terms: list[str] | None = None

    def _check_max_length(self, max_length: int) -> int:
        config = self.model.document_encoder.config
        limit = config.max_positions - (config.position_offset or 0)
        if (
            isinstance(max_length, bool)
            or not isinstance(max_length, int)
            or not 1 <= max_length <= limit
        ):
            raise ValueError(
                f"max_length={max_length!r} is out of range: the model has "
                f"{config.max_positions} position embeddings, so sequences may hold 1..{limit} "
                f"tokens; pass max_length <= {limit}."
            )
        return max_length

    @property
    def spec(self) -> SpladeSpec:
        """The model's :class:`~jaxir.models.splade.SpladeSpec`."""
        return self.model.spec

    @property
    def vocab_size(self) -> int:
        """``V``: the number of columns of every vector (the tokenizer's size)."""
        return self.model.vocab_size

    @property
    def dim(self) -> int:
        """``V``, under the name searchers and :func:`~jaxir.search.retrieve.retrieve` use."""
        return self.vocab_size

    @property
    def dtype(self) -> str:
        """Compute dtype of the model (``"float32"`` or ``"bfloat16"``); vectors are float32."""
        return self.model.document_encoder.config.dtype

    @property
    def terms(self) -> list[str]:
        """The ``V`` token strings; ``terms[i]`` names column ``i`` (term id = token id)."""
        if self._terms is None:
            self._terms = list(self.tokenizer.convert_ids_to_tokens(list(range(self.vocab_size))))
        return self._terms

    def describe(self) -> dict[str, Any]:
        """What determines the vectors besides the weights (JSON-able; stores record it in their manifest)."""
        spec = self.spec
        return {
            "kind": KIND,
            "pooling": spec.pooling,
            "max_length": self.max_lengths["passage"],
            "prefix": spec.passage_prefix,
            "query_max_length": self.max_lengths["query"],
            "query_prefix": spec.query_prefix,
            "max_active_dims": spec.max_active_dims,
            "inference_free": spec.inference_free,
            "tied": spec.tied,
            "vocab_size": self.vocab_size,
            "dtype": self.dtype,
        }

    def forward(
        self, ids_bl: np.ndarray, mask_bl: np.ndarray, *, role: str = "passage"
    ) -> jax.Array:
        """Dense vectors ``[B, V]`` (float32, on device) for token ids / mask ``[B, L]``.

        The jitted program :meth:`encode` runs per batch (passages pruned to
        ``max_active_dims``). Returns without waiting for the result.
        """
        graphdef, state = nnx.split(self.model)
        return self._run(graphdef, state, ids_bl, mask_bl, role)

    def _run(self, graphdef, state, ids_bl, mask_bl, role: str) -> jax.Array:
        return FORWARD[self.dtype](
            graphdef, state, ids_bl, mask_bl, role=role, max_active_dims=self.spec.max_active_dims
        )

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        role: str | None = None,
        progress: bool = False,
    ) -> scipy.sparse.csr_matrix:
        """SPLADE vectors of ``N`` texts: ``csr_matrix [N, V]`` float32, rows in input order.

        Args:
          texts: the ``N`` strings (the role's prefix is prepended to each).
          batch_size: rows per forward pass (default: the encoder's ``batch_size``).
          role: ``"passage"`` (documents; pruned to ``max_active_dims``) or ``"query"``
            (default: the encoder's :attr:`role`).
          progress: show a tqdm bar (texts/s).

        Explicit zeros are not stored: ``vecs[i].nnz`` is text ``i``'s number of
        active terms (0 for an all-zero vector).

        Raises:
          ValueError: the model produced non-finite weights (naming the text).
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string.")
        role = self.role if role is None else role
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}.")
        rows = self.batch_size if batch_size is None else _positive("batch_size", batch_size)
        texts = list(texts)
        if not texts:
            return scipy.sparse.csr_matrix((0, self.vocab_size), dtype=np.float32)
        graphdef, state = nnx.split(self.model)
        batches = tokenize_texts_sorted(
            self.tokenizer,
            texts,
            max_length=self.max_lengths[role],
            batch_size=rows,
            buckets=self.buckets,
            prefix=self.spec.prefix(role),
        )
        order: list[np.ndarray] = []
        parts: list[scipy.sparse.csr_matrix] = []
        pending = None
        with tqdm(total=len(texts), unit="text", disable=not progress, smoothing=0.1) as bar:
            # Dispatch batch i+1 before reading batch i back, so the host tokenizes and
            # sparsifies while the device computes.
            for sb in itertools.chain(batches, [None]):
                if sb is not None:
                    ids_bl, mask_bl = sb.batch["input_ids"], sb.batch["attention_mask"]
                    dispatched = (sb.indices, self._run(graphdef, state, ids_bl, mask_bl, role))
                if pending is not None:
                    indices, reps = pending
                    dense_bv = np.asarray(reps)[: len(indices)]
                    if not np.isfinite(dense_bv).all():
                        bad = int(indices[np.flatnonzero(~np.isfinite(dense_bv).all(axis=1))[0]])
                        raise ValueError(
                            f"text #{bad}: the model produced non-finite weights (NaN or inf); "
                            "its parameters are broken (a diverged training run?)."
                        )
                    parts.append(scipy.sparse.csr_matrix(dense_bv))
                    order.append(indices)
                    bar.update(len(indices))
                pending = dispatched if sb is not None else None
        stacked = scipy.sparse.vstack(parts, format="csr", dtype=np.float32)
        out = stacked[np.argsort(np.concatenate(order), kind="stable")]
        out.eliminate_zeros()
        return out

    def encode_queries(self, texts: Sequence[str], **kwargs: Any) -> scipy.sparse.csr_matrix:
        """:meth:`encode` with ``role="query"``."""
        return self.encode(texts, role="query", **kwargs)

    def encode_documents(self, texts: Sequence[str], **kwargs: Any) -> scipy.sparse.csr_matrix:
        """:meth:`encode` with ``role="passage"``."""
        return self.encode(texts, role="passage", **kwargs)

    def decode(self, vector_row: Any, top: int | None = 20) -> list[tuple[str, float]]:
        """The ``top`` heaviest terms of one vector as ``[(token, weight), ...]``, weights descending.

        Args:
          vector_row: one row: a ``[1, V]`` sparse matrix (``vecs[i]``), or a ``[V]`` /
            ``[1, V]`` array.
          top: how many terms (``None``: every non-zero one).

        Ties are broken by term id; zero weights are never listed (an all-zero row
        gives ``[]``).
        """
        if scipy.sparse.issparse(vector_row):
            row = scipy.sparse.csr_matrix(vector_row)
            if row.shape != (1, self.vocab_size):
                raise ValueError(
                    f"expected one row of {self.vocab_size} columns, got shape {row.shape}."
                )
            ids, weights = row.indices, row.data
        else:
            dense = np.asarray(vector_row)
            if dense.ndim == 2 and dense.shape[0] == 1:
                dense = dense[0]
            if dense.shape != (self.vocab_size,):
                raise ValueError(
                    f"expected one vector of {self.vocab_size} weights, got shape "
                    f"{np.asarray(vector_row).shape}."
                )
            ids = np.flatnonzero(dense)
            weights = dense[ids]
        keep = weights != 0
        ids, weights = np.asarray(ids)[keep], np.asarray(weights, np.float64)[keep]
        ranked = np.lexsort((ids, -weights))
        if top is not None:
            ranked = ranked[: _positive("top", top)]
        terms = self.terms
        return [(terms[int(ids[i])], float(weights[i])) for i in ranked]


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
    return value


# --------------------------------------------------------------------------- loading


def _model_dir(path: pathlib.Path) -> pathlib.Path:
    """``path`` itself, or a training workdir's ``model/`` (a workdir has a ``config.json``
    too: the run's config, not a model's)."""
    inner = path / "model"
    if is_splade_dir(path):
        return path
    if is_splade_dir(inner) or (inner / "config.json").is_file():
        return inner
    if (path / "config.json").is_file():
        return path
    raise FileNotFoundError(
        f"{path}: not a SPLADE model. Expected a Hugging Face *ForMaskedLM directory "
        "(config.json, model.safetensors, tokenizer), a model saved by jaxir "
        f"({CONTRACT_FILE}), or a training run's workdir holding one in model/."
    )


def _require_mlm_head(path: pathlib.Path) -> None:
    if "MLM head" not in hf.unused_heads(path, mlm_head=False, pooler=True):
        family = hf.family_for(hf.read_hf_config(path)["model_type"])
        raise ValueError(
            f"{path}: the checkpoint has no MLM head (no {' / '.join(family.mlm_prefixes)}* "
            f"weights), and SPLADE scores the vocabulary with it. Pass a *ForMaskedLM "
            f"checkpoint (e.g. one saved from {family.architectures[1]}). Training a fresh "
            "head on an encoder without one is an explicit choice of a SPLADE training "
            "config (model.splade.fresh_head=true), not something load_splade does."
        )


def _check_vocabulary(
    tokenizer: transformers.PreTrainedTokenizerBase, vocab: int, path: pathlib.Path, head: str
) -> None:
    if len(tokenizer) != vocab:
        raise ValueError(
            f"{path}: the tokenizer has {len(tokenizer)} tokens, but the MLM head in {head} "
            f"scores {vocab} (config.json vocab_size); SPLADE term ids are token ids, so they "
            "must agree: put the checkpoint's own tokenizer in the directory."
        )


def _st_splade_pooling(path: pathlib.Path) -> str | None:
    """The ``pooling_strategy`` of a sentence-transformers SparseEncoder's SpladePooling module, if any."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return None
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(modules_file, f"not valid JSON ({e})") from None
    for module in modules if isinstance(modules, list) else []:
        if not (isinstance(module, dict) and str(module.get("type", "")).endswith("SpladePooling")):
            continue
        config_file = path / str(module.get("path", "")) / "config.json"
        if not config_file.is_file():
            return None
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(config_file, f"not valid JSON ({e})") from None
        activation = config.get("activation_function", "relu")
        if activation != "relu":
            raise DataError(
                config_file,
                f"{activation!r}: jaxir's SPLADE computes log(1 + relu(x)) only",
                field="activation_function",
            )
        pooling = config.get("pooling_strategy", "max")
        if pooling not in POOLINGS:
            raise DataError(
                config_file, f"{pooling!r} is not one of {POOLINGS}", field="pooling_strategy"
            )
        return pooling
    return None


def load_splade(
    path: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    max_length: int | None = None,
    pooling: str | None = None,
    max_active_dims: int | None = None,
    batch_size: int = 32,
    role: str = "passage",
) -> SparseEncoder:
    """A :class:`SparseEncoder` from a ``*ForMaskedLM`` directory, a saved SPLADE model or a run workdir.

    Args:
      path: a Hugging Face ``*ForMaskedLM`` directory of a registered family (BERT,
        DistilBERT, RoBERTa, XLM-R: ``config.json``, weights, tokenizer), loaded as a
        tied SPLADE model; a directory written by
        :func:`~jaxir.models.splade.save_splade` (its ``jaxir_splade.json`` gives the
        spec: towers, pooling, per-role prefixes and lengths, ``max_active_dims``); or
        a training run's workdir, whose ``model/`` is one of those.
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (parameters stay float32).
      max_length: longest sequence for both roles, special tokens included. Default:
        a saved model's per-role lengths; for a plain checkpoint, a
        sentence-transformers ``max_seq_length`` when there is one, else what the
        model and tokenizer support (:func:`jaxir.encode.default_max_length`).
      pooling: ``"max"`` or ``"sum"`` (default: the saved spec's; a
        sentence-transformers ``SpladePooling`` module's; else ``"max"``).
      max_active_dims: prune document vectors to this many weights (``0``: none;
        default: the saved spec's, else 0).
      batch_size: default rows per forward pass.
      role: the default role of :meth:`SparseEncoder.encode` (``"query"`` for searching).

    Raises:
      ValueError: the checkpoint has no MLM head, or the tokenizer's size differs
        from the MLM head's vocabulary (naming both sizes and directories).
      DataError: a malformed ``jaxir_splade.json``, or a tokenizer that disagrees
        with the one the model was saved with.
      FileNotFoundError: ``path`` is none of the above.

    ``load_splade(d).encode(texts)`` equals ``transformers``' ``AutoModelForMaskedLM``
    + ``max_t log(1 + relu(logits)) * mask`` over the same tokenization (1e-4, float32).
    """
    root = _model_dir(pathlib.Path(path))
    if is_splade_dir(root):
        contract = read_splade_contract(root)
        model = load_splade_model(root, dtype=dtype)
        tokenizer = load_tokenizer(root)
        _check_vocabulary(tokenizer, model.vocab_size, root, str(root))
        if contract["tokenizer"] is not None:
            facts = {name: contract["tokenizer"].get(name) for name in TOKENIZER_FIELDS}
            if facts["lowercase"] is not None:
                check_tokenizer_contract(
                    tokenizer, TokenizerContract(max_length=1, **facts), path=root / CONTRACT_FILE
                )
        spec = model.spec
    else:
        _require_mlm_head(root)
        encoder = hf.load_pretrained(root, dtype=dtype, mlm_head=True)
        tokenizer = load_tokenizer(root)
        _check_vocabulary(tokenizer, encoder.config.vocab_size, root, str(root))
        limit = default_max_length(encoder.config, tokenizer)
        length = min(sentence_transformers_defaults(root).get("max_length", limit), limit)
        spec = SpladeSpec(
            pooling=_st_splade_pooling(root) or "max",
            query_max_length=length,
            passage_max_length=length,
        )
        model = Splade(encoder, None, None, spec)
    changes = {}
    if pooling is not None:
        changes["pooling"] = pooling
    if max_active_dims is not None:
        changes["max_active_dims"] = max_active_dims
    if changes:
        model.spec = spec.replace(**changes)
    return SparseEncoder(model, tokenizer, max_length=max_length, batch_size=batch_size, role=role)
