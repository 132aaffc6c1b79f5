"""The :class:`Searcher` contract, its on-disk manifest, and recall against exact search.

Every searcher in :mod:`jaxir.index` answers ``search(queries_qd, k)`` with
``(scores_qk, indices_qk)``: float32 inner products ``<q, d>`` (callers L2-normalize
both sides of a dense searcher for cosine similarity) and int32 row indices into the
corpus, best first. Dense searchers take ``[Q, D]`` arrays; the sparse
:class:`~jaxir.index.inverted.InvertedIndex` takes ``[Q, V]`` term weights (a
``scipy.sparse`` matrix or a dense array) and scores every document, so its results
hold documents of score 0 after the matching ones.
When ``k`` exceeds the number of documents (or an approximate searcher finds fewer
than ``k``), the missing slots hold index ``-1`` and score ``-inf``.

A saved searcher is a directory holding its own files plus ``searcher.json``::

    {"kind": "exact", "version": 1, "num_docs": 1000, "dim": 128, "metric": "dot_product", ...}

:func:`load_searcher` reads the manifest and dispatches on ``kind``; searcher modules
are imported lazily, so loading an exact searcher never imports ``scann``.

Example:
    >>> import tempfile
    >>> import numpy as np
    >>> from jaxir.index import ExactSearcher, load_searcher
    >>> docs_nd = np.eye(4, 8, dtype=np.float32)
    >>> path = tempfile.mkdtemp()
    >>> ExactSearcher(docs_nd).save(path)
    >>> searcher = load_searcher(path)
    >>> searcher.num_docs, searcher.dim
    (4, 8)
    >>> scores_qk, indices_qk = searcher.search(docs_nd[2:3], k=2)
    >>> int(indices_qk[0, 0]), float(scores_qk[0, 0])
    (2, 1.0)
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

from jaxir.reps.kinds import read_kind, resolve

MANIFEST = "searcher.json"
METRIC = "dot_product"

#: ``kind`` in ``searcher.json`` -> ``module:Class`` with a ``load(dir)`` classmethod.
SEARCHER_KINDS: dict[str, str] = {
    "exact": "jaxir.index.exact:ExactSearcher",
    "scann": "jaxir.index.scann_index:ScannSearcher",
    "inverted": "jaxir.index.inverted:InvertedIndex",
}

#: Representation kind (:mod:`jaxir.reps.kinds`) -> the searcher kinds that index it. A
#: new representation (a sparse store, a docid trie) registers its searchers here, and
#: ``jaxir index`` / ``export`` / ``search`` accept them with no new command.
SEARCHERS_FOR: dict[str, tuple[str, ...]] = {
    "dense": ("scann", "exact"),
    "sparse": ("inverted",),
}


def check_searcher_kind(representation: str, kind: str, where: str) -> None:
    """Raises ``ValueError`` unless ``kind`` searchers index ``representation`` vectors.

    Example:
      >>> check_searcher_kind("dense", "inverted", "store/manifest.json")
      Traceback (most recent call last):
      ...
      ValueError: store/manifest.json: a 'dense' store is indexed by ['scann', 'exact'], not 'inverted'
    """
    allowed = SEARCHERS_FOR.get(representation, ())
    if kind not in allowed:
        raise ValueError(
            f"{where}: a {representation!r} store is indexed by {list(allowed)}, not {kind!r}"
        )


class CorpusShape:
    """``num_docs`` / ``dim`` of a :class:`Searcher` that keeps them as ``_num_docs`` / ``_dim``."""

    _num_docs: int
    _dim: int

    @property
    def num_docs(self) -> int:
        """Rows ``N`` of the corpus."""
        return self._num_docs

    @property
    def dim(self) -> int:
        """Vector size ``D`` (for a sparse index, the vocabulary size ``V``)."""
        return self._dim


@runtime_checkable
class Searcher(Protocol):
    """Maximum-inner-product search over a fixed corpus of ``num_docs`` vectors of size ``dim``.

    ``dim`` is the vector size of a dense searcher and the vocabulary size ``V`` of a
    sparse one.
    """

    @property
    def num_docs(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def search(self, queries_qd: np.ndarray | jax.Array, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents per query.

        Args:
          queries_qd: ``[Q, dim]`` query vectors.
          k: neighbours per query (``k > num_docs`` pads with ``-1`` / ``-inf``).

        Returns:
          ``(scores_qk float32 [Q, k], indices_qk int32 [Q, k])``, best first.
        """
        ...

    def save(self, directory: str | pathlib.Path) -> None:
        """Writes the searcher and its ``searcher.json`` manifest into ``directory``."""
        ...


def write_manifest(
    directory: str | pathlib.Path,
    *,
    kind: str,
    version: int,
    num_docs: int,
    dim: int,
    representation: str = "dense",
    **extra: Any,
) -> pathlib.Path:
    """Writes ``directory/searcher.json`` with the common fields plus ``extra`` ones.

    ``kind`` is the searcher's own kind (:data:`SEARCHER_KINDS`), ``representation`` the
    kind of vectors it indexes (:data:`SEARCHERS_FOR`).

    Example:
      >>> import tempfile
      >>> path = write_manifest(tempfile.mkdtemp(), kind="exact", version=1, num_docs=3, dim=2)
      >>> read_manifest(path.parent)["num_docs"]
      3
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {
        "kind": kind,
        "representation": representation,
        "version": version,
        "num_docs": int(num_docs),
        "dim": int(dim),
        "metric": METRIC,
        **extra,
    }
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(directory: str | pathlib.Path) -> dict[str, Any]:
    """Reads and validates ``directory/searcher.json``.

    Raises:
      FileNotFoundError: no directory or no manifest in it.
      ValueError: the manifest is not a JSON object, lacks a field, or has a field of
        the wrong type or an unsupported ``metric``.
    """
    directory = pathlib.Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such searcher directory.")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing searcher manifest; a saved searcher directory holds "
            f"{MANIFEST} written by Searcher.save()."
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}, line {err.lineno}, column {err.colno}: corrupted manifest, not valid "
            f"JSON ({err.msg}); re-save the searcher."
        ) from err
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: corrupted manifest, expected a JSON object, got {manifest!r}.")
    for field, kind in (("kind", str), ("version", int), ("num_docs", int), ("dim", int)):
        if field not in manifest:
            raise ValueError(f"{path}: corrupted manifest, field {field!r} is missing.")
        if not isinstance(manifest[field], kind):
            raise ValueError(
                f"{path}: corrupted manifest, field {field!r} must be {kind.__name__}, "
                f"got {manifest[field]!r}."
            )
    if manifest.get("metric") != METRIC:
        raise ValueError(
            f"{path}: field 'metric' is {manifest.get('metric')!r}; jaxir searchers use "
            f"{METRIC!r} (normalize vectors for cosine)."
        )
    return manifest


def check_manifest(
    manifest: dict[str, Any], path: pathlib.Path, *, kind: str, version: int
) -> None:
    """Raises ``ValueError`` unless ``manifest`` is of ``kind`` at ``version``."""
    if manifest["kind"] != kind:
        raise ValueError(
            f"{path / MANIFEST}: field 'kind' is {manifest['kind']!r}, expected {kind!r}; "
            "use jaxir.index.load_searcher() to dispatch on kind."
        )
    if manifest["version"] != version:
        raise ValueError(
            f"{path / MANIFEST}: field 'version' is {manifest['version']}, this jaxir reads "
            f"version {version} of {kind!r} searchers; re-save it with this version."
        )


def load_searcher(directory: str | pathlib.Path) -> Searcher:
    """Loads a saved searcher, dispatching on the ``kind`` in its ``searcher.json``.

    Raises:
      FileNotFoundError: missing directory, manifest, or a file the searcher needs.
      ValueError: corrupted manifest or an unknown ``kind``.
    """
    directory = pathlib.Path(directory)
    manifest = read_manifest(directory)
    target = SEARCHER_KINDS.get(manifest["kind"])
    if target is None:
        raise ValueError(
            f"{directory / MANIFEST}: field 'kind' is {manifest['kind']!r}; known kinds: "
            f"{sorted(SEARCHER_KINDS)}."
        )
    representation = read_kind(
        manifest, directory / MANIFEST, SEARCHERS_FOR, field="representation"
    )
    check_searcher_kind(representation, manifest["kind"], str(directory / MANIFEST))
    return resolve(target).load(directory)


def build_searcher(kind: str, docs: Any, **options: Any) -> Searcher:
    """A new searcher of ``kind`` (:data:`SEARCHER_KINDS`) over ``docs``.

    The kind's class is built with its ``build(docs, **options)`` classmethod when it
    has one (ScaNN trains a partitioning), else with its constructor.

    Args:
      kind: ``"exact"``, ``"scann"`` (dense ``[N, D]`` float arrays) or ``"inverted"``
        (a ``scipy.sparse`` ``[N, V]`` matrix of non-negative weights).
      docs: the document vectors.
      **options: the class's keyword arguments (e.g. ``num_leaves`` for ScaNN,
        ``block_size`` for the inverted index).

    Example:
      >>> searcher = build_searcher("exact", np.eye(3, 4, dtype=np.float32))
      >>> searcher.num_docs, searcher.dim
      (3, 4)
    """
    target = SEARCHER_KINDS.get(kind)
    if target is None:
        raise ValueError(f"searcher kind {kind!r}: known kinds are {sorted(SEARCHER_KINDS)}")
    cls = resolve(target)
    build = getattr(cls, "build", None)
    return build(docs, **options) if build is not None else cls(docs, **options)


def file_sha256(path: str | pathlib.Path) -> str:
    """Hex SHA-256 of a file, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def recall_against(exact_indices_qk: np.ndarray, approx_indices_qk: np.ndarray) -> float:
    """Mean recall@k of approximate results against exact ones (``-1`` slots ignored).

    ``recall = mean_q |exact_q ∩ approx_q| / |exact_q|`` where ``exact_q`` are the valid
    (``!= -1``) exact indices of query ``q``; queries with no valid exact index are skipped.

    Args:
      exact_indices_qk: ``[Q, k]`` indices from exact search.
      approx_indices_qk: ``[Q, k']`` indices from the searcher under test.

    Example:
      >>> recall_against(np.array([[0, 1], [2, 3]]), np.array([[1, 0], [2, 5]]))
      0.75
    """
    exact = np.asarray(exact_indices_qk)
    approx = np.asarray(approx_indices_qk)
    if exact.ndim != 2 or approx.ndim != 2 or exact.shape[0] != approx.shape[0]:
        raise ValueError(
            f"recall_against expects two [Q, k] arrays with the same Q; got "
            f"{exact.shape} and {approx.shape}."
        )
    valid = exact >= 0
    hits = (exact[:, :, None] == approx[:, None, :]).any(-1) & valid
    counts = valid.sum(1)
    keep = counts > 0
    if not keep.any():
        return 1.0
    return float(np.mean(hits.sum(1)[keep] / counts[keep]))
