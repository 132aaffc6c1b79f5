"""Dense dual encoder on BEIR SciFact, trained from scratch on CPU in about 10 minutes.

Data comes from ``../shared/data/scifact`` (override with ``--set data.path=DIR``):
train qrels with BM25 hard negatives for training, a held-out slice of the training
queries for validation, the test qrels for the final numbers. The model is the
2-layer, 256-wide ``small`` preset over a WordPiece vocabulary built from the corpus.
Documents are indexed as overlapping 128-token passages scored by their best one (MaxP).

``arg`` (``configs/dense_scifact.py:STEPS``) sets the number of steps.
"""

import pathlib

from jaxir.config import DataConfig, IndexConfig, ModelConfig, RunConfig, TrainConfig

SCIFACT = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def get_config(arg: str | None = None) -> RunConfig:
    """SciFact run; ``arg`` is the number of training steps (default 1000)."""
    return RunConfig(
        name="dense_scifact",
        data=DataConfig(
            path=str(SCIFACT),
            max_query_length=48,
            # Most SciFact abstracts are longer than 128 tokens: training reads their first
            # 128, the index all of them in 128-token windows (MaxP, below). The choice of
            # length is recorded in benchmarks/effectiveness_RESULTS.md.
            max_passage_length=128,
            negatives="bm25",
            bm25_rank_window=(3, 30),
            validation_queries=80,
            validation_corpus=5183,
        ),
        model=ModelConfig(init="small", pooling="mean", normalize=True, temperature=0.05),
        train=TrainConfig(
            steps=int(arg) if arg else 1000,
            batch_size=32,
            group_size=2,
            learning_rate=5e-4,
            # Short: a CPU time budget allows only a few hundred steps.
            warmup_steps=20,
            eval_every=250,
            checkpoint_every=250,
        ),
        # Index every document as overlapping max_passage_length-token passages and score
        # it by the best one (MaxP).
        index=IndexConfig(kind="scann", k=100, split_documents=True),
    )
