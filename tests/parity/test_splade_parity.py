"""``load_splade(dir).encode`` equals PyTorch ``transformers`` + the SPLADE formula on *ForMaskedLM checkpoints."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need PyTorch (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers")

from jaxir.sparse_encode import load_splade  # noqa: E402
from tests.fixtures import VOCAB_SIZE, vocab_tokenizer  # noqa: E402

from .conftest import hf_config, perturbed  # noqa: E402

ATOL = 1e-4
POSITIONS = 48
LONG = " ".join(f"retrieval{i} of sparse passages about protein folding" for i in range(12))
TEXTS = [
    "a query",
    "SPLADE expands documents with terms they do not contain, weighted by the MLM head.",
    LONG,  # longer than the models' positions: truncated
    "",  # only [CLS] [SEP]
    "Mixed CASE text with numbers 12345 and punctuation!?",
    LONG[:150],
]


def mlm_config(family: str):
    # The test tokenizer (tests/fixtures) pads with id 0, so RoBERTa-style models are
    # told so (their position ids count from pad + 1).
    return hf_config(
        family, vocab_size=VOCAB_SIZE, max_position_embeddings=POSITIONS, pad_token_id=0
    )


@pytest.fixture(scope="module", params=["bert", "distilbert", "roberta", "xlm-roberta"])
def checkpoint(request, tmp_path_factory):
    """(family, directory, torch *ForMaskedLM, tokenizer): a tiny random checkpoint + the test tokenizer."""
    family = request.param
    path = tmp_path_factory.mktemp(f"mlm-{family}")
    return family, path, *save_checkpoint(family, path)


def save_checkpoint(family: str, path):
    """Saves a tiny random ``family`` *ForMaskedLM and the test tokenizer in ``path``."""
    torch.manual_seed(0)
    model = perturbed(transformers.AutoModelForMaskedLM.from_config(mlm_config(family)), seed=1)
    model.save_pretrained(path)
    tokenizer = vocab_tokenizer(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer


def torch_splade(model, tokenizer, texts, *, max_length, pooling="max"):
    batch = tokenizer(
        texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = batch["attention_mask"]
    weights = torch.log1p(torch.relu(logits)) * mask[..., None]
    pooled = torch.max(weights, dim=1).values if pooling == "max" else weights.sum(1)
    return pooled.numpy()


def test_encode_matches_pytorch(checkpoint):
    family, path, model, tokenizer = checkpoint
    encoder = load_splade(path)  # default arguments: max pooling, the positions' max length
    offset = 1 if family in ("roberta", "xlm-roberta") else 0  # positions start at pad + 1
    assert encoder.max_lengths == {"query": POSITIONS - offset, "passage": POSITIONS - offset}
    lengths = [len(ids) for ids in tokenizer(TEXTS)["input_ids"]]
    assert max(lengths) > POSITIONS  # truncation is exercised
    # batch_size=2: rows of different lengths land in different length buckets.
    got = encoder.encode(TEXTS, batch_size=2)
    want = torch_splade(model, tokenizer, TEXTS, max_length=POSITIONS - offset)
    assert got.shape == (len(TEXTS), VOCAB_SIZE) and got.dtype == np.float32
    assert (got.data != 0).all()  # explicit zeros removed
    np.testing.assert_allclose(got.toarray(), want, atol=ATOL, rtol=0)
    assert (want > 0).sum(1).min() > 0  # every row, the empty text's too, has active terms


def test_sum_pooling_and_queries_match_pytorch(checkpoint):
    _, path, model, tokenizer = checkpoint
    encoder = load_splade(path, pooling="sum", max_length=20)
    got = encoder.encode_queries(TEXTS[:3], batch_size=4)
    want = torch_splade(model, tokenizer, TEXTS[:3], max_length=20, pooling="sum")
    np.testing.assert_allclose(got.toarray(), want, atol=ATOL, rtol=1e-5)


def test_sentence_transformers_sparse_encoder_agrees(tmp_path):
    """The same weights through sentence-transformers' SparseEncoder (MLMTransformer + SpladePooling)."""
    st = pytest.importorskip(
        "sentence_transformers", reason="needs pretrained extra: sentence-transformers"
    )
    path = tmp_path / "hf"
    save_checkpoint("bert", path)
    tmp_path = tmp_path / "st"
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    peer = st.SparseEncoder(
        modules=[MLMTransformer(str(path), max_seq_length=32), SpladePooling("sum")], device="cpu"
    )
    want = peer.encode(TEXTS, convert_to_tensor=True, batch_size=4).to_dense().numpy()
    peer.save(str(tmp_path))
    # The saved sentence-transformers directory gives its pooling and max length as defaults.
    encoder = load_splade(tmp_path)
    assert encoder.spec.pooling == "sum" and encoder.max_lengths["passage"] == 32
    np.testing.assert_allclose(encoder.encode(TEXTS).toarray(), want, atol=ATOL, rtol=1e-5)
    pooling = next(tmp_path.glob("*SpladePooling*/config.json"))
    pooling.write_text(json.dumps({"pooling_strategy": "max", "activation_function": "log1p_relu"}))
    with pytest.raises(ValueError, match="'log1p_relu': jaxir's SPLADE computes log"):
        load_splade(tmp_path)
