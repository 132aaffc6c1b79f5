"""Corpora -> a resumable store of learned-sparse (SPLADE) vectors, and reading it back.

:func:`encode_sparse_corpus` writes the store, :func:`load_sparse_store` reads it. A
directory::

    manifest.json       {"format": "jaxir-sparse", "version": 1, "kind": "sparse",
                         "vocab_size": V, "count": N, "nnz": Z, "complete": true,
                         "shards": [{"indptr": "indptr-00000.npy",
                                     "indices": "indices-00000.npy",
                                     "values": "values-00000.npy",
                                     "ids": "ids-00000.txt", "count": n0, "nnz": z0}, ...],
                         "encoder": {... encoder.describe() ...},
                         "terms": "terms.txt"}
    indptr-00000.npy    int64 [n0 + 1]   row pointers of the shard (CSR, from 0 to z0)
    indices-00000.npy   int32 [z0]       term ids of the non-zeros, ascending per row
    values-00000.npy    float32 [z0]     their weights (finite, no explicit zeros)
    ids-00000.txt       n0 ids, one a line, UTF-8, row i of the shard is line i
    terms.txt           the V vocabulary strings, one a line: line i is term id i
    ...

Shard ``i`` is the ``scipy.sparse.csr_matrix((values, indices, indptr), shape=(n_i, V))``
of its rows; rows are in input order across shards. The store follows the dense
embedding store's rules (:mod:`jaxir.store_files`): each file is written to a temporary
name and renamed, then the manifest is rewritten, so an interrupted run leaves a valid
store with ``"complete": false`` that ``resume=True`` continues (after checking the
stored ids against the input, the encoder description and the vocabulary); two
documents with one id raise :class:`~jaxir.data.passages.DuplicateIdError`. A dense
store handed to :func:`load_sparse_store` (or this store to
:func:`jaxir.encode.load_embeddings`) fails naming the function that reads it.

The encoder is duck-typed (:class:`SparseEncoderLike`): ``encode(texts, batch_size=,
role=) -> csr_matrix [n, V]``, ``terms`` (``V`` strings), ``vocab_size`` and
``describe() -> dict`` (JSON-able; recorded as ``"encoder"``), as
:class:`jaxir.sparse_encode.SparseEncoder` provides.

Example:
    >>> import tempfile
    >>> import scipy.sparse
    >>> class Bag:  # a toy encoder: one weight per known word
    ...     terms = ["cats", "purr", "dogs"]
    ...     vocab_size = 3
    ...     def describe(self):
    ...         return {"name": "bag"}
    ...     def encode(self, texts, *, batch_size=32, role="passage"):
    ...         rows = [[float(t in text.split()) for t in self.terms] for text in texts]
    ...         return scipy.sparse.csr_matrix(np.array(rows, np.float32).reshape(-1, 3))
    >>> out = tempfile.mkdtemp()
    >>> _ = encode_sparse_corpus(Bag(), [("d1", "cats purr"), ("d2", "dogs")], out,
    ...                          shard_size=1, progress=False)
    >>> store = load_sparse_store(out)
    >>> store.ids, store.matrix.toarray().tolist(), store.terms
    (['d1', 'd2'], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], ['cats', 'purr', 'dogs'])
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import scipy.sparse
from tqdm.auto import tqdm

from jaxir import store_files
from jaxir.data.records import Document
from jaxir.reps.sparse import KIND
from jaxir.store_files import MANIFEST

__all__ = [
    "FORMAT",
    "KIND",
    "TERMS",
    "VERSION",
    "SparseEncoderLike",
    "SparseStore",
    "encode_sparse_corpus",
    "load_sparse_store",
]

FORMAT = store_files.STORES[KIND][0]
VERSION = 1
TERMS = "terms.txt"
_DATA_FIELDS = ("indptr", "indices", "values")


class SparseEncoderLike(Protocol):
    """What :func:`encode_sparse_corpus` needs of an encoder."""

    @property
    def terms(self) -> Sequence[str]: ...

    @property
    def vocab_size(self) -> int: ...

    def describe(self) -> dict[str, Any]: ...

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 32, role: str = "passage"
    ) -> scipy.sparse.csr_matrix: ...


@dataclasses.dataclass(frozen=True)
class SparseStore:
    """A sparse store on disk (see the module docstring for the format).

    Attributes:
      path: the store directory.
      manifest: the parsed ``manifest.json``.
      ids: the ``N`` ids, row order.
      matrix: ``csr_matrix [N, V]`` float32 of all shards, row ``i`` is ``ids[i]``.
      terms: the ``V`` vocabulary strings (index = term id).
    """

    path: pathlib.Path
    manifest: dict[str, Any]
    ids: list[str]
    matrix: scipy.sparse.csr_matrix
    terms: list[str]

    @property
    def encoder(self) -> dict[str, Any]:
        """The encoder description recorded at encoding time (``describe()``)."""
        return self.manifest["encoder"]

    @property
    def vocab_size(self) -> int:
        """Vocabulary size ``V`` (columns of :attr:`matrix`)."""
        return int(self.manifest["vocab_size"])

    @property
    def nnz(self) -> int:
        """Stored non-zeros ``Z`` over all rows."""
        return int(self.manifest["nnz"])

    def __len__(self) -> int:
        return len(self.ids)


def _normalized(description: Any) -> Any:
    """``description`` as it reads back from JSON (tuples become lists, ...)."""
    return json.loads(json.dumps(description))


def _check_terms(terms: Any, vocab_size: int) -> list[str]:
    terms = list(terms)
    if len(terms) != vocab_size:
        raise ValueError(
            f"encoder.terms has {len(terms)} strings but encoder.vocab_size is {vocab_size}; "
            "the store needs one string per term id."
        )
    for i, term in enumerate(terms):
        if not isinstance(term, str) or "\n" in term or "\r" in term:
            raise ValueError(
                f"encoder.terms[{i}] is {term!r}: terms must be strings without line breaks "
                f"(stored one a line in {TERMS})."
            )
    return terms


def _check_rows(matrix: Any, rows: int, vocab_size: int, first: int) -> scipy.sparse.csr_matrix:
    """The encoder's output for documents ``#first...`` as a canonical float32 CSR matrix."""
    if not scipy.sparse.issparse(matrix):
        raise TypeError(
            f"encoder.encode returned {type(matrix).__name__}; a sparse store needs a "
            "scipy.sparse.csr_matrix [n, vocab_size]."
        )
    if matrix.shape != (rows, vocab_size):
        raise ValueError(
            f"encoder.encode returned shape {matrix.shape} for {rows} texts; expected "
            f"({rows}, {vocab_size}) (vocab_size)."
        )
    matrix = scipy.sparse.csr_matrix(matrix, dtype=np.float32, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    bad = ~np.isfinite(matrix.data)
    if bad.any():
        row = int(np.searchsorted(matrix.indptr, np.flatnonzero(bad)[0], side="right") - 1)
        raise ValueError(
            f"encoder.encode returned a non-finite weight for document #{first + row}; "
            "the encoder is broken (NaN/inf weights)."
        )
    return matrix


def _read_manifest(root: pathlib.Path) -> dict[str, Any]:
    file = root / MANIFEST
    manifest = store_files.read_manifest_json(
        file,
        missing="no sparse store manifest; write one with "
        "jaxir.sparse_store.encode_sparse_corpus (or `jaxir encode` with a SPLADE model) first.",
    )
    store_files.check_store(manifest, file, KIND)
    store_files.check_version(manifest, file, VERSION)
    store_files.require_fields(
        manifest, file, ("vocab_size", "count", "nnz", "shards", "encoder", "terms")
    )
    for name in ("vocab_size", "count", "nnz"):
        if not isinstance(manifest[name], int) or manifest[name] < 0:
            raise ValueError(
                f'{file}: field "{name}" must be a non-negative integer, got '
                f"{manifest[name]!r}; the manifest is damaged."
            )
    if not isinstance(manifest["shards"], list):
        raise ValueError(f'{file}: field "shards" must be a list; the manifest is damaged.')
    for i, shard in enumerate(manifest["shards"]):
        missing = [f for f in (*_DATA_FIELDS, "ids", "count", "nnz") if f not in shard]
        if not isinstance(shard, dict) or missing:
            raise ValueError(
                f'{file}: field "shards[{i}]" lacks {missing or "everything"}; the manifest '
                "is damaged."
            )
    return manifest


def _resume_point(
    root: pathlib.Path, encoder: SparseEncoderLike, terms: list[str], stream
) -> tuple[list[dict[str, Any]], int, int]:
    """Completed shards of an existing store whose ids match the start of ``stream``."""
    manifest = _read_manifest(root)
    where = root / MANIFEST
    description = _normalized(encoder.describe())
    if manifest["encoder"] != description:
        raise ValueError(
            f"{where}: the store was encoded with {manifest['encoder']}, not {description}; "
            "pass resume=False (--no-resume) to overwrite it, or choose another output "
            "directory."
        )
    if manifest["vocab_size"] != encoder.vocab_size or _read_terms(root, manifest) != terms:
        raise ValueError(
            f'{where}: field "vocab_size" / {TERMS} differ from the encoder\'s vocabulary '
            f"({encoder.vocab_size} terms); pass resume=False (--no-resume) or another output "
            "directory."
        )
    shards, count = store_files.resume_shards(root, manifest, stream, _DATA_FIELDS)
    return shards, count, sum(int(s["nnz"]) for s in shards)


def encode_sparse_corpus(
    encoder: SparseEncoderLike,
    documents: Iterable[Document] | Iterable[tuple[str, str]],
    out: str | os.PathLike[str],
    *,
    batch_size: int = 32,
    shard_size: int = 50_000,
    resume: bool = False,
    progress: bool = True,
    role: str = "passage",
    total: int | None = None,
) -> SparseStore:
    """Encodes a stream of documents into a sparse store at ``out``.

    Args:
      encoder: a :class:`SparseEncoderLike` (e.g. :class:`jaxir.sparse_encode.SparseEncoder`).
      documents: :class:`~jaxir.data.records.Document` / ``Query`` records (their text is
        ``title + " " + text``) or ``(id, text)`` tuples with unique ids, or
        :class:`~jaxir.data.passages.Passage` rows (several per document id), exactly as
        :func:`jaxir.encode.encode_corpus` takes them. Read lazily, one shard at a time.
      out: the store directory (created if missing).
      batch_size: rows per forward pass (passed to ``encoder.encode``).
      shard_size: documents per shard (the unit of resumption).
      resume: keep the completed shards of an existing store in ``out`` (after checking
        that their ids are the first ids of ``documents`` and that the encoder
        description and vocabulary match) and encode only the rest; ``False`` (default)
        deletes an existing store there first.
      progress: show a tqdm bar (docs/s), updated per shard.
      role: ``"passage"`` (documents) or ``"query"``, passed to ``encoder.encode``.
      total: number of documents, for the progress bar only.

    Returns the finished store (as :func:`load_sparse_store` reads it).

    Raises:
      DuplicateIdError: two documents have the same id (naming their positions); the
        shards before it are kept.
      ValueError: a bad id or text, an empty input, an encoder whose output is not a
        ``[n, vocab_size]`` sparse matrix of finite weights, or vocabulary strings with
        line breaks.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    vocab_size = int(encoder.vocab_size)
    terms = _check_terms(encoder.terms, vocab_size)
    root = pathlib.Path(out)
    root.mkdir(parents=True, exist_ok=True)
    stream = store_files.document_rows(documents)
    shards: list[dict[str, Any]] = []
    count = nnz = 0
    if resume and (root / MANIFEST).is_file():
        shards, count, nnz = _resume_point(root, encoder, terms, stream)
    else:
        store_files.clear_store(root, (*(f"{f}-*.npy" for f in _DATA_FIELDS), TERMS))
        store_files.write_ids(root / TERMS, terms)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "kind": KIND,
        "vocab_size": vocab_size,
        "count": count,
        "nnz": nnz,
        "complete": False,
        "shards": shards,
        "encoder": _normalized(encoder.describe()),
        "terms": TERMS,
    }
    store_files.write_manifest(root, manifest)
    with tqdm(total=total, initial=count, unit="doc", disable=not progress, smoothing=0.1) as bar:

        def write_shard(index: int, texts: list[str]) -> dict[str, Any]:
            matrix = encoder.encode(texts, batch_size=batch_size, role=role)
            matrix = _check_rows(matrix, len(texts), vocab_size, manifest["count"])
            entry = {"nnz": int(matrix.nnz)}
            arrays = (
                matrix.indptr.astype(np.int64),
                matrix.indices.astype(np.int32),
                matrix.data.astype(np.float32),
            )
            for field, array in zip(_DATA_FIELDS, arrays):
                name = f"{field}-{index:05d}.npy"
                store_files.atomic_write(root / name, lambda f, a=array: np.save(f, a))
                entry[field] = name
            manifest["nnz"] += entry["nnz"]
            bar.update(len(texts))
            return entry

        store_files.append_shards(
            root, manifest, stream, shard_size=shard_size, write_shard=write_shard
        )
    return load_sparse_store(root)


def _read_terms(root: pathlib.Path, manifest: dict[str, Any]) -> list[str]:
    file = root / str(manifest["terms"])
    if not file.is_file():
        raise FileNotFoundError(
            f'{file}: the vocabulary file named by field "terms" of {root / MANIFEST} is '
            "missing; re-encode the corpus (resume=False / --no-resume)."
        )
    terms = store_files.read_ids(file)  # one string a line, like an id file
    if len(terms) != manifest["vocab_size"]:
        raise ValueError(
            f'{file}: has {len(terms)} terms, but field "vocab_size" of {root / MANIFEST} is '
            f"{manifest['vocab_size']}; the store is damaged, re-encode the corpus."
        )
    return terms


def _load_array(file: pathlib.Path, where: str, dtype: Any, length: int) -> np.ndarray:
    if not file.is_file():
        raise FileNotFoundError(
            f"{file}: listed in {where} but missing; re-encode the corpus (resume=False / "
            "--no-resume)."
        )
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"{file}: not a readable .npy file ({e}); re-encode the corpus.") from None
    if array.dtype != dtype or array.shape != (length,):
        raise ValueError(
            f"{file}: holds {array.dtype} {array.shape}, but {where} expects "
            f"{np.dtype(dtype).name} ({length},)."
        )
    return array


def load_sparse_store(path: str | os.PathLike[str]) -> SparseStore:
    """Reads a sparse store written by :func:`encode_sparse_corpus`.

    Args:
      path: the store directory (holding ``manifest.json``).

    Returns a :class:`SparseStore`: ``ids`` ``[N]``, ``matrix`` ``csr_matrix [N, V]``
    float32, ``terms`` ``[V]``, ``encoder`` (the recorded description), ``vocab_size``.

    Raises:
      FileNotFoundError: no manifest, or a file it lists is missing.
      ValueError: a dense store (naming :func:`jaxir.encode.load_embeddings`), an
        incomplete store (an interrupted run: resume it), a damaged manifest, or a
        shard whose arrays disagree with it (naming the file and the field).
    """
    root = pathlib.Path(path)
    manifest = _read_manifest(root)
    where = root / MANIFEST
    if not manifest.get("complete", False):
        raise ValueError(
            f"{where}: the store is incomplete ({manifest['count']} documents written before "
            "the run stopped); run the same encode command again with resume=True "
            "(--resume) to finish it."
        )
    vocab_size = manifest["vocab_size"]
    terms = _read_terms(root, manifest)
    ids: list[str] = []
    indptr_parts, indices_parts, values_parts = [np.zeros(1, np.int64)], [], []
    offset = 0
    for i, shard in enumerate(manifest["shards"]):
        count, nnz = int(shard["count"]), int(shard["nnz"])
        field = f"{where} (shards[{i}]"
        indptr = _load_array(root / shard["indptr"], f"{field}.count + 1)", np.int64, count + 1)
        indices = _load_array(root / shard["indices"], f"{field}.nnz)", np.int32, nnz)
        values = _load_array(root / shard["values"], f"{field}.nnz)", np.float32, nnz)
        if indptr[0] != 0 or indptr[-1] != nnz or (np.diff(indptr) < 0).any():
            raise ValueError(
                f"{root / shard['indptr']}: row pointers must rise from 0 to shards[{i}].nnz = "
                f"{nnz} in {where}; the shard is damaged, re-encode the corpus."
            )
        if nnz and (indices.min() < 0 or indices.max() >= vocab_size):
            raise ValueError(
                f"{root / shard['indices']}: term ids must lie in [0, {vocab_size}) "
                f'(field "vocab_size" of {where}); the shard is damaged, re-encode the corpus.'
            )
        if not np.isfinite(values).all():
            raise ValueError(
                f"{root / shard['values']}: holds NaN/inf weights; the shard is damaged, "
                "re-encode the corpus."
            )
        shard_ids = store_files.read_ids(root / shard["ids"])
        if len(shard_ids) != count:
            raise ValueError(
                f"{root / shard['ids']}: has {len(shard_ids)} ids, but {where} "
                f"(shards[{i}].count) expects {count}."
            )
        ids.extend(shard_ids)
        indptr_parts.append(indptr[1:] + offset)
        indices_parts.append(indices)
        values_parts.append(values)
        offset += nnz
    for name, got in (("count", len(ids)), ("nnz", offset)):
        if got != manifest[name]:
            raise ValueError(
                f'{where}: field "{name}" is {manifest[name]} but its shards hold {got}; the '
                "manifest is damaged, re-encode the corpus."
            )
    matrix = scipy.sparse.csr_matrix(
        (
            np.concatenate([np.zeros(0, np.float32), *values_parts]),
            np.concatenate([np.zeros(0, np.int32), *indices_parts]),
            np.concatenate(indptr_parts),
        ),
        shape=(len(ids), vocab_size),
    )
    return SparseStore(root, manifest, ids, matrix, terms)
