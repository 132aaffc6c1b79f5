"""Hybrid retrieval by rank fusion: reciprocal-rank fusion and convex score combinations.

Several retrievers of one collection (BM25, dense, SPLADE, ...) each give a
:data:`~jaxir.data.runs.Run` (``run[query_id][doc_id] = score``); fusion merges them
into one run per query, which is evaluated like any other
(:func:`jaxir.eval.evaluate`).

* :func:`reciprocal_rank_fusion` (Cormack, Clarke & Buettcher, SIGIR 2009): each
  system votes ``w_s / (k + rank_s(d))`` for every document it ranks; scores are
  ignored, so systems on incomparable scales fuse without calibration.
* :func:`convex_fusion`: ``sum_s w_s * norm_s(score_s(d))`` with per-query, per-system
  score normalization (:func:`normalize_scores`: min-max, z-score or none) and
  weights on the simplex. Bruch, Gai & Ingber (TOIS 2023, "An Analysis of Fusion
  Functions for Hybrid Retrieval") find a tuned convex combination of min-max scores
  at least as good as RRF and less sensitive to its parameter.
* :func:`tune_fusion` picks the weights (and RRF's ``k``) by grid search on the
  queries of a dev qrels (:func:`weight_simplex`, :class:`FusionGrid`), scoring every
  candidate with :func:`jaxir.eval.evaluate`; it returns a :class:`FusionChoice` with
  the full candidate table.
* :func:`fuse_results` fuses one query's ranked ``(doc_id, score)`` lists, for online
  search over several serving bundles.

Conventions shared by every function here:

* **Rank**: each system's list for a query is ordered by score descending, ties by doc
  id ascending (the order :func:`~jaxir.data.runs.write_trec_run` writes), and ranked
  from 1. Only its best ``depth`` documents take part.
* **Missing documents**: a document that a system did not return for a query gets 0
  from it under RRF, and the system's *minimum normalized score for that query* under
  convex fusion (the usual choice, cf. Bruch et al. 2023): not being retrieved counts
  like being retrieved last. A system with no list for a query (the query is absent
  from its run, or its list is empty) contributes the same constant 0 to every
  document of that query, so it does not change the ranking.
* **Queries**: the fused run answers the union of the runs' queries, in first-seen
  order (systems in the mapping's order).
* **Ties in the fused score**: doc id ascending. This decides which documents survive
  the ``depth`` cut and the order of each returned dict (and so of a written file).
  The fused scores themselves stay equal, and :func:`jaxir.eval.evaluate`, like
  trec_eval, orders equal scores by doc id descending when it measures.
* **Determinism**: systems are summed in the order of their sorted names, so the
  result does not depend on the order of the ``runs`` mapping, bit for bit.

Shapes: per query, ``U`` is the number of distinct documents in the systems' top
``depth`` lists and ``S`` the number of systems; the contributions form an ``[S, U]``
matrix and tuning scores ``[C, U]`` candidates at once.

Example:
    >>> bm25 = {"q1": {"d1": 12.0, "d2": 9.5, "d3": 3.0}}
    >>> dense = {"q1": {"d2": 0.91, "d4": 0.80, "d1": 0.20}}
    >>> fused = reciprocal_rank_fusion({"bm25": bm25, "dense": dense}, k=60)
    >>> list(fused["q1"])  # d2: 1/62 + 1/61 beats d1: 1/61 + 1/63
    ['d2', 'd1', 'd4', 'd3']
    >>> round(fused["q1"]["d2"], 6) == round(1 / 62 + 1 / 61, 6)
    True
    >>> convex = convex_fusion({"bm25": bm25, "dense": dense}, {"bm25": 0.5, "dense": 0.5})
    >>> {d: round(s, 4) for d, s in convex["q1"].items()}
    {'d2': 0.8611, 'd1': 0.5, 'd4': 0.4225, 'd3': 0.0}
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from jaxir.data.runs import Run

__all__ = [
    "DEFAULT_RRF_K",
    "METHODS",
    "NORMALIZATIONS",
    "FusionCandidate",
    "FusionChoice",
    "FusionGrid",
    "convex_fusion",
    "fuse_results",
    "fuse_runs",
    "normalize_scores",
    "reciprocal_rank_fusion",
    "tune_fusion",
    "weight_simplex",
]

METHODS: tuple[str, ...] = ("rrf", "convex")
"""Fusion methods: reciprocal-rank fusion and the convex combination of normalized scores."""

NORMALIZATIONS: tuple[str, ...] = ("minmax", "zscore", "none")
"""Per-query score normalizations of :func:`convex_fusion`."""

DEFAULT_RRF_K = 60
"""RRF's constant in Cormack et al. (2009)."""

_WEIGHT_TOLERANCE = 1e-6
# Candidate runs built at once while tuning, counted in (query, document) entries.
_TUNE_ENTRIES_PER_CHUNK = 2_000_000

RunLike = Mapping[str, Mapping[str, float]]


# --------------------------------------------------------------------------- checks


def _system_names(runs: Mapping[str, RunLike]) -> list[str]:
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError(
            "runs must be a non-empty mapping {system name: run}, e.g. "
            "{'bm25': bm25_run, 'dense': dense_run}"
        )
    for name, run in runs.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"system names must be non-empty strings, got {name!r}")
        if not isinstance(run, Mapping):
            raise ValueError(
                f"run {name!r} is a {type(run).__name__}; expected {{query_id: {{doc_id: score}}}}"
            )
    return sorted(runs)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r}; expected one of {list(METHODS)}")


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"unknown normalization {normalization!r}; expected one of {list(NORMALIZATIONS)}"
        )


def _check_k(k: float) -> None:
    if (
        isinstance(k, bool)
        or not isinstance(k, (int, float, np.integer, np.floating))
        or not math.isfinite(k)
        or k < 0
    ):
        raise ValueError(f"RRF's k must be a finite number >= 0 (60 is usual), got {k!r}")


def _check_depth(depth: int) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")


def _format_weights(weights: Mapping[str, float]) -> str:
    return ",".join(f"{name}={weight:g}" for name, weight in weights.items())


def _weight_vector(
    names: Sequence[str], weights: Mapping[str, float] | None, *, convex: bool
) -> np.ndarray:
    """``[S]`` weights in ``names`` order; ``None`` means equal weights."""
    if weights is None:
        return np.full(len(names), 1.0 / len(names) if convex else 1.0)
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(
            f"weights name systems that are not among the runs: {unknown}; the systems are "
            f"{list(names)}"
        )
    missing = [name for name in names if name not in weights]
    if missing:
        raise ValueError(
            f"no weight for systems {missing}; give one weight per system "
            f"({', '.join(names)}), 0 to leave a system out"
        )
    vector = np.empty(len(names))
    for i, name in enumerate(names):
        value = weights[name]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"weight of {name!r} must be a number, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"weight of {name!r} must be finite and >= 0, got {value!r}")
        vector[i] = value
    total = float(vector.sum())
    if total <= 0:
        raise ValueError(f"at least one weight must be > 0, got {_format_weights(weights)}")
    if convex and abs(total - 1.0) > _WEIGHT_TOLERANCE:
        scaled = {name: round(float(w) / total, 4) for name, w in zip(names, vector)}
        raise ValueError(
            f"convex fusion weights must sum to 1, got {_format_weights(weights)} "
            f"(sum {total:g}); scaling them does not change the ranking, so pass e.g. "
            f"{_format_weights(scaled)}"
        )
    return vector


# --------------------------------------------------------------------------- ranked lists


@dataclasses.dataclass(frozen=True)
class _QueryLists:
    """One query's per-system top-``depth`` lists over the union of their documents.

    ``doc_ids [U]`` is sorted ascending, so a document's index is also its doc-id
    order; ``positions[s] [n_s]`` are the union indices of system ``s``'s list and
    ``scores[s] [n_s]`` its scores, best first (rank ``i + 1`` at index ``i``).
    """

    doc_ids: np.ndarray
    positions: tuple[np.ndarray, ...]
    scores: tuple[np.ndarray, ...]


def _ranked_lists(
    runs: Mapping[str, RunLike],
    names: Sequence[str],
    depth: int,
    query_ids: Sequence[str] | None = None,
) -> list[tuple[str, _QueryLists]]:
    """Every query's :class:`_QueryLists` (default queries: the union, first-seen order)."""
    if query_ids is None:
        query_ids = list(dict.fromkeys(q for run in runs.values() for q in run))
    empty = np.array([], dtype=str)
    out = []
    for qid in query_ids:
        ids_s, scores_s = [], []
        for name in names:
            docs = runs[name].get(qid) or {}
            ids = np.array([str(d) for d in docs], dtype=str) if docs else empty
            scores = np.fromiter(docs.values(), dtype=np.float64, count=len(docs))
            if not np.isfinite(scores).all():
                bad = str(ids[~np.isfinite(scores)][0])
                raise ValueError(
                    f"run {name!r}, query {qid!r}: document {bad!r} has score "
                    f"{docs[bad]!r}; fusion needs finite scores (fix the run that wrote it)"
                )
            order = np.lexsort((ids, -scores))[:depth]
            ids_s.append(ids[order])
            scores_s.append(scores[order])
        union = np.unique(np.concatenate(ids_s))
        positions = tuple(np.searchsorted(union, ids) for ids in ids_s)
        out.append((str(qid), _QueryLists(union, positions, tuple(scores_s))))
    return out


def normalize_scores(scores: np.ndarray, normalization: str = "minmax") -> np.ndarray:
    """One system's scores for one query, normalized (``[n] -> [n]`` float64).

    * ``"minmax"``: ``(s - min) / (max - min)``, in ``[0, 1]``;
    * ``"zscore"``: ``(s - mean) / std`` (population std);
    * ``"none"``: the scores unchanged.

    All-equal scores (one document included) carry no order, so ``"minmax"`` and
    ``"zscore"`` map them to zeros rather than dividing by zero: never NaN. An empty
    input gives an empty output.

    >>> normalize_scores(np.array([3.0, 1.0, 2.0]))
    array([1. , 0. , 0.5])
    >>> normalize_scores(np.array([1.0, 3.0]), "zscore")
    array([-1.,  1.])
    >>> normalize_scores(np.array([0.7, 0.7]), "zscore")
    array([0., 0.])
    """
    _check_normalization(normalization)
    x = np.asarray(scores, dtype=np.float64)
    if normalization == "none" or x.size == 0:
        return x.copy()
    lo, hi = x.min(), x.max()
    if not hi > lo:  # all equal (or a single document)
        return np.zeros_like(x)
    if normalization == "minmax":
        return (x - lo) / (hi - lo)
    return (x - x.mean()) / x.std()


def _rrf_matrix(lists: _QueryLists, k: float) -> np.ndarray:
    """``[S, U]`` ``1 / (k + rank)`` per system, 0 where a system lacks the document."""
    m = np.zeros((len(lists.positions), lists.doc_ids.size))
    for s, pos in enumerate(lists.positions):
        m[s, pos] = 1.0 / (k + np.arange(1, pos.size + 1, dtype=np.float64))
    return m


def _convex_matrix(lists: _QueryLists, normalization: str) -> np.ndarray:
    """``[S, U]`` normalized scores, a system's minimum where it lacks the document."""
    m = np.zeros((len(lists.positions), lists.doc_ids.size))
    for s, (pos, scores) in enumerate(zip(lists.positions, lists.scores)):
        if pos.size:
            normalized = normalize_scores(scores, normalization)
            m[s] = normalized.min()
            m[s, pos] = normalized
    return m


def _combine(weights_cs: np.ndarray, m_su: np.ndarray) -> np.ndarray:
    """``[C, U] = sum_s weights[:, s] * m[s]``, summed system by system.

    An explicit sum in a fixed order (not a BLAS matmul) so one candidate's scores are
    bit-identical whether it is fused alone or inside a tuning batch.
    """
    fused = np.zeros((weights_cs.shape[0], m_su.shape[1]))
    for s in range(m_su.shape[0]):
        fused += weights_cs[:, s, None] * m_su[s][None, :]
    return fused


def _top(fused_u: np.ndarray, depth: int, cutoff: int | None = None) -> np.ndarray:
    """Indices of the kept documents, best first (score desc, then index = doc id asc).

    Without ``cutoff``: the best ``depth``. With ``cutoff < depth`` (tuning on a metric
    that reads only the top ``cutoff``): every document scoring at least the
    ``cutoff``-th best score, which gives that metric the same value as the full
    ``depth`` list under any tie order, at the cost of a partition instead of a sort.
    """
    n = fused_u.size
    keep = min(depth, n)
    if cutoff is not None and cutoff < keep:
        threshold = np.partition(fused_u, n - cutoff)[n - cutoff]
        candidates = np.flatnonzero(fused_u >= threshold)
        if candidates.size <= keep:
            return candidates[np.argsort(-fused_u[candidates], kind="stable")]
    return np.argsort(-fused_u, kind="stable")[:keep]


def _as_docs(doc_ids: np.ndarray, fused_u: np.ndarray, order: np.ndarray) -> dict[str, float]:
    return dict(zip(doc_ids[order].tolist(), fused_u[order].tolist()))


def _fuse(
    runs: Mapping[str, RunLike],
    weights: Mapping[str, float] | None,
    *,
    method: str,
    k: float,
    normalization: str,
    depth: int,
) -> Run:
    _check_method(method)
    _check_depth(depth)
    names = _system_names(runs)
    if method == "rrf":
        _check_k(k)
    else:
        _check_normalization(normalization)
    w = _weight_vector(names, weights, convex=method == "convex")[None, :]
    fused: Run = {}
    for qid, lists in _ranked_lists(runs, names, depth):
        if method == "rrf":
            m = _rrf_matrix(lists, k)
        else:
            m = _convex_matrix(lists, normalization)
        scores = _combine(w, m)[0]
        fused[qid] = _as_docs(lists.doc_ids, scores, _top(scores, depth))
    return fused


# --------------------------------------------------------------------------- fusion


def reciprocal_rank_fusion(
    runs: Mapping[str, RunLike],
    *,
    k: float = DEFAULT_RRF_K,
    weights: Mapping[str, float] | None = None,
    depth: int = 1000,
) -> Run:
    """Reciprocal-rank fusion: ``score(d) = sum_s w_s / (k + rank_s(d))``.

    Cormack, Clarke & Buettcher (SIGIR 2009). Ranks start at 1 and come from each
    system's scores (descending, ties by doc id ascending); a document missing from a
    system's top ``depth`` gets 0 from it. Only ranks matter, so runs with
    incomparable score scales fuse directly.

    Args:
      runs: ``{system name: run}``, each ``run[query_id][doc_id] = score``.
      k: the smoothing constant (>= 0); larger ``k`` flattens the rank discount.
      weights: ``{system: w_s >= 0}`` naming every system (any positive scale; the
        ranking is invariant to it); ``None``: 1 each (plain RRF). A weight of 0 drops
        a system's votes; its documents still join the union, scored by the others.
      depth: each system's best ``depth`` documents take part, and the fused list
        keeps the best ``depth``.

    Returns:
      The fused run over the union of the queries, each query's documents best first
      (equal fused scores by doc id ascending).

    Raises:
      ValueError: on an empty ``runs``, a weight naming an unknown system or missing a
        system, a negative or non-finite weight or ``k``, and non-finite scores.

    Example:
      >>> a = {"q": {"x": 3.0, "y": 2.0}}
      >>> b = {"q": {"y": 0.9, "z": 0.1}, "q2": {"x": 1.0}}
      >>> fused = reciprocal_rank_fusion({"a": a, "b": b}, k=0)
      >>> fused["q"]  # y: 1/2 + 1/1; x: 1/1; z: 1/2
      {'y': 1.5, 'x': 1.0, 'z': 0.5}
      >>> fused["q2"]
      {'x': 1.0}
      >>> reciprocal_rank_fusion({"a": a, "b": b}, k=0, weights={"a": 3, "b": 1})["q"]
      {'x': 3.0, 'y': 2.5, 'z': 0.5}
    """
    return _fuse(runs, weights, method="rrf", k=k, normalization="none", depth=depth)


def convex_fusion(
    runs: Mapping[str, RunLike],
    weights: Mapping[str, float] | None,
    *,
    normalization: str = "minmax",
    depth: int = 1000,
) -> Run:
    """Convex combination of normalized scores: ``score(d) = sum_s w_s * norm_s(d)``.

    Each system's scores are normalized per query over its top ``depth`` list
    (:func:`normalize_scores`); a document the system did not return gets the
    system's minimum normalized score for that query (Bruch et al. 2023: not being
    retrieved counts as being retrieved last). A system with no list for a query
    adds 0 to all of that query's documents.

    Args:
      runs: ``{system name: run}``, each ``run[query_id][doc_id] = score``.
      weights: ``{system: w_s >= 0}`` naming every system and summing to 1 (within
        1e-6; weights that do not are an error, not rescaled, since they usually mean
        a typo); ``None``: ``1 / S`` each.
      normalization: ``"minmax"`` (default), ``"zscore"`` or ``"none"`` (raw scores:
        only for systems already on one scale).
      depth: each system's best ``depth`` documents take part, and the fused list
        keeps the best ``depth``.

    Returns:
      The fused run over the union of the queries, best first (ties by doc id).

    Raises:
      ValueError: as :func:`reciprocal_rank_fusion`, plus weights not summing to 1
        (the message shows the rescaled weights) and an unknown ``normalization``.

    Example:
      >>> a = {"q": {"x": 10.0, "y": 5.0, "z": 0.0}}
      >>> b = {"q": {"y": 0.8, "w": 0.4}}
      >>> convex_fusion({"a": a, "b": b}, {"a": 0.25, "b": 0.75})["q"]  # w, z: missing
      {'y': 0.875, 'x': 0.25, 'w': 0.0, 'z': 0.0}
    """
    return _fuse(
        runs, weights, method="convex", k=DEFAULT_RRF_K, normalization=normalization, depth=depth
    )


def fuse_runs(
    runs: Mapping[str, RunLike],
    *,
    method: str,
    weights: Mapping[str, float] | None = None,
    k: float = DEFAULT_RRF_K,
    normalization: str = "minmax",
    depth: int = 1000,
) -> Run:
    """:func:`reciprocal_rank_fusion` (``method="rrf"``) or :func:`convex_fusion` (``"convex"``).

    ``k`` applies to RRF only and ``normalization`` to convex fusion only.

    >>> fuse_runs({"a": {"q": {"x": 1.0}}}, method="rrf", k=1)
    {'q': {'x': 0.5}}
    """
    return _fuse(runs, weights, method=method, k=k, normalization=normalization, depth=depth)


def fuse_results(
    results: Mapping[str, Sequence[tuple[str, float]]],
    *,
    method: str,
    weights: Mapping[str, float] | None = None,
    k: float = DEFAULT_RRF_K,
    normalization: str = "minmax",
    depth: int = 1000,
) -> list[tuple[str, float]]:
    """Fuse one query's ranked lists, e.g. from several bundles' ``Bundle.search``.

    Args:
      results: ``{system: [(doc_id, score), ...]}``, one list per system for the same
        query (any order; ranks come from the scores).
      method, weights, k, normalization, depth: as :func:`fuse_runs`.

    Returns:
      ``[(doc_id, fused score), ...]`` best first, at most ``depth`` long.

    Raises:
      ValueError: as :func:`fuse_runs`, and when a list names a document twice.

    Example:
      >>> fuse_results({"bm25": [("d1", 7.1), ("d2", 3.0)], "dense": [("d2", 0.9)]},
      ...              method="rrf", k=0)
      [('d2', 1.5), ('d1', 1.0)]
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping {system: [(doc_id, score), ...]}")
    runs: dict[str, Run] = {}
    for name, ranked in results.items():
        docs: dict[str, float] = {}
        for item in ranked:
            doc_id, score = item
            if doc_id in docs:
                raise ValueError(
                    f"system {name!r} lists document {doc_id!r} twice; each system ranks a "
                    "document once per query"
                )
            docs[doc_id] = float(score)
        runs[name] = {"query": docs}
    fused = fuse_runs(
        runs, method=method, weights=weights, k=k, normalization=normalization, depth=depth
    )
    return list(fused.get("query", {}).items())


# --------------------------------------------------------------------------- tuning


def _grid_divisions(step: float) -> int:
    """``n = 1 / step``, checking that ``step`` is in ``(0, 1]`` and divides 1."""
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step <= 1:
        raise ValueError(f"weight step must be a number in (0, 1], got {step!r}")
    n = round(1 / step)
    if abs(n * step - 1) > 1e-9:
        raise ValueError(f"weight step {step!r} must divide 1 (0.5, 0.25, 0.2, 0.1, 0.05, ...)")
    return n


def weight_simplex(num_systems: int, step: float = 0.1) -> np.ndarray:
    """``[C, S]`` every weight vector with entries multiples of ``step`` summing to 1.

    ``C = comb(1/step + S - 1, S - 1)``: 11 for 2 systems at step 0.1, 66 for 3, 286 for
    4. The corners (one system alone) are included, so tuning can decline to fuse.
    Entries are ``count / n`` with ``n = 1/step``, so 0.3 is exactly ``3 / 10``.

    >>> weight_simplex(2, 0.5)
    array([[0. , 1. ],
           [0.5, 0.5],
           [1. , 0. ]])
    >>> weight_simplex(3, 0.1).shape
    (66, 3)
    """
    if isinstance(num_systems, bool) or not isinstance(num_systems, int) or num_systems < 1:
        raise ValueError(f"num_systems must be an integer >= 1, got {num_systems!r}")
    n = _grid_divisions(step)
    rows = []
    # Stars and bars: S - 1 bar positions among n + S - 1 slots give the counts.
    for bars in itertools.combinations(range(n + num_systems - 1), num_systems - 1):
        edges = (-1, *bars, n + num_systems - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(num_systems)])
    return np.array(rows, dtype=np.float64) / n


@dataclasses.dataclass(frozen=True)
class FusionGrid:
    """The candidates :func:`tune_fusion` tries.

    Attributes:
      weight_step: weights are the points of :func:`weight_simplex` at this step.
      ks: RRF constants tried (RRF only); each pairs with every weight vector.
      max_candidates: refuse grids larger than this (a finer step or many systems
        grow combinatorially); raise it deliberately.
    """

    weight_step: float = 0.1
    ks: tuple[float, ...] = (10, 20, 40, 60, 100)
    max_candidates: int = 5000

    def __post_init__(self) -> None:
        _grid_divisions(self.weight_step)
        if not self.ks:
            raise ValueError("FusionGrid.ks is empty; give at least one RRF k (e.g. (60,))")
        for k in self.ks:
            _check_k(k)
        if len(set(self.ks)) != len(self.ks):
            raise ValueError(f"FusionGrid.ks lists a value twice: {self.ks}")


@dataclasses.dataclass(frozen=True)
class FusionCandidate:
    """One point of the tuning grid and its mean metric on the dev queries.

    ``k`` is ``None`` for convex fusion.
    """

    weights: dict[str, float]
    k: float | None
    score: float


@dataclasses.dataclass(frozen=True)
class FusionChoice:
    """What :func:`tune_fusion` chose, and the table it chose from.

    Attributes:
      method: ``"rrf"`` or ``"convex"``.
      weights: ``{system: weight}`` of the best candidate (system names sorted).
      k: RRF's constant of the best candidate; ``None`` for convex fusion.
      normalization: the convex normalization used; ``None`` for RRF.
      metric: the ir_measures name tuned on (e.g. ``"nDCG@10"``).
      score_on_dev: the best candidate's mean ``metric`` over the dev queries.
      num_queries: dev queries the metric averages over (all queries of the qrels).
      candidates: every candidate, best first (see :func:`tune_fusion` for the order).
    """

    method: str
    weights: dict[str, float]
    k: float | None
    normalization: str | None
    metric: str
    score_on_dev: float
    num_queries: int
    candidates: tuple[FusionCandidate, ...]

    def fuse(self, runs: Mapping[str, RunLike], *, depth: int = 1000) -> Run:
        """Apply the chosen fusion to ``runs`` (e.g. the test queries' runs)."""
        return fuse_runs(
            runs,
            method=self.method,
            weights=self.weights,
            k=DEFAULT_RRF_K if self.k is None else self.k,
            normalization=self.normalization or "minmax",
            depth=depth,
        )


def _metric_cutoff(metric: str) -> int | None:
    """The rank cutoff of an ir_measures name (``"nDCG@10"`` -> 10; ``"AP"`` -> None)."""
    import ir_measures

    try:
        measure = ir_measures.parse_measure(metric)
    except (ValueError, NameError, SyntaxError, TypeError) as err:
        raise ValueError(
            f"tuning metric {metric!r} is not an ir_measures measure; expected names like "
            "'nDCG@10', 'RR@10', 'R@100', 'AP'"
        ) from err
    cutoff = measure.params.get("cutoff")
    return int(cutoff) if cutoff is not None else None


def tune_fusion(
    runs: Mapping[str, RunLike],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    method: str,
    metric: str = "nDCG@10",
    grid: FusionGrid = FusionGrid(),  # frozen, so a shared default is safe
    normalization: str = "minmax",
    depth: int = 1000,
) -> FusionChoice:
    """Choose fusion weights (and RRF's ``k``) by grid search on dev queries.

    Every candidate (each weight vector of ``weight_simplex(S, grid.weight_step)``,
    times each ``k`` in ``grid.ks`` for RRF) fuses the runs on the queries of ``qrels``
    only, exactly as :func:`fuse_runs` would, and is scored with
    :func:`jaxir.eval.evaluate` (mean over all qrels queries; a query no run answers
    scores 0 for every candidate). Per query the candidates are scored as one
    ``[C, U]`` array; for a metric with a cutoff (``@10``) only the documents that can
    reach the top ``cutoff`` are handed to the evaluator, which gives the same value.

    The candidates are ordered by score descending; equal scores prefer weights
    closer to uniform (the less tuned choice), then for RRF the ``k`` closest to 60,
    then the weight vector (sorted system names) and ``k`` ascending. The result
    depends only on the inputs, not on the order of ``runs``.

    Args:
      runs: ``{system: run}``; each run must answer (some of) the dev queries.
      qrels: the dev judgements ``{query_id: {doc_id: grade}}``; keep its queries
        disjoint from the queries you report test numbers on.
      method: ``"rrf"`` or ``"convex"``.
      metric: one ir_measures name to maximize.
      grid: the candidates (:class:`FusionGrid`).
      normalization: the convex normalization (not tuned; ignored for RRF).
      depth: as :func:`fuse_runs`.

    Returns:
      The :class:`FusionChoice`, with every candidate's dev score in ``candidates``.

    Raises:
      ValueError: on empty qrels, no dev query in any run, an unknown metric, a grid
        over ``grid.max_candidates``, and the errors of :func:`fuse_runs`.

    Example:
      >>> runs = {"good": {"q": {"rel": 2.0, "x": 1.0}}, "bad": {"q": {"x": 5.0, "rel": 1.0}}}
      >>> choice = tune_fusion(runs, {"q": {"rel": 1}}, method="convex",
      ...                      grid=FusionGrid(weight_step=0.5))
      >>> choice.weights, choice.score_on_dev, len(choice.candidates)
      ({'bad': 0.0, 'good': 1.0}, 1.0, 3)
    """
    # Tuning needs the reference evaluator (jaxir.eval sits after search in the data
    # flow); it is imported here so fusion itself does not depend on it.
    from jaxir.eval.evaluate import evaluate

    _check_method(method)
    _check_depth(depth)
    names = _system_names(runs)
    if method == "convex":
        _check_normalization(normalization)
    if not qrels:
        raise ValueError("the dev qrels are empty; tuning needs judged dev queries")
    cutoff = _metric_cutoff(metric)
    divisions = _grid_divisions(grid.weight_step)
    num_candidates = math.comb(divisions + len(names) - 1, len(names) - 1)
    ks: tuple[float | None, ...] = tuple(grid.ks) if method == "rrf" else (None,)
    if num_candidates * len(ks) > grid.max_candidates:
        raise ValueError(
            f"the grid has {num_candidates * len(ks)} candidates ({len(names)} systems at "
            f"weight step {grid.weight_step}, {len(ks)} k values), over "
            f"max_candidates={grid.max_candidates}; use a coarser weight_step or fewer ks"
        )
    weights_cs = weight_simplex(len(names), grid.weight_step)
    counts_cs = np.rint(weights_cs * divisions).astype(np.int64)
    answered = {q for run in runs.values() for q in run}
    dev_queries = [str(q) for q in qrels if str(q) in answered]
    if not dev_queries:
        raise ValueError(
            f"none of the {len(qrels)} dev qrels queries is answered by any run; search the "
            "dev queries with every system (the runs must cover the tuning split)"
        )
    lists = _ranked_lists(runs, names, depth, dev_queries)
    kept = sum(min(q.doc_ids.size, depth, cutoff or depth) for _, q in lists)
    chunk = max(1, min(len(weights_cs), _TUNE_ENTRIES_PER_CHUNK // max(kept, 1)))

    rows: list[tuple[tuple, FusionCandidate]] = []
    for k in ks:
        for start in range(0, len(weights_cs), chunk):
            w_cs = weights_cs[start : start + chunk]
            fused_runs: list[Run] = [{} for _ in range(len(w_cs))]
            for qid, q in lists:
                m = _rrf_matrix(q, k) if k is not None else _convex_matrix(q, normalization)
                fused_cu = _combine(w_cs, m)
                for c, fused_u in enumerate(fused_cu):
                    fused_runs[c][qid] = _as_docs(q.doc_ids, fused_u, _top(fused_u, depth, cutoff))
            for c, fused in enumerate(fused_runs):
                score = next(iter(evaluate(fused, qrels, [metric]).values()))
                counts = counts_cs[start + c]
                spread = int(((len(names) * counts - counts.sum()) ** 2).sum())
                key = (
                    -score,
                    spread,
                    0.0 if k is None else abs(k - DEFAULT_RRF_K),
                    tuple(counts.tolist()),
                    0.0 if k is None else k,
                )
                weights = {n: float(w) for n, w in zip(names, w_cs[c])}
                rows.append((key, FusionCandidate(weights, k, score)))
    rows.sort(key=lambda row: row[0])
    candidates = tuple(candidate for _, candidate in rows)
    best = candidates[0]
    return FusionChoice(
        method=method,
        weights=dict(best.weights),
        k=best.k,
        normalization=normalization if method == "convex" else None,
        metric=metric,
        score_on_dev=best.score,
        num_queries=len(qrels),
        candidates=candidates,
    )
