"""``jaxir.train(config, workdir)``: a training run of any retriever family, resumable at any moment.

The run, in order (the family -- :mod:`jaxir.training.family` -- supplies the model,
batches, loss, validation and the saved model; this module only orchestrates):

1. data (:mod:`jaxir.data.prepare`): the BEIR collection at ``config.data.path`` (or
   the embedded synthetic one); training groups = train qrels + BM25 hard negatives, or
   label-free inverse-cloze groups (``data.train_groups="ict"``), or a groups file
   (cached in ``workdir/groups.jsonl``; ``data.ict_mix`` adds an inverse-cloze group per
   corpus document); a dev set held out from the training queries (never the test
   split; none with ``data.validation_queries=0``), its qrels written to
   ``workdir/dev_qrels.tsv`` (:data:`DEV_QRELS`: what ``jaxir evaluate --split`` and
   ``jaxir fuse --tune-on`` take, to tune on queries the model never trained on);
2. tokenizer: the one next to ``config.model.init`` when that is a model directory, a
   given ``config.model.vocab`` directory, or a WordPiece vocabulary trained on the corpus;
3. state: built abstractly and materialized sharded over the ``data x fsdp x tensor`` mesh,
   the optimizer (:func:`jaxir.optim.build`) seeing trainable parameters only;
   restored in the order workdir checkpoint > ``resume`` > ``init`` weights > scratch;
4. steps: one jitted step (donated state); loss / grad-norm / the family's aux metrics /
   the step's wall time (``step_s``) / examples-per-second to
   ``workdir/metrics.jsonl`` and TensorBoard events, a tqdm bar; validation (nDCG@10,
   R@100) and async Orbax checkpoints (params, optimizer, step, RNG, data position,
   config) every few steps; a non-finite loss stops the run naming the step;
5. the family writes the trained model to ``workdir/model``.

Multi-host (one process per host, joined by :func:`jaxir.distributed.initialize`): the
mesh spans every process's devices; every process builds the same global batch from
the seeded iterator and contributes its own rows
(:func:`jaxir.sharding.shard_batch`), so the data position in a checkpoint does not
depend on the number of processes and a checkpoint of an ``N``-process run resumes in an
``M``-process one. Every process runs every jitted computation (steps, validation,
the gather before the save); only process 0 writes ``config.json``, the metrics, the
TensorBoard events, the progress bar and the model, and prepares the data caches
before the others read them. Orbax writes checkpoints from all processes together.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx
from tqdm.auto import tqdm

from jaxir import config as config_lib
from jaxir import data as data_lib
from jaxir import distributed, optim, sharding
from jaxir.data.prepare import dev_rows, run_tokenizer, split_dev, training_groups
from jaxir.training import step as step_lib
from jaxir.training.checkpoint import Checkpointer
from jaxir.training.family import Family, make_family
from jaxir.training.state import abstract_params, create_state, with_weights

SYNTHETIC_DIR = "data"
#: The held-out dev queries' qrels, in the workdir (BEIR TSV).
DEV_QRELS = "dev_qrels.tsv"


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the message names the step and the last good checkpoint."""


class InitMismatchError(ValueError):
    """The weights a run starts from do not fit the model it trains (names the source and keys)."""


@dataclasses.dataclass
class TrainResult:
    """What a finished run produced."""

    workdir: pathlib.Path
    model_dir: pathlib.Path
    data_dir: pathlib.Path
    steps: int
    validation: dict[str, float]
    history: list[dict[str, float]]


def collection_dir(config: config_lib.RunConfig, workdir: pathlib.Path) -> pathlib.Path:
    """The BEIR directory of the run: ``config.data.path`` or the synthetic collection in ``workdir``."""
    if config.data.path:
        return pathlib.Path(config.data.path)
    out = workdir / SYNTHETIC_DIR
    if not (out / "qrels" / "test.tsv").exists():
        data_lib.write_collection(out, seed=0)
    return out


def optimizer_spec(config: config_lib.RunConfig) -> optim.OptimizerSpec:
    """The :class:`~jaxir.optim.OptimizerSpec` of a run config (``optim.*`` + ``train.*``)."""
    tc, oc = config.train, config.optim
    return optim.OptimizerSpec(
        kind=oc.kind,
        learning_rate=tc.learning_rate,
        total_steps=tc.steps,
        warmup_steps=tc.warmup_steps,
        schedule=oc.schedule,
        weight_decay=tc.weight_decay,
        grad_clip=tc.grad_clip,
        b1=oc.b1,
        b2=oc.b2,
        eps=oc.eps,
        options=oc.options(),
    )


def run_groups(
    config: config_lib.RunConfig,
    queries: Mapping[str, Any],
    corpus: Mapping[str, Any],
    qrels: Mapping[str, Mapping[str, int]],
    tokenizer: Any,
    *,
    cache: pathlib.Path | None = None,
) -> list[data_lib.TrainGroup]:
    """The training groups :func:`train` builds for ``config`` (``data.*``; see
    :func:`jaxir.data.prepare.training_groups`), from ``qrels`` (the dev split removed)."""
    tc, mc, dc = config.train, config.model, config.data
    return training_groups(
        queries,
        corpus,
        qrels,
        source=dc.train_groups,
        groups_file=dc.groups,
        cache=cache,
        negatives=dc.negatives,
        num_negatives=max(8, tc.group_size * 4),
        rank_window=dc.bm25_rank_window,
        train_passages=dc.train_passages,
        tokenizer=tokenizer,
        max_passage_length=dc.max_passage_length,
        passage_stride=config.index.passage_stride,
        passage_prefix=mc.passage_prefix,
        ict_mix=dc.ict_mix,
        seed=tc.seed,
    )


def _check_weights(target: nnx.State, weights: nnx.State, source: str) -> None:
    """Raises :class:`InitMismatchError` listing missing / unexpected / mis-shaped keys."""
    want = {k: v.shape for k, v in nnx.to_flat_state(target)}
    got = {k: getattr(v, "shape", None) for k, v in nnx.to_flat_state(weights)}
    name = lambda k: "/".join(map(str, k))  # noqa: E731
    missing = sorted(name(k) for k in want.keys() - got.keys())
    unexpected = sorted(name(k) for k in got.keys() - want.keys())
    shapes = sorted(
        f"{name(k)}: {got[k]} vs {want[k]}" for k in want.keys() & got.keys() if got[k] != want[k]
    )
    if missing or unexpected or shapes:
        raise InitMismatchError(
            f"{source}: the weights do not fit the model this run trains.\n"
            f"  missing ({len(missing)}): {missing[:10]}\n"
            f"  unexpected ({len(unexpected)}): {unexpected[:10]}\n"
            f"  shape (checkpoint vs model) ({len(shapes)}): {shapes[:10]}"
        )


def _dev_set(family: Family, config, corpus, queries, dev_qrels, tokenizer) -> Any:
    """The family's dev set: dev queries against their relevant docs + a seeded sample."""
    dc, mc = config.data, config.model
    rows = dev_rows(
        corpus,
        dev_qrels,
        size=dc.validation_corpus,
        seed=config.train.seed,
        split_documents=config.index.split_documents,
        tokenizer=tokenizer,
        max_length=dc.max_passage_length,
        stride=config.index.passage_stride,
        prefix=mc.passage_prefix,
    )
    texts = {q: queries[q].text for q in dev_qrels}
    return family.validation_set(texts, list(rows), dev_qrels, tokenizer)


class _Logger:
    """metrics.jsonl + TensorBoard event files; writes nothing unless ``active`` (process 0)."""

    def __init__(self, workdir: pathlib.Path, *, active: bool = True):
        self.active = active
        if active:
            from tensorboardX import SummaryWriter

            self.file = (workdir / "metrics.jsonl").open("a")
            self.tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.active:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        for k, v in values.items():
            self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.active:
            self.file.close()
            self.tb.close()


def config_train_step(config, family, graphdef, optimizer, shardings, mesh, example_batch):
    """The jitted train step :func:`train` runs for ``config`` (GradCache / accumulation from ``train``)."""
    tc = config.train
    grad_fn = step_lib.make_grad_fn(
        family, graphdef, grad_accum=tc.grad_accum, gradcache_chunk=tc.gradcache_chunk
    )
    return step_lib.make_train_step(
        grad_fn,
        optimizer,
        state_shardings=shardings,
        mesh=mesh,
        example_batch=example_batch,
        gemm_dtype=config.model.dtype,
    )


def train(
    config: config_lib.RunConfig,
    workdir: str | pathlib.Path,
    *,
    resume: str | pathlib.Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Trains the retriever ``config`` describes; resumes from ``workdir`` if it holds checkpoints.

    The retriever family is ``config.family`` (:func:`jaxir.training.family.make_family`):
    the loop only orchestrates data, state, steps, validation, checkpoints and the save.

    Args:
      config: the run configuration (see ``configs/``).
      workdir: output directory (checkpoints, metrics, model); created if missing.
      resume: another run's checkpoint directory to start from when ``workdir`` has none.
      progress: show progress bars.

    Returns:
      :class:`TrainResult` with the model directory and the final validation metrics.

    Raises:
      NonFiniteLossError: the loss became NaN/inf (message names step and checkpoint).
      TrainingGuardError: the family's ``check_metrics`` stopped a degenerate run.
      InitMismatchError: ``model.init`` weights that do not fit the model (names the keys).

    In a multi-process job every process calls this with the same arguments (see the
    module docstring); each returns the same result.
    """
    workdir = pathlib.Path(workdir)
    main = jax.process_index() == 0
    tc, mc, dc = config.train, config.model, config.data
    family = make_family(config.family, config)

    with distributed.main_first("jaxir.train: data caches"):
        workdir.mkdir(parents=True, exist_ok=True)
        if main:
            config_json = json.dumps(config_lib.to_dict(config), indent=2) + "\n"
            (workdir / "config.json").write_text(config_json)
        beir = collection_dir(config, workdir)
        corpus = data_lib.load_corpus(beir)
        queries = data_lib.load_queries(beir)
        qrels_file = beir / "qrels" / f"{dc.train_split}.tsv"
        needs_qrels = dc.train_groups == "qrels" and not dc.groups
        train_qrels = data_lib.load_qrels(qrels_file) if needs_qrels or qrels_file.exists() else {}
        train_qrels, dev_qrels = split_dev(train_qrels, dc.validation_queries, tc.seed)
        if main and dev_qrels:
            data_lib.write_qrels(dev_qrels, workdir / DEV_QRELS)
        tokenizer = run_tokenizer(mc.init, mc.vocab, corpus, workdir)
        groups = run_groups(
            config, queries, corpus, train_qrels, tokenizer, cache=workdir / "groups.jsonl"
        )
    data = family.training_data(groups, tokenizer)
    dev = _dev_set(family, config, corpus, queries, dev_qrels, tokenizer) if dev_qrels else None

    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    make_model = lambda: family.init_model(vocab_size=len(tokenizer), rngs=nnx.Rngs(tc.seed))  # noqa: E731
    optimizer = optim.build(optimizer_spec(config), abstract_params(make_model))
    graphdef, state, shardings = create_state(make_model, optimizer, mesh, seed=tc.seed)
    iterator = data.batches(batch_size=tc.batch_size, group_size=tc.group_size, seed=tc.seed)

    ckpt = Checkpointer(workdir / "checkpoints", keep=tc.keep_checkpoints, best_metric="nDCG@10")
    restored = ckpt.restore_latest(state)
    if restored is None and resume is not None:
        restored = Checkpointer(resume, keep=tc.keep_checkpoints).restore_latest(state)
    if restored is not None:
        state = restored.state
        iterator.set_state(restored.data_state)
        if main:
            print(f"Resumed from checkpoint step {restored.step}.")
    else:
        start_from = family.pretrained(nnx.merge(graphdef, state.params, state.frozen))
        if start_from is not None:
            weights, source = start_from
            _check_weights(
                nnx.state(nnx.merge(graphdef, state.params, state.frozen)), weights, source
            )
            state = with_weights(state, shardings, weights, optimizer)

    fetched = time.perf_counter()
    batch = sharding.shard_batch(next(iterator), mesh)
    train_step = config_train_step(config, family, graphdef, optimizer, shardings, mesh, batch)
    model_of = lambda s: nnx.merge(graphdef, s.params, s.frozen)  # noqa: E731
    check_metrics = getattr(family, "check_metrics", None)  # optional (training/family.py)
    config_dict = config_lib.to_dict(config)
    logger = _Logger(workdir, active=main)
    history: list[dict[str, float]] = []
    scores: dict[str, float] = {}
    start = int(state.step)
    progress = progress and main
    bar = tqdm(total=tc.steps, initial=start, desc="train", unit="step", disable=not progress)
    tick, seen = time.perf_counter(), 0
    began, throughput = time.perf_counter(), "-"
    try:
        for step in range(start, tc.steps):
            if step > start:
                fetched = time.perf_counter()
                batch = sharding.shard_batch(next(iterator), mesh)
            state, metrics = train_step(state, batch)
            record = {k: float(v) for k, v in metrics.items()}
            # Wall time of this step: batch assembly + the step (float() waits for it);
            # the first one includes compilation.
            record["step_s"] = time.perf_counter() - fetched
            loss, grad_norm = record["loss"], record["grad_norm"]
            seen += tc.batch_size
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                last = ckpt.steps()
                bar.close()
                raise NonFiniteLossError(
                    f"Loss is {loss} (gradient norm {grad_norm}) at step {step + 1}. Last good checkpoint: "
                    f"{f'step {last[-1]} in {ckpt.directory}' if last else 'none'}. Lower "
                    "train.learning_rate or check the data for empty texts."
                )
            done = step + 1
            if check_metrics is not None:
                check_metrics(done, record)
            out_of_time = tc.max_seconds > 0 and time.perf_counter() - began > tc.max_seconds
            if tc.max_seconds > 0:  # hosts' clocks differ: all stop at process 0's step
                out_of_time = distributed.agree(out_of_time)
            last_step = done == tc.steps or out_of_time
            if done % tc.log_every == 0 or last_step:
                elapsed = time.perf_counter() - tick
                record["examples_per_s"] = seen / elapsed
                tick, seen = time.perf_counter(), 0
            if dev is not None and (done % tc.eval_every == 0 or last_step):
                if last_step and main:
                    bar.write(f"Final validation at step {done} ...")
                scores = family.validate(model_of(state), dev, progress=progress and last_step)
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
                if main:
                    bar.write(f"Time budget of {tc.max_seconds:.0f}s reached after {done} steps.")
                break
    finally:
        bar.close()
        ckpt.close()
        logger.close()

    model_dir = workdir / "model"
    if jax.process_count() == 1:
        family.save(model_of(state), model_dir, tokenizer)
    else:  # gathered by every process (a collective), written by process 0
        params, frozen = distributed.fetch((state.params, state.frozen))
        if main:
            family.save(nnx.merge(graphdef, params, frozen), model_dir, tokenizer)
    return TrainResult(workdir, model_dir, beir, int(state.step), scores, history)


def metrics_by_step(workdir: str | pathlib.Path) -> dict[int, dict[str, float]]:
    """``{step: metrics}`` from ``workdir/metrics.jsonl`` (the last record of a step wins after a resume)."""
    out = {}
    for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        out[record.pop("step")] = record
    return out


def losses_by_step(workdir: str | pathlib.Path) -> dict[int, float]:
    """``{step: loss}`` from ``workdir/metrics.jsonl`` (the last record of a step wins after a resume)."""
    return {step: record["loss"] for step, record in metrics_by_step(workdir).items()}
