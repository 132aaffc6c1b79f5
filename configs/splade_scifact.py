"""SPLADE (learned sparse) on BEIR SciFact, trained from scratch on CPU; ``tiny`` for tests.

The data protocol is the dense run's (``configs/dense_scifact.py``): train qrels with
BM25 hard negatives, a held-out slice of the training queries for validation, the test
qrels for the final numbers, documents indexed as overlapping 128-token passages
scored by their best one (MaxP). The model is the 2-layer, 256-wide ``small`` preset
with an MLM head over a WordPiece vocabulary built from the corpus (``V = 8192``);
max pooling of ``log(1 + relu(logits))``, one encoder for queries and documents.

The loss is the in-batch + hard-negative softmax over raw dot products plus FLOPS on
queries (5e-5, sentence-transformers' ``SpladeLoss`` weight) and documents (3e-3, chosen
on dev: below), warmed up quadratically over the first third of training (its default
ratio); see :class:`jaxir.config.SpladeConfig`.

Two settings were chosen on the dev split (80 held-out training queries, seed 0, 300
steps). The fresh MLM head starts with its output bias at -1 (``model.splade.head_bias``).
At 0 a random head leaves about half its logits positive, max pooling starts at ~100%
of the vocabulary per passage, and the run either stays saturated (FLOPS weights 5e-5 /
3e-5: the guard stopped it at step 261 of 300 with 50.4% of the vocabulary per document)
or, with weights strong enough to sparsify it (3e-3, 1e-2), collapses to zero non-zeros
before the ranking loss has learnt anything.
At -1 a passage starts with ~140 of 8,192 terms and the ranking loss grows them as it
needs. The document FLOPS weight then sets how many it keeps:

===============  ===========  =========  =============  ===============
document_weight  dev nDCG@10  dev R@100  terms per doc  terms per query
===============  ===========  =========  =============  ===============
3e-5             0.511        0.701      935            315
1e-3             0.531        0.685      557            265
3e-3             0.529        0.708      378            246
===============  ===========  =========  =============  ===============

3e-3 keeps the quality (the differences are within one seed's noise, ~0.02) with 2.5x
fewer terms per document than sentence-transformers' 3e-5, so a 2.5x smaller and faster
inverted index; 1e-2 was not tried.

``arg`` (``configs/splade_scifact.py:ARG``): a number of steps (default 300, the
measured recipe: BENCHMARKS.md; longer runs were not tuned), ``tiny``
(the embedded synthetic collection, the 2-layer 32-wide ``tiny`` preset, 8 steps:
what tests and smoke checks run) or ``tiny,STEPS``.
"""

import dataclasses
import pathlib

from jaxir.config import (
    DataConfig,
    IndexConfig,
    ModelConfig,
    RunConfig,
    SpladeConfig,
    TrainConfig,
)

#: Training steps of the measured recipe (the default ``arg``).
STEPS = 300
SCIFACT = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def scifact(steps: int) -> RunConfig:
    """The SciFact run with ``steps`` training steps."""
    return RunConfig(
        name="splade_scifact",
        family="splade",
        data=DataConfig(
            path=str(SCIFACT),
            max_query_length=48,
            max_passage_length=128,
            negatives="bm25",
            bm25_rank_window=(3, 30),
            validation_queries=80,
            validation_corpus=5183,
        ),
        model=ModelConfig(
            init="small",
            tied=True,
            splade=SpladeConfig(
                pooling="max",
                regularizer="flops",
                query_weight=5e-5,
                document_weight=3e-3,  # dev choice (module docstring)
                warmup_steps=-1,  # a third of train.steps
                head_bias=-1.0,  # start sparse (module docstring)
                chunk=32,
            ),
        ),
        train=TrainConfig(
            steps=steps,
            batch_size=32,
            group_size=2,
            learning_rate=5e-4,
            warmup_steps=20,  # the learning rate's; the regularizer's is model.splade's
            eval_every=250,
            checkpoint_every=250,
        ),
        index=IndexConfig(kind="inverted", k=100, split_documents=True),
    )


def tiny(steps: int) -> RunConfig:
    """A few steps on the embedded synthetic collection with the ``tiny`` preset."""
    config = scifact(steps)
    return dataclasses.replace(
        config,
        name="splade_tiny",
        data=DataConfig(
            path=None,
            max_query_length=16,
            max_passage_length=32,
            validation_queries=32,
            validation_corpus=256,
        ),
        model=dataclasses.replace(
            config.model,
            init="tiny",
            # A random MLM head starts with about half its logits positive, so max pooling
            # activates nearly the whole vocabulary; a few steps cannot sparsify it
            # (measured: 98% of the vocabulary per document after 40 steps). The
            # saturation guard, meant for a run whose regularizer had time, is off here.
            # chunk=8: four chunks of the 32-token passages; one whole-sequence chunk
            # compiles the train step about twice as slowly on CPU (measured).
            # head_bias=0: the 32-wide head's logits have a standard deviation of ~0.1, so
            # the SciFact run's -1 (chosen for the 256-wide one, ~0.28) would start at zero.
            splade=dataclasses.replace(
                config.model.splade, saturation_share=1.0, chunk=8, head_bias=0.0
            ),
        ),
        train=dataclasses.replace(
            config.train,
            batch_size=8,
            learning_rate=1e-3,
            warmup_steps=2,
            log_every=2,
            eval_every=4,
            checkpoint_every=4,
        ),
        index=IndexConfig(kind="inverted", k=100, split_documents=False),
    )


def get_config(arg: str | None = None) -> RunConfig:
    """``arg``: steps (default 300), ``tiny`` (8 steps) or ``tiny,STEPS`` (module docstring)."""
    if arg and arg.split(",")[0] == "tiny":
        _, _, steps = arg.partition(",")
        return tiny(int(steps) if steps else 8)
    return scifact(int(arg) if arg else STEPS)
