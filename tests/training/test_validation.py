"""In-training validation on device agrees with exact search + ir_measures (FirstP and MaxP)."""

import pytest

from jaxir import config as config_lib
from jaxir.data.synthetic import make_collection
from jaxir.eval import evaluate
from jaxir.families.dense import DenseFamily
from jaxir.search import dense_search_run, tower_encoders
from jaxir.training.loop import _dev_set
from jaxir.training.validation import ValidationSet, validate
from tests.search.tiny import SPEC, bert_tokenizer, tiny_dual_encoder


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return bert_tokenizer(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def beir():
    """Synthetic collection; many documents are longer than the 32-token passage tower."""
    return make_collection(num_topics=8, num_train_queries=0, num_test_queries=12)


def validation_set(tokenizer, beir, split: bool) -> ValidationSet:
    texts = {d: doc.full_text for d, doc in beir.corpus.items()}
    rows = list(texts.items())
    if split:
        _, passage_enc = tower_encoders(tiny_dual_encoder(), tokenizer)
        rows = list(passage_enc.passages(beir.corpus.values()))
        assert len(rows) > len(texts), "no document was split: the MaxP case tests nothing"
    return ValidationSet.build(
        {q: query.full_text for q, query in beir.queries.items()},
        rows,
        beir.qrels,
        tokenizer,
        max_query_length=SPEC.query_max_length,
        max_passage_length=SPEC.passage_max_length,
    )


@pytest.mark.parametrize("split", [False, True], ids=["firstp", "maxp"])
def test_validate_matches_exact_search_and_ir_measures(tokenizer, beir, split):
    model = tiny_dual_encoder()
    got = validate(model, validation_set(tokenizer, beir, split))
    run = dense_search_run(
        model, tokenizer, beir.corpus, beir.queries, k=100, split_documents=split
    )
    want = evaluate(run, beir.qrels, ("nDCG@10", "R@100"))
    assert got == pytest.approx(want, abs=1e-5)


def test_maxp_differs_from_firstp(tokenizer, beir):
    """Guards the test above: the split and unsplit sets must score differently."""
    model = tiny_dual_encoder()
    firstp = validate(model, validation_set(tokenizer, beir, False))
    maxp = validate(model, validation_set(tokenizer, beir, True))
    assert firstp != maxp


def test_training_loop_dev_set_measures_what_maxp_search_does(tokenizer, beir):
    """``jaxir.train``'s dev set with ``index.split_documents``: passages as the index cuts them."""
    config = config_lib.override(
        config_lib.RunConfig(),
        [
            f"data.max_query_length={SPEC.query_max_length}",
            f"data.max_passage_length={SPEC.passage_max_length}",
            f"data.validation_corpus={len(beir.corpus)}",
            "index.split_documents=true",
        ],
    )
    family = DenseFamily.from_config(config)
    dev = _dev_set(family, config, beir.corpus, beir.queries, beir.qrels, tokenizer)
    assert len(dev.passage_doc) > len(beir.corpus), "no document was split"
    model = tiny_dual_encoder()
    run = dense_search_run(model, tokenizer, beir.corpus, beir.queries, k=100, split_documents=True)
    want = evaluate(run, beir.qrels, ("nDCG@10", "R@100"))
    assert validate(model, dev) == pytest.approx(want, abs=1e-5)
