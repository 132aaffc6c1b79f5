import jax.numpy as jnp
import numpy as np
import pytest

from jaxir.data import DataError, read_trec_run, run_from_topk, write_trec_run


def test_round_trip_sorted_and_exact(tmp_path):
    run = {"q2": {"a": 0.1, "b": 1 / 3, "c": -2.5e-8}, "q1": {"z": 1.0, "y": 1.0}}
    path = tmp_path / "run.trec"
    write_trec_run(run, path, tag="t1")
    lines = path.read_text().splitlines()
    assert lines[0] == f"q2 Q0 b 1 {1 / 3!r} t1"
    assert [line.split()[2:4] for line in lines] == [
        ["b", "1"],
        ["a", "2"],
        ["c", "3"],
        ["y", "1"],
        ["z", "2"],  # ties by doc id
    ]
    assert read_trec_run(path) == run


def test_gzip_round_trip(tmp_path):
    run = {"q": {"d": 2.0}}
    write_trec_run(run, tmp_path / "run.trec.gz")
    assert read_trec_run(tmp_path / "run.trec.gz") == run


@pytest.mark.parametrize(
    ("line", "field", "needle"),
    [
        ("q1 Q0 d1 1 0.5", None, "expected 6 whitespace-separated columns"),
        ("q1 Q0 d1 first 0.5 tag", "rank", "integer rank"),
        ("q1 Q0 d1 1 high tag", "score", "expected a number"),
        ("q0 Q0 d0 2 0.5 tag", "doc_id", "listed twice"),
    ],
)
def test_read_errors(tmp_path, line, field, needle):
    p = tmp_path / "run.trec"
    p.write_text("q0 Q0 d0 1 1.0 tag\n\n" + line + "\n")
    with pytest.raises(DataError) as info:
        read_trec_run(p)
    assert (info.value.line, info.value.field) == (3, field)
    assert needle in str(info.value)


def test_write_rejects_bad_ids_and_scores(tmp_path):
    with pytest.raises(DataError, match="whitespace"):
        write_trec_run({"q 1": {"d": 1.0}}, tmp_path / "r")
    with pytest.raises(DataError, match="finite"):
        write_trec_run({"q": {"d": float("nan")}}, tmp_path / "r")


def test_run_from_topk_skips_padding_and_accepts_jax():
    scores = jnp.array([[3.0, 2.0, 1.0], [5.0, 0.0, 0.0]])
    indices = jnp.array([[1, 0, 1], [2, -1, -1]])
    run = run_from_topk(["a", "b"], ["d0", "d1", "d2"], scores, indices)
    assert run == {"a": {"d1": 3.0, "d0": 2.0}, "b": {"d2": 5.0}}


def test_run_from_topk_shape_errors():
    with pytest.raises(ValueError, match="both be"):
        run_from_topk(["a"], ["d"], np.zeros((1, 2)), np.zeros((1, 3), int))
    with pytest.raises(ValueError, match="only 1 doc_ids"):
        run_from_topk(["a"], ["d"], np.zeros((1, 1)), np.ones((1, 1), int))
    with pytest.raises(ValueError, match="query_ids"):
        run_from_topk(["a", "b"], ["d"], np.zeros((1, 1)), np.zeros((1, 1), int))
