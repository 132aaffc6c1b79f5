"""Memory and step time of jaxir's memory-efficient optimizers and parameterizations.

Three measurements, each printed as a table, then ``RESULT`` lines (DESIGN principle 8):

1. **State bytes** (abstract, nothing allocated): per device bytes of parameters,
   gradients, optimizer state and frozen weights, from
   :func:`jaxir.cli.memory.memory_report` (``compile=False``: the run's train state built
   with ``jax.eval_shape`` and sharded from logical axes as ``jaxir train`` shards it),
   for a BERT-base-shaped dual encoder (one shared tower, as the dense recipe trains:
   vocabulary 30,522, 12 layers, 768 hidden) and a BERT-large-shaped one (24 layers,
   1024 hidden, ~335M parameters) standing in for the issue's "~350M stack": jaxir has
   no LLaMA-family model. Configurations: AdamW, GaLore rank 128 and 256, Fira rank
   128, APOLLO-Mini, APOLLO rank 256 (the reference scripts' rank for its 130M and 350M
   models, channel-wise scaling), SLTrain (rank 128, density 0.03) and LoRA (rank 16)
   on the attention + MLP kernels (``model.linear_layers``), both under AdamW. Meshes:
   one device, and the fake 8-device CPU mesh with FSDP = 8 (this script sets
   ``--xla_force_host_platform_device_count=8`` before importing jax; the one-device
   column is the replicated layout of a ``data=8`` mesh, where every device holds
   exactly what a single device holds).
2. **Peak process memory over the training steps**: every configuration in a fresh
   process of its own; ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the real
   jitted train step :func:`jaxir.training.loop.config_train_step` builds (the one
   ``jaxir.train`` runs) has run on synthetic token batches of the SciFact recipe's
   shapes scaled down to one shared CPU core (``configs/dense_scifact.py``: 32 queries
   of 48 tokens, each with one positive + one hard negative of 128 tokens; here 4
   queries of 32 tokens with 2 passages of 64 tokens: 640 tokens a step instead of
   9,728, so the optimizer's fixed cost per step weighs ~15x more than in the recipe).
   Printed: ``ru_maxrss``, the peak RSS of the process's own address space (``VmHWM``)
   and that minus its peak after imports (jax, flax, jaxir, backend initialised).
3. **Step time** (same processes, pinned to one core): AdamW vs GaLore rank 128 with
   ``update_gap`` 10 instead of the recipe's 200, so two refresh intervals fit the run:
   the median step, the mean over the timed steps (amortized: it includes the refresh
   steps) and the worst step over the median, with staggered refresh on and off, and
   staggered with ``optim.svd=randomized`` (the refresh by randomized range finding
   instead of a full SVD; reported next to the headline, which is the default). The
   peer is galore-torch's ``GaLoreAdamW`` on ``transformers.BertModel`` of the same
   shape (random init, mean pooling, the same in-batch softmax over all passages,
   GaLore on the same attention + MLP kernels at rank 128, the same ``update_gap``,
   scale 0.25, one thread), in its own process, eager and (full run) with
   ``torch.compile`` of the model's forward + loss; the faster is the peer.

``roofline_fraction`` of a speed figure: model FLOPs of the step (3x the encoder
forward's matmul FLOPs, :func:`protocol.bert_forward_flops`: forward plus the two
backward products; the optimizer's work is not counted, so its cost lowers the
fraction) per second, over the best GEMM rate on the step's shapes measured in the same
run (:func:`protocol.gemm_roofline`, XLA default / XLA Eigen / PyTorch, each in its own
process, on the same core).

Every process runs on one core: the script pins itself (and so its children) to CPU 1
as ``taskset -c 1`` does (``--cpu`` picks another). The runs are sequential (a
BERT-base process holds a few GB; several at once would not fit next to other jobs),
so the load average of the machine is printed with each.

Run::

    python benchmarks/memory.py            # BERT-base + BERT-large state, BERT-base runs
                                           # (~50 min on a shared 2-core machine)
    python benchmarks/memory.py --state-only   # part 1 only: the state tables, no training
    python benchmarks/memory.py --quick    # BERT-base state; the 2-layer 256-wide "small"
                                           # preset for the runs, 6 timed steps (~70 s)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import pathlib
import re
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

WORKER = "--worker" in sys.argv
_DEVICE_FLAG = "--xla_force_host_platform_device_count"
_flags = re.sub(rf"{_DEVICE_FLAG}=\d+", "", os.environ.get("XLA_FLAGS", "")).strip()
# The parent needs 8 fake devices for the FSDP=8 column; each training worker one device.
os.environ["XLA_FLAGS"] = _flags if WORKER else f"{_flags} {_DEVICE_FLAG}=8".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import protocol  # noqa: E402 (after the environment above)

REPO = protocol.REPO
SHARED = pathlib.Path(os.environ.get("JAXIR_SHARED_DATA", REPO.parent / "shared" / "data"))
VOCAB_DIR = SHARED / "vocab" / "bert-base-uncased"
RECIPE = REPO / "configs" / "dense_scifact.py"
VOCAB = 30522
MiB = 2**20
CPU_ENV = "JAXIR_MEMORY_BENCH_CPU"  # the core a worker pins itself to

#: Encoder shapes: (layers, hidden, heads, intermediate).
SHAPES = {
    "bert-base": (12, 768, 12, 3072),
    "bert-large": (24, 1024, 16, 4096),
    "small": (2, 256, 4, 1024),
}

#: Configuration name -> overrides of the recipe (``jaxir.config.override`` syntax).
CONFIGS: dict[str, list[str]] = {
    "adamw": ["optim.kind=adamw"],
    "galore_r128": ["optim.kind=galore", "optim.rank=128"],
    "galore_r256": ["optim.kind=galore", "optim.rank=256"],
    "fira_r128": ["optim.kind=fira", "optim.rank=128"],
    "apollo_mini": ["optim.kind=apollo_mini"],
    "apollo_r256": ["optim.kind=apollo", "optim.rank=256"],
    "sltrain_r128": [
        "model.linear=sltrain",
        "model.sltrain.rank=128",
        "model.sltrain.density=0.03",
    ],
    "lora_r16": ["model.linear=lora", "model.lora.rank=16"],
}

TARGETS = {
    "galore_r128_optimizer_state_vs_adamw": 0.35,
    "sltrain_state_vs_dense": 0.5,
    "galore_step_time_vs_adamw": 1.15,
    "galore_worst_step_vs_median": 1.5,
}


def max_rss() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in bytes (Linux reports KiB).

    Linux carries a process's ``ru_maxrss`` over ``execve`` from the forked copy of its
    parent, so in a child it is at least the parent's RSS at the fork: see
    :func:`peak_rss` for the peak of this program alone.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss() -> int:
    """Peak RSS of this process's own address space, bytes (``VmHWM``, reset at ``execve``);
    ``ru_maxrss`` where ``/proc`` is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return max_rss()


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# --------------------------------------------------------------------------- shapes


class Batch:
    """The synthetic step shape: ``queries`` x ``query_len`` tokens, ``group`` passages of
    ``passage_len`` tokens per query (one positive, ``group - 1`` hard negatives)."""

    def __init__(self, queries: int, query_len: int, passage_len: int, group: int = 2):
        self.queries, self.query_len, self.passage_len, self.group = (
            queries,
            query_len,
            passage_len,
            group,
        )

    def describe(self) -> str:
        return (
            f"{self.queries} queries x {self.query_len} tokens, {self.queries} x {self.group} "
            f"passages x {self.passage_len} tokens (no padding)"
        )

    def arrays(self, seed: int = 0) -> dict[str, Any]:
        """jaxir's batch layout (:mod:`jaxir.data.pipeline`); ids in [1000, 30522)."""
        return protocol.random_dual_encoder_batch(
            seed, self.queries, self.group, self.query_len, self.passage_len, VOCAB
        )

    def model_flops(self, shape: str) -> float:
        """Matmul FLOPs of one training step (3x the forward of queries and passages)."""
        layers, hidden, _, inter = SHAPES[shape]
        kw = dict(hidden=hidden, layers=layers, intermediate=inter)
        forward = protocol.bert_forward_flops(
            [self.query_len], rows=self.queries, **kw
        ) + protocol.bert_forward_flops([self.passage_len], rows=self.queries * self.group, **kw)
        return 3 * forward

    def gemm_shapes(self, shape: str) -> list[protocol.Shape]:
        """Forward dense-layer GEMMs of passages and queries, plus the MLP weight gradients."""
        _, hidden, _, inter = SHAPES[shape]
        tokens = self.queries * self.group * self.passage_len
        out = protocol.bert_gemm_shapes(tokens, hidden, inter)
        out += protocol.bert_gemm_shapes(self.queries * self.query_len, hidden, inter)
        return [*out, (hidden, tokens, inter), (inter, tokens, hidden)]


# --------------------------------------------------------------------------- workers


class JaxirServer:
    """One jaxir configuration's training process (worker side of :class:`protocol.Worker`)."""

    def __init__(self) -> None:
        from jaxir import host_memory

        host_memory.keep_freed_memory()  # what the `jaxir` command does first
        import jax
        from flax import nnx  # noqa: F401

        from jaxir import optim, sharding  # noqa: F401
        from jaxir.training import loop  # noqa: F401

        jax.devices()
        self.baseline = peak_rss()

    def setup(self, overrides: list[str], batch: list[int], seed: int = 0) -> dict[str, Any]:
        """Builds the state and the jitted step of ``recipe + overrides`` (not yet compiled)."""
        from flax import nnx

        from jaxir import optim, sharding
        from jaxir.config import load_config, override
        from jaxir.optim.galore import state_bytes
        from jaxir.training import loop
        from jaxir.training.family import make_family
        from jaxir.training.state import abstract_params, create_state

        config = override(load_config(RECIPE), overrides)
        family = make_family(config.family, config)
        mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
        seed = config.train.seed
        make_model = lambda: family.init_model(vocab_size=VOCAB, rngs=nnx.Rngs(seed))  # noqa: E731
        optimizer = optim.build(loop.optimizer_spec(config), abstract_params(make_model))
        graphdef, self.state, shardings = create_state(make_model, optimizer, mesh, seed=seed)
        self.batch = sharding.shard_batch(Batch(*batch).arrays(seed), mesh)
        self.step_fn = loop.config_train_step(
            config, family, graphdef, optimizer, shardings, mesh, self.batch
        )
        return {
            "params": state_bytes(self.state.params),
            "opt_state": state_bytes(self.state.opt_state),
            "frozen": state_bytes(self.state.frozen),
        }

    def step(self) -> dict[str, float]:
        """One training step; wall seconds until its loss is on the host."""
        start = time.perf_counter()
        self.state, metrics = self.step_fn(self.state, self.batch)
        loss = float(metrics["loss"])
        return {"seconds": time.perf_counter() - start, "loss": loss}

    def rss(self) -> dict[str, int]:
        return {"peak": peak_rss(), "ru_maxrss": max_rss(), "baseline": self.baseline}


class TorchServer:
    """galore-torch's GaLoreAdamW on ``transformers.BertModel`` (one thread)."""

    def __init__(self) -> None:
        import torch
        import transformers  # noqa: F401

        torch.set_num_threads(1)
        import galore_torch  # noqa: F401

        self.baseline = peak_rss()

    def setup(
        self,
        shape: str,
        batch: list[int],
        rank: int,
        update_gap: int,
        compile: bool,
        warmup_steps: int,
        total_steps: int,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Model, GaLoreAdamW param groups (GaLore on every encoder-layer kernel), loss."""
        import torch
        import transformers
        from galore_torch import GaLoreAdamW

        layers, hidden, heads, inter = SHAPES[shape]
        config = transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.0,  # jaxir's attention has no dropout
        )
        torch.manual_seed(seed)
        self.model = transformers.BertModel(config, add_pooling_layer=False).train()
        named = list(self.model.named_parameters())
        # q/k/v, attention output, MLP up and down: the kernels jaxir labels "matrix".
        low_rank = [p for n, p in named if n.startswith("encoder.layer.") and p.ndim == 2]
        chosen = {id(p) for p in low_rank}
        decay = [p for n, p in named if id(p) not in chosen and p.ndim == 2]  # embeddings
        rest = [p for _, p in named if id(p) not in chosen and p.ndim < 2]  # biases, norms
        self.optimizer = GaLoreAdamW(
            [
                {
                    "params": low_rank,
                    "rank": rank,
                    "update_proj_gap": update_gap,
                    "scale": 0.25,
                    "proj_type": "std",
                    "weight_decay": 0.01,
                },
                {"params": decay, "weight_decay": 0.01},
                {"params": rest, "weight_decay": 0.0},
            ],
            lr=5e-4,
            eps=1e-6,
            no_deprecation_warning=True,
        )
        # The recipe's schedule (jaxir.optim.schedules "linear"): warm-up, linear decay.
        warm, total = warmup_steps, total_steps
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: s / warm if s < warm else max(0.0, (total - s) / (total - warm)),
        )
        arrays = Batch(*batch).arrays(seed)
        q, g, length = arrays["passage_ids"].shape
        self.inputs = [
            torch.from_numpy(arrays["query_ids"].astype("int64")),
            torch.from_numpy(arrays["passage_ids"].reshape(q * g, length).astype("int64")),
        ]
        self.labels = torch.arange(q) * g

        def loss_fn(q_ids, p_ids):
            def encode(ids):
                hidden_blh = self.model(
                    input_ids=ids, attention_mask=torch.ones_like(ids)
                ).last_hidden_state
                return torch.nn.functional.normalize(hidden_blh.mean(1), dim=-1)

            scores = encode(q_ids) @ encode(p_ids).T / 0.05  # temperature 0.05
            return torch.nn.functional.cross_entropy(scores, self.labels)

        self.loss_fn = torch.compile(loss_fn) if compile else loss_fn
        return {"params": sum(p.numel() * p.element_size() for _, p in named)}

    def step(self) -> dict[str, float]:
        import torch

        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(*self.inputs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.schedule.step()
        return {"seconds": time.perf_counter() - start, "loss": float(loss)}

    def opt_state_bytes(self) -> int:
        """Bytes of every tensor in the optimizer state (moments and GaLore projectors)."""
        import torch

        def size(x: Any) -> int:
            if isinstance(x, torch.Tensor):
                return x.numel() * x.element_size()
            if isinstance(x, (list, tuple)):
                return sum(size(v) for v in x)
            if hasattr(x, "ortho_matrix"):  # GaLoreProjector
                return size(x.ortho_matrix)
            return 0

        return sum(size(v) for state in self.optimizer.state.values() for v in state.values())

    def config(self) -> str:
        return protocol.torch_config()

    def rss(self) -> dict[str, int]:
        return {"peak": peak_rss(), "ru_maxrss": max_rss(), "baseline": self.baseline}


def run_worker(
    kind: str, setup: dict[str, Any], warmup: int, steps: int, label: str, cpu: int
) -> dict[str, Any]:
    """A fresh process of ``kind`` (``jaxir`` / ``torch``) on core ``cpu``: set up,
    ``warmup`` untimed steps (the first compiles), ``steps`` timed steps, then its peak RSS."""
    began = time.perf_counter()
    with protocol.Worker(__file__, kind, env={CPU_ENV: str(cpu)}) as worker:
        info = worker.call("setup", **setup)
        first = [worker.call("step") for _ in range(warmup)]
        timed = [worker.call("step") for _ in range(steps)]
        out = dict(info, **worker.call("rss"), label=label, load=load())
        if kind == "torch":
            out["opt_state"] = worker.call("opt_state_bytes")
            out["config"] = worker.call("config")
    out["first_step"] = first[0]["seconds"] if first else float("nan")
    out["times"] = [r["seconds"] for r in timed]
    out["losses"] = [r["loss"] for r in first + timed]
    out["wall"] = time.perf_counter() - began
    print(
        f"  {label} (CPU {cpu}): peak RSS {out['peak'] / MiB:,.0f} MiB (after imports "
        f"{out['baseline'] / MiB:,.0f}), first step {out['first_step']:.1f} s, median "
        f"{protocol.median(out['times']):.3f} s, loss {out['losses'][0]:.3f} -> "
        f"{out['losses'][-1]:.3f}; {out['load']}",
        flush=True,
    )
    return out


# --------------------------------------------------------------------------- 1. state bytes


def bert_large_dir(root: pathlib.Path) -> str:
    """A Hugging Face directory with a BERT-large ``config.json`` and the BERT vocabulary
    (no weights: ``memory_report(compile=False)`` reads the architecture only)."""
    import transformers

    layers, hidden, heads, inter = SHAPES["bert-large"]
    path = root / "bert-large-shape"
    path.mkdir(exist_ok=True)
    transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
    ).to_json_file(path / "config.json")
    shutil.copy(VOCAB_DIR / "vocab.txt", path / "vocab.txt")
    return str(path)


def state_table(models: Sequence[str], workdir: pathlib.Path) -> dict[tuple[str, str, str], Any]:
    """``(model, config, mesh) -> MemoryReport`` for every configuration, printed as tables."""
    from jaxir.cli.memory import memory_report
    from jaxir.config import load_config, override

    if not (VOCAB_DIR / "vocab.txt").is_file():
        raise FileNotFoundError(
            f"{VOCAB_DIR}/vocab.txt not found (the 30,522-token BERT vocabulary); set "
            "JAXIR_SHARED_DATA to the shared data directory."
        )
    inits = {"bert-base": ["model.init=bert-base", f"model.vocab={VOCAB_DIR}"]}
    inits["bert-large"] = [f"model.init={bert_large_dir(workdir)}"]
    meshes = {"1 device": ["mesh.data=8"], "FSDP=8": ["mesh.data=1", "mesh.fsdp=8"]}
    reports = {}
    for model in models:
        print(f"\n{model}-shaped dual encoder (one shared tower), MiB per device:")
        head = f"{'configuration':<14}"
        for mesh in meshes:
            head += f" | {mesh + ': params':>17} {'grads':>8} {'opt state':>9} {'frozen':>8} {'total':>8}"
        print(head + " | opt state vs adamw | FSDP=8 total x 8 / 1 device")
        for name, overrides in CONFIGS.items():
            row = f"{name:<14}"
            for mesh, mesh_overrides in meshes.items():
                config = override(
                    load_config(RECIPE),
                    ["data.path=none", *inits[model], *mesh_overrides, *overrides],
                )
                report = memory_report(config, workdir / model, compile=False)
                reports[model, name, mesh] = report
                row += (
                    f" | {report.params / MiB:17.1f} {report.grads / MiB:8.1f} "
                    f"{report.opt_state / MiB:9.1f} {report.frozen / MiB:8.1f} "
                    f"{report.state / MiB:8.1f}"
                )
            ratio = (
                reports[model, name, "1 device"].opt_state
                / reports[model, "adamw", "1 device"].opt_state
            )
            # 1.00 when FSDP shards everything; above it: state replicated on every device.
            spread = (
                8 * reports[model, name, "FSDP=8"].state / reports[model, name, "1 device"].state
            )
            print(f"{row} | {ratio:18.3f} | {spread:.2f}", flush=True)
    return reports


def state_results(reports: dict, models: Sequence[str]) -> list[dict[str, Any]]:
    """The arguments of the two state RESULT lines (the first model, one device); prints
    the arithmetic behind them for every model."""
    lines = []
    for model in models:
        r = {name: reports[model, name, "1 device"] for name in CONFIGS}
        fsdp = {name: reports[model, name, "FSDP=8"] for name in CONFIGS}
        # LoRA freezes exactly the kernels + biases of the parameterized (attention + MLP)
        # layers: its frozen bytes are those layers' dense parameters.
        linear = r["lora_r16"].frozen
        rest = r["adamw"].params - linear  # embeddings, norms, temperature: never projected
        galore_ratio = r["galore_r128"].opt_state / r["adamw"].opt_state
        rest_state = r["adamw"].opt_state - 2 * linear  # AdamW's mu + nu (+ counters) on them
        kernel_state = r["galore_r128"].opt_state - rest_state
        print(
            f"\n{model}: GaLore r128 optimizer state / AdamW's = {r['galore_r128'].opt_state / MiB:.1f}"
            f" / {r['adamw'].opt_state / MiB:.1f} MiB = {galore_ratio:.5f} (target <= "
            f"{TARGETS['galore_r128_optimizer_state_vs_adamw']}); FSDP=8 per device "
            f"{fsdp['galore_r128'].opt_state / MiB:.1f} / {fsdp['adamw'].opt_state / MiB:.1f} MiB "
            f"(1/{r['adamw'].opt_state / fsdp['adamw'].opt_state:.2f} of one device's)."
        )
        print(
            f"  arithmetic: the attention + MLP layers hold {linear / MiB:.1f} MiB of parameters,"
            f" the rest (embeddings, norms) {rest / MiB:.1f} MiB ({rest / r['adamw'].params:.1%})."
            f" AdamW keeps 2 moments of everything: {2 * linear / MiB:.1f} + {rest_state / MiB:.1f}"
            f" MiB. GaLore projects only the attention + MLP kernels (its state on those"
            f" layers, biases included: {kernel_state / MiB:.1f} MiB ="
            f" {kernel_state / (2 * linear):.3f} of AdamW's there) and keeps AdamW on"
            f" the rest, so the rest's {rest_state / MiB:.1f} MiB alone are"
            f" {rest_state / r['adamw'].opt_state:.3f} of AdamW's state: the whole-model ratio"
            f" cannot go below that however small the rank."
        )
        # SLTrain: params + optimizer state of the parameterized layers only.
        sl = r["sltrain_r128"]
        sl_linear = sl.params + sl.opt_state - (rest + rest_state)
        dense_linear = 3 * linear
        sl_ratio = sl_linear / dense_linear
        print(
            f"{model}: SLTrain (r128, density 0.03) on the attention + MLP layers: params + "
            f"AdamW state {sl_linear / MiB:.1f} MiB vs dense + AdamW {dense_linear / MiB:.1f} MiB"
            f" = {sl_ratio:.3f} (target <= {TARGETS['sltrain_state_vs_dense']}); with its"
            f" frozen sparse-support indices ({sl.frozen / MiB:.1f} MiB, int32):"
            f" {(sl_linear + sl.frozen) / dense_linear:.3f}."
        )
        if model != models[0]:
            continue
        lines.append(
            dict(
                name="galore_r128_optimizer_state_vs_adamw",
                unit="bytes",
                jaxir=r["galore_r128"].opt_state,
                peer="jaxir adamw",
                peer_value=r["adamw"].opt_state,
                roofline_fraction=None,
                model=model,
                devices=1,
                target=TARGETS["galore_r128_optimizer_state_vs_adamw"],
                unprojected_share_of_adamw_state=rest_state / r["adamw"].opt_state,
                fsdp8_per_device=fsdp["galore_r128"].opt_state,
            )
        )
        lines.append(
            dict(
                name="sltrain_state_vs_dense",
                unit="bytes (params + optimizer state of the attention + MLP layers)",
                jaxir=sl_linear,
                peer="jaxir dense + adamw",
                peer_value=dense_linear,
                roofline_fraction=None,
                model=model,
                rank=128,
                density=0.03,
                target=TARGETS["sltrain_state_vs_dense"],
                with_frozen_indices=(sl_linear + sl.frozen) / dense_linear,
            )
        )
    return lines


# --------------------------------------------------------------------------- 2 + 3. runs


def step_stats(times: Sequence[float], flops: float, roofline: protocol.Roofline) -> dict:
    median = protocol.median(times)
    mean = sum(times) / len(times)
    return {
        "median": median,
        "amortized": mean,
        "worst": max(times),
        "worst_vs_median": max(times) / median,
        "roofline_median": roofline.fraction(flops / median),
        "roofline_amortized": roofline.fraction(flops / mean),
        "roofline_worst": roofline.fraction(flops / max(times)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~1-2 minute version")
    parser.add_argument(
        "--state-only", action="store_true", help="part 1 only (abstract state bytes, no training)"
    )
    parser.add_argument("--cpu", type=int, default=1, help="the one core every process runs on")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        os.sched_setaffinity(0, {int(os.environ[CPU_ENV])})  # before jax / torch start threads
        protocol.serve({"jaxir": JaxirServer, "torch": TorchServer}[args.worker]())
        return
    cpus = sorted(os.sched_getaffinity(0))
    cpu = args.cpu if args.cpu in cpus else cpus[-1]
    other = next((c for c in cpus if c != cpu), cpu)  # memory-only runs (no timing)
    os.sched_setaffinity(0, {cpu})  # = taskset -c CPU; the GEMM workers inherit it

    import jax

    print(protocol.machine())
    print(
        f"pinned to CPU {cpu} (this process, the timed workers, the GEMM roofline); the "
        f"runs measured for memory only on CPU {other}, concurrently; {load()}"
    )
    print(protocol.jax_config())
    print(f"jax.devices() in this process: {len(jax.devices())} (fake CPU devices for FSDP=8)")

    models = ["bert-base"] if args.quick else ["bert-base", "bert-large"]
    shape = "small" if args.quick else "bert-base"
    batch = Batch(8, 16, 64) if args.quick else Batch(4, 32, 64)
    warmup, steps, gap = (2, 6, 3) if args.quick else (2, 20, 10)

    with tempfile.TemporaryDirectory() as tmp:
        print("\n## 1. State bytes (abstract: jaxir.cli.memory.memory_report, compile=False)")
        reports = state_table(models, pathlib.Path(tmp))
        state_lines = state_results(reports, models)
    if args.state_only:
        for kwargs in state_lines:
            protocol.result(**kwargs)
        return

    print(
        f"\n## 2-3. Training processes: {shape} shape, {batch.describe()}; one fresh process "
        f"per configuration, {warmup} untimed warm-up steps (the first compiles) + {steps} "
        f"timed steps; optim.update_gap={gap} (recipe: 200) so refreshes fall inside the run"
    )
    common = [f"model.init={shape}", f"optim.update_gap={gap}"]
    common += [f"train.batch_size={batch.queries}"]
    common += [f"data.max_query_length={batch.query_len}"]
    common += [f"data.max_passage_length={batch.passage_len}", "train.group_size=2"]
    timed = {
        "adamw": CONFIGS["adamw"],
        "galore_r128": CONFIGS["galore_r128"] + ["optim.stagger=true"],
        "galore_r128_nostagger": CONFIGS["galore_r128"] + ["optim.stagger=false"],
        "galore_r128_randomized": CONFIGS["galore_r128"]
        + ["optim.stagger=true", "optim.svd=randomized"],
    }
    memory_only = {} if args.quick else {k: v for k, v in CONFIGS.items() if k not in timed}
    shape_args = [batch.queries, batch.query_len, batch.passage_len, batch.group]
    torch_setup = {"shape": shape, "batch": shape_args, "rank": 128, "update_gap": gap}
    torch_setup |= {"warmup_steps": 20, "total_steps": 1000}  # the recipe's schedule
    torch_runs = {"galore-torch eager": False}
    if not args.quick:
        torch_runs["galore-torch torch.compile"] = True
    measured: dict[str, dict[str, Any]] = {}

    def jaxir_lane(names: dict[str, list[str]], core: int) -> None:
        for name, overrides in names.items():
            setup = {"overrides": common + overrides, "batch": shape_args}
            measured[name] = run_worker("jaxir", setup, warmup, steps, name, core)

    def timed_lane() -> None:
        jaxir_lane(timed, cpu)
        for label, compiled in torch_runs.items():
            try:
                setup = torch_setup | {"compile": compiled}
                measured[label] = run_worker("torch", setup, warmup, steps, label, cpu)
            except protocol.WorkerError as e:  # torch.compile may fail on this machine
                print(f"  {label}: failed, dropped:\n{str(e)[-1500:]}")

    with concurrent.futures.ThreadPoolExecutor(2) as lanes:
        futures = [lanes.submit(timed_lane), lanes.submit(jaxir_lane, memory_only, other)]
        for future in futures:
            future.result()
    order = [*timed, *torch_runs, *memory_only]
    measured = {name: measured[name] for name in order if name in measured}

    print(f"\nGEMM roofline on the step's shapes ({load()}):")
    roofline = protocol.gemm_roofline(batch.gemm_shapes(shape), "float32", iters=3)
    print(roofline.report())
    flops = batch.model_flops(shape)
    print(f"model FLOPs per step: {flops / 1e9:.1f} GFLOP (3x forward matmuls)")

    print(
        f"\nPeak memory ({shape}, {warmup + steps} steps, MiB; peak RSS = VmHWM of the "
        "process's own address space; ru_maxrss also counts the parent's RSS at the fork, "
        "which Linux carries over exec):"
    )
    print(
        f"{'process':<28} {'ru_maxrss':>9} {'peak RSS':>9} {'after imports':>14} "
        f"{'peak - imports':>15} {'params':>8} {'opt state':>10} {'frozen':>8}"
    )
    for name, m in measured.items():
        print(
            f"{name:<28} {m['ru_maxrss'] / MiB:9.0f} {m['peak'] / MiB:9.0f} "
            f"{m['baseline'] / MiB:14.0f} "
            f"{(m['peak'] - m['baseline']) / MiB:15.0f} {m['params'] / MiB:8.1f} "
            f"{m.get('opt_state', float('nan')) / MiB:10.1f} {m.get('frozen', 0) / MiB:8.1f}"
        )

    stats = {name: step_stats(m["times"], flops, roofline) for name, m in measured.items()}
    print(f"\nStep time ({shape}, {steps} timed steps after {warmup} warm-up, seconds):")
    print(
        f"{'process':<28} {'median':>8} {'amortized':>10} {'worst':>8} {'worst/median':>13} "
        f"{'roofline (amortized)':>21}  first step"
    )
    for name, s in stats.items():
        print(
            f"{name:<28} {s['median']:8.3f} {s['amortized']:10.3f} {s['worst']:8.3f} "
            f"{s['worst_vs_median']:13.2f} {s['roofline_amortized']:21.3f}  "
            f"{measured[name]['first_step']:.1f}"
        )
    for name in ("galore_r128", "galore_r128_nostagger", "galore_r128_randomized"):
        print(f"  {name} per step: " + " ".join(f"{t:.2f}" for t in measured[name]["times"]))
    for name, m in measured.items():
        if "config" in m:
            print(f"  {name} build: {m['config']}")

    # Refresh cost, from the unstaggered run: its steps without a refresh vs the interval.
    nostagger = measured["galore_r128_nostagger"]["times"]
    refresh_steps = [i for i in range(steps) if (warmup + i) % gap == 0]
    plain = [t for i, t in enumerate(nostagger) if i not in refresh_steps]
    refresh_cost = sum(nostagger[i] for i in refresh_steps) / max(len(refresh_steps), 1)
    refresh_cost -= protocol.median(plain)
    base = stats["adamw"]
    at_200 = protocol.median(plain) + refresh_cost / 200
    print(
        f"\nGaLore refresh (full SVD of every projected kernel, unstaggered): "
        f"{refresh_cost:.2f} s on top of a {protocol.median(plain):.3f} s step (AdamW "
        f"{base['median']:.3f} s). Amortized at the recipe's update_gap=200 (estimate from "
        f"these numbers): {at_200:.3f} s = {at_200 / base['amortized']:.3f}x AdamW's."
    )
    galore = stats["galore_r128"]
    randomized = stats["galore_r128_randomized"]
    print(
        f"GaLore with optim.svd=randomized (staggered, update_gap={gap}): amortized "
        f"{randomized['amortized']:.3f} s = {randomized['amortized'] / base['amortized']:.3f}x "
        f"AdamW's (full SVD: {galore['amortized'] / base['amortized']:.3f}x)."
    )
    print()
    for kwargs in state_lines:
        protocol.result(**kwargs)
    protocol.result(
        "galore_step_time_vs_adamw",
        "s/step (amortized over the timed steps, refreshes included)",
        galore["amortized"],
        "jaxir adamw",
        base["amortized"],
        galore["roofline_amortized"],
        update_gap=gap,
        stagger=True,
        median_ratio=galore["median"] / base["median"],
        estimated_ratio_at_update_gap_200=at_200 / base["amortized"],
        randomized_svd_ratio=randomized["amortized"] / base["amortized"],
        randomized_svd_roofline_fraction=randomized["roofline_amortized"],
        target=TARGETS["galore_step_time_vs_adamw"],
        shape=shape,
    )
    off = stats["galore_r128_nostagger"]
    protocol.result(
        "galore_worst_step_vs_median",
        "worst step / median step",
        galore["worst_vs_median"],
        "jaxir galore stagger=false",
        off["worst_vs_median"],
        galore["roofline_worst"],
        update_gap=gap,
        target=TARGETS["galore_worst_step_vs_median"],
        worst_s=galore["worst"],
        median_s=galore["median"],
    )
    peers = {k: v for k, v in stats.items() if k.startswith("galore-torch")}
    if peers:
        best = min(peers, key=lambda k: peers[k]["amortized"])
        protocol.result(
            "galore_step_time_vs_galore_torch",
            "s/step (amortized over the timed steps, refreshes included)",
            galore["amortized"],
            best,
            peers[best]["amortized"],
            galore["roofline_amortized"],
            update_gap=gap,
            median_ratio=galore["median"] / peers[best]["median"],
            peer_roofline_fraction=peers[best]["roofline_amortized"],
            opt_state_bytes=measured["galore_r128"]["opt_state"],
            peer_opt_state_bytes=measured[best]["opt_state"],
            peer_configs={k: round(v["amortized"], 4) for k, v in peers.items()},
        )
    print(f"\n{load()}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
