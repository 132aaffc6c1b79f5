"""Reading the real BEIR data in /work/shared/data (skipped when absent). About 1 s."""

import pytest

from jaxir.data import DataError, iter_corpus, load_beir


def test_scifact(shared_data):
    root = shared_data("scifact")
    test = load_beir(root, "test")
    assert len(test.corpus) == 5183
    assert len(test.queries) == len(test.qrels) == 300
    assert sum(len(v) for v in test.qrels.values()) == 339
    assert len(load_beir(root, "train").queries) == 809
    doc = next(iter_corpus(root / "corpus.jsonl.gz"))
    assert doc.id == "4983" and doc.title.startswith("Microstructural development")


def test_cranfield_has_two_empty_documents(shared_data):
    root = shared_data("cranfield")
    with pytest.raises(DataError) as info:
        load_beir(root)
    assert (info.value.line, info.value.field) == (471, "text")
    beir = load_beir(root, allow_empty_docs=True)
    assert (len(beir.corpus), len(beir.queries)) == (1400, 225)
    assert beir.corpus["995"].full_text == ""
