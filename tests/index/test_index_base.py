"""Manifest reading, load_searcher dispatch errors and recall_against."""

import json

import numpy as np
import pytest

from jaxir.index import ExactSearcher, Searcher, load_searcher, recall_against


def test_exact_searcher_satisfies_protocol():
    assert isinstance(ExactSearcher(np.ones((3, 2), np.float32)), Searcher)


def test_missing_directory_and_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such searcher directory"):
        load_searcher(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="missing searcher manifest"):
        load_searcher(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"kind": "exact", ', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (
            '{"kind": "exact", "version": 1, "dim": 2, "metric": "dot_product"}',
            "'num_docs' is missing",
        ),
        (
            '{"kind": "exact", "version": "1", "num_docs": 1, "dim": 2, "metric": "dot_product"}',
            "'version' must be int",
        ),
        (
            '{"kind": "exact", "version": 1, "num_docs": 1, "dim": 2, "metric": "l2"}',
            "field 'metric'",
        ),
        (
            '{"kind": "faiss", "version": 1, "num_docs": 1, "dim": 2, "metric": "dot_product"}',
            "known kinds",
        ),
    ],
)
def test_corrupted_manifest(tmp_path, text, message):
    (tmp_path / "searcher.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_searcher(tmp_path)


def test_wrong_version(tmp_path):
    ExactSearcher(np.ones((3, 2), np.float32)).save(tmp_path)
    manifest = json.loads((tmp_path / "searcher.json").read_text())
    (tmp_path / "searcher.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ValueError, match="field 'version' is 99"):
        load_searcher(tmp_path)


def test_recall_against():
    exact = np.array([[0, 1, 2], [3, 4, -1], [-1, -1, -1]])
    approx = np.array([[2, 9, 0], [4, 3, 7], [1, 2, 3]])
    assert recall_against(exact, approx) == pytest.approx((2 / 3 + 1.0) / 2)
    with pytest.raises(ValueError, match="same Q"):
        recall_against(exact, approx[:2])
