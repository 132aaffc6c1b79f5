"""evaluate(): ir_measures numbers, missing-query policy, file inputs; format_table."""

from __future__ import annotations

import os
import pathlib

import ir_measures
import numpy as np
import pytest

from jaxir.eval import compute_metrics, evaluate, format_table

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("JAXIR_SHARED_DATA", REPO.parent / "shared" / "data"))

RUN = {
    "q1": {"d1": 0.5, "d2": 0.5, "d3": 0.1},  # tie between d1 and d2
    "q2": {"d4": 2.0, "d5": 1.0},
    "q9": {"d1": 1.0},  # not in the qrels: ignored
}
QRELS = {
    "q1": {"d1": 1, "d3": 2},
    "q2": {"d5": 1, "d6": 1},
    "q3": {"d7": 1},  # not in the run
}


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    run, qrels = {}, {}
    for q in range(25):
        docs = [f"d{i}" for i in rng.choice(300, size=30, replace=False)]
        run[f"q{q}"] = {d: float(np.round(rng.uniform(), 1)) for d in docs}
        qrels[f"q{q}"] = {d: int(rng.integers(1, 3)) for d in rng.choice(docs, size=4)}
    return run, qrels


def test_matches_ir_measures_on_tie_free_measures():
    run, qrels = _random_case(0)
    names = ["nDCG@10", "R@100", "AP", "P@5", "RR"]
    want = ir_measures.calc_aggregate([ir_measures.parse_measure(n) for n in names], qrels, run)
    got = evaluate(run, qrels, names)
    assert list(got) == names
    for m, value in want.items():
        assert got[str(m)] == pytest.approx(value, abs=1e-12)


def test_all_measures_share_trec_eval_tie_order_and_match_on_device():
    run, qrels = _random_case(1)
    names = ["nDCG@10", "RR@10", "R@100", "AP", "P@5"]
    got = evaluate(run, qrels, names)
    on_device = compute_metrics(run, qrels, names)  # every query has a relevant doc
    for name in names:
        assert got[name] == pytest.approx(on_device[name], abs=1e-6), name
    # RR@10 follows trec_eval's order (q1: d2 before d1, RR 1/2), not MS MARCO's
    # (d1 first, RR 1), which plain ir_measures would use for RR@10.
    assert evaluate(RUN, QRELS, ["RR@10"], missing_queries="ignore") == {"RR@10": 0.5}
    plain = ir_measures.calc_aggregate([ir_measures.RR @ 10], {"q1": QRELS["q1"]}, RUN)
    assert plain[ir_measures.RR @ 10] == 1.0


def test_missing_queries_zero_or_ignore():
    zero = evaluate(RUN, QRELS, ["R@100", "P@1"])
    ignore = evaluate(RUN, QRELS, ["R@100", "P@1"], missing_queries="ignore")
    # q1: R=1, P@1 = 0 (d2 wins the tie); q2: R=0.5, P@1 = 0; q3 missing.
    assert zero == pytest.approx({"R@100": 1.5 / 3, "P@1": 0.0})
    assert ignore == pytest.approx({"R@100": 1.5 / 2, "P@1": 0.0})
    default = ir_measures.calc_aggregate([ir_measures.R @ 100], QRELS, RUN)
    assert zero["R@100"] == pytest.approx(default[ir_measures.R @ 100])


def test_canonical_names_and_defaults():
    got = evaluate(RUN, QRELS)
    assert list(got) == ["nDCG@10", "RR@10", "R@100", "AP"]
    assert list(evaluate(RUN, QRELS, ["AP(rel=2)", "nDCG@3"])) == ["AP(rel=2)", "nDCG@3"]


def test_bad_inputs_raise_helpful_errors():
    with pytest.raises(ValueError, match="'MAP@x' is not an ir_measures measure"):
        evaluate(RUN, QRELS, ["MAP@x"])
    with pytest.raises(ValueError, match="missing_queries must be 'zero' or 'ignore'"):
        evaluate(RUN, QRELS, missing_queries="drop")
    with pytest.raises(ValueError, match="share no query id"):
        evaluate({"x": {"d": 1.0}}, QRELS, missing_queries="ignore")


def test_file_inputs(tmp_path):
    pytest.importorskip("jaxir.data.runs")
    pytest.importorskip("jaxir.data.records")
    run_path = tmp_path / "run.trec"
    lines = []
    for qid, docs in RUN.items():
        ranked = sorted(docs.items(), key=lambda kv: -kv[1])
        lines += [f"{qid} Q0 {d} {r} {s} test" for r, (d, s) in enumerate(ranked, 1)]
    run_path.write_text("\n".join(lines) + "\n")
    qrels_path = tmp_path / "test.tsv"
    rows = [f"{q}\t{d}\t{g}" for q, docs in QRELS.items() for d, g in docs.items()]
    qrels_path.write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    assert evaluate(str(run_path), qrels_path) == evaluate(RUN, QRELS)


def test_perfect_run_on_scifact_qrels():
    qrels_path = SHARED / "scifact" / "qrels" / "test.tsv"
    if not qrels_path.exists():
        pytest.skip(f"needs shared data: {qrels_path} not found (set JAXIR_SHARED_DATA)")
    records = pytest.importorskip("jaxir.data.records")
    qrels = records.load_qrels(qrels_path)
    run = {q: {d: float(g) for d, g in docs.items()} for q, docs in qrels.items()}
    assert evaluate(run, qrels, ["nDCG@10", "RR@10", "AP"]) == pytest.approx(
        {"nDCG@10": 1.0, "RR@10": 1.0, "AP": 1.0}
    )


def test_format_table():
    table = format_table(
        {"bm25": {"nDCG@10": 0.66512, "AP": 0.5}, "dense-long-name": {"nDCG@10": 0.7}}
    )
    assert table.splitlines() == [
        "system           nDCG@10      AP",
        "bm25              0.6651  0.5000",
        "dense-long-name   0.7000       -",
    ]
