"""Rank fusion (jaxir.search.fusion): RRF and convex values by hand, edge cases, tuning."""

import itertools
import math

import numpy as np
import pytest

from jaxir.eval.evaluate import evaluate
from jaxir.search.fusion import (
    FusionGrid,
    convex_fusion,
    fuse_results,
    fuse_runs,
    normalize_scores,
    reciprocal_rank_fusion,
    tune_fusion,
    weight_simplex,
)

BM25 = {"q1": {"d1": 12.0, "d2": 9.5, "d3": 3.0}, "q2": {"d5": 4.0, "d6": 2.0}}
DENSE = {"q1": {"d2": 0.91, "d4": 0.80, "d1": 0.20}, "q3": {"d7": 0.5}}


# --------------------------------------------------------------------------- RRF


def test_rrf_matches_hand_computed_scores_and_order():
    fused = reciprocal_rank_fusion({"bm25": BM25, "dense": DENSE}, k=60)
    expected_q1 = {
        "d2": 1 / 62 + 1 / 61,
        "d1": 1 / 61 + 1 / 63,
        "d4": 1 / 62,  # missing from bm25: 0 from it
        "d3": 1 / 63,
    }
    assert list(fused["q1"]) == ["d2", "d1", "d4", "d3"]
    assert fused["q1"] == pytest.approx(expected_q1, rel=1e-15)
    # Queries: the union in first-seen order; a single system's list is ranked alone.
    assert list(fused) == ["q1", "q2", "q3"]
    assert fused["q2"] == pytest.approx({"d5": 1 / 61, "d6": 1 / 62})
    assert fused["q3"] == pytest.approx({"d7": 1 / 61})


def test_weighted_rrf_and_k():
    runs = {"bm25": BM25, "dense": DENSE}
    fused = reciprocal_rank_fusion(runs, k=10, weights={"bm25": 0.9, "dense": 0.1})
    assert fused["q1"] == pytest.approx(
        {"d1": 0.9 / 11 + 0.1 / 13, "d2": 0.9 / 12 + 0.1 / 11, "d3": 0.9 / 13, "d4": 0.1 / 12}
    )
    assert list(fused["q1"]) == ["d1", "d2", "d3", "d4"]  # bm25's weight lifts d1 over d2
    # A zero weight removes a system; the ranking is invariant to the weights' scale.
    alone = reciprocal_rank_fusion(runs, weights={"bm25": 1, "dense": 0})
    assert list(alone["q1"]) == ["d1", "d2", "d3", "d4"]
    scaled = reciprocal_rank_fusion(runs, weights={"bm25": 4, "dense": 4})
    plain = reciprocal_rank_fusion(runs)
    assert {q: list(d) for q, d in scaled.items()} == {q: list(d) for q, d in plain.items()}


def test_rrf_ties_are_broken_by_doc_id():
    # Within a system: equal scores rank by doc id ascending ("a" is rank 1, "b" rank 2).
    a = {"q": {"b": 1.0, "a": 1.0}}
    assert reciprocal_rank_fusion({"a": a}, k=0)["q"] == {"a": 1.0, "b": 0.5}
    # Across systems: "x" and "y" fuse to the same score; the smaller id comes first
    # and is the one kept when depth cuts between them.
    left, right = {"q": {"y": 2.0, "z": 1.0}}, {"q": {"x": 2.0, "z": 1.0}}
    fused = reciprocal_rank_fusion({"l": left, "r": right}, k=0)
    assert fused["q"] == {"z": 1.0, "x": 1.0, "y": 1.0}
    assert list(fused["q"]) == ["x", "y", "z"]
    assert list(reciprocal_rank_fusion({"l": left, "r": right}, k=0, depth=2)["q"]) == ["x", "y"]


def test_depth_limits_each_system_and_the_output():
    a = {"q": {f"d{i}": float(10 - i) for i in range(5)}}  # d0 best
    b = {"q": {"d4": 1.0, "d9": 0.5}}
    fused = reciprocal_rank_fusion({"a": a, "b": b}, k=0, depth=2)
    # a contributes d0 (rank 1) and d1 (rank 2) only; d4 is beyond a's depth.
    assert fused["q"] == {"d0": 1.0, "d4": 1.0}
    full = reciprocal_rank_fusion({"a": a, "b": b}, k=0)
    assert full["q"]["d4"] == pytest.approx(1 / 5 + 1)


# --------------------------------------------------------------------------- convex


def test_convex_minmax_matches_hand_computed_scores():
    fused = convex_fusion({"bm25": BM25, "dense": DENSE}, {"bm25": 0.4, "dense": 0.6})
    bm25 = {"d1": 1.0, "d2": 6.5 / 9, "d3": 0.0, "d4": 0.0}  # d4 missing: bm25's minimum 0
    dense = {"d2": 1.0, "d4": 0.6 / 0.71, "d1": 0.0, "d3": 0.0}  # d3 missing: 0
    expected = {d: 0.4 * bm25[d] + 0.6 * dense[d] for d in bm25}
    assert fused["q1"] == pytest.approx(expected, rel=1e-12)
    assert list(fused["q1"]) == ["d2", "d4", "d1", "d3"]
    # A query only one system answers: the other adds 0 to every document.
    assert fused["q2"] == pytest.approx({"d5": 0.4, "d6": 0.0})
    assert fused["q3"] == pytest.approx({"d7": 0.0})  # one document: minmax gives 0


def test_convex_zscore_fills_missing_with_the_systems_minimum():
    a = {"q": {"x": 3.0, "y": 1.0}}  # z-scores: x = 1, y = -1
    b = {"q": {"z": 4.0, "y": 2.0, "x": 0.0}}  # mean 2, std sqrt(8/3)
    sd = math.sqrt(8 / 3)
    fused = convex_fusion({"a": a, "b": b}, {"a": 0.5, "b": 0.5}, normalization="zscore")
    expected = {
        "x": 0.5 * 1 + 0.5 * (-2 / sd),
        "y": 0.5 * -1 + 0.5 * 0.0,
        "z": 0.5 * -1 + 0.5 * (2 / sd),  # missing from a: a's minimum z-score, -1
    }
    assert fused["q"] == pytest.approx(expected, rel=1e-12)


def test_convex_without_normalization_uses_raw_scores():
    a = {"q": {"x": 3.0, "y": 1.0}}
    b = {"q": {"y": 10.0, "z": 2.0}}
    fused = convex_fusion({"a": a, "b": b}, {"a": 0.5, "b": 0.5}, normalization="none")
    # Missing: the system's minimum raw score (a: 1 for z; b: 2 for x).
    assert fused["q"] == pytest.approx({"y": 5.5, "x": 2.5, "z": 1.5})


@pytest.mark.parametrize("normalization", ["minmax", "zscore", "none"])
def test_all_equal_single_and_empty_lists_never_give_nan(normalization):
    runs = {
        "flat": {"q": {"a": 0.7, "b": 0.7, "c": 0.7}, "q1": {"a": 5.0}},
        "empty": {"q": {}, "q1": {}},
        "ranked": {"q": {"c": 2.0, "b": 1.0}, "q2": {"x": 1.0}},
    }
    weights = {"flat": 0.3, "empty": 0.3, "ranked": 0.4}
    fused = convex_fusion(runs, weights, normalization=normalization)
    scores = [s for docs in fused.values() for s in docs.values()]
    assert all(math.isfinite(s) for s in scores)
    # Only "ranked" orders q's documents; "a" (missing from it) ties with "b" (its last).
    assert list(fused["q"]) == ["c", "a", "b"]
    assert sorted(fused) == ["q", "q1", "q2"]
    rrf = reciprocal_rank_fusion(runs)
    assert all(math.isfinite(s) for docs in rrf.values() for s in docs.values())
    assert set(rrf["q"]) == {"a", "b", "c"}


def test_normalize_scores_edge_cases():
    assert normalize_scores(np.array([])).shape == (0,)
    np.testing.assert_array_equal(normalize_scores(np.array([4.0])), [0.0])
    np.testing.assert_array_equal(normalize_scores(np.array([0.1] * 3), "zscore"), [0.0] * 3)
    np.testing.assert_allclose(normalize_scores(np.array([2.0, 4.0, 6.0]), "minmax"), [0, 0.5, 1])
    np.testing.assert_allclose(
        normalize_scores(np.array([2.0, 4.0, 6.0]), "zscore"), np.array([-1, 0, 1]) * 1.5**0.5
    )
    np.testing.assert_array_equal(normalize_scores(np.array([-3.0, 1.0]), "none"), [-3.0, 1.0])
    with pytest.raises(ValueError, match="unknown normalization 'l2'"):
        normalize_scores(np.array([1.0]), "l2")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("method", "weights", "needle"),
    [
        ("rrf", {"bm25": 1, "dense": 1, "splade": 1}, "not among the runs: ['splade']"),
        ("rrf", {"bm25": 1}, "no weight for systems ['dense']"),
        ("rrf", {"bm25": -1, "dense": 1}, "weight of 'bm25' must be finite and >= 0"),
        ("rrf", {"bm25": float("nan"), "dense": 1}, "must be finite"),
        ("rrf", {"bm25": 0, "dense": 0}, "at least one weight must be > 0"),
        ("rrf", {"bm25": "x", "dense": 1}, "must be a number"),
        ("convex", {"bm25": 0.3, "dense": 0.6}, "must sum to 1, got bm25=0.3,dense=0.6"),
    ],
)
def test_bad_weights_raise_clear_errors(method, weights, needle):
    with pytest.raises(ValueError, match=None) as info:
        fuse_runs({"bm25": BM25, "dense": DENSE}, method=method, weights=weights)
    assert needle in str(info.value)


def test_convex_weight_sum_error_suggests_the_rescaled_weights():
    with pytest.raises(ValueError, match=r"pass e\.g\. bm25=0\.3333,dense=0\.6667"):
        convex_fusion({"bm25": BM25, "dense": DENSE}, {"bm25": 1, "dense": 2})


def test_bad_arguments_and_scores_raise():
    runs = {"bm25": BM25, "dense": DENSE}
    with pytest.raises(ValueError, match="non-empty mapping"):
        reciprocal_rank_fusion({})
    with pytest.raises(ValueError, match="k must be a finite number >= 0"):
        reciprocal_rank_fusion(runs, k=-1)
    with pytest.raises(ValueError, match="depth must be an integer >= 1"):
        reciprocal_rank_fusion(runs, depth=0)
    with pytest.raises(ValueError, match="unknown fusion method 'sum'"):
        fuse_runs(runs, method="sum")
    with pytest.raises(ValueError, match="run 'bad', query 'q': document 'x' has score nan"):
        reciprocal_rank_fusion({"bad": {"q": {"y": 1.0, "x": float("nan")}}, "ok": BM25})
    with pytest.raises(ValueError, match="expected \\{query_id"):
        reciprocal_rank_fusion({"bad": [("q", "d", 1.0)]})


def test_fusion_does_not_depend_on_the_order_of_runs():
    rng = np.random.default_rng(0)
    names = ["bm25", "dense", "splade"]
    runs = {
        name: {
            f"q{q}": {f"d{d}": float(rng.normal()) for d in rng.choice(30, 12)} for q in range(5)
        }
        for name in names
    }
    weights = {"bm25": 0.2, "dense": 0.5, "splade": 0.3}
    for method in ("rrf", "convex"):
        first = fuse_runs(runs, method=method, weights=weights)
        for perm in itertools.permutations(names):
            other = fuse_runs({n: runs[n] for n in perm}, method=method, weights=weights)
            assert other == first  # same scores, bit for bit
            assert all(list(other[q]) == list(first[q]) for q in first)


def test_fuse_results_matches_fuse_runs():
    results = {
        "bm25": [("d1", 12.0), ("d2", 9.5), ("d3", 3.0)],
        "dense": [("d2", 0.91), ("d4", 0.80), ("d1", 0.20)],
    }
    runs = {"bm25": {"q1": BM25["q1"]}, "dense": {"q1": DENSE["q1"]}}
    for method, weights in (("rrf", None), ("convex", {"bm25": 0.4, "dense": 0.6})):
        got = fuse_results(results, method=method, weights=weights)
        assert got == list(fuse_runs(runs, method=method, weights=weights)["q1"].items())
    assert fuse_results({"a": [], "b": []}, method="rrf") == []
    with pytest.raises(ValueError, match="system 'a' lists document 'd1' twice"):
        fuse_results({"a": [("d1", 1.0), ("d1", 0.5)]}, method="rrf")


# --------------------------------------------------------------------------- tuning


def test_weight_simplex():
    grid = weight_simplex(3, 0.1)
    assert grid.shape == (66, 3)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    assert len({tuple(row) for row in grid.tolist()}) == 66
    assert [0.3, 0.7] in weight_simplex(2, 0.1).tolist()  # exactly 3/10, not 0.30000000000000004
    assert weight_simplex(1, 0.5).tolist() == [[1.0]]
    with pytest.raises(ValueError, match="must divide 1"):
        weight_simplex(2, 0.3)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        weight_simplex(2, 0.0)
    with pytest.raises(ValueError, match="must divide 1"):
        FusionGrid(weight_step=0.15)
    with pytest.raises(ValueError, match="ks is empty"):
        FusionGrid(ks=())


def _convex_case():
    """Convex minmax: q1 ranks "r" first iff w_a > 0.25, q2 iff w_a < 0.35; so only 0.3."""
    a = {"q1": {"r": 1.0, "x": 0.0, "z": 0.5}, "q2": {"x": 1.0, "r": 0.0, "z": 0.5}}
    b = {"q1": {"x": 1.0, "r": 2 / 3, "z": 0.0}, "q2": {"r": 1.0, "x": 1 - 0.35 / 0.65, "z": 0.0}}
    qrels = {"q1": {"r": 1}, "q2": {"r": 1}}
    return {"a": a, "b": b}, qrels


def test_tune_convex_picks_the_known_best_weights():
    runs, qrels = _convex_case()
    choice = tune_fusion(runs, qrels, method="convex", metric="nDCG@10")
    assert choice.weights == {"a": 0.3, "b": 0.7}
    assert (choice.k, choice.normalization, choice.score_on_dev) == (None, "minmax", 1.0)
    assert len(choice.candidates) == 11 and choice.num_queries == 2
    assert [c.score for c in choice.candidates] == sorted(
        (c.score for c in choice.candidates), reverse=True
    )
    assert sum(c.score == 1.0 for c in choice.candidates) == 1
    fused = choice.fuse(runs)
    assert evaluate(fused, qrels, ["nDCG@10"])["nDCG@10"] == 1.0


def test_tune_ties_prefer_weights_closer_to_equal():
    # "r" ranks first iff w_good > 0.5 (at 0.5 "r" and "x" tie and the evaluator puts
    # "x" first), so 0.6 ... 1.0 are all perfect: the tie rule picks 0.6.
    runs = {"good": {"q": {"r": 1.0, "x": 0.0}}, "bad": {"q": {"x": 1.0, "r": 0.0}}}
    choice = tune_fusion(runs, {"q": {"r": 1}}, method="convex")
    assert choice.weights == {"bad": 0.4, "good": 0.6}
    assert [c.weights["good"] for c in choice.candidates[:5]] == [0.6, 0.7, 0.8, 0.9, 1.0]


def test_tune_rrf_picks_weights_and_k():
    # q1: "a" ranks r 1st, "b" ranks r 10th; "x" is 3rd in both (q2 mirrors it).
    # Equal weights put r first iff 1/(k+1) + 1/(k+10) > 2/(k+3), i.e. k <= 2; the
    # corners get one query right each. Among the perfect k (1, 2) the tie rule picks
    # the one closer to 60.
    def lists(q):
        top = ["r", f"{q}t1", "x", *(f"{q}t{i}" for i in range(3, 10))]
        bottom = [f"{q}b0", f"{q}b1", "x", *(f"{q}b{i}" for i in range(3, 9)), "r"]
        return top, bottom

    a, b = {}, {}
    for q, (run_top, run_bottom) in (("q1", (a, b)), ("q2", (b, a))):
        top, bottom = lists(q)
        run_top[q] = {d: float(10 - i) for i, d in enumerate(top)}
        run_bottom[q] = {d: float(10 - i) for i, d in enumerate(bottom)}
    qrels = {"q1": {"r": 1}, "q2": {"r": 1}}
    grid = FusionGrid(weight_step=0.5, ks=(1, 2, 60))
    choice = tune_fusion({"a": a, "b": b}, qrels, method="rrf", metric="RR@10", grid=grid)
    assert (choice.weights, choice.k, choice.score_on_dev) == ({"a": 0.5, "b": 0.5}, 2, 1.0)
    assert len(choice.candidates) == 9
    by_key = {(c.weights["a"], c.k): c.score for c in choice.candidates}
    assert by_key[(0.5, 1)] == 1.0 and by_key[(0.5, 60)] == 0.5  # x first
    assert by_key[(1.0, 60)] == pytest.approx((1 + 1 / 10) / 2)


def _random_runs(seed, num_queries=6, num_docs=15):
    """Integer scores, so many ties inside and across systems."""
    rng = np.random.default_rng(seed)
    runs = {
        name: {
            f"q{q}": {
                f"d{d}": float(rng.integers(0, 4))
                for d in rng.choice(num_docs, rng.integers(0, 9), replace=False)
            }
            for q in range(num_queries)
            if rng.random() < 0.9
        }
        for name in ("bm25", "dense", "splade")
    }
    qrels = {
        f"q{q}": {f"d{d}": int(rng.integers(1, 3)) for d in rng.choice(num_docs, 3, replace=False)}
        for q in range(num_queries + 1)  # one dev query no run answers
    }
    return runs, qrels


@pytest.mark.parametrize(
    ("method", "metric", "depth"),
    [("rrf", "nDCG@3", 5), ("convex", "nDCG@3", 4), ("convex", "AP", 6), ("rrf", "P@2", 1000)],
)
def test_tune_table_equals_evaluating_each_fused_run(method, metric, depth):
    """The cutoff shortcut and the batched scoring give exactly evaluate(fuse_runs(...))."""
    runs, qrels = _random_runs(seed=3)
    grid = FusionGrid(weight_step=0.25, ks=(0, 5, 60))
    choice = tune_fusion(runs, qrels, method=method, metric=metric, grid=grid, depth=depth)
    assert len(choice.candidates) == 15 * (3 if method == "rrf" else 1)
    dev_runs = {n: {q: d for q, d in run.items() if q in qrels} for n, run in runs.items()}
    for c in choice.candidates:
        fused = fuse_runs(
            dev_runs, method=method, weights=c.weights, k=60 if c.k is None else c.k, depth=depth
        )
        assert c.score == next(iter(evaluate(fused, qrels, [metric]).values()))


def test_tune_is_deterministic_and_independent_of_run_order():
    runs, qrels = _random_runs(seed=5)
    grid = FusionGrid(weight_step=0.25, ks=(10, 60))
    first = tune_fusion(runs, qrels, method="rrf", grid=grid)
    assert tune_fusion(runs, qrels, method="rrf", grid=grid) == first
    reordered = {n: runs[n] for n in ("splade", "bm25", "dense")}
    assert tune_fusion(reordered, qrels, method="rrf", grid=grid) == first


def test_tune_errors():
    runs, qrels = _convex_case()
    with pytest.raises(ValueError, match="dev qrels are empty"):
        tune_fusion(runs, {}, method="rrf")
    with pytest.raises(ValueError, match="none of the 1 dev qrels queries is answered"):
        tune_fusion(runs, {"other": {"r": 1}}, method="rrf")
    with pytest.raises(ValueError, match="tuning metric 'nDCG@x' is not an ir_measures"):
        tune_fusion(runs, qrels, method="rrf", metric="nDCG@x")
    with pytest.raises(ValueError, match="over max_candidates=10"):
        tune_fusion(runs, qrels, method="rrf", grid=FusionGrid(max_candidates=10))
    with pytest.raises(ValueError, match="unknown fusion method"):
        tune_fusion(runs, qrels, method="max")
