"""Retrieval effectiveness on SciFact under a fixed CPU budget: jaxir vs sentence-transformers vs BM25.

Question: trained from scratch for the same wall-clock time on the same machine, does
a jaxir dense retriever reach at least the nDCG@10 of its PyTorch twin, and does it
beat BM25? Faster steps mean more steps in the budget; that is where jaxir should win.

Both dense retrievers are the *identical* setup, differing only in the framework:

* model: the ``configs/dense_scifact.py`` encoder (``small`` preset: 2 layers, hidden
  256, 4 heads, intermediate 1024; tied towers, mean pooling, cosine scores with
  temperature 0.05 = scale 20). Both start from the *same random weights*: jaxir builds
  the model once with the run's seed and writes it as a Hugging Face directory, which
  jaxir (``model.init=DIR``) and sentence-transformers (``Transformer(DIR)`` + mean
  ``Pooling``) both load; a parity check compares their embeddings before training.
* tokenizer: the corpus WordPiece vocabulary (:func:`jaxir.data.train_wordpiece`,
  8192 tokens), saved in that directory; max lengths 48 (queries) / 128 (passages).
* data: phase 1 (30% of the budget) trains on inverse-cloze groups cut from the corpus
  (:func:`jaxir.data.ict.ict_groups`: a random sentence as query, the rest of the
  document as positive); phase 2 (70%) trains on the SciFact train qrels with BM25 hard
  negatives (all training queries: ``data.validation_queries=0``), each group repeated
  4 times, mixed with a fresh ICT cut of the corpus (seed + 1; ``--mix-ict`` sets phase
  2's ``data.ict_mix``): 3,236 qrels groups + 5,183 ICT groups. Alone, the qrels groups
  are memorized within ~200 steps (training loss ~0.001) and the remaining ~650 steps
  teach nothing; the ICT share keeps the model learning the corpus. The twin reads
  phase 2's groups from the ``groups.jsonl`` jaxir's phase 2 wrote. The twin draws its
  batches from the very same seeded :class:`jaxir.data.pipeline.TrainingData`
  iterator, so both see identical batches in identical order: 32 queries, each with its
  positive and 1 hard negative (an ICT group has none, so that slot holds a random
  passage, in both).
* loss: in-batch softmax over all 64 passages of the batch with scale 20, i.e.
  ``MultipleNegativesRankingLoss(scale=20)`` vs jaxir's contrastive step (jaxir also
  masks duplicate passages of other queries; with distinct texts the losses are equal).
* optimizer: AdamW lr 5e-4, betas (0.9, 0.999), eps 1e-6, weight decay 0.01 on matrices
  only, global-norm clipping at 1.0, linear warmup then linear decay over
  ``train.steps`` (the same schedule length for both, whatever the budget allows).
* dropout 0.1 on hidden states in both, none on attention probabilities (jaxir has
  none; the twin's config sets ``attention_probs_dropout_prob=0``); float32.
* budget: each framework trains each phase until its share of ``--budget-seconds`` is
  spent, clock started before the first step (jaxir: compile included), checked after
  every step, exactly as ``jaxir.train`` does. jaxir's phase 2 reuses the train step
  compiled in phase 1 through a persistent compilation cache that starts empty. Tokenization happens before the clock
  in both. jaxir checkpoints only at its last step (after the budget) and does not validate.
  The twin pads each batch only to its longest row (as sentence-transformers'
  tokenization does), jaxir to the fixed lengths (one compiled program).

Frameworks alternate (jaxir phase 1, twin phase 1, jaxir phase 2, twin phase 2) so that
background load hits both alike; the load average is printed for every phase.
Evaluation is exact top-100 search over the full corpus with the SciFact test queries
(jaxir: :func:`jaxir.search.retrieve.dense_search_run`; twin: ``model.encode`` +
numpy brute force), scored by :func:`jaxir.eval.evaluate`. With the config's
``index.split_documents`` (on in ``configs/dense_scifact.py``: 98% of SciFact abstracts
are longer than 128 tokens) both index every document as the same overlapping
128-token passages (:func:`jaxir.data.passages.split_passages`) and score it by its
best passage (MaxP). BM25 is
:func:`jaxir.data.bm25_search` (bm25s defaults, stopwords, Snowball stemming). The
untrained shared initialization is scored too (bag-of-words effect of random encoders).

Caveat: 181 of the 283 test-relevant documents are also positives of training queries,
and phase 1 reads the whole corpus (unsupervised, as at indexing time).

Run::

    python benchmarks/effectiveness.py                   # 10-minute budget per framework
    python benchmarks/effectiveness.py --seeds 0,1       # seed spread
    python benchmarks/effectiveness.py --quick           # 60 s budget, 100 test queries
                                                         # over 1000 documents (smoke test)
    python benchmarks/effectiveness.py --jaxir-only --skip-untrained --set KEY=VALUE
        # a recipe trial: jaxir's half only; --ict-share, --ict-set, --ict-bm25, ... (--help)

Ends with ``RESULT {...}`` lines (DESIGN principle 8): jaxir vs the twin and jaxir vs
BM25, nDCG@10 averaged over the seeds.
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

from jaxir import config as config_lib
from jaxir import data as data_lib
from jaxir.config import IndexConfig
from jaxir.data.ict import ict_groups, with_bm25_negatives
from jaxir.data.passages import split_passages
from jaxir.data.pipeline import TrainingData
from jaxir.data.runs import run_from_topk
from jaxir.eval.evaluate import evaluate
from jaxir.families.dense import DenseFamily
from jaxir.models import hf
from jaxir.models.bert import PRESETS
from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec, load_dual_encoder
from jaxir.search.retrieve import dense_search_run, max_rows_per_doc, tower_encoders
from jaxir.training.loop import train

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
    data_lib.CONTRACT_FILE,
)


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How one seed runs: the budget and its split, and which systems train."""

    budget: float  # seconds per framework
    ict_share: float = 0.3  # of the budget spent on phase 1 (ICT)
    ict_keep: float = 0.1  # chance the ICT query sentence stays in its passage
    ict_windows: bool = False  # cut ICT groups from passage windows, not whole documents
    ict_overrides: tuple[str, ...] = ()  # config overrides for phase 1 only (both frameworks)
    ict_bm25: bool = False  # ICT groups get BM25 hard negatives of their query sentence
    mix_ict: int = 4  # phase 2's data.ict_mix: qrels groups x this + a fresh ICT cut
    twin: bool = True  # False: jaxir only (recipe trials; no RESULT vs the twin)
    score_phase1: bool = False
    score_untrained: bool = True


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
    mc, dc = config.model, config.data
    tokenizer = data_lib.train_wordpiece(
        (d.full_text for d in corpus.values()), out, vocab_size=VOCAB_SIZE
    )
    spec = DenseFamily.from_config(config).spec
    encoder = PRESETS[mc.init].replace(vocab_size=len(tokenizer), mlm_head=False)
    model = DualEncoder.create(encoder, spec, rngs=nnx.Rngs(seed))
    hf.save_pretrained(model.query_encoder, out)
    hf_config = json.loads((out / "config.json").read_text())
    hf_config["attention_probs_dropout_prob"] = 0.0  # jaxir attention has no dropout
    (out / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    contract = data_lib.tokenizer_contract(tokenizer, max_length=dc.max_passage_length)
    data_lib.save_tokenizer_contract(out, **dataclasses.asdict(contract))
    return spec


# --- sentence-transformers twin --------------------------------------------------------


def st_model(path: pathlib.Path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

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


def splitting(index: IndexConfig) -> dict:
    """``dense_search_run`` arguments for the config's document splitting (MaxP or FirstP)."""
    return dict(split_documents=index.split_documents, stride=index.passage_stride)


def parity_check(init: pathlib.Path, spec: DualEncoderSpec, texts: list[str]) -> float:
    """Max |difference| of the two frameworks' embeddings of ``texts`` at the shared init."""
    model = DualEncoder(hf.load_pretrained(init, mlm_head=False), None, spec)
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


# --- one seed ---------------------------------------------------------------------------


def run_seed(
    config: config_lib.RunConfig,
    seed: int,
    protocol: Protocol,
    corpus: dict,
    eval_corpus: dict,
    test_queries: dict,
    test_qrels: dict,
    root: pathlib.Path,
    extra: list[str],
) -> dict:
    """Both frameworks' two phases from one shared init, then the test scores."""
    root.mkdir(parents=True)
    config = config_lib.override(config, [f"train.seed={seed}", *extra])
    init = root / "init"
    spec = write_init(config, corpus, init, seed)
    lengths = [
        len(ids)
        for ids in data_lib.load_tokenizer(init)([d.full_text for d in eval_corpus.values()])[
            "input_ids"
        ]
    ]
    longer = sum(n > spec.passage_max_length for n in lengths)
    print(
        f"[seed {seed}] {longer} of {len(lengths)} documents ({longer / len(lengths):.0%}) are "
        f"longer than {spec.passage_max_length} tokens; split_documents={config.index.split_documents}",
        flush=True,
    )
    out: dict = {"seed": seed, "jaxir": {}}
    if protocol.twin:
        texts = [q.full_text for q in list(test_queries.values())[:16]]
        out |= {"parity_max_abs_diff": parity_check(init, spec, texts), "peer": {}}
    ict = root / "ict.jsonl"
    source = corpus
    if protocol.ict_windows:  # the query sentence and its context share one window
        rows = split_passages(
            corpus.values(),
            data_lib.load_tokenizer(init),
            max_length=spec.passage_max_length,
            stride=config.index.passage_stride,
        )
        source = {f"{doc_id}#{i}": text for i, (doc_id, text) in enumerate(rows)}
    groups = ict_groups(source, seed=seed, keep_probability=protocol.ict_keep)
    if protocol.ict_bm25:
        groups = with_bm25_negatives(groups, corpus, rank_window=config.data.bm25_rank_window)
    data_lib.write_groups(groups, ict)
    phase1 = protocol.ict_share * protocol.budget
    phase2 = protocol.budget - phase1
    scores = {}

    def ev(run: dict) -> dict:
        return evaluate(run, test_qrels, METRICS)

    if protocol.score_untrained:
        untrained = DualEncoder(hf.load_pretrained(init, mlm_head=False), None, spec)
        scores["untrained"] = ev(
            dense_search_run(
                untrained,
                data_lib.load_tokenizer(init),
                eval_corpus,
                test_queries,
                **splitting(config.index),
            )
        )

    print(f"[seed {seed}] phase 1 (ICT, {phase1:.0f} s each) ...", flush=True)
    config1 = config_lib.override(config, list(protocol.ict_overrides))
    jx1 = root / "jaxir_ict"
    out["jaxir"]["ict"] = jaxir_train(
        config1,
        [f"model.init={init}", f"data.groups={ict}", f"train.max_seconds={phase1}"],
        jx1,
    )
    st1 = root / "st_ict"
    if protocol.twin:
        out["peer"]["ict"] = st_train(init, data_lib.read_groups(ict), config1, phase1, st1)
    print(
        f"[seed {seed}] phase 2 (train qrels + BM25 negatives{phase2_mix(protocol)}, "
        f"{phase2:.0f} s each) ..."
    )
    jx2 = root / "jaxir_qrels"
    out["jaxir"]["qrels"] = jaxir_train(
        config,
        [
            f"model.init={jx1}/model/query",
            f"train.max_seconds={phase2}",
            f"data.ict_mix={protocol.mix_ict}",
        ],
        jx2,
    )
    check_same_tokenizer(init, jx2 / "model" / "query")
    st2 = root / "st_qrels"
    if protocol.twin:
        groups = data_lib.read_groups(jx2 / "groups.jsonl")
        out["peer"]["qrels"] = st_train(st1, groups, config, phase2, st2)

    print(f"[seed {seed}] evaluating ...", flush=True)
    scores["jaxir"] = ev(jaxir_search(jx2 / "model", eval_corpus, test_queries, config.index))
    if protocol.twin:
        scores["peer"] = ev(st_search(st2, spec, eval_corpus, test_queries, config.index))
    if protocol.score_phase1:
        scores["jaxir_ict_only"] = ev(
            jaxir_search(jx1 / "model", eval_corpus, test_queries, config.index)
        )
    if protocol.score_phase1 and protocol.twin:
        scores["peer_ict_only"] = ev(st_search(st1, spec, eval_corpus, test_queries, config.index))
    out["scores"] = scores
    steps = {k: f"{v['ict'].steps}+{v['qrels'].steps}" for k, v in out.items() if k in NAMES}
    print(f"[seed {seed}] steps {steps}; " + json.dumps(scores), flush=True)
    return out


def phase2_mix(protocol: Protocol) -> str:
    return f" x{protocol.mix_ict} + fresh ICT groups" if protocol.mix_ict else ""


def check_same_tokenizer(a: pathlib.Path, b: pathlib.Path) -> None:
    """Phase 2 must tokenize exactly like phase 1 and the twin (same vocabulary)."""
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


def report(results: list[dict], bm25: dict, batch_size: int) -> None:
    print()
    print(f"BM25 (bm25s, stemming): nDCG@10 {bm25['nDCG@10']:.4f}  R@100 {bm25['R@100']:.4f}")
    header = f"{'seed':<6}{'system':<34}{'nDCG@10':>9}{'R@100':>8}{'steps (ICT+qrels)':>20}{'ex/s':>8}{'load avg':>14}"
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
            if key in ("jaxir", "peer"):
                p1, p2 = r[key]["ict"], r[key]["qrels"]
                steps = f"{p1.steps}+{p2.steps}"
                ex = f"{(p1.steps + p2.steps) * batch_size / (p1.seconds + p2.seconds):.1f}"
                load = f"{p1.load[0]:.1f}-{max(p1.load[1], p2.load[1]):.1f}"
            print(
                f"{r['seed']:<6}{name:<34}{s['nDCG@10']:>9.4f}{s['R@100']:>8.4f}{steps:>20}{ex:>8}{load:>14}"
            )
        if "parity_max_abs_diff" in r:
            diff = r["parity_max_abs_diff"]
            print(f"{'':<6}(parity at init: max |embedding diff| {diff:.1e})")
    if len(results) > 1:
        print()
        for key, name in names.items():
            values = [r["scores"][key]["nDCG@10"] for r in results if key in r["scores"]]
            if not values:
                continue
            print(f"mean over {len(results)} seeds, {name:<28} nDCG@10 {mean_std(values)}")
    ours = statistics.mean(r["scores"]["jaxir"]["nDCG@10"] for r in results)
    peers = [("effectiveness_vs_bm25", "bm25s", bm25["nDCG@10"])]
    if all("peer" in r["scores"] for r in results):
        twin = statistics.mean(r["scores"]["peer"]["nDCG@10"] for r in results)
        peers.insert(0, ("effectiveness_vs_sentence_transformers", "sentence-transformers", twin))
    print()
    for name, peer_name, value in peers:
        record = {
            "name": name,
            "unit": "nDCG@10",
            "jaxir": round(ours, 4),
            "peer": peer_name,
            "peer_value": round(value, 4),
            "ratio": round(ours / value, 3),
        }
        print("RESULT " + json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-seconds", type=float, default=None, help="per framework")
    parser.add_argument("--quick", action="store_true", help="60 s budget, 100 test queries")
    parser.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--queries", type=int, default=None, help="test queries (default all)")
    parser.add_argument(
        "--eval-docs",
        type=int,
        default=None,
        help="search the test-relevant documents + a seeded sample up to this many "
        "(default: the whole corpus; --quick: 1000)",
    )
    parser.add_argument(
        "--score-phase1", action="store_true", help="also score both models after phase 1"
    )
    parser.add_argument(
        "--ict-windows",
        action="store_true",
        help="cut phase 1's ICT groups from passage windows (as split_passages cuts them) "
        "instead of whole documents, so a query sentence's context is inside the positive",
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
        "--ict-share", type=float, default=0.3, help="share of the budget for phase 1 (ICT)"
    )
    parser.add_argument(
        "--ict-keep",
        type=float,
        default=0.1,
        help="chance a phase-1 ICT query sentence stays in its passage (ORQA: 0.1; phase 2's "
        "ICT groups use jaxir.data.ict_groups' default, 0.1)",
    )
    parser.add_argument(
        "--ict-bm25",
        action="store_true",
        help="give ICT groups BM25 hard negatives of their query sentence (data.bm25_rank_window)",
    )
    parser.add_argument(
        "--ict-set",
        action="append",
        default=[],
        help="config override key=value for phase 1 (ICT) only, e.g. train.group_size=1",
    )
    parser.add_argument(
        "--mix-ict",
        type=int,
        default=4,
        metavar="R",
        help="phase 2 trains on the train-qrels groups repeated R times plus a fresh ICT cut "
        "of the corpus (multi-task); 0: the qrels groups alone (sessions 1-6)",
    )
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--workdir", default=None, help="keep run files here (default: temp)")
    parser.add_argument("--torch-threads", type=int, default=None, help="default: CPU count")
    args = parser.parse_args()
    protocol = Protocol(
        budget=args.budget_seconds or (60.0 if args.quick else 600.0),
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
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
    # Checkpoints only at the last step (after the budget); no validation.
    extra = [
        "train.eval_every=1000000",
        "train.checkpoint_every=1000000",
        "data.validation_queries=0",  # no dev split: both train on every training query
        *args.set,
    ]
    config = config_lib.load_config(args.config)
    path = pathlib.Path(config.data.path)
    if not (path / "corpus.jsonl.gz").exists() and not (path / "corpus.jsonl").exists():
        sys.exit(f"{path}: SciFact not found; pass --set data.path=DIR (a BEIR directory).")

    print(" ".join(["python", *sys.argv]))
    print(
        f"CPU cores {os.cpu_count()}, load avg (1 min) {load_average():.2f}; torch "
        f"{torch.__version__} threads {torch.get_num_threads()}; budget {protocol.budget:.0f} s "
        f"per framework ({protocol.ict_share:.0%} ICT with keep probability "
        f"{protocol.ict_keep}{' from windows' if protocol.ict_windows else ''}, the rest "
        f"train qrels{phase2_mix(protocol)}); seeds {seeds}"
        + ("; jaxir only" if args.jaxir_only else "")
    )
    test = data_lib.load_beir(path, "test")
    queries = dict(test.queries)
    if num_queries:
        keep = sorted(random.Random(0).sample(sorted(queries), min(num_queries, len(queries))))
        queries = {q: queries[q] for q in keep}
    qrels = {q: test.qrels[q] for q in queries}
    eval_corpus = sample_corpus(
        test.corpus, qrels, args.eval_docs or (1000 if args.quick else None)
    )
    print(
        f"SciFact test: {len(queries)} queries searched over {len(eval_corpus)} of "
        f"{len(test.corpus)} documents; config {args.config} with {extra}"
    )
    bm25 = evaluate(data_lib.bm25_search(eval_corpus, queries, k=100), qrels, METRICS)

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(args.workdir or tmp)
        # A fresh persistent compilation cache: phase 1 compiles the train step, phase 2
        # (same program) reuses it, as two train() calls of one user script would.
        jax.config.update("jax_compilation_cache_dir", str(root / "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        results = [
            run_seed(
                config,
                seed,
                protocol,
                test.corpus,
                eval_corpus,
                queries,
                qrels,
                root / f"seed{seed}",
                extra,
            )
            for seed in seeds
        ]
    report(results, bm25, config.train.batch_size)


if __name__ == "__main__":
    main()
