"""`jaxir mine`: BM25 and model hard negatives written as training groups."""

import shutil

import pytest

from jaxir.cli.main import main
from jaxir.data.groups import groups_from_qrels, read_groups
from jaxir.data.negatives import mine_bm25_negatives
from jaxir.data.records import load_beir
from jaxir.data.synthetic import write_collection


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    """A tiny BEIR collection: 24 documents, 6 train and 2 test queries."""
    root = tmp_path_factory.mktemp("mine")
    return write_collection(root / "beir", num_topics=8, num_train_queries=6, num_test_queries=2)


def mine(beir, out, *flags):
    return main(["mine", "--data", str(beir), "--out", str(out), "--no-progress", *flags])


def test_bm25_groups_match_the_library(beir, tmp_path, capsys):
    out = tmp_path / "groups.jsonl"
    flags = ["--num-negatives", "3", "--rank-window", "1,20", "--margin", "0"]
    assert mine(beir, out, "--negatives", "bm25", *flags) == 0
    summary = capsys.readouterr().out
    train = load_beir(beir, "train")
    negatives = mine_bm25_negatives(
        train.queries, train.corpus, train.qrels, num_negatives=3, rank_window=(1, 20), margin=0.0
    )
    want = groups_from_qrels(train.queries, train.corpus, train.qrels, negatives)
    got = read_groups(out, corpus=train.corpus, queries=train.queries)  # what `jaxir train` reads
    assert got == want and len(got) == 6
    assert all(0 < len(g.negatives) <= 3 and not set(g.negatives) & set(g.positives) for g in got)
    mean = sum(len(g.negatives) for g in got) / len(got)
    assert "6 train queries, negatives from bm25 (rank window 1,20, margin 0)" in summary
    assert "groups written:      6" in summary and f"mean {mean:.2f}" in summary
    assert "time:" in summary and "index" in summary
    assert not list(tmp_path.glob(".partial-*"))  # written whole, then renamed


def test_gzip_output_and_other_split(beir, tmp_path, capsys):
    out = tmp_path / "test.jsonl.gz"
    assert mine(beir, out, "--negatives", "bm25", "--split", "test") == 0
    assert out.read_bytes()[:2] == b"\x1f\x8b" and len(read_groups(out)) == 2
    assert "2 test queries" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--split", "dev"],
            "qrels/dev.tsv: no qrels for split 'dev'; splits present: ['test', 'train']",
        ),
        (["--data", "NOPE"], "NOPE: not a directory"),
        (["--model", "NOPE"], "NOPE: no such model directory"),
        (["--negatives", "bm25", "--pooling", "cls"], "--pooling: only used with --model"),
        (["--negatives", "bm25", "--min-relevance", "5"], "train.tsv: no query has a positive"),
        (["--negatives", "bm25", "--out", "DIR"], "DIR: is a directory; --out takes a .jsonl"),
    ],
)
def test_bad_input_is_named_not_a_traceback(beir, tmp_path, capsys, flags, message):
    if "--model" not in flags and "--negatives" not in flags:
        flags = [*flags, "--negatives", "bm25"]
    args = ["mine", "--data", str(beir), "--out", str(tmp_path / "g.jsonl"), *flags]
    (tmp_path / "DIR").mkdir()
    args = [str(tmp_path / a) if a in ("NOPE", "DIR") else a for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxir mine: error: ") and message in err
    assert not (tmp_path / "g.jsonl").exists() and not list(tmp_path.glob(".partial-*"))


def test_model_dir_without_weights_is_named(beir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert mine(beir, tmp_path / "g.jsonl", "--model", str(tmp_path / "empty")) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'empty' / 'config.json'}" in err and "query/jaxir_encoder.json" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rank-window", "5,2"], "need 0 <= LO < HI, got 5,2"),
        (["--rank-window", "3"], "expected LO,HI"),
        (["--num-negatives", "0"], "must be >= 1"),
        ([], "one of the arguments --negatives --model is required"),
    ],
)
def test_usage_errors(beir, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        mine(beir, tmp_path / "g.jsonl", *flags)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["mine", "--help"])
    text = capsys.readouterr().out
    options = ["--data", "--split", "--out", "--negatives", "--model", "--num-negatives"]
    options += ["--rank-window", "--margin", "--max-length", "--batch-size", "--teacher-run"]
    assert all(option in text for option in options)
    assert "Examples" in text and "data.groups=" in text


@pytest.fixture(scope="module")
def model(beir):
    """A saved tiny dual encoder (skips without the shared BERT vocabulary)."""
    from tests.search.tiny import bert_tokenizer, save_tiny_dual_encoder

    root = beir.parent
    return save_tiny_dual_encoder(root / "model", bert_tokenizer(root / "vocab"))


def test_model_groups_match_the_library(beir, model, tmp_path, capsys):
    from jaxir.data.tokenizer import load_tokenizer
    from jaxir.models.dual_encoder import load_dual_encoder
    from jaxir.search.mining import mine_model_negatives
    from jaxir.search.retrieve import tower_encoders

    out = tmp_path / "groups.jsonl"
    flags = ["--num-negatives", "2", "--rank-window", "0,10", "--batch-size", "8"]
    assert mine(beir, out, "--model", str(model), *flags) == 0
    summary = capsys.readouterr().out
    train = load_beir(beir, "train")
    query, passage = tower_encoders(load_dual_encoder(model), load_tokenizer(model / "query"))
    negatives = mine_model_negatives(
        query,
        train.queries,
        train.qrels,
        num_negatives=2,
        rank_window=(0, 10),
        corpus=train.corpus,
        passage_encoder=passage,
    )
    want = groups_from_qrels(train.queries, train.corpus, train.qrels, negatives)
    assert read_groups(out) == want and all(len(g.negatives) == 2 for g in want)
    assert f"negatives from dual encoder {model} (mean pooling, normalized)" in summary
    assert "encode corpus" in summary and "mean 2.00" in summary

    # A train workdir (WORKDIR/model) gives the same groups.
    shutil.copytree(model, tmp_path / "work" / "model")
    assert mine(beir, tmp_path / "w.jsonl", "--model", str(tmp_path / "work"), *flags) == 0
    assert read_groups(tmp_path / "w.jsonl") == want
    capsys.readouterr()


def test_hf_encoder_dir_and_teacher_filter(beir, model, tmp_path, capsys):
    out = tmp_path / "hf.jsonl"
    hf = ["--model", str(model / "query"), "--pooling", "mean", "--normalize"]
    assert mine(beir, out, *hf, "--max-length", "32", "--num-negatives", "2") == 0
    assert "negatives from encoder" in capsys.readouterr().out
    groups = read_groups(out)
    assert len(groups) == 6 and all(len(g.negatives) == 2 for g in groups)

    # The teacher vetoes every candidate it scores above the threshold.
    train = load_beir(beir, "train")
    teacher = tmp_path / "teacher.trec"
    lines = [f"{q} Q0 {d} 1 9.0 t" for q in train.qrels for d in train.corpus]
    teacher.write_text("\n".join(lines) + "\n")
    args = ["--teacher-run", str(teacher), "--teacher-threshold", "1.0"]
    assert mine(beir, out, *hf, *args) == 0
    assert all(g.negatives == () for g in read_groups(out))
    assert "mean 0.00" in capsys.readouterr().out
    assert mine(beir, out, *hf, "--teacher-run", str(teacher)) == 1
    assert "--teacher-run and --teacher-threshold go together" in capsys.readouterr().err
    dual = ["--model", str(model), "--pooling", "cls"]
    assert mine(beir, out, *dual) == 1
    assert "jaxir_encoder.json sets the dual encoder's pooling" in capsys.readouterr().err
