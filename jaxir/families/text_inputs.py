"""What every text-pair retriever family reads: training groups and dev sets tokenized by its spec.

The dense and SPLADE families both train on (query, passage) groups and validate on a
dev set of query and passage texts, tokenized with the lengths and prefixes of their
serving spec. :class:`TextPairInputs` is that part of the
:class:`~jaxir.training.family.Family` protocol, written once: a family (a dataclass)
mixes it in and has ``spec`` (``query_max_length``, ``passage_max_length``,
``query_prefix``, ``passage_prefix``) and ``distill`` (teacher scores are kept when it is
not ``"none"``).

Example:
    >>> is_hf_dir("no/such/dir")
    False
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from jaxir.data.pipeline import TrainingData
from jaxir.training.validation import ValidationSet

__all__ = ["TextPairInputs", "is_hf_dir"]


def is_hf_dir(path: str) -> bool:
    """True when ``path`` is a directory with a ``config.json`` (a Hugging Face model)."""
    return (pathlib.Path(path) / "config.json").is_file()


class TextPairInputs:
    """``training_data`` and ``validation_set`` from a family's ``spec`` lengths and prefixes."""

    spec: Any
    distill: str

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
