import gzip
import json

import pytest

from jaxir.data import (
    BeirCollection,
    DataError,
    Document,
    Query,
    count_lines,
    iter_corpus,
    iter_queries,
    load_beir,
    load_corpus,
    load_qrels,
    load_queries,
    write_corpus,
    write_qrels,
    write_queries,
)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _error(fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    return info.value


def test_corpus_plain_gzip_and_directory(tmp_path):
    rows = [
        {"_id": "d1", "title": "T1", "text": "one", "metadata": {}},
        {"_id": "d2", "text": "two"},
        {"_id": "d3", "title": "only title", "text": ""},
        {"_id": "d4", "title": None, "text": "four"},
    ]
    plain = _jsonl(tmp_path / "corpus.jsonl", rows)
    expected = {
        "d1": Document("d1", "one", "T1"),
        "d2": Document("d2", "two"),
        "d3": Document("d3", "", "only title"),
        "d4": Document("d4", "four"),
    }
    assert load_corpus(plain) == expected
    assert list(load_corpus(tmp_path)) == ["d1", "d2", "d3", "d4"]  # directory, file order
    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    with gzip.open(gz_dir / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(plain.read_text())
    assert list(iter_corpus(gz_dir)) == list(expected.values())
    assert count_lines(gz_dir / "corpus.jsonl.gz") == 4
    assert load_corpus(plain, progress=True) == expected


def test_blank_lines_and_bom_are_fine(tmp_path):
    p = tmp_path / "queries.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"_id": "q1", "text": "a"}\n\n   \n{"_id": "q2", "text": "b"}')
    assert load_queries(p) == {"q1": Query("q1", "a"), "q2": Query("q2", "b")}
    assert [q.id for q in iter_queries(tmp_path)] == ["q1", "q2"]


@pytest.mark.parametrize(
    ("line", "field", "needle"),
    [
        ('{"text": "x"}', "_id", 'every line needs a "_id" string'),
        (
            '{"_id": 7, "text": "x"}',
            "_id",
            'got a number 7; write it as a JSON string, e.g. "_id": "17"',
        ),
        ('{"_id": "", "text": "x"}', "_id", "non-empty"),
        ('{"_id": "a"}', "text", "missing"),
        ('{"_id": "a", "text": ["x"]}', "text", "expected a string, got a list"),
        ('{"_id": "a", "text": "x", "title": 3}', "title", "expected a string"),
        ('{"_id": "a", "text": "", "title": ""}', "text", 'no "title" either'),
        ('{"_id": "a", "text": "  "}', "text", 'no "title" either'),
    ],
)
def test_corpus_field_errors(tmp_path, line, field, needle):
    p = tmp_path / "corpus.jsonl"
    p.write_text('{"_id": "ok", "text": "fine"}\n' + line + "\n")
    err = _error(load_corpus, p)
    assert (err.line, err.field) == (2, field)
    assert needle in str(err)
    assert str(err).startswith(f"{p}:2: field '{field}'")


def test_query_needs_text(tmp_path):
    p = _jsonl(tmp_path / "queries.jsonl", [{"_id": "q", "text": "", "title": "t"}])
    err = _error(load_queries, p)
    assert (err.line, err.field) == (1, "text")


def test_malformed_json_and_non_object(tmp_path):
    p = tmp_path / "corpus.jsonl"
    p.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n')
    err = _error(load_corpus, p)
    assert err.line == 2 and "not valid JSON" in str(err) and "column" in str(err)
    p.write_text('["a", "b"]\n')
    err = _error(list, iter_corpus(p))
    assert err.line == 1 and "expected a JSON object, got a list" in str(err)


def test_duplicate_ids(tmp_path):
    p = _jsonl(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}])
    err = _error(load_corpus, p)
    assert (err.line, err.field) == (2, "_id") and "duplicate id 'a'" in str(err)
    # Streaming does not check uniqueness (constant memory).
    assert len(list(iter_corpus(p))) == 2


def test_empty_files(tmp_path):
    for name in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        (tmp_path / name).write_text("\n")
    assert "empty file" in str(_error(load_corpus, tmp_path / "corpus.jsonl"))
    assert "empty file" in str(_error(load_queries, tmp_path / "queries.jsonl"))
    assert "empty file" in str(_error(load_qrels, tmp_path / "qrels.tsv"))
    (tmp_path / "header_only.tsv").write_text("query-id\tcorpus-id\tscore\n")
    assert "empty file" in str(_error(load_qrels, tmp_path / "header_only.tsv"))


def test_non_utf8_reports_line_and_byte_offset(tmp_path):
    p = tmp_path / "corpus.jsonl"
    first = b'{"_id": "a", "text": "x"}\n'
    p.write_bytes(first + b'{"_id": "b", "text": "caf\xe9"}\n')
    err = _error(load_corpus, p)
    offset = len(first) + len(b'{"_id": "b", "text": "caf')
    assert err.line == 2
    assert f"byte 0xe9 at byte offset {offset}" in str(err)


def test_missing_paths(tmp_path):
    assert "no such file" in str(_error(load_corpus, tmp_path / "nope.jsonl"))
    assert "no corpus.jsonl or corpus.jsonl.gz" in str(_error(load_corpus, tmp_path))


def test_qrels_header_optional(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("q1\td1\t1\nq1\td2\t0\nq2\td1\t2\n")
    assert load_qrels(p) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d1": 2}}
    p.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    assert load_qrels(p) == {"q1": {"d1": 1}}


@pytest.mark.parametrize(
    ("body", "line", "field", "needle"),
    [
        ("q1\td1\n", 2, None, "expected 3 tab-separated columns"),
        ("q1 0 d1 1\n", 2, None, "TREC qrels"),
        ("q1\td1\t1.5\n", 2, "score", "expected an integer relevance grade, got '1.5'"),
        ("q1\td1\thigh\n", 2, "score", "integer"),
        ("q1\t\t1\n", 2, "corpus-id", "empty"),
        ("q0\td0\t2\n", 2, "score", "judged twice with different grades"),
    ],
)
def test_qrels_errors(tmp_path, body, line, field, needle):
    p = tmp_path / "test.tsv"
    p.write_text("q0\td0\t1\n" + body)
    err = _error(load_qrels, p)
    assert (err.line, err.field) == (line, field)
    assert needle in str(err)


def test_qrels_first_line_bad_grade_is_not_a_header(tmp_path):
    p = tmp_path / "test.tsv"
    p.write_text("q1\td1\tx\n")
    assert _error(load_qrels, p).field == "score"


def _beir(tmp_path, qrels):
    write_corpus([Document(f"d{i}", f"text {i}") for i in range(3)], tmp_path / "corpus.jsonl")
    write_queries([Query(f"q{i}", f"query {i}") for i in range(3)], tmp_path / "queries.jsonl")
    write_qrels(qrels, tmp_path / "qrels" / "test.tsv")
    return tmp_path


def test_load_beir_restricts_queries_to_split(tmp_path):
    beir = load_beir(_beir(tmp_path, {"q2": {"d0": 1}, "q0": {"d1": 1, "d2": 0}}))
    assert isinstance(beir, BeirCollection)
    assert list(beir.queries) == ["q0", "q2"]
    assert len(beir.corpus) == 3
    assert beir.qrels == {"q2": {"d0": 1}, "q0": {"d1": 1, "d2": 0}}
    assert "3 docs" in repr(beir)


def test_load_beir_unknown_ids(tmp_path):
    qrels = {f"x{i}": {"d0": 1} for i in range(7)}
    err = _error(load_beir, _beir(tmp_path, {"q0": {"d0": 1}, **qrels}))
    assert err.field == "query-id" and err.line == 3  # header, q0, then x0
    assert "7 ids are not in queries.jsonl: 'x0', 'x1', 'x2', 'x3', 'x4' and 2 more" in str(err)
    err = _error(load_beir, _beir(tmp_path, {"q0": {"d0": 1, "zz": 1}}))
    assert err.field == "corpus-id" and "'zz'" in str(err)


def test_load_beir_missing_split(tmp_path):
    err = _error(load_beir, _beir(tmp_path, {"q0": {"d0": 1}}), split="dev")
    assert "splits present: ['test']" in str(err)


def test_writers_round_trip_gzip(tmp_path):
    docs = [Document("a", "x", "T"), Document("b", "ünï")]
    write_corpus(docs, tmp_path / "c.jsonl.gz")
    assert list(iter_corpus(tmp_path / "c.jsonl.gz")) == docs
