"""``jaxir fuse`` end to end on tiny TREC runs and a tiny BEIR-layout directory."""

import json

import numpy as np
import pytest

from jaxir.cli.fuse import parse_weights
from jaxir.cli.main import main
from jaxir.data.records import Document, Query, load_qrels, write_corpus, write_qrels, write_queries
from jaxir.data.runs import read_trec_run, write_trec_run
from jaxir.eval.evaluate import evaluate
from jaxir.search.fusion import FusionGrid, convex_fusion, tune_fusion

NUM_DOCS = 20
DEV = [f"dev{i}" for i in range(6)]
TEST = [f"test{i}" for i in range(6)]


@pytest.fixture
def data(tmp_path):
    """A BEIR directory with dev/test qrels and two runs ("bm25", "dense") over all queries.

    Each system scores the relevant document high on its own half of the queries, so
    fusing them beats either alone.
    """
    rng = np.random.default_rng(0)
    beir = tmp_path / "beir"
    docs = [f"doc{d}" for d in range(NUM_DOCS)]
    write_corpus([Document(d, f"text of {d}") for d in docs], beir / "corpus.jsonl")
    write_queries([Query(q, f"query {q}") for q in DEV + TEST], beir / "queries.jsonl")
    relevant = {q: docs[i % NUM_DOCS] for i, q in enumerate(DEV + TEST)}
    write_qrels({q: {relevant[q]: 1} for q in DEV}, beir / "qrels" / "dev.tsv")
    write_qrels({q: {relevant[q]: 1} for q in TEST}, beir / "qrels" / "test.tsv")
    runs = {}
    for s, name in enumerate(("bm25", "dense")):
        run = {}
        for i, q in enumerate(DEV + TEST):
            scores = {d: float(rng.normal()) for d in rng.choice(docs, 10, replace=False)}
            good = (i + s) % 2 == 0
            scores[relevant[q]] = 3.0 if good else float(rng.uniform(-0.5, 0.5))
            run[q] = scores
        runs[name] = run
        write_trec_run(run, tmp_path / f"{name}.trec", tag=name)
    return tmp_path, beir, runs


def _flags(tmp_path, *names):
    return [item for name in names for item in ("--run", f"{name}={tmp_path / name}.trec")]


def test_tuned_rrf_end_to_end(data, capsys):
    tmp_path, beir, runs = data
    out, summary = tmp_path / "fused.trec", tmp_path / "fused.json"
    args = ["fuse", *_flags(tmp_path, "bm25", "dense"), "--method", "rrf", "--out", str(out)]
    args += ["--tune-on", f"{beir}:dev", "--evaluate", f"{beir}:test", "--json", str(summary)]
    assert main([*args, "--ks", "10,60", "--weight-step", "0.25", "--top", "3"]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""  # disjoint splits, same queries: no warning
    text = printed.out
    assert "jaxir fuse: 2 runs: bm25 (12 queries), dense (12 queries); method rrf" in text
    assert f"tuned on {beir}:dev (6 queries, nDCG@10): 10 candidates; best 3:" in text
    assert "rank  bm25  dense   k  nDCG@10" in text and "single systems:" in text
    assert f"evaluated on {beir}:test (6 queries):" in text

    dev, test = load_qrels(beir / "qrels" / "dev.tsv"), load_qrels(beir / "qrels" / "test.tsv")
    choice = tune_fusion(runs, dev, method="rrf", grid=FusionGrid(weight_step=0.25, ks=(10, 60)))
    expected = choice.fuse(runs)
    assert read_trec_run(out) == expected
    assert f"fused with rrf k={choice.k:g}, weights bm25=" in text
    assert f"(dev nDCG@10 {choice.score_on_dev:.4f})" in text
    assert (tmp_path / "fused.trec").read_text().split("\n", 1)[0].endswith(" fused-rrf")

    report = json.loads(summary.read_text())
    assert report["weights"] == choice.weights and report["k"] == choice.k
    assert report["tuned_on"]["score"] == choice.score_on_dev
    assert len(report["tuned_on"]["candidates"]) == 10
    metrics = report["evaluated_on"]["metrics"]
    assert list(metrics) == ["bm25", "dense", "fused (rrf)"]
    assert metrics["fused (rrf)"] == evaluate(expected, test, ["nDCG@10", "RR@10", "R@100", "AP"])
    assert metrics["bm25"] == evaluate(runs["bm25"], test, ["nDCG@10", "RR@10", "R@100", "AP"])
    # The constructed runs complement each other: the fused run beats both on test.
    best_single = max(metrics["bm25"]["nDCG@10"], metrics["dense"]["nDCG@10"])
    assert metrics["fused (rrf)"]["nDCG@10"] > best_single
    line = next(row for row in text.splitlines() if row.startswith("fused (rrf)"))
    assert f"{metrics['fused (rrf)']['nDCG@10']:.4f}" in line


def test_convex_with_given_weights_and_names_from_file_names(data, capsys):
    tmp_path, _, runs = data
    out = tmp_path / "convex.trec"
    args = ["fuse", "--run", str(tmp_path / "bm25.trec"), "--run", str(tmp_path / "dense.trec")]
    args += ["--method", "convex", "--weights", "bm25=0.3,dense=0.7", "--normalization", "zscore"]
    assert main([*args, "--out", str(out), "--depth", "5", "--tag", "hybrid"]) == 0
    text = capsys.readouterr().out
    assert "fused with convex normalization=zscore, weights bm25=0.3,dense=0.7" in text
    expected = convex_fusion(runs, {"bm25": 0.3, "dense": 0.7}, normalization="zscore", depth=5)
    assert read_trec_run(out) == expected
    assert all(len(docs) == 5 for docs in expected.values())
    assert out.read_text().split("\n", 1)[0].endswith(" hybrid")


def test_different_query_sets_and_overlapping_splits_warn(data, capsys):
    tmp_path, beir, runs = data
    partial = {q: docs for q, docs in runs["dense"].items() if q not in ("dev0", "test5")}
    write_trec_run(partial, tmp_path / "dense.trec")
    out = tmp_path / "fused.trec"
    args = ["fuse", *_flags(tmp_path, "bm25", "dense"), "--out", str(out)]
    assert main([*args, "--tune-on", f"{beir}:test", "--evaluate", f"{beir}:test"]) == 0
    err = capsys.readouterr().err
    assert "the runs answer different queries (bm25: 12, dense: 10; union: 12)" in err
    assert f"run 'dense' answers 5 of the 6 queries of --tune-on {beir}:test" in err
    assert "6 of the 6 --evaluate queries are also --tune-on queries" in err
    assert "not a fair test number" in err
    assert sorted(read_trec_run(out)) == sorted(DEV + TEST)  # the union


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--weights", "bm25=0.5,splade=0.5"], "not among the runs: ['splade']"),
        (["--weights", "bm25=1"], "no weight for systems ['dense']"),
        (["--method", "convex", "--weights", "bm25=0.3,dense=0.6"], "must sum to 1"),
        (["--method", "convex", "--k", "10"], "--k is RRF's constant"),
        (["--normalization", "zscore"], "--normalization applies to --method convex only"),
        (["--tune-on", "BEIR:dev", "--weights", "bm25=1,dense=1"], "not both"),
        (["--tune-on", "BEIR:dev", "--k", "10"], "list the values to try with --ks"),
        (["--ks", "10,20"], "--ks only apply with --tune-on"),
        (
            ["--tune-on", "BEIR:validation"],
            "no qrels for split 'validation' (--tune-on); splits present: ['dev', 'test']",
        ),
        (["--evaluate", "BEIR"], "--evaluate 'BEIR': expected DATA_DIR:SPLIT"),
        (["--tune-on", "BEIR:dev", "--tune-metric", "nDCG@ten"], "tuning metric 'nDCG@ten'"),
        (["--tune-on", "BEIR:dev", "--weight-step", "0.3"], "must divide 1"),
        (["--depth", "0"], "--depth must be >= 1"),
    ],
)
def test_bad_flags_are_clear_errors(data, capsys, extra, needle):
    tmp_path, beir, _ = data
    extra = [e.replace("BEIR", str(beir)) for e in extra]
    args = ["fuse", *_flags(tmp_path, "bm25", "dense"), "--out", str(tmp_path / "f.trec")]
    assert main([*args, *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxir fuse: error: ") and needle.replace("BEIR", str(beir)) in err
    assert not (tmp_path / "f.trec").exists()


def test_bad_runs_are_clear_errors(data, capsys):
    tmp_path, beir, runs = data
    out = str(tmp_path / "f.trec")
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 0.4\n")
    assert main(["fuse", *_flags(tmp_path, "bm25"), "--run", f"bad={bad}", "--out", out]) == 1
    assert f"{bad}:2: expected 6 whitespace-separated columns" in capsys.readouterr().err

    (tmp_path / "empty.trec").write_text("")
    assert main(["fuse", *_flags(tmp_path, "bm25", "empty"), "--out", out]) == 1
    assert "run 'empty' is empty" in capsys.readouterr().err

    assert main(["fuse", *_flags(tmp_path, "bm25"), "--out", out]) == 1
    assert "fusion needs at least two --run" in capsys.readouterr().err

    twice = ["--run", str(tmp_path / "bm25.trec"), *_flags(tmp_path, "bm25")]
    assert main(["fuse", *twice, "--out", out]) == 1
    assert "two runs are named 'bm25'" in capsys.readouterr().err

    inputs = _flags(tmp_path, "bm25", "dense")
    assert main(["fuse", *inputs, "--out", str(tmp_path / "dense.trec")]) == 1
    assert "is also the run 'dense'" in capsys.readouterr().err

    test_only = {q: d for q, d in runs["dense"].items() if q in TEST}
    write_trec_run(test_only, tmp_path / "dense.trec")
    assert main(["fuse", *inputs, "--tune-on", f"{beir}:dev", "--out", out]) == 1
    assert f"run 'dense' answers 0 of the 6 queries of --tune-on {beir}:dev" in (
        capsys.readouterr().err
    )


def test_argument_syntax_errors_exit_2(data, capsys):
    tmp_path, _, _ = data
    args = ["fuse", *_flags(tmp_path, "bm25", "dense"), "--out", str(tmp_path / "f.trec")]
    for extra, needle in (
        (["--weights", "bm25:0.3"], "expected NAME=WEIGHT"),
        (["--weights", "bm25=high"], "weight of 'bm25' must be a number"),
        (["--ks", "10,x"], "expected comma-separated numbers"),
        (["--run", "=x.trec"], "expected NAME=PATH"),
    ):
        with pytest.raises(SystemExit) as info:
            main([*args, *extra])
        assert info.value.code == 2 and needle in capsys.readouterr().err


def test_parse_weights():
    assert parse_weights("bm25=0.3,dense=0.7") == {"bm25": 0.3, "dense": 0.7}
    with pytest.raises(Exception, match="'bm25' is weighted twice"):
        parse_weights("bm25=0.3,bm25=0.7")
