"""Tiny dense run used by tests and smoke checks: embedded collection, 2-layer 32-wide model."""

from jaxir.config import DataConfig, IndexConfig, ModelConfig, RunConfig, TrainConfig


def get_config(arg: str | None = None) -> RunConfig:
    """``arg`` overrides the number of steps (e.g. ``configs/dense_tiny.py:12``)."""
    return RunConfig(
        name="dense_tiny",
        data=DataConfig(
            max_query_length=16, max_passage_length=32, validation_queries=32, validation_corpus=256
        ),
        model=ModelConfig(init="tiny", temperature=0.1),
        train=TrainConfig(
            steps=int(arg) if arg else 8,
            batch_size=8,
            learning_rate=1e-3,
            warmup_steps=2,
            log_every=2,
            eval_every=4,
            checkpoint_every=2,
            keep_checkpoints=3,
        ),
        index=IndexConfig(kind="exact", k=100),
    )
