"""Texts -> dense vectors with a jitted encoder, and corpora -> a resumable embedding store.

**Encoding** (:class:`TextEncoder`, :func:`load_encoder`). Texts are tokenized once,
sorted by token length (longest first) and cut into batches of ``batch_size`` rows, each
padded to a length bucket (:data:`jaxir.data.tokenizer.DEFAULT_BUCKETS`, capped at
``max_length``) and, on its last batch, with empty rows. Every batch runs through one
jitted program, :data:`jaxir.reps.dense.FORWARD` ``(graphdef, state, ids, mask) ->
pooled [B, D]`` (the dense forward that in-training validation and serving share; on CPU
compiled with the options :func:`jaxir.xla.jit` picks for its dtype), so
an :meth:`TextEncoder.encode` call compiles at most
``len(length_buckets(buckets, max_length))`` programs (5 for ``max_length=512``) per
batch size, pooling and normalization, and later calls reuse them. Vectors come back
float32 in the input order.

**Embedding store** (:func:`encode_corpus` writes it, :func:`load_embeddings` reads it).
A directory::

    manifest.json      {"format": "jaxir-embeddings", "version": 1, "kind": "dense", "dim": D,
                        "count": N, "dtype": "float32", "complete": true,
                        "shards": [{"vectors": "vectors-00000.npy",
                                    "ids": "ids-00000.txt", "count": n0}, ...],
                        "encoder": {"pooling": "mean", "normalize": false,
                                    "max_length": 256, "prefix": "",
                                    "dtype": "float32"}}
    vectors-00000.npy  float32 [n0, D]   (NumPy .npy, readable with np.load(mmap_mode="r"))
    ids-00000.txt      n0 ids, one a line, UTF-8, row i of the vectors is line i
    ...

Rows are in input order across shards. Each shard file is written to a temporary name
and renamed into place, then the manifest is rewritten the same way, so a shard is
complete exactly when the manifest lists it: an interrupted run leaves a valid store
with ``"complete": false``, and running again with ``resume=True`` keeps its shards
(after checking their ids against the input) and encodes only the rest. A document's
text is ``title + " " + text`` (the BEIR / sentence-transformers convention,
:attr:`jaxir.data.records.Document.full_text`).

**Several processes** (a multi-host job, :mod:`jaxir.distributed`). When
``jax.process_count() == P > 1``, every process calls :func:`encode_corpus` with the same
arguments and documents, writing into one directory they all see (a shared file system:
NFS, Filestore, GCS FUSE). Shard ``i`` (the ``i``-th run of ``shard_size`` documents
after any kept from an earlier run, exactly the shards one process would write) is
encoded by process ``i % P`` alone, so shard names never collide and each process writes
only its own ``vectors-i.npy`` / ``ids-i.txt``. Every process still reads the whole
input (ids and texts; it tokenizes only its own shards), so the duplicate-id check stays
global and every process raises the same error, before any barrier. After a barrier,
process 0 writes the one manifest listing every shard in input order, so the store *is*
the single-process store (same files, same manifest; vectors equal up to float
rounding) and :func:`load_embeddings`, ``jaxir index`` and search read it unchanged.
While the job runs, the manifest lists only the shards kept from an earlier run; a
shard written since is complete exactly when its id file exists (written, atomically,
after its vectors), so a killed job run again with several processes keeps every shard
whose files exist and whose ids match the input (a single-process rerun re-encodes the
ones the manifest does not list). The encoder's mesh, if any, must hold this process's
devices only (``sharding.make_mesh(data=-1, devices=jax.local_devices())``): the
processes encode different texts and never wait for each other until the end.

Why ``.npy`` shards and not one tensorstore/zarr matrix: this keeps *one* store format
for one and many processes, whose shard files are both the unit of work and of
resumption, and keeps memory-mapped reads and every reader unchanged. A zarr array
needs its row count before it is written (the input is a stream of unknown length) and
a resize shared by several writers is not atomic; rows of one zarr chunk written by two
processes would collide unless chunks align with the split, and a chunk written when
the job died is not marked complete anywhere.

Ids are unique per *document*: :func:`encode_corpus` rejects two documents with one id
(:class:`~jaxir.data.passages.DuplicateIdError`, naming both positions). Rows of a MaxP
index (:meth:`TextEncoder.passages`, :class:`~jaxir.data.passages.Passage` rows) share
their document's id; :func:`~jaxir.data.passages.split_passages` checks their documents
instead.

Example:
    >>> import tempfile
    >>> from flax import nnx
    >>> from tokenizers import Tokenizer, models, pre_tokenizers, processors
    >>> from transformers import PreTrainedTokenizerFast
    >>> from jaxir.models.bert import PRESETS, Model
    >>> vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "cats": 4, "purr": 5}
    >>> core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    >>> core.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> core.post_processor = processors.TemplateProcessing(
    ...     single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    >>> tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]")
    >>> encoder = TextEncoder(Model(PRESETS["tiny"], rngs=nnx.Rngs(0)), tok, max_length=16)
    >>> encoder.encode(["cats purr", "cats"], batch_size=4).shape
    (2, 32)
    >>> out = tempfile.mkdtemp()
    >>> store = encode_corpus(encoder, [("d1", "cats purr"), ("d2", "purr")], out,
    ...                       batch_size=4, progress=False)
    >>> load_embeddings(out).ids, load_embeddings(out).vectors.shape
    (['d1', 'd2'], (2, 32))
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
import transformers
from flax import nnx
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxir import distributed, sharding, store_files
from jaxir.data.errors import DataError
from jaxir.data.passages import Passage, split_passages
from jaxir.data.records import Document
from jaxir.data.tokenizer import DEFAULT_BUCKETS, tokenize_texts_sorted
from jaxir.models import bert, hf
from jaxir.reps.contract import (
    EncoderContract,
    contract_file,
    load_tower_tokenizer,
    read_contract,
    sentence_transformers_defaults,
)
from jaxir.reps.dense import FORWARD, KIND
from jaxir.reps.pooling import POOLINGS
from jaxir.store_files import MANIFEST

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "EmbeddingStore",
    "TextEncoder",
    "default_max_length",
    "encode_corpus",
    "load_embeddings",
    "load_encoder",
]

FORMAT = store_files.STORES[KIND][0]
#: Representation kinds this module's stores hold (``"kind"`` in the manifest); a sparse
#: store is :mod:`jaxir.sparse_store` with its own kind, indexed by the searchers
#: registered for it (:data:`jaxir.index.base.SEARCHERS_FOR`); :func:`load_embeddings`
#: refuses it naming the function that reads it.
STORE_KINDS = (KIND,)
VERSION = 1

#: ``tokenizer.model_max_length`` above this means "unset": transformers then stores a
#: sentinel (``int(1e30)``), not a limit.
_UNSET_MODEL_MAX_LENGTH = 1_000_000


def default_max_length(model_config: Any, tokenizer: transformers.PreTrainedTokenizerBase) -> int:
    """The longest sequence a model and its tokenizer support, special tokens included.

    The smaller of the model's usable positions (``max_positions - position_offset``;
    RoBERTa-style models start at position ``pad + 1``) and the tokenizer's
    ``model_max_length`` (ignored when unset, i.e. transformers' huge sentinel).
    """
    limit = model_config.max_positions - (model_config.position_offset or 0)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 1 <= tokenizer_limit <= _UNSET_MODEL_MAX_LENGTH:
        limit = min(limit, tokenizer_limit)
    return int(limit)


class TextEncoder:
    """A text -> vector encoder: an NNX encoder model, its tokenizer and pooling settings.

    Args:
      model: a jaxir encoder (``(ids [B, L], mask [B, L]) -> hidden [B, L, H]``, e.g.
        :class:`jaxir.models.bert.Model`); its compute dtype is ``model.config.dtype``.
      tokenizer: a fast Hugging Face tokenizer with a pad token.
      pooling: ``"mean"``, ``"cls"``, ``"last"`` or ``"max"`` (:func:`jaxir.reps.pooling.pool`).
      normalize: L2-normalize the pooled vectors (cosine similarity = dot product).
      max_length: longest token sequence, special tokens included; longer texts are
        truncated (keeping the final ``[SEP]``). At most the model's position count.
        ``None`` (default): :func:`default_max_length`, the smaller of the model's
        usable positions and the tokenizer's ``model_max_length`` (when set).
      prefix: text prepended to every input (e.g. ``"query: "`` for E5-style models).
      mesh: optional device mesh. Batches are split over its ``data`` x ``fsdp`` axes
        (the batch size is rounded up to a multiple of their product) and the model's
        parameters are placed on it per their logical axes (in place,
        :func:`jaxir.sharding.shard_model`).
      buckets: sequence lengths batches are padded to (capped at ``max_length``).

    The parameters are read from ``model`` at every :meth:`encode` call, so a model
    trained in place is encoded with its current weights.
    """

    def __init__(
        self,
        model: bert.Model,
        tokenizer: transformers.PreTrainedTokenizerBase,
        *,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int | None = None,
        prefix: str = "",
        mesh: Mesh | None = None,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is not supported; choose one of {POOLINGS}.")
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "The tokenizer has no pad token; set tokenizer.pad_token (e.g. '[PAD]')."
            )
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.max_length = (
            default_max_length(model.config, tokenizer)
            if max_length is None
            else self._check_max_length(max_length)
        )
        self.prefix = prefix
        self.mesh = mesh
        self.buckets = tuple(buckets)
        if mesh is not None:
            sharding.shard_model(model, mesh)

    def passages(
        self, documents: Iterable[Document | tuple[str, str]], *, stride: int = 0
    ) -> Iterator[Passage]:
        """``(doc_id, passage)`` rows that each fit this encoder (:func:`~jaxir.data.passages.split_passages`).

        Encoding them with :func:`encode_corpus` gives a MaxP index: several rows per
        document id, which :func:`jaxir.search.retrieve.retrieve` scores by the best row.
        Two documents with one id raise :class:`~jaxir.data.passages.DuplicateIdError`.
        """
        return split_passages(
            documents, self.tokenizer, max_length=self.max_length, stride=stride, prefix=self.prefix
        )

    @property
    def dtype(self) -> str:
        """Compute dtype of the model (``"float32"`` or ``"bfloat16"``); vectors are float32."""
        return self.model.config.dtype

    @property
    def dim(self) -> int:
        """Size ``D`` of the vectors (the model's hidden size)."""
        return self.model.config.hidden_size

    @property
    def settings(self) -> dict[str, Any]:
        """What determines the vectors besides the weights (recorded in embedding manifests)."""
        return {
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "prefix": self.prefix,
            "dtype": self.dtype,
        }

    def _check_max_length(self, max_length: int) -> int:
        config = self.model.config
        limit = config.max_positions - (config.position_offset or 0)
        if not 1 <= max_length <= limit:
            raise ValueError(
                f"max_length={max_length} is out of range: the model has {config.max_positions} "
                f"position embeddings, so sequences may hold 1..{limit} tokens; pass "
                f"max_length <= {limit}."
            )
        return int(max_length)

    def _rows_multiple(self) -> int:
        if self.mesh is None:
            return 1
        return self.mesh.shape[sharding.DATA] * self.mesh.shape[sharding.FSDP]

    def forward(self, ids_bl: np.ndarray, mask_bl: np.ndarray) -> jax.Array:
        """Pooled vectors ``[B, D]`` (float32, on device) for token ids / mask ``[B, L]``.

        The jitted function :meth:`encode` runs per batch; ``B`` must be a multiple of
        the mesh's ``data * fsdp`` when a mesh is set. Returns without waiting for the
        result (JAX dispatches asynchronously).
        """
        graphdef, state = nnx.split(self.model)
        return self._run(graphdef, state, ids_bl, mask_bl)

    def _run(self, graphdef, state, ids_bl, mask_bl) -> jax.Array:
        if self.mesh is not None:
            ids_bl, mask_bl = sharding.shard_batch((ids_bl, mask_bl), self.mesh)
        return FORWARD[self.model.config.dtype](
            graphdef, state, ids_bl, mask_bl, pooling=self.pooling, normalize=self.normalize
        )

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        max_length: int | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Vectors ``[N, D]`` float32 for ``N`` texts, in input order.

        Args:
          texts: the ``N`` strings (the encoder's ``prefix`` is prepended to each).
          batch_size: rows per forward pass (rounded up to a multiple of the mesh's
            ``data * fsdp``); the last batch is padded with empty rows.
          max_length: overrides the encoder's ``max_length`` for this call.
          progress: show a tqdm bar (texts/s).

        Compiles at most one program per length bucket used (see the module docstring).
        """
        return self._encode(texts, batch_size, max_length, progress=progress)

    def _encode(
        self,
        texts: Sequence[str],
        batch_size: int,
        max_length: int | None,
        *,
        progress: bool = False,
        on_batch=None,
    ) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        length = self.max_length if max_length is None else self._check_max_length(max_length)
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        rows = math.ceil(batch_size / self._rows_multiple()) * self._rows_multiple()
        graphdef, state = nnx.split(self.model)
        batches = tokenize_texts_sorted(
            self.tokenizer,
            texts,
            max_length=length,
            batch_size=rows,
            buckets=self.buckets,
            prefix=self.prefix,
        )
        pending: tuple[np.ndarray, jax.Array] | None = None
        # Closed before an error propagates, so the error is not printed on its line.
        with tqdm(total=len(texts), unit="text", disable=not progress, smoothing=0.1) as bar:
            # Dispatch batch i+1 before reading batch i back, so the host pads the next
            # batch while the device computes.
            for sb in itertools.chain(batches, [None]):
                if sb is not None:
                    ids_bl, mask_bl = sb.batch["input_ids"], sb.batch["attention_mask"]
                    dispatched = (sb.indices, self._run(graphdef, state, ids_bl, mask_bl))
                if pending is not None:
                    indices, vec = pending
                    out[indices] = np.asarray(vec)[: len(indices)]
                    bar.update(len(indices))
                    if on_batch is not None:
                        on_batch(len(indices))
                pending = dispatched if sb is not None else None
        return out


def _directory_defaults(
    path: pathlib.Path, contract: EncoderContract | None, role: str | None, model_limit: int
) -> dict[str, Any]:
    """What ``path`` says to encode with: its contract, else its sentence-transformers modules."""
    if contract is not None:
        try:
            _, settings = contract.role(role)
        except ValueError as e:
            raise DataError(contract_file(path), str(e), field="roles") from None
        return {
            "pooling": contract.pooling,
            "normalize": contract.normalize,
            "max_length": settings.max_length,
            "prefix": settings.prefix,
        }
    found = sentence_transformers_defaults(path)
    if "max_length" in found:  # sentence-transformers would fail beyond the positions
        found["max_length"] = min(found["max_length"], model_limit)
    return found


def load_encoder(
    path: str | os.PathLike[str],
    *,
    role: str | None = None,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    dtype: str = "float32",
    prefix: str | None = None,
    mesh: Mesh | None = None,
) -> TextEncoder:
    """A :class:`TextEncoder` from a Hugging Face model directory (weights + tokenizer).

    Settings left ``None`` come from the directory: a tower saved by jaxir holds its
    serving contract (``jaxir_encoder.json``, :mod:`jaxir.reps.contract`: pooling,
    normalization and, per role, maximum length and prefix); a sentence-transformers
    directory its ``modules.json`` (Pooling, Normalize) and ``sentence_bert_config.json``
    (``max_seq_length``), so ``load_encoder(d)`` encodes like ``SentenceTransformer(d)``
    (prompts aside). Otherwise ``pooling="mean"``, ``normalize=False``, ``prefix=""``
    and :func:`default_max_length`. Explicit arguments always win.

    Args:
      path: directory with ``config.json``, ``model.safetensors`` (or shards / a
        ``pytorch_model.bin``) and a tokenizer (``tokenizer.json`` or ``vocab.txt``).
        A ``*ForMaskedLM`` checkpoint works too: its MLM head is not loaded.
      role: ``"query"`` or ``"passage"``: whose prefix and maximum length to take from
        the contract (default: the tower's only role; ``"query"`` for a tied tower
        serving both). Ignored for a directory without a contract.
      pooling, normalize, max_length, prefix, mesh: see :class:`TextEncoder`; without a
        contract, ``max_length`` defaults to what the model and tokenizer support
        (:func:`default_max_length`: e.g. 512 for BERT-base, 64 for a model with 64
        positions).
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (parameters stay float32).

    Raises:
      DataError: the tokenizer disagrees with the contract, or the tower does not
        serve ``role`` (naming ``jaxir_encoder.json``).

    ``load_encoder(d, pooling="mean").encode(texts)`` equals ``transformers`` PyTorch's
    ``AutoModel`` + mean pooling over the same tokenization (to 1e-4 in float32).

    Example:
      >>> import tempfile
      >>> from flax import nnx
      >>> from jaxir.models import hf
      >>> from jaxir.models.bert import PRESETS, Model
      >>> d = tempfile.mkdtemp()
      >>> hf.save_pretrained(Model(PRESETS["tiny"], rngs=nnx.Rngs(0)), d)
      >>> _ = (pathlib.Path(d) / "vocab.txt").write_text("\\n".join(
      ...     ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cats", "purr"]) + "\\n")
      >>> encoder = load_encoder(d, pooling="cls", normalize=True, max_length=32)
      >>> v = encoder.encode(["cats purr", "purr"])
      >>> v.shape, v.dtype, bool(np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5))
      ((2, 32), dtype('float32'), True)
      >>> load_encoder(d).max_length  # the tiny preset's 64 position embeddings
      64
      >>> from jaxir.reps.contract import EncoderContract, RoleContract, save_contract
      >>> _ = save_contract(d, EncoderContract("cls", True, {"query": RoleContract("q: ", 16)}))
      >>> load_encoder(d).settings  # from jaxir_encoder.json
      {'pooling': 'cls', 'normalize': True, 'max_length': 16, 'prefix': 'q: ', 'dtype': 'float32'}
      >>> load_encoder(d, max_length=24, normalize=False).settings  # explicit arguments win
      {'pooling': 'cls', 'normalize': False, 'max_length': 24, 'prefix': 'q: ', 'dtype': 'float32'}
    """
    path = pathlib.Path(path)
    model = hf.load_pretrained(path, dtype=dtype, mlm_head=False)
    contract = read_contract(path)
    tokenizer = load_tower_tokenizer(path, contract)
    found = _directory_defaults(path, contract, role, default_max_length(model.config, tokenizer))
    if pooling is None:
        pooling = found.get("pooling", "mean")
        if pooling not in POOLINGS:
            raise DataError(
                path / "modules.json",
                f"its Pooling module pools by {pooling!r}, which jaxir does not implement "
                f"({', '.join(POOLINGS)}); pass pooling= explicitly",
            )
    return TextEncoder(
        model,
        tokenizer,
        pooling=pooling,
        normalize=found.get("normalize", False) if normalize is None else normalize,
        max_length=found.get("max_length") if max_length is None else max_length,
        prefix=found.get("prefix", "") if prefix is None else prefix,
        mesh=mesh,
    )


# --------------------------------------------------------------------------- the store


@dataclasses.dataclass(frozen=True)
class EmbeddingStore:
    """An embedding store on disk (see the module docstring for the format).

    Attributes:
      path: the store directory.
      manifest: the parsed ``manifest.json``.
      ids: the ``N`` ids, row order.
      shards: per-shard float32 arrays ``[n_i, D]`` (memory-mapped when loaded with
        ``mmap=True``): stream these to process a corpus larger than memory.
    """

    path: pathlib.Path
    manifest: dict[str, Any]
    ids: list[str]
    shards: tuple[np.ndarray, ...]

    @functools.cached_property
    def vectors(self) -> np.ndarray:
        """All vectors ``[N, D]`` float32, concatenated on first access.

        With one shard this is the (memory-mapped) shard itself, without a copy; with
        several, the shards are read into one in-memory array.
        """
        if len(self.shards) == 1:
            return self.shards[0]
        if not self.shards:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(self.shards)

    @property
    def dim(self) -> int:
        """Vector size ``D``."""
        return int(self.manifest["dim"])

    def __len__(self) -> int:
        return len(self.ids)


def _read_manifest(path: pathlib.Path) -> dict[str, Any]:
    file = path / MANIFEST
    manifest = store_files.read_manifest_json(
        file,
        missing="no embedding manifest; write a store with jaxir.encode.encode_corpus "
        "(or `jaxir encode`) first.",
    )
    # An older manifest without "kind" is dense; a sparse store is named with its reader.
    store_files.check_store(manifest, file, KIND)
    store_files.check_version(manifest, file, VERSION)
    store_files.require_fields(manifest, file, ("dim", "count", "shards", "encoder"))
    return manifest


def load_embeddings(path: str | os.PathLike[str], mmap: bool = True) -> EmbeddingStore:
    """Reads an embedding store written by :func:`encode_corpus`.

    Args:
      path: the store directory (holding ``manifest.json``).
      mmap: memory-map the ``.npy`` shards (read lazily) instead of loading them.

    Returns an :class:`EmbeddingStore`: ``ids`` ``[N]``, ``vectors`` ``[N, D]`` float32.

    Raises:
      FileNotFoundError: no manifest, or a shard file it lists is missing.
      ValueError: the store is incomplete (an interrupted run: resume it) or a shard's
        row count / shape / dtype disagrees with the manifest.
    """
    root = pathlib.Path(path)
    manifest = _read_manifest(root)
    where = root / MANIFEST
    if not manifest.get("complete", False):
        raise ValueError(
            f"{where}: the store is incomplete ({manifest['count']} embeddings written before "
            "the run stopped); run the same encode command again to resume it."
        )
    dim, ids, shards = int(manifest["dim"]), [], []
    for i, shard in enumerate(manifest["shards"]):
        vectors_file, ids_file = root / shard["vectors"], root / shard["ids"]
        if not vectors_file.is_file():
            raise FileNotFoundError(
                f"{vectors_file}: vector shard {i} listed in {where} is missing; re-encode the "
                "corpus (resume=False / --no-resume)."
            )
        vectors = np.load(vectors_file, mmap_mode="r" if mmap else None)
        shard_ids = store_files.read_ids(ids_file)
        want = int(shard["count"])
        if vectors.shape != (want, dim) or vectors.dtype != np.float32:
            raise ValueError(
                f"{vectors_file}: holds {vectors.dtype} {vectors.shape}, but {where} "
                f'(shards[{i}].count, "dim") expects float32 ({want}, {dim}).'
            )
        if len(shard_ids) != want:
            raise ValueError(
                f"{ids_file}: has {len(shard_ids)} ids, but {where} (shards[{i}].count) "
                f"expects {want}."
            )
        ids.extend(shard_ids)
        shards.append(vectors)
    if len(ids) != int(manifest["count"]):
        raise ValueError(
            f'{where}: field "count" is {manifest["count"]} but its shards hold {len(ids)} '
            "embeddings; the manifest is damaged, re-encode the corpus."
        )
    return EmbeddingStore(root, manifest, ids, tuple(shards))


def _resume_point(
    root: pathlib.Path, encoder: TextEncoder, stream: Iterator[tuple[str, str]]
) -> tuple[list[dict[str, Any]], int]:
    """Completed shards of an existing store whose ids match the start of ``stream``.

    Consumes those documents from ``stream``; returns ``(shards, count)``.
    """
    manifest = _read_manifest(root)
    where = root / MANIFEST
    if manifest["encoder"] != encoder.settings:
        raise ValueError(
            f"{where}: the store was encoded with {manifest['encoder']}, not "
            f"{encoder.settings}; pass resume=False (--no-resume) to overwrite it, or "
            "choose another output directory."
        )
    if int(manifest["dim"]) != encoder.dim:
        raise ValueError(
            f'{where}: field "dim" is {manifest["dim"]} but the encoder makes {encoder.dim}-d '
            "vectors; pass resume=False (--no-resume) or another output directory."
        )
    return store_files.resume_shards(root, manifest, stream, ("vectors",))


def encode_corpus(
    encoder: TextEncoder,
    documents: Iterable[Document] | Iterable[tuple[str, str]],
    out_dir: str | os.PathLike[str],
    *,
    shard_size: int = 100_000,
    batch_size: int = 64,
    resume: bool = True,
    progress: bool = True,
    total: int | None = None,
) -> EmbeddingStore:
    """Encodes a stream of documents into an embedding store at ``out_dir``.

    Args:
      encoder: the :class:`TextEncoder`.
      documents: :class:`~jaxir.data.records.Document` / ``Query`` records (their text
        is ``title + " " + text``) or ``(id, text)`` tuples, with unique ids; or the
        :class:`~jaxir.data.passages.Passage` rows of :meth:`TextEncoder.passages`
        (several per document id). Read lazily: memory holds one shard of texts at a
        time (plus the ids seen, to reject duplicates).
      out_dir: the store directory (created if missing).
      shard_size: documents per shard file (the unit of resumption).
      batch_size: rows per forward pass.
      resume: keep the completed shards of an existing store in ``out_dir`` (after
        checking that their ids are the first ids of ``documents`` and that the encoder
        settings match) and encode only the rest; ``False`` deletes it first.
      progress: show a tqdm bar (docs/s).
      total: number of documents, for the progress bar only.

    Returns the finished store (as :func:`load_embeddings` reads it, memory-mapped).

    In a multi-process job every process calls this with the same arguments; each
    encodes and writes only its own shards (see "Several processes" in the module
    docstring) and all of them return the whole store.

    Raises:
      DuplicateIdError: two documents have the same id (a ``ValueError`` naming their
        positions ``#i`` and ``#j`` in ``documents``); the shards before it are kept.
      ValueError: in a multi-process job, the encoder's mesh spans other processes'
        devices.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    processes = jax.process_count()
    if processes > 1:
        _check_local_mesh(encoder)
    root = pathlib.Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    stream = store_files.document_rows(documents)
    shards: list[dict[str, Any]] = []
    count = 0
    # Read-only checks run on every process, so a refusal is raised by all of them.
    resuming = resume and (root / MANIFEST).is_file()
    if resuming:
        shards, count = _resume_point(root, encoder, stream)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "kind": KIND,
        "dim": encoder.dim,
        "count": count,
        "dtype": "float32",
        "complete": False,
        "shards": shards,
        "encoder": encoder.settings,
    }
    with distributed.main_first("jaxir.encode_corpus: store prepared"):
        if jax.process_index() == 0:
            if not resuming:
                store_files.clear_store(root, ("vectors-*.npy",))
            store_files.write_manifest(root, manifest)
    # A process's bar counts its own documents: only process 0 shows one.
    shown = progress and jax.process_index() == 0
    bar_total, initial = (total, count) if processes == 1 else (None, 0)
    # Closed (with) before an error propagates, so it is not printed on the bar's line.
    with tqdm(
        total=bar_total, initial=initial, unit="doc", disable=not shown, smoothing=0.1
    ) as bar:

        def write_shard(index: int, texts: list[str]) -> dict[str, Any]:
            vectors = encoder._encode(texts, batch_size, None, on_batch=bar.update)
            name = _vectors_file(index)
            store_files.atomic_write(root / name, lambda f: np.save(f, vectors))
            return {"vectors": name}

        if processes == 1:
            store_files.append_shards(
                root, manifest, stream, shard_size=shard_size, write_shard=write_shard
            )
        else:
            _append_own_shards(root, manifest, stream, shard_size, write_shard)
    return load_embeddings(root)


def _vectors_file(index: int) -> str:
    return f"vectors-{index:05d}.npy"


def _ids_file(index: int) -> str:
    return f"ids-{index:05d}.txt"  # the name store_files.append_shards gives


def _check_local_mesh(encoder: TextEncoder) -> None:
    """Raises ``ValueError`` if the encoder's mesh holds devices of other processes."""
    mesh = encoder.mesh
    if mesh is not None and any(d.process_index != jax.process_index() for d in mesh.devices.flat):
        raise ValueError(
            "encode_corpus: in a multi-process job each process encodes its own shards, so "
            "the encoder's mesh must hold this process's devices only; build the encoder "
            "with mesh=jaxir.sharding.make_mesh(data=-1, devices=jax.local_devices())."
        )


def _written(root: pathlib.Path, index: int, ids: list[str], dim: int) -> bool:
    """Whether shard ``index`` was completely written by an earlier run for these ``ids``."""
    try:
        if store_files.read_ids(root / _ids_file(index)) != ids:
            return False
        vectors = np.load(root / _vectors_file(index), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):  # missing (FileNotFoundError) or truncated
        return False
    return vectors.shape == (len(ids), dim) and vectors.dtype == np.float32


def _append_own_shards(
    root: pathlib.Path,
    manifest: dict[str, Any],
    stream: Iterator[tuple[str, str]],
    shard_size: int,
    write_shard: Callable[[int, list[str]], dict[str, Any]],
) -> None:
    """The multi-process :func:`jaxir.store_files.append_shards`: this process writes shards
    ``i`` with ``i % P == process_index`` (unless an earlier run wrote them), then process
    0 writes the manifest listing every shard (see the module docstring)."""
    processes, me = jax.process_count(), jax.process_index()
    while chunk := list(itertools.islice(stream, shard_size)):
        index = len(manifest["shards"])
        ids = [doc_id for doc_id, _ in chunk]
        if index % processes == me and not _written(root, index, ids, manifest["dim"]):
            write_shard(index, [text for _, text in chunk])
            store_files.write_ids(root / _ids_file(index), ids)  # last: marks it complete
        entry = {"vectors": _vectors_file(index), "ids": _ids_file(index), "count": len(chunk)}
        manifest["shards"].append(entry)
        manifest["count"] += len(chunk)
    if manifest["count"] == 0:
        raise ValueError("documents is empty; there is nothing to encode.")
    distributed.barrier("jaxir.encode_corpus: shards written")
    manifest["complete"] = True
    with distributed.main_first("jaxir.encode_corpus: manifest written"):
        if me == 0:
            store_files.write_manifest(root, manifest)
            listed = {shard[field] for shard in manifest["shards"] for field in ("vectors", "ids")}
            for stale in (*root.glob("vectors-*.npy"), *root.glob("ids-*.txt")):
                if stale.name not in listed:  # from an earlier, longer input
                    stale.unlink()
