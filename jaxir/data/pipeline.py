"""Training batches for dual encoders: grain pipeline from training groups to padded token arrays.

Every unique text is tokenized once (fixed max lengths: one compiled train step). The
grain pipeline shuffles groups (reshuffled every epoch), samples one positive and
``group_size - 1`` negatives per query with a per-example seeded RNG, and batches.
The iterator is deterministic and checkpointable: ``iterator.get_state()`` is a small
JSON-able dict stored in every checkpoint, so a resumed run sees exactly the batches
an uninterrupted run would have seen.

Batch layout (``B`` queries, ``G = group_size``)::

    query_ids, query_mask        int32 [B, Lq]
    passage_ids, passage_mask    int32 [B, G, Lp]   (passage 0 of each group is the positive)
    passage_key                  int32 [B, G]       (id of the passage text: equal ids = same text)
    query_key                    int32 [B]
    teacher_scores               float32 [B, G]     (only when built with teacher_scores=True;
                                                     NaN for random negatives, which have none)

Example:
    >>> from jaxir.data.groups import TrainGroup
    >>> class Tok:  # any callable returning {"input_ids", "attention_mask"} like a HF tokenizer
    ...     def __call__(self, texts, max_length, **_):
    ...         ids = [[1] + [len(w) for w in t.split()][: max_length - 1] for t in texts]
    ...         ids = [i + [0] * (max_length - len(i)) for i in ids]
    ...         return {"input_ids": ids, "attention_mask": [[int(x > 0) for x in i] for i in ids]}
    >>> groups = [TrainGroup(f"q{i}", (f"pos {i}",), (f"neg {i}",)) for i in range(4)]
    >>> data = TrainingData.build(groups, Tok(), max_query_length=4, max_passage_length=6)
    >>> it = data.batches(batch_size=2, group_size=2, seed=0)
    >>> next(it)["passage_ids"].shape
    (2, 2, 6)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from jaxir.data.groups import TrainGroup


def tokenize_fixed(
    tokenizer: Any, texts: Sequence[str], max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` int32 ``[N, max_length]``, truncated and padded to one shape."""
    out = tokenizer(
        list(texts),
        max_length=max_length,
        truncation=True,
        padding="max_length",
        return_tensors=None,
    )
    return (
        np.asarray(out["input_ids"], np.int32),
        np.asarray(out["attention_mask"], np.int32),
    )


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Pre-tokenized queries and passages plus, per group, indices into them.

    When a group has fewer hard negatives than needed, the remaining slots are filled
    with random passages (random negatives). ``group_scores`` (per group, the teacher
    scores of its positives then its negatives) is set when built with
    ``teacher_scores=True``.
    """

    query_ids: np.ndarray  # [Q, Lq]
    query_mask: np.ndarray
    passage_ids: np.ndarray  # [P, Lp]
    passage_mask: np.ndarray
    group_query: np.ndarray  # [num_groups] index into queries
    group_positives: tuple[np.ndarray, ...]  # per group: indices into passages
    group_negatives: tuple[np.ndarray, ...]
    group_scores: tuple[np.ndarray, ...] | None = None

    @classmethod
    def build(
        cls,
        groups: Sequence[TrainGroup],
        tokenizer: Any,
        *,
        max_query_length: int,
        max_passage_length: int,
        query_prefix: str = "",
        passage_prefix: str = "",
        teacher_scores: bool = False,
    ) -> TrainingData:
        """Tokenizes every unique query / passage text of ``groups`` once.

        ``teacher_scores=True`` (distillation) adds the groups' teacher scores to every
        batch; each group must then have them.
        """
        if not groups:
            raise ValueError("No training groups: check the training qrels / groups file.")
        scores = None
        if teacher_scores:
            missing = next((i for i, g in enumerate(groups) if not g.has_scores), None)
            if missing is not None:
                raise ValueError(
                    f"Training group {missing} (query {groups[missing].query[:60]!r}) has no "
                    "teacher scores; distillation (train.distill) needs positive_scores and "
                    "negative_scores in every group. Add them to the groups file or set "
                    "train.distill='none'."
                )
            scores = tuple(
                np.asarray([*g.positive_scores, *g.negative_scores], np.float32) for g in groups
            )
        queries: dict[str, int] = {}
        passages: dict[str, int] = {}
        gq, gp, gn = [], [], []
        for g in groups:
            gq.append(queries.setdefault(g.query, len(queries)))
            gp.append(
                np.asarray([passages.setdefault(t, len(passages)) for t in g.positives], np.int32)
            )
            gn.append(
                np.asarray([passages.setdefault(t, len(passages)) for t in g.negatives], np.int32)
            )
        q_ids, q_mask = tokenize_fixed(
            tokenizer, [query_prefix + t for t in queries], max_query_length
        )
        p_ids, p_mask = tokenize_fixed(
            tokenizer, [passage_prefix + t for t in passages], max_passage_length
        )
        gq = np.asarray(gq, np.int32)
        return cls(q_ids, q_mask, p_ids, p_mask, gq, tuple(gp), tuple(gn), scores)

    def _example(
        self, index: int, rng: np.random.Generator, group_size: int
    ) -> dict[str, np.ndarray]:
        positives, hard = self.group_positives[index], self.group_negatives[index]
        need = group_size - 1
        positive_at = rng.choice(len(positives))
        random_fill = np.zeros(0, np.int32)
        if len(hard) >= need:
            hard_at = rng.choice(len(hard), size=need, replace=False) if need else np.zeros(0, int)
        else:
            hard_at = np.arange(len(hard))
            random_fill = rng.integers(0, len(self.passage_ids), size=need - len(hard))
        chosen = np.concatenate([[positives[positive_at]], hard[hard_at], random_fill]).astype(
            np.int32
        )
        q = self.group_query[index]
        example = {
            "query_ids": self.query_ids[q],
            "query_mask": self.query_mask[q],
            "passage_ids": self.passage_ids[chosen],
            "passage_mask": self.passage_mask[chosen],
            "passage_key": chosen,
            "query_key": np.int32(q),
        }
        if self.group_scores is not None:
            scores = self.group_scores[index]
            example["teacher_scores"] = np.concatenate(
                [
                    [scores[positive_at]],
                    scores[len(positives) + hard_at],
                    np.full(len(random_fill), np.nan, np.float32),
                ]
            ).astype(np.float32)
        return example

    def batches(self, *, batch_size: int, group_size: int, seed: int) -> grain.DatasetIterator:
        """An endless, checkpointable iterator of batches (see module docstring).

        Resume with ``it.set_state(state)`` where ``state = it.get_state()`` was saved.
        """
        if batch_size > len(self.group_query):
            raise ValueError(
                f"batch_size {batch_size} exceeds the {len(self.group_query)} training groups; "
                "lower train.batch_size."
            )
        ds = (
            grain.MapDataset.range(len(self.group_query))
            .shuffle(seed=seed)
            .repeat(None)
            .random_map(lambda i, rng: self._example(i, rng, group_size), seed=seed + 1)
            .batch(batch_size, drop_remainder=True)
        )
        return iter(ds.to_iter_dataset())
