"""Inverse-cloze training groups: determinism, query removal, skipping short documents."""

import pytest

from jaxir.data.ict import ict_groups, split_sentences
from jaxir.data.records import Document, load_corpus

CORPUS = {
    f"d{i}": Document(
        f"d{i}",
        f"Topic {i} starts here. It has a second sentence {i}. And a third one about {i}!",
        f"Title {i}",
    )
    for i in range(20)
} | {
    "short": Document("short", "Only one sentence, e.g. this one.", "Lonely"),
    "plain": "First plain sentence. Second plain sentence.",
}


def test_deterministic_and_seed_dependent():
    first = ict_groups(CORPUS, seed=3)
    assert first == ict_groups(CORPUS, seed=3)
    assert [g.query for g in first] != [g.query for g in ict_groups(CORPUS, seed=4)]


def test_query_removed_and_title_kept():
    groups = ict_groups(CORPUS, seed=0, keep_probability=0.0)
    assert len(groups) == 21  # "short" has one sentence
    for group, doc in zip(groups, [d for k, d in CORPUS.items() if k != "short"]):
        (passage,) = group.positives
        assert group.query not in passage
        assert group.negatives == ()
        if isinstance(doc, Document):
            assert passage.startswith(doc.title + " ")
            assert group.query in doc.text
        else:
            assert group.query in doc and not passage.startswith(" ")


def test_keep_probability_one_keeps_the_sentence():
    for group in ict_groups(CORPUS, seed=0, keep_probability=1.0):
        assert group.query in group.positives[0]


def test_default_keeps_about_ten_percent():
    corpus = {
        str(i): Document(str(i), "Alpha beta. Gamma delta. Epsilon zeta.") for i in range(2000)
    }
    kept = sum(g.query in g.positives[0] for g in ict_groups(corpus, seed=1))
    assert 140 < kept < 260


def test_short_documents_skipped():
    corpus = {"a": Document("a", "No split here, e.g. not at all."), "b": "x"}
    assert ict_groups(corpus, seed=0) == []


def test_max_groups_is_a_seeded_subset_in_corpus_order():
    everything = ict_groups(CORPUS, seed=5, keep_probability=0.0)
    some = ict_groups(CORPUS, seed=5, max_groups=5, keep_probability=0.0)
    assert len(some) == 5 and some == ict_groups(CORPUS, seed=5, max_groups=5, keep_probability=0.0)
    order = {g.positives[0][:8]: i for i, g in enumerate(everything)}
    assert [order[g.positives[0][:8]] for g in some] == sorted(
        order[g.positives[0][:8]] for g in some
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_groups": 0}, "max_groups"), ({"keep_probability": 2.0}, "keep_probability")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ict_groups(CORPUS, seed=0, **kwargs)


def test_split_sentences_keeps_decimals_and_abbreviations():
    assert split_sentences("Dose was 0.5 mg. Results, e.g. weight, improved!  Done?") == [
        "Dose was 0.5 mg.",
        "Results, e.g. weight, improved!",
        "Done?",
    ]


def test_scifact_corpus(shared_data):
    corpus = load_corpus(shared_data("scifact"))
    groups = ict_groups(corpus, seed=0)
    assert 0.9 * len(corpus) < len(groups) <= len(corpus)
    assert groups == ict_groups(corpus, seed=0)
