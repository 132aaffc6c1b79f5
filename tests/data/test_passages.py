"""split_passages: windows that fit the encoder, cover every token, keep the title."""

import numpy as np
import pytest

from jaxir.data.passages import split_passages, word_windows
from jaxir.data.records import Document
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
