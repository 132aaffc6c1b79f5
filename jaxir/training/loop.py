"""``jaxir.train(config, workdir)``: the dense dual-encoder training run, resumable at any moment.

The run, in order:

1. data: the BEIR collection at ``config.data.path`` (or the embedded synthetic one),
   training groups = train qrels + BM25 hard negatives (cached in ``workdir/groups.jsonl``;
   ``data.ict_mix`` adds an inverse-cloze group per corpus document),
   a dev set held out from the training queries (never the test split; none with
   ``data.validation_queries=0``);
2. tokenizer: the one next to ``config.model.init`` when that is a model directory, a
   given ``config.model.vocab`` directory, or a WordPiece vocabulary trained on the corpus;
3. state: built abstractly and materialized sharded over the ``data x fsdp x tensor`` mesh;
   restored in the order workdir checkpoint > ``resume`` > ``init`` weights > scratch;
4. steps: one jitted step (donated state); loss / grad-norm / examples-per-second to
   ``workdir/metrics.jsonl`` and TensorBoard events, a tqdm bar; validation (nDCG@10,
   R@100) and async Orbax checkpoints (params, optimizer, step, RNG, data position,
   config) every few steps; a non-finite loss stops the run naming the step;
5. the trained model is written to ``workdir/model`` (Hugging Face towers + contract).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import random
import time
from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx
from tqdm.auto import tqdm

from jaxir import config as config_lib
from jaxir import data as data_lib
from jaxir import sharding
from jaxir.data.ict import ict_groups
from jaxir.data.passages import best_passages, split_passages
from jaxir.data.pipeline import TrainingData
from jaxir.models import hf
from jaxir.models.bert import PRESETS, EncoderConfig
from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec, save_dual_encoder
from jaxir.optim import adamw
from jaxir.training import step as step_lib
from jaxir.training.checkpoint import Checkpointer
from jaxir.training.state import TrainState, create_state
from jaxir.training.validation import ValidationSet, validate

SYNTHETIC_DIR = "data"


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the message names the step and the last good checkpoint."""


@dataclasses.dataclass
class TrainResult:
    """What a finished run produced."""

    workdir: pathlib.Path
    model_dir: pathlib.Path
    data_dir: pathlib.Path
    steps: int
    validation: dict[str, float]
    history: list[dict[str, float]]


def collection_dir(config: config_lib.DenseRunConfig, workdir: pathlib.Path) -> pathlib.Path:
    """The BEIR directory of the run: ``config.data.path`` or the synthetic collection in ``workdir``."""
    if config.data.path:
        return pathlib.Path(config.data.path)
    out = workdir / SYNTHETIC_DIR
    if not (out / "qrels" / "test.tsv").exists():
        data_lib.write_collection(out, seed=0)
    return out


def _texts(records: Mapping[str, Any]) -> dict[str, str]:
    return {k: getattr(v, "full_text", v.text) for k, v in records.items()}


def _tokenizer(model_cfg: config_lib.ModelConfig, corpus: Mapping[str, Any], workdir: pathlib.Path):
    init = pathlib.Path(model_cfg.init)
    if (init / "config.json").exists():
        return data_lib.load_tokenizer(init)
    if model_cfg.vocab and model_cfg.vocab != "corpus":
        return data_lib.load_tokenizer(model_cfg.vocab)
    out = workdir / "tokenizer"
    if (out / "tokenizer.json").exists():
        return data_lib.load_tokenizer(out, check_contract=False)
    return data_lib.train_wordpiece((d.full_text for d in corpus.values()), out, vocab_size=8192)


def _encoder_config(
    model_cfg: config_lib.ModelConfig, vocab_size: int
) -> tuple[EncoderConfig, bool]:
    """Architecture and whether weights come from ``model_cfg.init`` (a Hugging Face dir)."""
    init = pathlib.Path(model_cfg.init)
    if (init / "config.json").exists():
        return hf.encoder_config(init).replace(mlm_head=False, dtype=model_cfg.dtype), True
    if model_cfg.init not in PRESETS:
        raise ValueError(
            f"model.init={model_cfg.init!r} is neither a Hugging Face model directory (with "
            f"config.json) nor a preset ({', '.join(PRESETS)})."
        )
    preset = PRESETS[model_cfg.init]
    return preset.replace(vocab_size=vocab_size, mlm_head=False, dtype=model_cfg.dtype), False


def dual_encoder_spec(config: config_lib.DenseRunConfig) -> DualEncoderSpec:
    """The :class:`DualEncoderSpec` a run with ``config`` trains (model + max lengths)."""
    mc, dc = config.model, config.data
    return DualEncoderSpec(
        pooling=mc.pooling,
        normalize=mc.normalize,
        temperature=mc.temperature,
        learn_temperature=mc.learn_temperature,
        tied=mc.tied,
        query_prefix=mc.query_prefix,
        passage_prefix=mc.passage_prefix,
        query_max_length=dc.max_query_length,
        passage_max_length=dc.max_passage_length,
    )


def _split_dev(qrels: Mapping[str, Any], size: int, seed: int) -> tuple[dict, dict]:
    """Holds out ``size`` training queries (seeded) as the dev set."""
    qids = sorted(qrels)
    random.Random(seed).shuffle(qids)
    size = min(size, len(qids) // 5)
    dev = set(qids[:size])
    return {q: v for q, v in qrels.items() if q not in dev}, {q: qrels[q] for q in qids[:size]}


def _with_ict(config, groups: list, corpus: Mapping[str, Any]) -> list[data_lib.TrainGroup]:
    """``groups`` repeated ``data.ict_mix`` times + one inverse-cloze group per document."""
    mix = config.data.ict_mix
    return groups * mix + ict_groups(corpus, seed=config.train.seed + 1) if mix else groups


def _groups(config, workdir, queries, corpus, qrels, tokenizer) -> list[data_lib.TrainGroup]:
    """Training groups: ``data.groups`` or train qrels + negatives (cached), with ``data.ict_mix``."""
    if config.data.ict_mix < 0:  # before any mining
        raise ValueError(
            f"data.ict_mix must be >= 0 (0: no inverse-cloze groups), got {config.data.ict_mix}."
        )
    if config.data.groups:
        groups = data_lib.read_groups(config.data.groups, corpus=corpus, queries=queries)
        return _with_ict(config, groups, corpus)
    cache = workdir / "groups.jsonl"
    if cache.exists():
        return data_lib.read_groups(cache)
    negatives = None
    if config.data.negatives == "bm25":
        negatives = data_lib.mine_bm25_negatives(
            queries,
            corpus,
            qrels,
            num_negatives=max(8, config.train.group_size * 4),
            rank_window=config.data.bm25_rank_window,
        )
    elif config.data.negatives != "none":
        raise ValueError(f"data.negatives must be 'bm25' or 'none', got {config.data.negatives!r}.")
    passages = None
    if config.data.train_passages == "best":
        pairs = {q: [*judged, *(negatives or {}).get(q, ())] for q, judged in qrels.items()}
        passages = best_passages(
            queries,
            corpus,
            pairs,
            tokenizer,
            max_length=config.data.max_passage_length,
            stride=config.index.passage_stride,
            prefix=config.model.passage_prefix,
        )
    elif config.data.train_passages != "first":
        raise ValueError(
            f"data.train_passages must be 'first' or 'best', got {config.data.train_passages!r}."
        )
    groups = data_lib.groups_from_qrels(queries, corpus, qrels, negatives, passages=passages)
    groups = _with_ict(config, groups, corpus)
    data_lib.write_groups(groups, cache)
    return groups


def _validation_set(config, corpus, queries, dev_qrels, tokenizer, seed) -> ValidationSet:
    """Dev queries against their relevant docs plus a seeded sample of the corpus.

    With ``index.split_documents`` the documents are split into passages as the index
    splits them, and scored by their best one (MaxP), so validation measures what
    search will.
    """
    relevant = {d for q in dev_qrels.values() for d in q if d in corpus}
    others = sorted(set(corpus) - relevant)
    random.Random(seed).shuffle(others)
    chosen = sorted(relevant) + others[: max(0, config.data.validation_corpus - len(relevant))]
    if config.index.split_documents:
        rows = split_passages(
            (corpus[d] for d in chosen),
            tokenizer,
            max_length=config.data.max_passage_length,
            stride=config.index.passage_stride,
            prefix=config.model.passage_prefix,
        )
    else:
        rows = ((d, corpus[d].full_text) for d in chosen)
    return ValidationSet.build(
        {q: queries[q].text for q in dev_qrels},
        rows,
        dev_qrels,
        tokenizer,
        max_query_length=config.data.max_query_length,
        max_passage_length=config.data.max_passage_length,
        query_prefix=config.model.query_prefix,
        passage_prefix=config.model.passage_prefix,
    )


class _Logger:
    """metrics.jsonl + TensorBoard event files."""

    def __init__(self, workdir: pathlib.Path):
        from tensorboardX import SummaryWriter

        self.file = (workdir / "metrics.jsonl").open("a")
        self.tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, values: dict[str, float]) -> None:
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        for k, v in values.items():
            self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.file.close()
        self.tb.close()


def train(
    config: config_lib.DenseRunConfig,
    workdir: str | pathlib.Path,
    *,
    resume: str | pathlib.Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Trains a dual encoder as described by ``config``; resumes from ``workdir`` if it holds checkpoints.

    Args:
      config: the run configuration (see ``configs/``).
      workdir: output directory (checkpoints, metrics, model); created if missing.
      resume: another run's checkpoint directory to start from when ``workdir`` has none.
      progress: show a tqdm progress bar.

    Returns:
      :class:`TrainResult` with the model directory and the final validation metrics.

    Raises:
      NonFiniteLossError: the loss became NaN/inf (message names step and checkpoint).
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config_lib.to_dict(config), indent=2) + "\n")
    tc, mc, dc = config.train, config.model, config.data

    beir = collection_dir(config, workdir)
    corpus = data_lib.load_corpus(beir)
    queries = data_lib.load_queries(beir)
    train_qrels = data_lib.load_qrels(beir / "qrels" / f"{dc.train_split}.tsv")
    train_qrels, dev_qrels = _split_dev(train_qrels, dc.validation_queries, tc.seed)
    objective = step_lib.Objective(
        symmetric=tc.symmetric,
        distill=tc.distill,
        distill_weight=tc.distill_weight,
        distill_temperature=tc.distill_temperature,
    )
    tokenizer = _tokenizer(mc, corpus, workdir)
    groups = _groups(config, workdir, queries, corpus, train_qrels, tokenizer)
    data = TrainingData.build(
        groups,
        tokenizer,
        max_query_length=dc.max_query_length,
        max_passage_length=dc.max_passage_length,
        query_prefix=mc.query_prefix,
        passage_prefix=mc.passage_prefix,
        teacher_scores=objective.distill != "none",
    )
    dev = dev_qrels and _validation_set(config, corpus, queries, dev_qrels, tokenizer, tc.seed)

    encoder_config, pretrained = _encoder_config(mc, len(tokenizer))
    spec = dual_encoder_spec(config)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    optimizer = adamw(
        tc.learning_rate,
        total_steps=tc.steps,
        warmup_steps=tc.warmup_steps,
        weight_decay=tc.weight_decay,
        grad_clip=tc.grad_clip,
    )
    make_model = lambda: DualEncoder.create(encoder_config, spec, rngs=nnx.Rngs(tc.seed))  # noqa: E731
    graphdef, state, shardings = create_state(make_model, optimizer, mesh, seed=tc.seed)
    iterator = data.batches(batch_size=tc.batch_size, group_size=tc.group_size, seed=tc.seed)

    ckpt = Checkpointer(workdir / "checkpoints", keep=tc.keep_checkpoints, best_metric="nDCG@10")
    restored = ckpt.restore_latest(state)
    if restored is None and resume is not None:
        restored = Checkpointer(resume, keep=tc.keep_checkpoints).restore_latest(state)
    if restored is not None:
        state = restored.state
        iterator.set_state(restored.data_state)
        print(f"Resumed from checkpoint step {restored.step}.")
    elif pretrained:
        towers = {"query_encoder": hf.load_pretrained(mc.init, mlm_head=False)}
        if not spec.tied:
            towers["passage_encoder"] = hf.load_pretrained(mc.init, mlm_head=False)
        params = state.params
        for name, tower in towers.items():
            params[name] = jax.device_put(nnx.state(tower), shardings.params[name])
        state = TrainState(params, optimizer.init(params), state.step, state.key)

    batch = sharding.shard_batch(next(iterator), mesh)
    grad_fn = step_lib.make_grad_fn(
        graphdef,
        grad_accum=tc.grad_accum,
        gradcache_chunk=tc.gradcache_chunk,
        objective=objective,
    )
    train_step = step_lib.make_train_step(
        grad_fn,
        optimizer,
        state_shardings=shardings,
        mesh=mesh,
        example_batch=batch,
        gemm_dtype=mc.dtype,
    )
    config_dict = config_lib.to_dict(config)
    logger = _Logger(workdir)
    history: list[dict[str, float]] = []
    scores: dict[str, float] = {}
    start = int(state.step)
    bar = tqdm(total=tc.steps, initial=start, desc="train", unit="step", disable=not progress)
    tick, seen = time.perf_counter(), 0
    began, throughput = time.perf_counter(), "-"
    try:
        for step in range(start, tc.steps):
            if step > start:
                batch = sharding.shard_batch(next(iterator), mesh)
            state, metrics = train_step(state, batch)
            loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
            seen += tc.batch_size
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                last = ckpt.steps()
                raise NonFiniteLossError(
                    f"Loss is {loss} (gradient norm {grad_norm}) at step {step + 1}. Last good checkpoint: "
                    f"{f'step {last[-1]} in {ckpt.directory}' if last else 'none'}. Lower "
                    "train.learning_rate or check the data for empty texts."
                )
            done = step + 1
            out_of_time = tc.max_seconds > 0 and time.perf_counter() - began > tc.max_seconds
            last_step = done == tc.steps or out_of_time
            record = {"loss": loss, "grad_norm": grad_norm}
            if done % tc.log_every == 0 or last_step:
                elapsed = time.perf_counter() - tick
                record["examples_per_s"] = seen / elapsed
                tick, seen = time.perf_counter(), 0
            if dev and (done % tc.eval_every == 0 or last_step):
                scores = validate(nnx.merge(graphdef, state.params), dev)
                record |= {f"dev/{k}": v for k, v in scores.items()}
            logger.write(done, record)
            history.append({"step": done, **record})
            if "examples_per_s" in record:
                throughput = f"{record['examples_per_s']:.1f}"
            bar.set_postfix(
                loss=f"{loss:.4f}",
                ex_per_s=throughput,
                **{k: f"{v:.3f}" for k, v in scores.items()},
            )
            bar.update()
            if done % tc.checkpoint_every == 0 or last_step:
                ckpt.save(
                    done,
                    state,
                    data_state=iterator.get_state(),
                    config=config_dict,
                    metrics=scores if "dev/nDCG@10" in record else None,
                )
            if out_of_time:
                print(f"Time budget of {tc.max_seconds:.0f}s reached after {done} steps.")
                break
    finally:
        bar.close()
        ckpt.close()
        logger.close()

    model_dir = workdir / "model"
    save_dual_encoder(nnx.merge(graphdef, state.params), model_dir, tokenizer=tokenizer)
    for tower in ("query", "passage"):
        if (model_dir / tower).exists():
            contract = data_lib.tokenizer_contract(
                tokenizer,
                max_length=dc.max_query_length if tower == "query" else dc.max_passage_length,
                query_prefix=mc.query_prefix,
                document_prefix=mc.passage_prefix,
            )
            data_lib.save_tokenizer_contract(model_dir / tower, **dataclasses.asdict(contract))
    return TrainResult(workdir, model_dir, beir, int(state.step), scores, history)


def losses_by_step(workdir: str | pathlib.Path) -> dict[int, float]:
    """``{step: loss}`` from ``workdir/metrics.jsonl`` (the last record of a step wins after a resume)."""
    out = {}
    for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        out[record["step"]] = record["loss"]
    return out
