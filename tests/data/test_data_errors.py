import pickle

from jaxir.data import DataError


def test_str_names_path_line_field():
    err = DataError(
        "corpus.jsonl", 'missing; every line needs an "_id" string', line=17, field="_id"
    )
    assert str(err) == "corpus.jsonl:17: field '_id': missing; every line needs an \"_id\" string"
    assert isinstance(err, ValueError)


def test_str_without_line_or_field():
    assert str(DataError("q.tsv", "empty file")) == "q.tsv: empty file"
    assert str(DataError("q.tsv", "bad", field="score")) == "q.tsv: field 'score': bad"


def test_pickles():
    err = pickle.loads(pickle.dumps(DataError("a", "b", line=3, field="c")))
    assert (err.path, err.message, err.line, err.field) == ("a", "b", 3, "c")
    assert str(err) == "a:3: field 'c': b"
