"""TextEncoder, the embedding store (write / resume / read) and the ``jaxir encode`` CLI."""

import json
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from jaxir import sharding
from jaxir.cli.main import main
from jaxir.data.errors import DataError
from jaxir.data.records import Document, Query, iter_corpus, write_corpus, write_queries
from jaxir.encode import (
    MANIFEST,
    TextEncoder,
    encode_corpus,
    load_embeddings,
    load_encoder,
)
from jaxir.models import hf
from jaxir.models.bert import PRESETS, Model

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("JAXIR_SHARED_DATA", REPO.parent / "shared" / "data"))

WORDS = [
    "cats",
    "dogs",
    "purr",
    "bark",
    "fish",
    "swim",
    "birds",
    "fly",
    "protein",
    "gene",
    "cell",
    "virus",
    "dense",
    "sparse",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BATCH, MAX_LENGTH = 4, 16  # one batch shape across tests: programs compile once


def make_docs(n: int, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [
        Document(
            f"d{i}",
            " ".join(rng.choice(WORDS, size=int(rng.integers(1, 20)))),
            title=WORDS[i % len(WORDS)] if i % 2 else "",
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> pathlib.Path:
    """A tiny random BERT (with MLM head) and a small WordPiece vocabulary."""
    path = tmp_path_factory.mktemp("tiny-encoder")
    hf.save_pretrained(Model(PRESETS["tiny"], rngs=nnx.Rngs(0)), path)
    (path / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n")
    return path


@pytest.fixture(scope="module")
def encoder(model_dir) -> TextEncoder:
    return load_encoder(model_dir, pooling="mean", max_length=MAX_LENGTH)


def test_encode_restores_order_and_ignores_batch_composition(encoder):
    texts = [d.full_text for d in make_docs(9)]
    together = encoder.encode(texts, batch_size=BATCH)
    alone = np.concatenate([encoder.encode([t], batch_size=BATCH) for t in texts])
    assert together.shape == (9, 32) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)
    assert encoder.encode([], batch_size=BATCH).shape == (0, 32)


def test_encode_on_a_mesh_matches_one_device(model_dir, encoder):
    texts = [d.full_text for d in make_docs(5)]
    mesh = sharding.make_mesh(data=-1, fsdp=2, tensor=1)
    sharded = load_encoder(model_dir, pooling="mean", max_length=MAX_LENGTH, mesh=mesh)
    got = sharded.encode(texts, batch_size=3)  # rounded up to a multiple of data*fsdp
    np.testing.assert_allclose(got, encoder.encode(texts, batch_size=BATCH), atol=1e-5, rtol=0)
    assert (
        jax.device_count() == 1
        or len(sharded.model.layers[0].mlp.up.kernel.sharding.device_set) > 1
    )


def test_bad_settings_are_named(model_dir, encoder):
    with pytest.raises(ValueError, match=r"max_length=100 is out of range.*64 position"):
        encoder.encode(["cats"], max_length=100)
    with pytest.raises(ValueError, match="pooling='sum'"):
        load_encoder(model_dir, pooling="sum", max_length=MAX_LENGTH)
    with pytest.raises(TypeError, match="not one string"):
        encoder.encode("cats")


def test_store_round_trip(encoder, tmp_path):
    docs = make_docs(7)
    store = encode_corpus(encoder, docs, tmp_path, shard_size=3, batch_size=BATCH, progress=False)
    want = encoder.encode([d.full_text for d in docs], batch_size=BATCH)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["format"] == "jaxir-embeddings" and manifest["version"] == 1
    assert (manifest["dim"], manifest["count"], manifest["dtype"]) == (32, 7, "float32")
    assert [s["count"] for s in manifest["shards"]] == [3, 3, 1]
    assert manifest["encoder"] == {
        "pooling": "mean",
        "normalize": False,
        "max_length": MAX_LENGTH,
        "prefix": "",
        "dtype": "float32",
    }
    for mmap in (True, False):
        loaded = load_embeddings(tmp_path, mmap=mmap)
        assert loaded.ids == [d.id for d in docs] == store.ids
        np.testing.assert_array_equal(loaded.vectors, want)
        assert isinstance(loaded.shards[0], np.memmap) == mmap
    assert not list(tmp_path.glob(".*.tmp"))


def test_store_accepts_id_text_tuples_and_queries(encoder, tmp_path):
    store = encode_corpus(
        encoder, [Query("q1", "cats purr"), ("q2", "dogs")], tmp_path, progress=False
    )
    assert store.ids == ["q1", "q2"] and len(store) == 2
    np.testing.assert_array_equal(store.vectors, encoder.encode(["cats purr", "dogs"]))


def interrupted(docs, after: int):
    """Yields ``after`` documents, then fails like a killed job."""
    for i, doc in enumerate(docs):
        if i == after:
            raise RuntimeError("simulated interruption")
        yield doc


def test_resume_after_interruption_equals_uninterrupted_run(encoder, tmp_path):
    docs = make_docs(11)
    kwargs = dict(shard_size=4, batch_size=BATCH, progress=False)
    reference = encode_corpus(encoder, docs, tmp_path / "ref", **kwargs)

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated"):
        encode_corpus(encoder, interrupted(docs, 6), out, **kwargs)
    manifest = json.loads((out / MANIFEST).read_text())
    assert (manifest["complete"], manifest["count"], len(manifest["shards"])) == (False, 4, 1)
    with pytest.raises(ValueError, match=r"incomplete.*resume"):
        load_embeddings(out)
    first_shard = (out / "vectors-00000.npy").stat().st_mtime_ns

    resumed = encode_corpus(encoder, docs, out, **kwargs)
    assert (out / "vectors-00000.npy").stat().st_mtime_ns == first_shard  # kept, not redone
    assert resumed.ids == reference.ids
    np.testing.assert_array_equal(resumed.vectors, reference.vectors)
    assert resumed.manifest["shards"] == reference.manifest["shards"]
    # Resuming a finished store encodes nothing and returns it unchanged.
    again = encode_corpus(encoder, docs, out, **kwargs)
    np.testing.assert_array_equal(again.vectors, reference.vectors)


def test_resume_refuses_changed_input_or_settings(model_dir, encoder, tmp_path):
    docs = make_docs(6)
    with pytest.raises(RuntimeError):
        encode_corpus(encoder, interrupted(docs, 5), tmp_path, shard_size=2, progress=False)
    changed = [Document("other", "cats"), *docs[1:]]
    with pytest.raises(ValueError, match=r"ids-00000.txt:1: stored id 'd0'.*'other'"):
        encode_corpus(encoder, changed, tmp_path, shard_size=2, progress=False)
    with pytest.raises(ValueError, match="more documents than the input"):
        encode_corpus(encoder, docs[:3], tmp_path, shard_size=2, progress=False)
    cls = load_encoder(model_dir, pooling="cls", max_length=MAX_LENGTH)
    with pytest.raises(ValueError, match=r"encoded with .*'pooling': 'mean'.*--no-resume"):
        encode_corpus(cls, docs, tmp_path, shard_size=2, progress=False)
    # resume=False starts over with the new settings and leaves no stale shard behind.
    store = encode_corpus(
        cls, docs[:3], tmp_path, shard_size=10, batch_size=BATCH, resume=False, progress=False
    )
    assert store.manifest["encoder"]["pooling"] == "cls" and len(store) == 3
    assert sorted(p.name for p in tmp_path.glob("vectors-*")) == ["vectors-00000.npy"]


def test_bad_documents_are_named(encoder, tmp_path):
    with pytest.raises(ValueError, match=r"document #1: id 'a\\nb'.*line breaks"):
        encode_corpus(encoder, [("ok", "cats"), ("a\nb", "dogs")], tmp_path, progress=False)
    with pytest.raises(TypeError, match="document #0: expected a Document"):
        encode_corpus(encoder, ["just text"], tmp_path, resume=False, progress=False)
    with pytest.raises(ValueError, match="documents is empty"):
        encode_corpus(encoder, [], tmp_path, resume=False, progress=False)


def test_load_embeddings_errors(encoder, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"manifest.json: no embedding manifest"):
        load_embeddings(tmp_path)
    encode_corpus(encoder, make_docs(5), tmp_path, shard_size=2, batch_size=BATCH, progress=False)
    manifest_file = tmp_path / MANIFEST
    manifest = json.loads(manifest_file.read_text())
    assert manifest["kind"] == "dense"
    manifest_file.write_text(json.dumps({**manifest, "kind": "sparse"}))
    with pytest.raises(ValueError, match=r'manifest.json: field "kind" is \'sparse\'; known kinds'):
        load_embeddings(tmp_path)
    old = {k: v for k, v in manifest.items() if k != "kind"}  # written before kinds: dense
    manifest_file.write_text(json.dumps(old))
    assert load_embeddings(tmp_path).dim == 32

    manifest_file.write_text(json.dumps({**manifest, "count": 6}))
    with pytest.raises(ValueError, match='field "count" is 6 but its shards hold 5'):
        load_embeddings(tmp_path)
    bad_shard = dict(manifest["shards"][0], count=3)
    manifest_file.write_text(
        json.dumps({**manifest, "shards": [bad_shard, *manifest["shards"][1:]]})
    )
    with pytest.raises(ValueError, match=r"vectors-00000.npy: holds float32 \(2, 32\).*\(3, 32\)"):
        load_embeddings(tmp_path)
    manifest_file.write_text(json.dumps(manifest))
    (tmp_path / "ids-00001.txt").write_text("d2\n")
    with pytest.raises(ValueError, match=r"ids-00001.txt: has 1 ids.*expects 2"):
        load_embeddings(tmp_path)
    (tmp_path / "ids-00001.txt").write_text("d2\nd3\n")
    (tmp_path / "vectors-00002.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"vectors-00002.npy: vector shard 2 .* missing"):
        load_embeddings(tmp_path)
    manifest_file.write_text(json.dumps({**manifest, "format": "other"}))
    with pytest.raises(ValueError, match='"format" must be "jaxir-embeddings"'):
        load_embeddings(tmp_path)


def test_cli_encodes_a_beir_directory(model_dir, encoder, tmp_path, capsys):
    docs = make_docs(6)
    write_corpus(docs, tmp_path / "beir" / "corpus.jsonl")
    write_queries(
        [Query("q1", "cats purr"), Query("q2", "dogs bark")], tmp_path / "beir" / "queries.jsonl"
    )
    common = ["--model", str(model_dir), "--data", str(tmp_path / "beir"), "--max-length", "16"]

    assert main(["encode", *common, "--out", str(tmp_path / "emb"), "--shard-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "6 corpus texts" in printed and "dim 32, 2 shard(s)" in printed and "docs/s" in printed
    store = load_embeddings(tmp_path / "emb")
    assert store.ids == [d.id for d in docs]
    np.testing.assert_allclose(
        store.vectors, encoder.encode([d.full_text for d in docs]), atol=1e-5, rtol=0
    )

    args = ["--what", "queries", "--out", str(tmp_path / "q"), "--pooling", "cls", "--normalize"]
    assert main(["encode", *common, *args]) == 0
    queries = load_embeddings(tmp_path / "q")
    assert queries.ids == ["q1", "q2"] and queries.manifest["encoder"]["pooling"] == "cls"
    np.testing.assert_allclose(np.linalg.norm(queries.vectors, axis=1), 1.0, atol=1e-5)


def test_cli_reports_errors_without_traceback(model_dir, tmp_path, capsys):
    missing = ["encode", "--model", str(tmp_path / "nope"), "--data", str(tmp_path)]
    assert main([*missing, "--out", str(tmp_path / "emb")]) == 1
    assert "nope/config.json: not found" in capsys.readouterr().err
    bad = ["encode", "--model", str(model_dir), "--data", str(tmp_path), "--max-length", "999"]
    assert main([*bad, "--out", str(tmp_path / "emb")]) == 1
    assert "max_length=999 is out of range" in capsys.readouterr().err


def test_cli_help_describes_format_and_example(capsys):
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    text = capsys.readouterr().out
    assert "manifest.json" in text and "Example:" in text and "--no-resume" in text


def test_cli_on_scifact_with_real_vocabulary(tmp_path):
    """First 200 scifact documents through a tiny random BERT with the bert-base vocabulary."""
    corpus, vocab = DATA / "scifact", DATA / "vocab" / "bert-base-uncased" / "vocab.txt"
    if not (corpus.is_dir() and vocab.is_file()):
        pytest.skip(f"needs shared data: {corpus} and {vocab} (set JAXIR_SHARED_DATA)")
    transformers = pytest.importorskip("transformers")
    model = tmp_path / "model"
    config = PRESETS["tiny"].replace(vocab_size=30522, max_positions=512, mlm_head=False)
    hf.save_pretrained(Model(config, rngs=nnx.Rngs(0)), model)
    shutil.copy(vocab, model / "vocab.txt")
    tokenizer = transformers.BertTokenizerFast.from_pretrained(model)
    tokenizer.save_pretrained(model)
    assert len(tokenizer) == 30522

    docs = [doc for doc, _ in zip(iter_corpus(corpus), range(200))]
    write_corpus(docs, tmp_path / "scifact" / "corpus.jsonl")
    args = ["encode", "--model", str(model), "--data", str(tmp_path / "scifact")]
    assert main([*args, "--out", str(tmp_path / "emb"), "--max-length", "128"]) == 0
    store = load_embeddings(tmp_path / "emb")
    assert store.ids == [d.id for d in docs] and store.vectors.shape == (200, 32)
    assert np.isfinite(store.vectors).all()


# --------------------------------------------------------------------------- max_length default


def test_default_max_length_is_what_the_model_and_tokenizer_support(model_dir, tmp_path):
    # The tiny preset has 64 position embeddings; vocab.txt alone leaves the tokenizer's
    # model_max_length unset (transformers' int(1e30) sentinel), so the model decides.
    assert PRESETS["tiny"].max_positions == 64
    encoder = load_encoder(model_dir, pooling="mean")
    assert encoder.tokenizer.model_max_length > 10**6
    assert encoder.max_length == encoder.settings["max_length"] == 64
    assert encoder.encode(["cats purr " * 100], batch_size=BATCH).shape == (1, 32)
    # A tokenizer limit below the model's wins.
    shutil.copytree(model_dir, tmp_path / "m")
    (tmp_path / "m" / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32}))
    assert load_encoder(tmp_path / "m").max_length == 32
    # RoBERTa-style models lose position_offset positions.
    config = PRESETS["tiny"].replace(max_positions=66, position_offset=2)
    tokenizer = load_encoder(model_dir).tokenizer
    assert TextEncoder(Model(config, rngs=nnx.Rngs(0)), tokenizer).max_length == 64
    # An explicit value out of range still names the limit.
    with pytest.raises(ValueError, match=r"max_length=65 is out of range.*1\.\.64"):
        load_encoder(model_dir, max_length=65)


def test_cli_max_length_defaults_to_the_model_limit(model_dir, tmp_path, capsys):
    write_corpus(make_docs(3), tmp_path / "corpus.jsonl")
    args = ["encode", "--model", str(model_dir), "--data", str(tmp_path / "corpus.jsonl")]
    assert main([*args, "--out", str(tmp_path / "emb")]) == 0
    assert load_embeddings(tmp_path / "emb").manifest["encoder"]["max_length"] == 64
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "else what the model supports" in help_text and "model_max_length" in help_text


def sentence_transformers_dir(model_dir, out, pooling_modes, max_seq_length):
    """``model_dir`` as sentence-transformers saves it: Transformer, Pooling, Normalize."""
    st = shutil.copytree(model_dir, out)
    kinds = ["Transformer", "Pooling", "Normalize"]
    paths = ["", "1_Pooling", "2_Normalize"]
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (kind, path) in enumerate(zip(kinds, paths, strict=True))
    ]
    (st / "modules.json").write_text(json.dumps(modules))
    (st / "1_Pooling").mkdir()
    flags = {f"pooling_mode_{mode}": True for mode in pooling_modes}
    (st / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": False} | flags)
    )
    (st / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return st


def test_sentence_transformers_directory_gives_the_defaults(model_dir, tmp_path):
    st = sentence_transformers_dir(model_dir, tmp_path / "st", ["cls_token"], 24)
    assert load_encoder(st).settings == {
        "pooling": "cls",
        "normalize": True,
        "max_length": 24,
        "prefix": "",
        "dtype": "float32",
    }
    explicit = load_encoder(st, pooling="mean", normalize=False, max_length=8).settings
    assert (explicit["pooling"], explicit["normalize"], explicit["max_length"]) == (
        "mean",
        False,
        8,
    )
    # Beyond the model's 64 positions the limit wins; a pooling jaxir lacks is named.
    other = sentence_transformers_dir(model_dir, tmp_path / "w", ["weightedmean_tokens"], 512)
    with pytest.raises(DataError) as info:
        load_encoder(other)
    assert str(other / "modules.json") in str(info.value) and "'weightedmean'" in str(info.value)
    assert load_encoder(other, pooling="max").max_length == 64


# --------------------------------------------------------------------------- duplicate ids


def test_duplicate_ids_are_rejected_with_both_positions(encoder, tmp_path):
    kwargs = dict(batch_size=BATCH, progress=False, resume=False)
    with pytest.raises(ValueError, match=r"documents #0 and #2 have the same id 'a'"):
        encode_corpus(encoder, [("a", "cats"), ("b", "dogs"), ("a", "fish")], tmp_path, **kwargs)
    docs = [*make_docs(5), Document("d3", "gene")]
    with pytest.raises(ValueError, match=r"documents #3 and #5 have the same id 'd3'"):
        encode_corpus(encoder, docs, tmp_path, shard_size=2, **kwargs)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert (manifest["complete"], manifest["count"]) == (False, 4)  # shards before it kept


def test_maxp_passages_share_their_document_id_but_documents_may_not(model_dir, tmp_path):
    encoder = load_encoder(model_dir, pooling="mean", max_length=8)
    long = Document("long", "cats purr and dogs bark while fish swim and birds fly " * 2)
    docs = [long, Document("short", "cats purr")]
    store = encode_corpus(
        encoder, encoder.passages(docs), tmp_path / "ok", batch_size=BATCH, progress=False
    )
    assert store.ids.count("long") > 1 and store.ids[-1] == "short"
    # A repeated document is caught on the documents, even when its passages would be
    # consecutive (and look like more passages of the first one).
    for repeated, where in (([long, long], "#0 and #1"), ([long, docs[1], long], "#0 and #2")):
        with pytest.raises(ValueError, match=f"documents {where} have the same id 'long'"):
            encode_corpus(
                encoder, encoder.passages(repeated), tmp_path / "bad", resume=False, progress=False
            )


def write_jsonl(path: pathlib.Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("split", [False, True])
def test_cli_names_the_file_and_both_lines_of_a_duplicate_id(model_dir, tmp_path, capsys, split):
    corpus = tmp_path / "beir" / "corpus.jsonl"
    write_jsonl(
        corpus,
        [
            '{"_id": "d1", "text": "cats purr"}',
            "",  # a blank line: line numbers are not record positions
            '{"_id": "d2", "text": "dogs bark"}',
            '{"_id": "d1", "text": "fish swim"}',
        ],
    )
    args = ["encode", "--model", str(model_dir), "--data", str(tmp_path / "beir")]
    args += ["--out", str(tmp_path / "emb"), "--max-length", "16"]
    assert main(args + (["--split-documents"] if split else [])) == 1
    err = capsys.readouterr().err
    assert f"{corpus}:4: field '_id': duplicate id 'd1' (line 1 has the same _id)" in err
    # The progress bar was closed first: the error starts a line of its own.
    assert "\njaxir encode: error:" in err or err.startswith("jaxir encode: error:")


# --------------------------------------------------------------------------- progress bars


def test_progress_bar_is_closed_before_an_error_propagates(model_dir, encoder, tmp_path, capsys):
    # Read stderr while the error is being handled (as `jaxir` prints it): later, garbage
    # collection of the traceback would close a leaked bar and hide the bug.
    try:
        encode_corpus(
            encoder, interrupted(make_docs(6), 5), tmp_path, shard_size=2, batch_size=BATCH
        )
    except RuntimeError:
        err = capsys.readouterr().err
    assert "doc" in err and err.endswith("\n"), repr(err)  # the bar ended its line

    def failing_run(*args):
        raise RuntimeError("device failure")

    broken = load_encoder(model_dir, max_length=MAX_LENGTH)
    broken._run = failing_run
    try:
        broken.encode(["cats", "dogs"], batch_size=BATCH, progress=True)
    except RuntimeError:
        err = capsys.readouterr().err
    assert "text" in err and err.endswith("\n"), repr(err)
