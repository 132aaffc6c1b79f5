"""split_passages: windows that fit the encoder, cover every token, keep the title."""

import logging
import pickle

import numpy as np
import pytest

from jaxir.data.negatives import bm25_index
from jaxir.data.passages import (
    DuplicateIdError,
    Passage,
    best_passages,
    split_passages,
    word_windows,
)
from jaxir.data.records import Document, Query
from tests.search.tiny import bert_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return bert_tokenizer(tmp_path_factory.mktemp("vocab"))


BODY = " ".join(f"word{i} alpha-beta, gamma." for i in range(60))  # ~400 WordPiece tokens


@pytest.mark.parametrize("seed", range(20))
def test_word_windows_hold_whole_words_cover_everything_and_fit(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, size=rng.integers(0, 40))  # tokens per word
    starts = [0, *np.cumsum(sizes)[:-1].tolist()] if len(sizes) else []
    total, budget = int(sizes.sum()), int(rng.integers(3, 12))
    windows = word_windows(starts, total, budget, stride=int(rng.integers(1, budget + 1)))
    bounds = {*starts, total}
    assert all(a in bounds and b in bounds for a, b in windows)  # whole words only
    assert {t for a, b in windows for t in range(a, b)} == set(range(total))
    assert all(b - a <= budget for a, b in windows)  # words here are shorter than the budget
    assert [a for a, _ in windows] == sorted({a for a, _ in windows}) and windows[-1][1] == total


@pytest.mark.parametrize("prefix", ["", "passage: "])
def test_passages_fit_cover_the_text_and_repeat_the_title(tokenizer, prefix):
    max_length = 48
    doc = Document("d1", BODY, "A short title")
    rows = list(split_passages([doc], tokenizer, max_length=max_length, prefix=prefix))
    assert len(rows) > 3 and {d for d, _ in rows} == {"d1"}
    body_ids = tokenizer(BODY, add_special_tokens=False)["input_ids"]
    covered = []
    for _, text in rows:
        assert text.startswith("A short title ")
        assert len(tokenizer(prefix + text)["input_ids"]) <= max_length
        ids = tokenizer(text[len("A short title ") :], add_special_tokens=False)["input_ids"]
        at = [i for i in range(len(body_ids)) if body_ids[i : i + len(ids)] == ids]
        assert at, "a passage must tokenize as its slice of the document did"
        covered += range(at[0], at[0] + len(ids))
    assert set(covered) == set(range(len(body_ids)))  # every token is in some passage
    first = tokenizer(rows[0][1][len("A short title ") :], add_special_tokens=False)["input_ids"]
    assert first == body_ids[: len(first)] and rows[-1][1].endswith(BODY[-20:])


def test_short_documents_stay_whole_and_tuples_have_no_title(tokenizer):
    docs = [Document("a", "cats purr", "Cats"), ("b", "dogs bark"), Document("c", "", "Only title")]
    rows = list(split_passages(docs, tokenizer, max_length=32, batch_size=2))
    assert rows == [("a", "Cats cats purr"), ("b", "dogs bark"), ("c", "Only title")]


def test_a_long_title_is_read_as_text_not_repeated(tokenizer):
    doc = Document("d", BODY[:300], "title " * 30)
    rows = list(split_passages([doc], tokenizer, max_length=40))
    assert rows[0][1].startswith("title title") and not rows[-1][1].startswith("title")
    assert all(len(tokenizer(t)["input_ids"]) <= 40 for _, t in rows)


def test_errors(tokenizer):
    with pytest.raises(ValueError, match="no room for text"):
        list(split_passages([("a", "x")], tokenizer, max_length=3))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        word_windows([0, 1], 2, budget=2, stride=0)


def test_best_passages_pick_the_bm25_best_window_of_each_document(tokenizer):
    topics = ["insulin secretion", "tumour necrosis", "vitamin deficiency", "bone density"]
    filler = " ".join(f"word{i} alpha-beta, gamma." for i in range(25))
    corpus = {
        f"d{i}": Document(f"d{i}", f"{filler} {topics[i]} rises. {filler} {topics[i - 1]} falls.")
        for i in range(4)
    }
    queries = {"q0": Query("q0", "insulin secretion"), "q1": "necrosis of the tumour"}
    pairs = {"q0": ["d0", "d1", "d2"], "q1": ["d1", "d3"]}
    chosen = best_passages(queries, corpus, pairs, tokenizer, max_length=48)
    assert {q: list(c) for q, c in chosen.items()} == pairs
    assert "insulin secretion" in chosen["q0"]["d0"] and "insulin secretion" in chosen["q0"]["d1"]
    assert "tumour necrosis" in chosen["q1"]["d1"]
    # Brute force: the chosen window is a window of the document with the highest BM25 score.
    rows = list(split_passages(corpus.values(), tokenizer, max_length=48))
    index = bm25_index({str(r): text for r, (_, text) in enumerate(rows)})
    for qid, docs in chosen.items():
        text = queries[qid] if isinstance(queries[qid], str) else queries[qid].full_text
        scores = index.scores(text)
        for doc_id, passage in docs.items():
            mine = [r for r, (d, _) in enumerate(rows) if d == doc_id]
            assert passage in [rows[r][1] for r in mine]
            assert scores[mine].max() == scores[next(r for r in mine if rows[r][1] == passage)]
    # d2 holds no term of q0: its first window.
    assert chosen["q0"]["d2"] == rows[[d for d, _ in rows].index("d2")][1]


def test_best_passages_errors_name_the_unknown_id(tokenizer):
    corpus = {"d": Document("d", "cats purr")}
    with pytest.raises(KeyError, match="'zz'"):
        best_passages({"q": "cats"}, corpus, {"q": ["zz"]}, tokenizer, max_length=16)
    with pytest.raises(KeyError, match="'q'"):
        best_passages({}, corpus, {"q": ["d"]}, tokenizer, max_length=16)


def test_splitting_a_long_document_prints_no_length_warning(tmp_path, capfd):
    # A fresh tokenizer: transformers warns once per tokenizer instance.
    tokenizer = bert_tokenizer(tmp_path / "vocab")
    tokenizer.model_max_length = 64
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        doc = Document("d1", BODY, "A long " * 40)  # body and title beyond 64 tokens
        rows = list(split_passages([doc], tokenizer, max_length=64, prefix="passage: "))
        assert len(rows) > 3
        assert [r.getMessage() for r in records] == []
        assert capfd.readouterr().err == ""
        # The check can see the warning: tokenizing the document directly does print it.
        tokenizer(BODY)
        assert any("Token indices sequence length" in r.getMessage() for r in records)
    finally:
        logger.removeHandler(handler)


def test_rows_are_passages_and_documents_must_have_unique_ids(tokenizer):
    rows = list(split_passages([Document("a", BODY), ("b", "cats")], tokenizer, max_length=32))
    assert all(isinstance(r, Passage) for r in rows) and rows[-1] == ("b", "cats")
    assert {r.doc_id for r in rows[:-1]} == {"a"}
    for docs, where in (
        ([("a", "x"), ("a", "y")], "#0 and #1"),
        ([("a", "x"), ("b", "y"), ("a", "z")], "#0 and #2"),
    ):
        with pytest.raises(DuplicateIdError, match=f"documents {where} have the same id 'a'") as e:
            list(split_passages(docs, tokenizer, max_length=32, batch_size=2))
        assert (e.value.doc_id, e.value.second) == ("a", int(where[-1]))
    assert pickle.loads(pickle.dumps(e.value)).args == e.value.args
