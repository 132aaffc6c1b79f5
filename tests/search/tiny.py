"""Tiny random dual encoders with the real bert-base-uncased vocabulary, and tiny BEIR data.

Shared by the search, export and CLI stage tests. The model is the ``tiny`` preset
(2 layers, hidden 32) with a 30522-token embedding so the real WordPiece vocabulary
fits; tests skip when the shared vocabulary is missing.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil

import pytest
from flax import nnx

from jaxir.models.bert import PRESETS
from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec, save_dual_encoder

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = pathlib.Path(os.environ.get("JAXIR_SHARED_DATA", REPO.parent / "shared" / "data"))
VOCAB = DATA / "vocab" / "bert-base-uncased" / "vocab.txt"
VOCAB_SIZE = 30522

CONFIG = PRESETS["tiny"].replace(vocab_size=VOCAB_SIZE, mlm_head=False)
SPEC = DualEncoderSpec(pooling="mean", normalize=True, query_max_length=16, passage_max_length=32)


def bert_tokenizer(directory: pathlib.Path):
    """``BertTokenizerFast`` from a copy of the shared vocab.txt (skips the test without it)."""
    if not VOCAB.is_file():
        pytest.skip(f"BERT vocabulary not found at {VOCAB} (set JAXIR_SHARED_DATA)")
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(VOCAB, directory / "vocab.txt")
    # from_pretrained(dir): BertTokenizerFast(vocab_file=...) builds a 5-token vocab.
    tokenizer = transformers.BertTokenizerFast.from_pretrained(directory)
    assert len(tokenizer) == VOCAB_SIZE
    return tokenizer


def tiny_dual_encoder(seed: int = 0, *, tied: bool = True) -> DualEncoder:
    """A random tiny dual encoder (hidden 32) over the 30522-token vocabulary."""
    spec = SPEC if tied else dataclasses.replace(SPEC, tied=False)
    return DualEncoder.create(CONFIG, spec, rngs=nnx.Rngs(seed))


def save_tiny_dual_encoder(directory: pathlib.Path, tokenizer, seed: int = 0) -> pathlib.Path:
    """Writes a tiny dual-encoder directory (``query/`` + ``dual_encoder.json``) and returns it."""
    save_dual_encoder(tiny_dual_encoder(seed), directory, tokenizer=tokenizer)
    return directory
