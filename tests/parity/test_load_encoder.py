"""``jaxir.encode.load_encoder(...).encode`` equals transformers PyTorch tokenizer + model + pooling."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need PyTorch (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers")

from jaxir.encode import load_encoder  # noqa: E402
from tests.fixtures import VOCAB_SIZE, vocab_tokenizer  # noqa: E402

from .conftest import perturbed  # noqa: E402

ATOL = 1e-4

LONG = " ".join(f"retrieval{i} of dense passages about protein folding" for i in range(60))
TEXTS = [
    "a query",
    "A longer passage: BM25 ranks documents by term frequency, inverse document frequency "
    "and length normalization.",
    LONG,  # ~500 word pieces: truncated to max_length
    "x",
    "Mixed CASE text with numbers 12345 and punctuation!?",
    LONG[:400],
]


def save_bert_tokenizer(path):
    """A BERT WordPiece tokenizer (the test vocabulary, tests/fixtures), saved in ``path``.

    ``vocab_tokenizer`` loads it with from_pretrained(dir), never
    BertTokenizerFast(vocab_file=...), which in transformers 5 silently builds a 5-token
    vocabulary, and checks its size.
    """
    tokenizer = vocab_tokenizer(path)
    tokenizer.save_pretrained(path)
    return tokenizer


@pytest.fixture(scope="module", params=["bert", "bert-mlm"])
def saved(request, tmp_path_factory):
    """(directory, torch BertModel, tokenizer): tiny random BERT with the test vocabulary.

    ``bert-mlm`` saves a ``BertForMaskedLM`` checkpoint: load_encoder must ignore its head.
    """
    config = transformers.BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    if request.param == "bert-mlm":
        full = perturbed(transformers.BertForMaskedLM(config), seed=1)
        model = full.bert
    else:
        full = model = perturbed(transformers.BertModel(config), seed=1)
    path = tmp_path_factory.mktemp(request.param)
    full.save_pretrained(path)
    return path, model, save_bert_tokenizer(path)


def torch_encode(model, tokenizer, texts, *, pooling, normalize, max_length, prefix=""):
    batch = tokenizer(
        [prefix + t for t in texts],
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].float()[..., None]
    vec = hidden[:, 0] if pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1)
    if normalize:
        vec = torch.nn.functional.normalize(vec, dim=-1)
    return vec.numpy()


@pytest.mark.parametrize(
    "pooling, normalize, max_length",
    [("mean", False, 48), ("cls", False, 48), ("mean", True, 128), ("cls", True, 20)],
)
def test_encode_matches_transformers(saved, pooling, normalize, max_length):
    path, model, tokenizer = saved
    lengths = [len(ids) for ids in tokenizer(TEXTS)["input_ids"]]
    assert max(lengths) > max_length > min(lengths)  # truncation is exercised

    encoder = load_encoder(path, pooling=pooling, normalize=normalize, max_length=128)
    # batch_size=2: rows of very different lengths land in different length buckets.
    got = encoder.encode(TEXTS, batch_size=2, max_length=max_length)
    want = torch_encode(
        model, tokenizer, TEXTS, pooling=pooling, normalize=normalize, max_length=max_length
    )
    assert got.shape == (len(TEXTS), 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_prefix_is_prepended(saved):
    path, model, tokenizer = saved
    encoder = load_encoder(path, pooling="mean", max_length=64, prefix="query: ")
    got = encoder.encode(TEXTS[:2], batch_size=4)
    want = torch_encode(
        model,
        tokenizer,
        TEXTS[:2],
        pooling="mean",
        normalize=False,
        max_length=64,
        prefix="query: ",
    )
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_default_max_length_is_the_models_positions(saved):
    """Without ``max_length``: the 128 positions (the saved tokenizer's limit is the sentinel)."""
    path, model, tokenizer = saved
    assert tokenizer.model_max_length > 10**6  # transformers' "unset" value, saved as such
    encoder = load_encoder(path, pooling="mean")
    assert encoder.max_length == 128
    got = encoder.encode(TEXTS, batch_size=2)
    want = torch_encode(model, tokenizer, TEXTS, pooling="mean", normalize=False, max_length=128)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
