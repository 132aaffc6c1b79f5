"""Tiny random dual encoders with the test WordPiece vocabulary, and tiny BEIR data.

Shared by the search, export and CLI stage tests. The model is the ``tiny`` preset
(2 layers, hidden 32) with an embedding row for each token of the committed test
vocabulary (``tests/fixtures/vocab``, a subset of bert-base-uncased that splits the
tests' texts into the same word pieces), so nothing here needs the shared data.
"""

from __future__ import annotations

import dataclasses
import pathlib

from flax import nnx

from jaxir.models.bert import PRESETS
from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec, save_dual_encoder
from tests.fixtures import VOCAB_SIZE, vocab_tokenizer

CONFIG = PRESETS["tiny"].replace(vocab_size=VOCAB_SIZE, mlm_head=False)
SPEC = DualEncoderSpec(pooling="mean", normalize=True, query_max_length=16, passage_max_length=32)


def bert_tokenizer(directory: pathlib.Path):
    """``BertTokenizerFast`` over a copy of the test vocabulary in ``directory``."""
    return vocab_tokenizer(directory)


def tiny_dual_encoder(seed: int = 0, *, tied: bool = True) -> DualEncoder:
    """A random tiny dual encoder (hidden 32) over the test vocabulary."""
    spec = SPEC if tied else dataclasses.replace(SPEC, tied=False)
    return DualEncoder.create(CONFIG, spec, rngs=nnx.Rngs(seed))


def save_tiny_dual_encoder(directory: pathlib.Path, tokenizer, seed: int = 0) -> pathlib.Path:
    """Writes a tiny tied dual-encoder directory (``query/`` with ``jaxir_encoder.json``) and returns it."""
    save_dual_encoder(tiny_dual_encoder(seed), directory, tokenizer=tokenizer)
    return directory
