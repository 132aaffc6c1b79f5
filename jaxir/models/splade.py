"""SPLADE (learned sparse retrieval): MLM logits -> ``log(1 + relu)`` -> max/sum over tokens, one ``[V]`` vector per text.

:class:`Splade` holds a document encoder (a BERT-family :class:`~jaxir.models.bert.Model`
with its MLM head) and the query side: the same encoder (``tied``, SPLADE v2/v3), a
second one (untied), or -- *inference-free* SPLADE (Geng et al. 2024; the
sentence-transformers ``SparseStaticEmbedding`` router) -- a learned weight per
vocabulary token, initialised from IDF, and no transformer at query time. The math
lives in :mod:`jaxir.reps.sparse` (``[B, L, V]`` logits are pooled ``spec.chunk``
tokens at a time, never materialized whole). How texts become vectors beyond the
weights is a :class:`SpladeSpec`.

**Saved layout** (:func:`save_splade`): the document encoder *is* the directory, a
Hugging Face ``*ForMaskedLM`` checkpoint (``transformers.AutoModelForMaskedLM`` loads
it, and so does sentence-transformers' ``MLMTransformer``), plus one small contract::

    model/                config.json, model.safetensors (document encoder + MLM head),
                          tokenizer files, jaxir_splade.json
    model/query/          the query encoder, the same way (untied models only)
    model/query_weights.npy   float32 [V] (inference-free models only)

``jaxir_splade.json``::

    {"format": "jaxir-splade/1", "kind": "sparse", "vocab_size": 30522,
     "spec": {"pooling": "max", "tied": true, "inference_free": false,
              "max_active_dims": 0, "query_max_length": 32, "passage_max_length": 128,
              "query_prefix": "", "passage_prefix": "", "chunk": 32},
     "query_special_ids": [],     # ids an inference-free query never counts
     "tokenizer": {...}}          # jaxir.reps.contract.describe_tokenizer of the tokenizer

:data:`FORWARD` is the one jitted inference program ``(graphdef, state, ids, mask) ->
[B, V]`` that :class:`jaxir.sparse_encode.SparseEncoder` runs per batch.

Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxir.models.bert import PRESETS
    >>> model = Splade.create(PRESETS["tiny"], SpladeSpec(), rngs=nnx.Rngs(0))
    >>> ids = jnp.array([[2, 7, 8, 3], [2, 9, 3, 0]])
    >>> reps = model.encode_passages(ids, ids > 0)
    >>> reps.shape, reps.dtype, bool((reps >= 0).all())
    ((2, 128), dtype('float32'), True)
    >>> free = Splade.create(PRESETS["tiny"], SpladeSpec(inference_free=True),
    ...                      rngs=nnx.Rngs(0), special_token_ids=(2, 3))
    >>> free.query_encoder is None, free.encode_queries(ids, ids > 0)[0, [2, 7, 8]].tolist()
    (True, [0.0, 1.0, 1.0])
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import transformers
from flax import nnx

from jaxir import xla
from jaxir.data.errors import DataError
from jaxir.layers.linear import axes_metadata
from jaxir.models import hf
from jaxir.models.bert import EncoderConfig, Model
from jaxir.reps.contract import describe_tokenizer
from jaxir.reps.sparse import KIND, POOLINGS, inference_free_queries, pool_mlm, top_k_prune

__all__ = [
    "CONTRACT_FILE",
    "FORWARD",
    "QUERY_TOWER",
    "QUERY_WEIGHTS_FILE",
    "Splade",
    "SpladeSpec",
    "forward",
    "is_splade_dir",
    "load_splade_model",
    "read_splade_contract",
    "save_splade",
]

CONTRACT_FILE = "jaxir_splade.json"
CONTRACT_FORMAT = "jaxir-splade/1"
#: The untied query encoder's directory inside a saved model.
QUERY_TOWER = "query"
#: The inference-free query weights ``[V]`` inside a saved model.
QUERY_WEIGHTS_FILE = "query_weights.npy"
ROLES = ("query", "passage")


@dataclasses.dataclass(frozen=True)
class SpladeSpec:
    """How texts become SPLADE vectors (the serving contract, besides the weights).

    Attributes:
      pooling: ``"max"`` (SPLADE v2 and later) or ``"sum"`` (SPLADE v1) over tokens.
      tied: one encoder for queries and documents (else a separate query encoder).
      inference_free: the query side is a learned weight per vocabulary token (no
        transformer at query time); implies a single, document, encoder.
      max_active_dims: keep each document vector's largest ``k`` weights at encode
        time (``0``: no pruning). Never applied in training or to queries.
      query_max_length, passage_max_length: longest token sequence per role, special
        tokens included.
      query_prefix, passage_prefix: text prepended per role.
      chunk: tokens per chunk when pooling the MLM logits
        (:func:`jaxir.reps.sparse.pool_mlm`): memory holds ``[B, chunk, V]`` logits.
    """

    pooling: str = "max"
    tied: bool = True
    inference_free: bool = False
    max_active_dims: int = 0
    query_max_length: int = 32
    passage_max_length: int = 128
    query_prefix: str = ""
    passage_prefix: str = ""
    chunk: int = 32

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}.")
        if self.inference_free and not self.tied:
            raise ValueError(
                "inference_free=True has no query encoder, so tied=False means nothing; "
                "leave tied=True."
            )
        for name, low in (
            ("max_active_dims", 0),
            ("query_max_length", 1),
            ("passage_max_length", 1),
            ("chunk", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")

    def replace(self, **changes: Any) -> SpladeSpec:
        """A copy with ``changes`` applied (e.g. ``spec.replace(max_active_dims=128)``)."""
        return dataclasses.replace(self, **changes)

    def max_length(self, role: str) -> int:
        """``query_max_length`` or ``passage_max_length``."""
        return self.query_max_length if _role(role) == "query" else self.passage_max_length

    def prefix(self, role: str) -> str:
        """``query_prefix`` or ``passage_prefix``."""
        return self.query_prefix if _role(role) == "query" else self.passage_prefix


def _role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}.")
    return role


class Splade(nnx.Module):
    """A SPLADE model: ``encode_passages`` / ``encode_queries`` map ``[B, L]`` ids to ``[B, V]`` weights.

    Attributes:
      document_encoder: the encoder (with MLM head) of documents, and of queries when tied.
      query_encoder: the untied query encoder, else ``None``.
      query_weights: ``nnx.Param [V]``, the inference-free query weights, else ``None``.
      spec: the :class:`SpladeSpec`.
      query_special_ids: token ids an inference-free query never counts (``[CLS]``,
        ``[SEP]``, ...), recorded when saved.

    Training-time vectors are never pruned (``spec.max_active_dims`` applies at encode
    time, :func:`forward`).
    """

    def __init__(
        self,
        document_encoder: Model,
        query_encoder: Model | None,
        query_weights: nnx.Param | None,
        spec: SpladeSpec,
        *,
        special_token_ids: Sequence[int] = (),
    ):
        vocab = document_encoder.config.vocab_size
        if document_encoder.mlm is None:
            raise ValueError(
                "the document encoder has no MLM head; SPLADE needs one (build it with "
                "EncoderConfig(mlm_head=True) or load a *ForMaskedLM checkpoint)."
            )
        if spec.inference_free != (query_weights is not None):
            raise ValueError(
                "query_weights must be given exactly when spec.inference_free is True, got "
                f"inference_free={spec.inference_free} and query_weights="
                f"{'None' if query_weights is None else 'a Param'}."
            )
        if (query_encoder is not None) == spec.tied:
            raise ValueError(
                f"spec.tied={spec.tied} but query_encoder is "
                f"{'None' if query_encoder is None else 'given'}; a tied model has none."
            )
        if query_encoder is not None and (
            query_encoder.mlm is None or query_encoder.config.vocab_size != vocab
        ):
            raise ValueError(
                f"the query encoder needs an MLM head over the document encoder's {vocab} "
                f"tokens, got vocab_size {query_encoder.config.vocab_size} and "
                f"{'an' if query_encoder.mlm is not None else 'no'} MLM head."
            )
        if query_weights is not None and tuple(query_weights.shape) != (vocab,):
            raise ValueError(
                f"query_weights must have shape ({vocab},) (one per vocabulary token), got "
                f"{tuple(query_weights.shape)}."
            )
        special = tuple(sorted({int(i) for i in special_token_ids}))
        if any(not 0 <= i < vocab for i in special):
            raise ValueError(f"special_token_ids must lie in [0, {vocab}), got {list(special)}.")
        self.document_encoder = document_encoder
        self.query_encoder = query_encoder
        self.query_weights = query_weights
        self.spec = spec
        self.query_special_ids = special

    @classmethod
    def create(
        cls,
        encoder_config: EncoderConfig,
        spec: SpladeSpec,
        *,
        rngs: nnx.Rngs,
        idf: np.ndarray | None = None,
        special_token_ids: Sequence[int] = (),
    ) -> Splade:
        """A randomly initialised SPLADE model with ``encoder_config``-shaped encoders.

        Args:
          encoder_config: must have ``mlm_head=True`` (the vocabulary projection).
          spec: the :class:`SpladeSpec`; untied builds two encoders.
          rngs: initialisation randomness.
          idf: inference-free only: the initial query weights ``[V]`` (e.g. IDF over the
            collection); default all ones.
          special_token_ids: inference-free only: ids never counted in a query (pass
            ``tokenizer.all_special_ids`` so ``[CLS]`` / ``[SEP]`` carry no weight,
            as in sentence-transformers, which tokenizes such queries without them).
        """
        if not encoder_config.mlm_head:
            raise ValueError(
                "SPLADE needs the MLM head: pass encoder_config.replace(mlm_head=True)."
            )
        vocab = encoder_config.vocab_size
        weights = None
        if spec.inference_free:
            init = np.ones((vocab,), np.float32) if idf is None else np.asarray(idf, np.float32)
            if init.shape != (vocab,) or not np.isfinite(init).all():
                raise ValueError(
                    f"idf must be {vocab} finite numbers (one per vocabulary token), got shape "
                    f"{init.shape}{'' if np.isfinite(init).all() else ' with non-finite values'}."
                )
            weights = nnx.Param(jnp.asarray(init), **axes_metadata(("vocab",)))
        elif idf is not None:
            raise ValueError("idf initialises inference-free query weights; set inference_free.")
        document = Model(encoder_config, rngs=rngs)
        query = None if spec.tied else Model(encoder_config, rngs=rngs)
        return cls(document, query, weights, spec, special_token_ids=special_token_ids)

    @property
    def vocab_size(self) -> int:
        """``V``, the length of every vector (the MLM head's vocabulary)."""
        return self.document_encoder.config.vocab_size

    def _encode(self, encoder: Model, ids_bl, mask_bl, rngs) -> jax.Array:
        hidden_blh = encoder(ids_bl, mask_bl, rngs=rngs)
        return pool_mlm(
            hidden_blh,
            mask_bl,
            encoder.mlm_logits,
            pooling=self.spec.pooling,
            chunk=self.spec.chunk,
        )

    def encode_passages(self, ids_bl, mask_bl, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Document vectors ``[B, V]`` float32 (unpruned) from token ids / mask ``[B, L]``.

        Pass ``rngs`` (with a ``dropout`` stream) to train with dropout.
        """
        return self._encode(self.document_encoder, ids_bl, mask_bl, rngs)

    def encode_queries(self, ids_bl, mask_bl, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Query vectors ``[B, V]`` float32 from token ids / mask ``[B, L]``.

        Inference-free: :func:`jaxir.reps.sparse.inference_free_queries` (no transformer;
        ``rngs`` unused); else the query encoder (the document encoder when tied).
        """
        if self.query_weights is not None:
            return inference_free_queries(
                ids_bl, mask_bl, self.query_weights[...], special_ids=self.query_special_ids
            )
        encoder = self.document_encoder if self.query_encoder is None else self.query_encoder
        return self._encode(encoder, ids_bl, mask_bl, rngs)


# --------------------------------------------------------------------------- inference


def forward(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    ids_bl: jax.Array,
    mask_bl: jax.Array,
    *,
    role: str,
    max_active_dims: int = 0,
) -> jax.Array:
    """``[B, V]`` float32 vectors of ``nnx.merge(graphdef, state)`` (a :class:`Splade`) for one role.

    Passages are pruned to ``max_active_dims`` weights each (``0``: none,
    :func:`jaxir.reps.sparse.top_k_prune`); queries never are. Not jitted: call
    :data:`FORWARD`.
    """
    model = nnx.merge(graphdef, state)
    if _role(role) == "query":
        return model.encode_queries(ids_bl, mask_bl)
    reps_bv = model.encode_passages(ids_bl, mask_bl)
    return top_k_prune(reps_bv, max_active_dims) if max_active_dims else reps_bv


#: :func:`forward` jitted, by compute dtype (CPU compiler options differ, see :mod:`jaxir.xla`).
#: One program per (model graph, ``[B, L]`` shape, role, ``max_active_dims``).
FORWARD: dict[str, Callable[..., jax.Array]] = {
    dtype: xla.jit(
        forward, gemm_dtype=dtype, static_argnums=(0,), static_argnames=("role", "max_active_dims")
    )
    for dtype in xla.CPU_COMPILER_OPTIONS
}


# --------------------------------------------------------------------------- save / load


def save_splade(
    model: Splade, directory: str | pathlib.Path, *, tokenizer: transformers.PreTrainedTokenizerBase
) -> None:
    """Writes ``model`` to ``directory`` (layout in the module docstring).

    The directory is a Hugging Face ``*ForMaskedLM`` checkpoint of the document encoder
    (:func:`jaxir.models.hf.save_pretrained`) with the tokenizer and
    ``jaxir_splade.json``; an untied query encoder goes to ``query/`` (with the
    tokenizer), inference-free query weights to ``query_weights.npy``.

    Raises:
      ValueError: the tokenizer's size differs from the model's vocabulary.
    """
    if len(tokenizer) != model.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's MLM head has "
            f"{model.vocab_size}; save the tokenizer the model was built for."
        )
    root = pathlib.Path(directory)
    hf.save_pretrained(model.document_encoder, root)
    tokenizer.save_pretrained(root)
    if model.query_encoder is not None:
        hf.save_pretrained(model.query_encoder, root / QUERY_TOWER)
        tokenizer.save_pretrained(root / QUERY_TOWER)
    if model.query_weights is not None:
        weights = np.asarray(jax.device_get(model.query_weights[...]), np.float32)
        np.save(root / QUERY_WEIGHTS_FILE, weights)
    contract = {
        "format": CONTRACT_FORMAT,
        "kind": KIND,
        "vocab_size": model.vocab_size,
        "spec": dataclasses.asdict(model.spec),
        "query_special_ids": list(model.query_special_ids),
        "tokenizer": describe_tokenizer(tokenizer),
    }
    text = json.dumps(contract, indent=2, ensure_ascii=False) + "\n"
    (root / CONTRACT_FILE).write_text(text, encoding="utf-8")


def is_splade_dir(path: str | pathlib.Path) -> bool:
    """Whether ``path`` holds a model written by :func:`save_splade` (its ``jaxir_splade.json``)."""
    return (pathlib.Path(path) / CONTRACT_FILE).is_file()


def _spec(file: pathlib.Path, raw: Any) -> SpladeSpec:
    if not isinstance(raw, dict):
        raise DataError(file, f"expected an object, got {json.dumps(raw)}", field="spec")
    fields = {f.name: f for f in dataclasses.fields(SpladeSpec)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise DataError(
            file,
            f"unknown fields {unknown} (written by a newer jaxir?); known: {sorted(fields)}",
            field="spec",
        )
    values = {}
    for name, value in raw.items():
        kind = type(fields[name].default)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise DataError(
                file, f"expected {kind.__name__}, got {json.dumps(value)}", field=f"spec.{name}"
            )
        values[name] = value
    try:
        return SpladeSpec(**values)
    except ValueError as e:
        raise DataError(file, str(e), field="spec") from None


def read_splade_contract(directory: str | pathlib.Path) -> dict[str, Any]:
    """The parsed ``jaxir_splade.json`` of a saved model, with ``"spec"`` as a :class:`SpladeSpec`.

    Keys: ``spec``, ``vocab_size`` (int), ``query_special_ids`` (tuple of ints),
    ``tokenizer`` (the recorded tokenizer facts, or ``None``).

    Raises:
      DataError: the file is missing or malformed (naming the file and the field).
    """
    file = pathlib.Path(directory) / CONTRACT_FILE
    if not file.is_file():
        raise DataError(
            file,
            "not found; a SPLADE model directory is written by jaxir.models.splade.save_splade",
        )
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(file, f"not valid JSON ({e}); re-save the model") from None
    if not isinstance(obj, dict) or obj.get("format") != CONTRACT_FORMAT:
        raise DataError(
            file, f'expected a JSON object with "format": "{CONTRACT_FORMAT}"', field="format"
        )
    if obj.get("kind") != KIND:
        raise DataError(file, f"expected {KIND!r}, got {obj.get('kind')!r}", field="kind")
    vocab = obj.get("vocab_size")
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
        raise DataError(file, f"expected a positive int, got {vocab!r}", field="vocab_size")
    special = obj.get("query_special_ids", [])
    if not isinstance(special, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab for i in special
    ):
        raise DataError(
            file, f"expected a list of token ids in [0, {vocab})", field="query_special_ids"
        )
    tokenizer = obj.get("tokenizer")
    if tokenizer is not None and not isinstance(tokenizer, dict):
        raise DataError(file, "expected null or an object", field="tokenizer")
    return {
        "spec": _spec(file, obj.get("spec")),
        "vocab_size": vocab,
        "query_special_ids": tuple(special),
        "tokenizer": tokenizer,
    }


def _load_encoder(path: pathlib.Path, dtype: str, vocab: int, contract_file: pathlib.Path) -> Model:
    encoder = hf.load_pretrained(path, dtype=dtype, mlm_head=True)
    if encoder.config.vocab_size != vocab:
        raise DataError(
            contract_file,
            f"{vocab}, but {path / 'config.json'} has vocab_size {encoder.config.vocab_size}; "
            "re-save the model with save_splade",
            field="vocab_size",
        )
    return encoder


def load_splade_model(directory: str | pathlib.Path, *, dtype: str = "float32") -> Splade:
    """Loads a :class:`Splade` written by :func:`save_splade` (the tokenizer is not read).

    Args:
      directory: the saved model's directory.
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (parameters stay float32).

    Raises:
      DataError: a missing / malformed ``jaxir_splade.json`` or ``query_weights.npy``.
      CheckpointError: an encoder checkpoint that does not load.
    """
    root = pathlib.Path(directory)
    contract = read_splade_contract(root)
    spec, vocab = contract["spec"], contract["vocab_size"]
    file = root / CONTRACT_FILE
    document = _load_encoder(root, dtype, vocab, file)
    query = None if spec.tied else _load_encoder(root / QUERY_TOWER, dtype, vocab, file)
    weights = None
    if spec.inference_free:
        weights_file = root / QUERY_WEIGHTS_FILE
        if not weights_file.is_file():
            raise DataError(weights_file, f"not found, but {file} says the model is inference-free")
        try:
            values = np.load(weights_file, allow_pickle=False)
        except ValueError as e:
            raise DataError(weights_file, f"not a NumPy array file ({e})") from None
        if values.shape != (vocab,) or values.dtype != np.float32:
            raise DataError(
                weights_file,
                f"holds {values.dtype} {values.shape}, expected float32 ({vocab},); re-save "
                "the model with save_splade",
            )
        weights = nnx.Param(jnp.asarray(values), **axes_metadata(("vocab",)))
    return Splade(document, query, weights, spec, special_token_ids=contract["query_special_ids"])
