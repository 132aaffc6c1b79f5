import json

import pytest

from jaxir.data import (
    DataError,
    Document,
    Query,
    TrainGroup,
    groups_from_qrels,
    iter_groups,
    read_groups,
    write_groups,
)

CORPUS = {
    "d1": Document("d1", "cats purr", "Cats"),
    "d2": Document("d2", "dogs bark"),
    "d3": Document("d3", "fish swim"),
}
QUERIES = {"q1": Query("q1", "cat sounds"), "q2": Query("q2", "pets")}


def _write(path, *rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_round_trip_with_and_without_scores(tmp_path):
    groups = [
        TrainGroup("q", ("p1", "p2"), ("n1",), (1.0, 2.0), (0.5,)),
        TrainGroup("q2", ["p"]),
    ]
    assert groups[1].positives == ("p",) and not groups[1].has_scores
    write_groups(groups, tmp_path / "g.jsonl")
    assert read_groups(tmp_path / "g.jsonl") == groups
    write_groups(groups, tmp_path / "g.jsonl.gz")
    assert list(iter_groups(tmp_path / "g.jsonl.gz")) == groups


def test_id_form_resolves_against_collection(tmp_path):
    p = _write(
        tmp_path / "g.jsonl",
        {"query_id": "q1", "positive_ids": ["d1"], "negative_ids": ["d2", "d3"]},
    )
    (group,) = read_groups(p, corpus=CORPUS, queries=QUERIES)
    assert group == TrainGroup("cat sounds", ("Cats cats purr",), ("dogs bark", "fish swim"))
    with pytest.raises(DataError, match="pass corpus= and queries="):
        read_groups(p)


@pytest.mark.parametrize(
    ("row", "field", "needle"),
    [
        ({"positives": ["p"]}, "query", '"query" (text) or "query_id"'),
        ({"query": "q", "positives": []}, "positives", "at least one positive"),
        ({"query": "q"}, "positives", "missing"),
        ({"query": "q", "positives": "p"}, "positives", "list of strings"),
        ({"query": "", "positives": ["p"]}, "query", "non-empty string"),
        ({"query": "q", "positives": ["p", ""]}, "positives", "empty string"),
        ({"query": "q", "positives": ["p"], "negative": ["n"]}, "negative", "unknown key"),
        ({"query": "q", "query_id": "q1", "positives": ["p"]}, "query_id", "either"),
        (
            {
                "query": "q",
                "positives": ["p"],
                "negatives": ["n"],
                "positive_scores": [1.0],
                "negative_scores": [],
            },
            "negative_scores",
            "has 0 scores but there are 1 negatives",
        ),
        (
            {
                "query": "q",
                "positives": ["p"],
                "positive_scores": [1.0, 2.0],
                "negative_scores": [],
            },
            "positive_scores",
            "has 2 scores but there are 1 positives",
        ),
        ({"query": "q", "positives": ["p"], "positive_scores": [1.0]}, "negative_scores", "both"),
        (
            {"query": "q", "positives": ["p"], "positive_scores": ["x"], "negative_scores": []},
            "positive_scores",
            "list of numbers",
        ),
        ({"query_id": "nope", "positive_ids": ["d1"]}, "query_id", "not a known query id"),
        (
            {"query_id": "q1", "positive_ids": ["d1"], "negative_ids": ["zz"]},
            "negative_ids",
            "'zz'",
        ),
    ],
)
def test_validation_errors_name_line_and_field(tmp_path, row, field, needle):
    p = _write(tmp_path / "g.jsonl", {"query": "ok", "positives": ["p"]}, row)
    with pytest.raises(DataError) as info:
        read_groups(p, corpus=CORPUS, queries=QUERIES)
    assert (info.value.line, info.value.field) == (2, field)
    assert needle in str(info.value)


def test_bad_json_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="not valid JSON") as info:
        read_groups(_write(tmp_path / "g.jsonl", "{oops"))
    assert info.value.line == 1
    with pytest.raises(DataError, match="empty file"):
        read_groups(_write(tmp_path / "e.jsonl", ""))


def test_dataclass_validates():
    with pytest.raises(ValueError, match="at least one positive"):
        TrainGroup("q", ())
    with pytest.raises(ValueError, match="negative_scores"):
        TrainGroup("q", ("p",), ("n",), (1.0,), ())


def test_groups_from_qrels():
    qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 0}}
    groups = groups_from_qrels(QUERIES, CORPUS, qrels, {"q1": ["d1", "d2", "d3"]})
    # q2 has no positive: skipped; the positive d1 is removed from the negatives.
    assert groups == [TrainGroup("cat sounds", ("Cats cats purr",), ("dogs bark", "fish swim"))]
    assert groups_from_qrels(QUERIES, CORPUS, qrels)[0].negatives == ()
    assert len(groups_from_qrels(QUERIES, CORPUS, qrels, min_relevance=0)) == 2
    with pytest.raises(KeyError, match="zz"):
        groups_from_qrels(QUERIES, CORPUS, {"q1": {"zz": 1}})


def test_groups_from_qrels_with_passages_use_them_for_every_document():
    qrels = {"q1": {"d1": 1}}
    passages = {"q1": {"d1": "Cats purr (window)", "d2": "bark (window)"}}
    groups = groups_from_qrels(QUERIES, CORPUS, qrels, {"q1": ["d2"]}, passages=passages)
    assert groups == [TrainGroup("cat sounds", ("Cats purr (window)",), ("bark (window)",))]
    with pytest.raises(KeyError, match="no passage given for doc ids \\['d3'\\]"):
        groups_from_qrels(QUERIES, CORPUS, qrels, {"q1": ["d3"]}, passages=passages)
