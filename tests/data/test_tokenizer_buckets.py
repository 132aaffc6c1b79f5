import dataclasses
import json
import shutil

import numpy as np
import pytest
import transformers

from jaxir.data import (
    CONTRACT_FILE,
    DEFAULT_BUCKETS,
    DataError,
    bucket_length,
    encode_batch,
    length_buckets,
    load_tokenizer,
    load_tokenizer_contract,
    pad_batch_rows,
    tokenize_texts_sorted,
    tokenizer_contract,
)
from tests.fixtures import VOCAB_DIR, VOCAB_SIZE


@pytest.fixture(scope="module")
def vocab_dir():
    """The committed test vocabulary (a bert-base-uncased subset; tests/fixtures)."""
    return VOCAB_DIR


@pytest.fixture(scope="module")
def tok(vocab_dir):
    return load_tokenizer(vocab_dir)


def test_bucket_length():
    assert [bucket_length(n) for n in (0, 1, 32, 33, 500, 512, 5000)] == [
        32,
        32,
        32,
        64,
        512,
        512,
        512,
    ]
    assert bucket_length(70, max_length=100) == 100
    assert bucket_length(20, (16, 8), max_length=12) == 12
    assert length_buckets(DEFAULT_BUCKETS, 512) == DEFAULT_BUCKETS
    assert length_buckets((64, 32, 64), 48) == (32, 48)
    with pytest.raises(ValueError):
        bucket_length(-1)
    with pytest.raises(ValueError):
        length_buckets((0, 8))


def test_load_vocab_only_directory(tok):
    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    assert len(tok) == VOCAB_SIZE
    assert tok.tokenize("Hello World") == ["hello", "world"]


def test_vocab_size_mismatch_is_an_error(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ncat\ncat\ndog\n")
    with pytest.raises(DataError, match="has 7 tokens but the file has 8 lines"):
        load_tokenizer(tmp_path)


def test_directory_without_tokenizer(tmp_path):
    with pytest.raises(DataError, match=r"neither tokenizer\.json nor vocab\.txt"):
        load_tokenizer(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        load_tokenizer(tmp_path / "missing")


def test_encode_batch_buckets_and_dtypes(tok):
    texts = ["a short query", "word " * 40]
    batch = encode_batch(tok, texts, max_length=512)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.dtype == np.int32 and v.shape == (2, 64) for v in batch.values())
    assert batch["attention_mask"].sum(1).tolist() == [5, 42]
    assert not batch["token_type_ids"].any()
    assert batch["input_ids"][0, :5].tolist() == [
        tok.cls_token_id,
        *tok.encode("a short query", add_special_tokens=False),
        tok.sep_token_id,
    ]
    assert (batch["input_ids"][0, 5:] == tok.pad_token_id).all()
    assert encode_batch(tok, ["x " * 100], max_length=512)["input_ids"].shape == (1, 128)
    assert encode_batch(tok, ["x " * 100], max_length=100)["input_ids"].shape == (1, 100)


def test_truncation_keeps_final_sep(tok):
    batch = encode_batch(tok, ["word " * 1000, "hi"], max_length=512)
    assert batch["input_ids"].shape == (2, 512)
    assert batch["input_ids"][0, -1] == tok.sep_token_id
    assert batch["attention_mask"][0].all()
    small = encode_batch(tok, ["one two three four five"], max_length=4, buckets=(2, 8))
    assert small["input_ids"].tolist() == [
        [tok.cls_token_id, *tok.encode("one two", add_special_tokens=False), tok.sep_token_id]
    ]


def test_prefix_and_row_padding(tok):
    batch = encode_batch(
        tok, ["cats", "dogs", "fish"], max_length=32, pad_to_multiple=8, prefix="query: "
    )
    assert batch["input_ids"].shape == (8, 32)
    assert batch["attention_mask"].sum(1).tolist() == [5, 5, 5, 0, 0, 0, 0, 0]
    assert tok.decode(batch["input_ids"][0], skip_special_tokens=True) == "query : cats"


def test_pad_batch_rows():
    batch = {"a": np.ones((5, 3), np.int32), "b": np.ones((5,), np.float32)}
    padded, n = pad_batch_rows(batch, 4)
    assert n == 5 and padded["a"].shape == (8, 3) and padded["b"].shape == (8,)
    assert padded["a"][5:].sum() == 0 and padded["a"].dtype == np.int32
    same, n = pad_batch_rows(batch, 5)
    assert n == 5 and same["a"] is batch["a"]
    with pytest.raises(ValueError, match="disagree"):
        pad_batch_rows({"a": np.ones(2), "b": np.ones(3)}, 2)


def test_tokenize_texts_sorted_restores_order(tok):
    rng = np.random.default_rng(0)
    texts = [" ".join(["token"] * int(n)) for n in rng.integers(1, 300, size=37)]
    out = np.zeros(len(texts), dtype=np.int64)
    shapes = set()
    seen = []
    for sb in tokenize_texts_sorted(tok, texts, max_length=256, batch_size=8):
        ids, mask = sb.batch["input_ids"], sb.batch["attention_mask"]
        assert ids.shape[0] == 8 and ids.shape[1] in length_buckets(DEFAULT_BUCKETS, 256)
        assert not mask[len(sb.indices) :].any()
        shapes.add(ids.shape)
        out[sb.indices] = mask[: len(sb.indices)].sum(1)
        seen.extend(sb.indices.tolist())
    assert sorted(seen) == list(range(len(texts)))
    expected = [min(len(t.split()) + 2, 256) for t in texts]
    assert out.tolist() == expected
    assert len(shapes) <= len(length_buckets(DEFAULT_BUCKETS, 256))


def write_legacy_contract(directory, contract):
    """``jaxir_tokenizer.json`` as jaxir wrote it per tower before ``jaxir_encoder.json``."""
    payload = {"format": "jaxir_tokenizer/1", **dataclasses.asdict(contract)}
    (directory / CONTRACT_FILE).write_text(json.dumps(payload, indent=2) + "\n")


def test_legacy_contract_round_trip_and_check(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    contract = tokenizer_contract(tok, max_length=256)
    assert (
        contract.lowercase and contract.vocab_size == VOCAB_SIZE and contract.pad_token == "[PAD]"
    )
    write_legacy_contract(tmp_path, dataclasses.replace(contract, query_prefix="query: "))
    assert load_tokenizer_contract(tmp_path) == dataclasses.replace(
        contract, query_prefix="query: "
    )
    assert len(load_tokenizer(tmp_path)) == VOCAB_SIZE

    write_legacy_contract(
        tmp_path, dataclasses.replace(contract, lowercase=False, pad_token="<pad>")
    )
    with pytest.raises(DataError) as info:
        load_tokenizer(tmp_path)
    assert str(tmp_path / CONTRACT_FILE) in str(info.value)
    assert "pad_token: contract '<pad>', tokenizer '[PAD]'" in str(info.value)
    assert "lowercase: contract False" in str(info.value)
    assert len(load_tokenizer(tmp_path, check_contract=False)) == VOCAB_SIZE


def test_legacy_contract_fills_missing_special_tokens(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()  # tokenizer.json alone knows no pad token
    write_legacy_contract(tmp_path, tokenizer_contract(tok, max_length=64))
    loaded = load_tokenizer(tmp_path)
    assert (loaded.pad_token, loaded.cls_token, loaded.sep_token) == ("[PAD]", "[CLS]", "[SEP]")
    assert encode_batch(loaded, ["hi"], max_length=64)["input_ids"].shape == (1, 32)


def test_vocab_only_dir_with_legacy_contract_uses_its_lowercasing(vocab_dir, tok, tmp_path):
    shutil.copy(vocab_dir / "vocab.txt", tmp_path / "vocab.txt")
    contract = dataclasses.replace(tokenizer_contract(tok, max_length=64), vocab_size=None)
    write_legacy_contract(tmp_path, contract)
    assert load_tokenizer(tmp_path).tokenize("HELLO") == ["hello"]


def test_contract_file_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_tokenizer_contract(tmp_path)
    path = tmp_path / CONTRACT_FILE
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_tokenizer_contract(tmp_path)
    good = {
        "format": "jaxir_tokenizer/1",
        "max_length": 8,
        "pad_token": "[PAD]",
        "cls_token": None,
        "sep_token": None,
        "lowercase": True,
    }
    path.write_text(json.dumps({**good, "max_length": "8"}))
    with pytest.raises(DataError) as info:
        load_tokenizer_contract(tmp_path)
    assert info.value.field == "max_length"
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "lowercase"}))
    with pytest.raises(DataError) as info:
        load_tokenizer_contract(tmp_path)
    assert info.value.field == "lowercase"
    path.write_text(json.dumps(good))
    assert load_tokenizer_contract(tmp_path).max_length == 8
