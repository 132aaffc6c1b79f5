"""What every text-pair retriever family shares: its encoder architecture and its inputs.

The dense and SPLADE families both build BERT-style encoders from a preset or a Hugging
Face directory, train on (query, passage) groups and validate on a dev set of query and
passage texts, tokenized with the lengths and prefixes of their serving spec.
:class:`TextPairInputs` is that part of the :class:`~jaxir.training.family.Family`
protocol, written once: a family (a dataclass) mixes it in and has ``spec``
(``query_max_length``, ``passage_max_length``, ``query_prefix``, ``passage_prefix``),
``distill`` (teacher scores are kept when it is not ``"none"``), the architecture fields
``init``, ``dtype``, ``dropout_mask``, ``attention``, ``linear`` and the class constant
``mlm_head`` (whether its encoders keep an MLM head).

Example:
    >>> is_hf_dir("no/such/dir")
    False
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from jaxir.data.pipeline import TrainingData
from jaxir.layers.linear import LinearSpec
from jaxir.models import hf
from jaxir.models.bert import PRESETS, EncoderConfig
from jaxir.training.validation import ValidationSet

__all__ = ["TextPairInputs", "is_hf_dir"]


def is_hf_dir(path: str) -> bool:
    """True when ``path`` is a directory with a ``config.json`` (a Hugging Face model)."""
    return (pathlib.Path(path) / "config.json").is_file()


class TextPairInputs:
    """``encoder_config``, ``training_data`` and ``validation_set`` of a text-pair family."""

    spec: Any
    distill: str
    init: str
    dtype: str
    dropout_mask: str
    attention: str
    linear: LinearSpec
    mlm_head: ClassVar[bool]

    def encoder_config(self, vocab_size: int) -> EncoderConfig:
        """The encoders' architecture: ``init``'s (HF directory) or the preset's with ``vocab_size``.

        The MLM head is kept when the family's ``mlm_head`` says so, the pooler never;
        compute dtype, dropout masks, attention kernel and linear parameterization are
        the family's.
        """
        if is_hf_dir(self.init):
            config = hf.encoder_config(self.init)
        elif self.init in PRESETS:
            config = PRESETS[self.init].replace(vocab_size=vocab_size)
        else:
            raise ValueError(
                f"model.init={self.init!r} is neither a Hugging Face model directory (with "
                f"config.json) nor a preset ({', '.join(PRESETS)})."
            )
        return config.replace(
            mlm_head=self.mlm_head,
            pooler=False,
            dtype=self.dtype,
            dropout_mask=self.dropout_mask,
            attention=self.attention,
            linear=self.linear,
        )

    def training_data(self, groups: Sequence[Any], tokenizer: Any) -> TrainingData:
        """Tokenized queries and passages of ``groups`` (teacher scores when distilling)."""
        return TrainingData.build(
            groups,
            tokenizer,
            max_query_length=self.spec.query_max_length,
            max_passage_length=self.spec.passage_max_length,
            query_prefix=self.spec.query_prefix,
            passage_prefix=self.spec.passage_prefix,
            teacher_scores=self.distill != "none",
        )

    def validation_set(
        self,
        queries: Mapping[str, str],
        rows: Sequence[tuple[str, str]],
        qrels: Mapping[str, Mapping[str, int]],
        tokenizer: Any,
    ) -> ValidationSet:
        """The dev set, tokenized as the model reads it."""
        return ValidationSet.build(
            queries,
            rows,
            qrels,
            tokenizer,
            max_query_length=self.spec.query_max_length,
            max_passage_length=self.spec.passage_max_length,
            query_prefix=self.spec.query_prefix,
            passage_prefix=self.spec.passage_prefix,
        )
