"""Dual-encoder training throughput: jaxir vs sentence-transformers, side by side.

Both frameworks train the *same* MiniLM-L6-H384-shaped BERT (random weights written
once by ``transformers`` and loaded by each) on the *same* batches with the same loss
and optimizer, each in a fresh Python process started by this script:

* batch: 32 queries x 32 tokens, 32 positives (+ 32 hard negatives) x 128 tokens,
  random token ids without padding, already tensors (tokenization excluded from both);
* loss: in-batch softmax over cosine similarities with scale 20, i.e.
  sentence-transformers ``MultipleNegativesRankingLoss`` (called directly on
  pre-tokenized features) vs jaxir ``DualEncoderSpec(normalize=True, temperature=0.05)``
  with tied towers and mean pooling;
* optimizer: AdamW lr 2e-5, weight decay 0.01 on matrices only, eps 1e-6, global-norm
  clipping at 1.0, linear decay (jaxir: :func:`jaxir.optim.build` ``adamw``; torch: the same
  recipe written with ``torch.optim.AdamW`` + ``clip_grad_norm_`` + ``LambdaLR``);
* dropout: train mode, hidden dropout 0.1 in both. Attention-probability dropout is 0
  in both (jaxir's attention has none, so the Hugging Face config sets
  ``attention_probs_dropout_prob=0``);
* precision: each setting runs in float32 in both, or in bfloat16 mixed precision in
  both: jaxir ``dtype="bfloat16"`` (float32 params and optimizer, bf16 GEMM operands with
  float32 accumulation, :mod:`jaxir.layers.dot`) vs ``torch.autocast("cpu",
  dtype=torch.bfloat16)`` around the sentence-transformers forward and loss (float32
  params and optimizer, bf16 oneDNN GEMMs), the standard mixed-precision recipe of each.

**The peer at its best.** Each framework runs in a fresh Python process of its own, one
per configuration: jaxir as its CLI runs it (glibc keeps freed host memory,
:mod:`jaxir.host_memory`); sentence-transformers with the system allocator
(``JAXIR_SYSTEM_MALLOC=1`` in its process, which imports this script and so jaxir), with
jaxir's allocator settings (``GLIBC_TUNABLES``), and, except in ``--quick``, both again
with ``SentenceTransformer.compile()`` (``torch.compile``, inductor, one graph per input
shape; a configuration that fails to compile is dropped with its error). ``ratio`` is
against the fastest peer configuration; every one is printed and listed in the RESULT
line (``peer_configs``). torch uses every core. Separate processes keep one side's freed
memory and idle threads out of the other's steps. The runs are sequential, so compare
them on an otherwise idle machine; the load average is printed. The first ``--warmup``
steps of each (jaxir: compile) are excluded and the median wall time of the timed steps
is reported as examples/s = queries/s (process CPU time per step is printed too).
The jaxir step compiles once per setting; later steps must not recompile (printed).

**Roofline.** In the same run, :func:`protocol.gemm_roofline` times the step's GEMM
shapes (forward ``[8192 passage tokens, K] x [K, N]`` of q/k/v/output, MLP up and down,
and the weight gradients of the MLP) in each setting's precision under XLA:CPU's default
dots, its Eigen emitter and PyTorch. ``roofline_fraction`` is jaxir's model FLOP rate
(3x the forward matmul FLOPs of the batch, :func:`protocol.bert_forward_flops`: forward
+ the two backward products) over the best of them.

Run::

    python benchmarks/train_throughput.py           # 10 timed steps per setting (~25 min idle)
    python benchmarks/train_throughput.py --quick   # hard negatives only (f32, bf16), 3 timed
                                                    # steps, no torch.compile (~3 min idle)

Ends with ``RESULT {...}`` lines (DESIGN principle 8): float32 with hard negatives
(``train_vs_sentence_transformers``), bfloat16 mixed precision with hard negatives
(``..._bf16``) and float32 without hard negatives (``..._no_hardneg``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# JAX must see one plain CPU device, not the test suite's fake 8-device platform.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax
import numpy as np
import protocol
import torch
from flax import nnx

from jaxir import host_memory, optim, sharding
from jaxir.families.dense import DenseObjective
from jaxir.losses.contrastive import in_batch_softmax
from jaxir.models import hf
from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec
from jaxir.training import state as train_state
from jaxir.training import step as train_step

REPO = pathlib.Path(__file__).resolve().parents[1]
VOCAB = (
    pathlib.Path(os.environ.get("JAXIR_SHARED_DATA", REPO.parent / "shared" / "data"))
    / "vocab/bert-base-uncased/vocab.txt"
)

QUERIES, QUERY_LEN, PASSAGE_LEN = 32, 32, 128
LEARNING_RATE, WEIGHT_DECAY, EPS, GRAD_CLIP = 2e-5, 0.01, 1e-6, 1.0
SCALE = 20.0  # MultipleNegativesRankingLoss default; jaxir temperature = 1 / SCALE
TOTAL_STEPS = 10_000  # length of the linear-decay schedule (both sides)

_COMPILES = [0]  # XLA backend compilations so far in this process


def _count_compile(event: str, duration: float, **_: object) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compile)


def write_checkpoint(path: pathlib.Path, seed: int) -> None:
    """A random MiniLM-L6-H384-shaped ``BertModel`` + bert-base-uncased tokenizer in ``path``."""
    import transformers

    if not VOCAB.is_file():
        raise FileNotFoundError(
            f"{VOCAB}: vocab not found; set JAXIR_SHARED_DATA to the shared data dir."
        )
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(path)
    shutil.copy(VOCAB, path / "vocab.txt")
    transformers.BertTokenizerFast.from_pretrained(path).save_pretrained(path)


def make_batch(group: int, seed: int) -> dict[str, np.ndarray]:
    """jaxir batch layout; token ids drawn from [1000, 30522) (no special/pad tokens)."""
    return protocol.random_dual_encoder_batch(seed, QUERIES, group, QUERY_LEN, PASSAGE_LEN)


def torch_features(batch: dict[str, np.ndarray]) -> list[dict[str, torch.Tensor]]:
    """The same batch as sentence-transformers columns: [queries, positives, negatives...]."""

    def features(ids: np.ndarray) -> dict[str, torch.Tensor]:
        ids_t = torch.from_numpy(ids.astype(np.int64))
        return {
            "input_ids": ids_t,
            "attention_mask": torch.ones_like(ids_t),
            "token_type_ids": torch.zeros_like(ids_t),
        }

    columns = [features(batch["query_ids"])]
    columns += [features(batch["passage_ids"][:, g]) for g in range(batch["passage_ids"].shape[1])]
    return columns


class JaxirTrainer:
    """jaxir: tied-tower dual encoder, ``create_state`` + ``make_train_step`` on one CPU device."""

    def __init__(self, path: pathlib.Path, batch: dict[str, np.ndarray], seed: int, dtype: str):
        spec = DualEncoderSpec(pooling="mean", normalize=True, temperature=1.0 / SCALE)
        loaded = DualEncoder(hf.load_pretrained(path, mlm_head=False, dtype=dtype), None, spec)
        config = loaded.query_encoder.config
        make_model = lambda: DualEncoder.create(config, spec, rngs=nnx.Rngs(seed))  # noqa: E731
        opt_spec = optim.OptimizerSpec(
            learning_rate=LEARNING_RATE,
            total_steps=TOTAL_STEPS,
            weight_decay=WEIGHT_DECAY,
            grad_clip=GRAD_CLIP,
        )
        self.optimizer = optim.build(opt_spec, train_state.abstract_params(make_model))
        mesh = sharding.make_mesh(data=1, devices=jax.devices()[:1])
        self.graphdef, state, shardings = train_state.create_state(
            make_model, self.optimizer, mesh, seed=seed
        )
        # Same weights as the torch side: swap the loaded parameters into the fresh state.
        self.state = train_state.with_weights(state, shardings, nnx.state(loaded), self.optimizer)
        self.batch = sharding.shard_batch(batch, mesh)
        self.step_fn = train_step.make_train_step(
            train_step.make_grad_fn(DenseObjective(), self.graphdef),
            self.optimizer,
            state_shardings=shardings,
            mesh=mesh,
            example_batch=self.batch,
            gemm_dtype=dtype,
        )

    def eval_loss(self) -> float:
        """Loss without dropout at the current parameters (parity check)."""
        model = nnx.merge(self.graphdef, self.state.params, self.state.frozen)
        ids, mask = self.batch["passage_ids"], self.batch["passage_mask"]
        q_bd = model.encode_queries(self.batch["query_ids"], self.batch["query_mask"])
        p_nd = model.encode_passages(
            ids.reshape(-1, ids.shape[-1]), mask.reshape(-1, ids.shape[-1])
        )
        return float(
            in_batch_softmax(
                q_bd * model.scale(),
                p_nd,
                temperature=1.0,
                group_size=ids.shape[1],
            )
        )

    def step(self) -> float:
        self.state, metrics = self.step_fn(self.state, self.batch)
        return float(jax.block_until_ready(metrics["loss"]))


class SentenceTransformersTrainer:
    """sentence-transformers: ``Transformer`` + mean ``Pooling``, ``MultipleNegativesRankingLoss``."""

    def __init__(self, path: pathlib.Path, batch: dict[str, np.ndarray], dtype: str, compile: bool):
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

        # The checkpoint has no pooler (jaxir neither): keep the parameter sets identical.
        transformer = Transformer(str(path), model_kwargs={"add_pooling_layer": False})
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
        self.model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
        if compile:  # one static graph per input shape (queries, passages)
            self.model.compile(dynamic=False)
        self.loss_fn = MultipleNegativesRankingLoss(self.model, scale=SCALE)
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": WEIGHT_DECAY},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=LEARNING_RATE,
            eps=EPS,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: max(0.0, 1.0 - s / TOTAL_STEPS)
        )
        self.features = torch_features(batch)
        self.autocast = dtype == "bfloat16"

    def _loss(self) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            return self.loss_fn(self.features, labels=None)

    def eval_loss(self) -> float:
        self.model.eval()
        with torch.no_grad():
            loss = float(self._loss())
        self.model.train()
        return loss

    def step(self) -> float:
        self.model.train()
        loss = self._loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


def timed(fn) -> tuple[float, float, float]:
    """``(wall seconds, process CPU seconds, fn())``."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def run_worker(
    framework: str,
    path: pathlib.Path,
    group: int,
    dtype: str,
    *,
    warmup: int,
    steps: int,
    seed: int,
    compile: bool = False,
) -> dict:
    """One framework's steps on one batch with ``group`` passages per query, in ``dtype``.

    Runs in a process of its own (see :func:`measure`): the first step (jaxir: compile),
    ``warmup - 1`` more untimed steps, then ``steps`` timed ones.
    """
    batch = make_batch(group, seed)
    if framework == "jaxir":
        keeps = host_memory.keep_freed_memory()  # what the jaxir CLI does
        config = f"{protocol.jax_config()}; glibc keeps freed memory: {keeps}"
        trainer = JaxirTrainer(path, batch, seed, dtype)
    else:
        config = protocol.torch_config()
        trainer = SentenceTransformersTrainer(path, batch, dtype, compile)
    try:  # a compiled model compiles its eval graph here and its train graphs in the step
        initial_loss = trainer.eval_loss()
        compiles = _COMPILES[0]
        first_step = timed(trainer.step)[0]
    except Exception as e:  # torch.compile failed: the parent drops this configuration
        if not compile:
            raise
        return {"error": f"{type(e).__name__}: {str(e)[:300]}", "config": config}
    programs = _COMPILES[0] - compiles
    for _ in range(warmup - 1):
        trainer.step()
    runs = [timed(trainer.step) for _ in range(steps)]
    return {
        "config": config,
        "initial_loss": initial_loss,
        "final_loss": runs[-1][2],
        "first_step_s": first_step,
        "programs": programs,
        "recompiles": _COMPILES[0] - compiles - programs,
        "wall_s": [r[0] for r in runs],
        "cpu_s": [r[1] for r in runs],
    }


SYSTEM_MALLOC = {host_memory.OPT_OUT: "1"}
JAXIR_MALLOC = {host_memory.OPT_OUT: "1", "GLIBC_TUNABLES": host_memory.GLIBC_TUNABLES}

#: (configuration, worker, environment, torch.compile): jaxir as its CLI runs (its glibc
#: settings on), then the peer's configurations: as its users run it (the first; the parity
#: reference), given jaxir's glibc settings through GLIBC_TUNABLES, and both compiled (not
#: in --quick).
RUNS = (
    ("jaxir", "jaxir", {}, False),
    ("glibc malloc", "peer", SYSTEM_MALLOC, False),
    ("jaxir malloc", "peer", JAXIR_MALLOC, False),
    ("torch.compile, glibc malloc", "peer", SYSTEM_MALLOC, True),
    ("torch.compile, jaxir malloc", "peer", JAXIR_MALLOC, True),
)
PARITY_PEER = RUNS[1][0]


def row_label(config: str) -> str:
    return config if config == "jaxir" else f"sentence-transformers, {config}"


def measure(
    worker: str, env: dict[str, str], compile: bool, path: pathlib.Path, args: list[str]
) -> dict:
    """Runs :func:`run_worker` in a fresh Python process and returns its measurements."""
    command = [sys.executable, __file__, "--worker", worker, "--checkpoint", str(path), *args]
    command += ["--compile"] if compile else []
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("WORKER ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{worker} worker failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix("WORKER "))
    if "error" not in result:
        result["step_s"] = statistics.median(result["wall_s"])
        result["examples_per_s"] = QUERIES / result["step_s"]
    return result


def step_flops(group: int) -> float:
    """Matmul FLOPs of one training step: 3x the forward (the backward takes two products)."""
    sizes = {"hidden": 384, "layers": 6, "intermediate": 1536}
    forward = protocol.bert_forward_flops([QUERY_LEN], rows=QUERIES, **sizes)
    forward += protocol.bert_forward_flops([PASSAGE_LEN], rows=QUERIES * group, **sizes)
    return 3 * forward


def check_parity(dtype: str, ours: dict, peer: dict) -> None:
    """The dropout-free initial losses must agree: both sides train the same model."""
    tolerance = 1e-3 if dtype == "float32" else 2e-2
    a, b = ours["initial_loss"], peer["initial_loss"]
    if not np.isclose(a, b, rtol=tolerance, atol=tolerance):
        raise RuntimeError(
            f"Parity check failed: initial loss jaxir {a:.5f} vs sentence-transformers "
            f"{b:.5f}; the two models are not the same."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="hard-negative settings only (float32, bfloat16), 2 warmup + 3 timed steps",
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (>= 1)")
    parser.add_argument("--torch-threads", type=int, default=None, help="default: CPU count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=("jaxir", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--group", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (3 if args.quick else 10)
    warmup = 2 if args.quick else max(args.warmup, 1)
    torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
    if args.worker:
        result = run_worker(
            args.worker,
            args.checkpoint,
            args.group,
            args.dtype,
            warmup=warmup,
            steps=steps,
            seed=args.seed,
            compile=args.compile,
        )
        print("WORKER " + json.dumps(result))
        return
    settings = (
        ("train_vs_sentence_transformers", 2, "float32"),
        ("train_vs_sentence_transformers_bf16", 2, "bfloat16"),
    )
    if not args.quick:
        settings += (("train_vs_sentence_transformers_no_hardneg", 1, "float32"),)
    runs_used = [run for run in RUNS if not (args.quick and run[3])]

    print(protocol.machine())
    print(
        f"batch: {QUERIES} queries x {QUERY_LEN} tokens, {QUERIES} positives (+{QUERIES} hard "
        f"negatives) x {PASSAGE_LEN} tokens; dropout 0.1; AdamW lr {LEARNING_RATE}; "
        f"{warmup} warmup + {steps} timed steps, each configuration in a fresh process"
    )
    # The GEMMs of a step: forward on the passage tokens, and the MLP weight gradients.
    tokens = QUERIES * 2 * PASSAGE_LEN
    shapes = [
        *protocol.bert_gemm_shapes(tokens, 384, 1536),
        (384, tokens, 1536),
        (1536, tokens, 384),
    ]
    rooflines = {
        dtype: protocol.gemm_roofline(shapes, dtype, iters=2 if args.quick else 5)
        for dtype in sorted({dtype for _, _, dtype in settings}, reverse=True)
    }
    for roofline in rooflines.values():
        print("\n" + roofline.report())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp)
        write_checkpoint(path, args.seed)
        for _, group, dtype in settings:
            worker_args = [f"--group={group}", f"--dtype={dtype}", f"--warmup={warmup}"]
            worker_args += [f"--steps={steps}", f"--seed={args.seed}"]
            if args.torch_threads:
                worker_args.append(f"--torch-threads={args.torch_threads}")
            runs = {
                config: measure(worker, env, compile, path, worker_args)
                for config, worker, env, compile in runs_used
            }
            check_parity(dtype, runs["jaxir"], runs[PARITY_PEER])
            results.append((group, dtype, runs))
    print()
    for config, run in results[0][2].items():
        print(f"{row_label(config)} process: {run['config']}")

    print()
    header = (
        f"{'setting':<30}{'framework':<48}{'wall s/step':>12}{'min..max':>16}"
        f"{'CPU s/step':>12}{'examples/s':>12}"
    )
    print(header)
    print("-" * len(header))
    records = []
    for (name, _, _), (group, dtype, runs) in zip(settings, results, strict=True):
        setting = ("with hard negative" if group == 2 else "no hard negative") + f", {dtype}"
        for i, (config, r) in enumerate(runs.items()):
            first, label = setting if i == 0 else "", row_label(config)
            if "error" in r:
                print(f"{first:<30}{label:<48}dropped: {r['error']}")
                continue
            span = f"{min(r['wall_s']):.2f}..{max(r['wall_s']):.2f}"
            print(
                f"{first:<30}{label:<48}{r['step_s']:>12.3f}"
                f"{span:>16}{statistics.median(r['cpu_s']):>12.2f}{r['examples_per_s']:>12.2f}"
            )
        ours, peer = runs["jaxir"], runs[PARITY_PEER]
        peer_configs = {
            config: r["examples_per_s"]
            for config, r in runs.items()
            if config != "jaxir" and "error" not in r
        }
        best = max(peer_configs, key=peer_configs.get)
        fraction = rooflines[dtype].fraction(step_flops(group) / ours["step_s"])
        print(
            f"{'':<30}jaxir / best peer ({best}) = "
            f"{ours['examples_per_s'] / peer_configs[best]:.2f}x; jaxir "
            f"{step_flops(group) / ours['step_s'] / 1e9:.0f} GFLOP/s = {fraction:.2f} of the "
            f"{rooflines[dtype].best_gflops:.0f} GFLOP/s roofline; jaxir first step "
            f"{ours['first_step_s']:.1f} s (compile ~{ours['first_step_s'] - ours['step_s']:.1f} s, "
            f"{ours['programs']} program(s), {ours['recompiles']} recompiles after it); initial "
            f"loss (no dropout) jaxir {ours['initial_loss']:.4f} / peer "
            f"{peer['initial_loss']:.4f}; last train loss {ours['final_loss']:.4f} / "
            f"{peer['final_loss']:.4f}"
        )
        records.append(
            dict(
                name=name,
                unit="examples/s",
                jaxir=ours["examples_per_s"],
                peer=f"sentence-transformers ({best})",
                peer_value=peer_configs[best],
                roofline_fraction=fraction,
                dtype=dtype,
                peer_configs=peer_configs,
            )
        )
    print(f"\n{protocol.machine()} (at the end)\n")
    for record in records:
        protocol.result(**record)


if __name__ == "__main__":
    main()
