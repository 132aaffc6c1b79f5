"""TrainingData batches: teacher scores travel with the passages they score."""

import numpy as np
import pytest

from jaxir.data.groups import TrainGroup
from jaxir.data.pipeline import TrainingData


class WordTok:
    """One token per word: the word's number (``w17`` -> 17), so ids name the texts."""

    def __call__(self, texts, max_length, **_):
        ids = [[int(w[1:]) for w in t.split()][:max_length] for t in texts]
        ids = [i + [0] * (max_length - len(i)) for i in ids]
        return {"input_ids": ids, "attention_mask": [[int(x > 0) for x in i] for i in ids]}


def scored_groups(n=6):
    """Group i: positives w(100i+1..2), negatives w(100i+11..13); score = the word's number."""
    groups = []
    for i in range(n):
        pos = [100 * i + 1, 100 * i + 2]
        neg = [100 * i + 11, 100 * i + 12, 100 * i + 13] if i % 2 else [100 * i + 11]
        groups.append(
            TrainGroup(
                f"w{100 * i + 99}",
                tuple(f"w{x}" for x in pos),
                tuple(f"w{x}" for x in neg),
                tuple(map(float, pos)),
                tuple(map(float, neg)),
            )
        )
    return groups


def test_teacher_scores_follow_the_chosen_passages():
    data = TrainingData.build(
        scored_groups(), WordTok(), max_query_length=2, max_passage_length=2, teacher_scores=True
    )
    it = data.batches(batch_size=3, group_size=3, seed=0)
    random_fills = 0
    for _ in range(8):
        batch = next(it)
        word_bg = batch["passage_ids"][:, :, 0].astype(np.float32)
        teacher_bg = batch["teacher_scores"]
        assert teacher_bg.shape == word_bg.shape == (3, 3) and teacher_bg.dtype == np.float32
        known = np.isfinite(teacher_bg)
        np.testing.assert_array_equal(teacher_bg[known], word_bg[known])
        assert known[:, :2].all()  # the positive and the one hard negative every group has
        random_fills += int((~known).sum())
        # Even groups have one hard negative, so their third passage is a random one,
        # which has no teacher score; odd groups have three scored hard negatives.
        odd_group_b = (word_bg[:, 0] // 100) % 2 == 1
        np.testing.assert_array_equal(known[:, 2], odd_group_b)
    assert random_fills > 0


def test_same_batches_with_and_without_teacher_scores():
    """Scores are carried along; they do not change which passages are drawn."""
    kwargs = dict(max_query_length=2, max_passage_length=2)
    plain = TrainingData.build(scored_groups(), WordTok(), **kwargs)
    scored = TrainingData.build(scored_groups(), WordTok(), teacher_scores=True, **kwargs)
    a = plain.batches(batch_size=2, group_size=2, seed=3)
    b = scored.batches(batch_size=2, group_size=2, seed=3)
    for _ in range(5):
        x, y = next(a), next(b)
        assert "teacher_scores" not in x
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_distillation_needs_scores_in_every_group():
    groups = [*scored_groups(2), TrainGroup("w7", ("w8",), ("w9",))]
    with pytest.raises(ValueError, match=r"Training group 2 \(query 'w7'\) has no teacher scores"):
        TrainingData.build(
            groups, WordTok(), max_query_length=2, max_passage_length=2, teacher_scores=True
        )
