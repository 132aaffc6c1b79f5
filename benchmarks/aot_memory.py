"""Per-chip HBM, FLOPs and roofline of dense dual-encoder train steps on TPU topologies, compiled here.

Every number comes from the TPU compiler (libtpu) run on this CPU host for abstract TPU
chips (:func:`jaxir.training.aot.compile_for_topology`, what ``jaxir compile`` runs):
XLA's ``memory_analysis()`` (per-chip arguments, temporaries, total) and
``cost_analysis()`` (per-chip FLOPs and HBM bytes accessed) of the very step
``jaxir train`` runs. Nothing executes on a TPU, so the step times are rooflines --
``max(FLOPs / peak bf16 FLOP/s, bytes / HBM bandwidth)`` at the chip's published peaks --
and the MFU bound is ``(FLOPs / peak) / roofline``: the model-FLOPs utilisation the
compiled program could reach at best (collectives, latency and overlap ignored).

Models (BERT-shaped dual encoders, tied towers, bf16 compute, float32 parameters; built
from a ``config.json`` written here, random init -- only shapes matter):

* ``bert-base``: hidden 768, 12 layers, 12 heads, MLP 3072, vocabulary 30,522 (110M);
* ``bert-1b``: hidden 2048, 20 layers, 16 heads, MLP 8192 (1.07B parameters).

Batch: 256 queries of 32 tokens, each with a positive and a hard negative passage of
128 tokens (512 passages), the in-batch softmax over the global batch; AdamW or GaLore
(``optim.kind=galore``, rank 128; optimizer state from the shardings, uncompiled: its
step compiles for tens of minutes on one core). Topologies: v5e:2x4 (v5e-8), v5e:2x4 x 8 slices
(64 chips, multi-slice over DCN), v5p:4x4x4 (v5p-128: 64 chips).

Usage::

    python benchmarks/aot_memory.py            # every case (about an hour on a shared core)
    python benchmarks/aot_memory.py --quick    # BERT-base on v5e:2x4 only (and the RESULT lines)
    python benchmarks/aot_memory.py --rest     # the other cases
    python benchmarks/aot_memory.py --state-only   # AdamW vs GaLore state bytes per chip, no compile
    python benchmarks/aot_memory.py --lever model.dropout_mask=hash+model.attention=dot_product

The last lines are ``RESULT {json}`` (DESIGN principle 8):
``fsdp8_param_bytes_vs_replicated`` (BERT-base parameter bytes per chip with
``fsdp=8`` over ``data=8``'s replicas) and ``tpu_v5e_mfu_bound`` (the BERT-base step's
MFU bound on v5e:2x4 with ``data=8``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = pathlib.Path(__file__).resolve().parents[1]
VOCAB = ROOT.parent / "shared" / "data" / "vocab" / "bert-base-uncased" / "vocab.txt"

SHAPES = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072),
    "bert-1b": dict(hidden_size=2048, num_hidden_layers=20, num_attention_heads=16,
                    intermediate_size=8192),
}  # fmt: skip

#: The run: 256 queries x (1 positive + 1 hard negative), 32 / 128 tokens, bf16 compute.
BASE_SETTINGS = [
    "model.dtype=bfloat16",
    "data.max_query_length=32",
    "data.max_passage_length=128",
    "train.batch_size=256",
    "train.group_size=2",
    "data.validation_queries=0",
]


@dataclasses.dataclass(frozen=True)
class Case:
    model: str
    topology: str
    slices: int
    mesh: str
    optim: str
    extra: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        extra = (" " + " ".join(self.extra)) if self.extra else ""
        slices = f" x{self.slices}" if self.slices > 1 else ""
        return f"{self.model} {self.topology}{slices} {self.mesh} {self.optim}{extra}"


def model_dir(name: str, root: pathlib.Path, hf: dict | None = None) -> pathlib.Path:
    """A Hugging Face BERT directory (config.json + the bert-base-uncased vocab), no weights;
    ``hf`` overrides config.json fields (e.g. ``hidden_dropout_prob``)."""
    hf = hf or {}
    out = root / "-".join([name, *(f"{k}{v}" for k, v in sorted(hf.items()))])
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "bert",
        "vocab_size": 30522,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        **SHAPES[name],
        **hf,
    }
    (out / "config.json").write_text(json.dumps(config))
    (out / "vocab.txt").write_text(VOCAB.read_text())
    return out


def parameter_count(name: str) -> int:
    """Parameters of one tower (tied towers: the dual encoder's)."""
    s = SHAPES[name]
    h, n, m = s["hidden_size"], s["num_hidden_layers"], s["intermediate_size"]
    layer = 4 * h * h + 4 * h + 2 * h * m + m + h + 4 * h  # attention, MLP, two LayerNorms
    return 30522 * h + 512 * h + 2 * h + 2 * h + n * layer


#: A lever that is not a config field: the step casts the float32 kernels to bf16 once,
#: at the top of the loss, instead of each layer casting its kernel at every use (the
#: same products: every kernel is cast to the compute dtype before its GEMM either way).
CAST_KERNELS_ONCE = "cast_kernels_once"


def _cast_kernels_once():
    """Patches :func:`jaxir.training.step._loss` for :data:`CAST_KERNELS_ONCE`; returns the undo."""
    import jax
    import jax.numpy as jnp

    from jaxir.training import step as step_lib

    original = step_lib._loss

    def cast(path, x):
        kernel = "kernel" in jax.tree_util.keystr(path) and x.dtype == jnp.float32
        return x.astype(jnp.bfloat16) if kernel and x.ndim >= 2 else x

    def loss(objective, graphdef, params, frozen, batch, key):
        params = jax.tree_util.tree_map_with_path(cast, params)
        return original(objective, graphdef, params, frozen, batch, key)

    step_lib._loss = loss
    return lambda: setattr(step_lib, "_loss", original)


#: A lever that is not a config field: every transformer layer under ``nnx.remat`` with
#: ``dots_saveable`` (GEMM outputs kept, element-wise ops -- GELU, LayerNorm, dropout
#: masks -- recomputed in the backward pass).
REMAT_DOTS = "remat_dots_saveable"


def _remat_layers():
    """Patches :class:`jaxir.layers.transformer.TransformerLayer` for :data:`REMAT_DOTS`; returns the undo."""
    import jax
    from flax import nnx

    from jaxir.layers.transformer import TransformerLayer

    original = TransformerLayer.__call__
    policy = jax.checkpoint_policies.dots_saveable

    def call(self, x_blh, mask_bl, *, rngs=None):
        body = nnx.remat(lambda m, x, mask, r: original(m, x, mask, rngs=r), policy=policy)
        return body(self, x_blh, mask_bl, rngs)

    TransformerLayer.__call__ = call
    return lambda: setattr(TransformerLayer, "__call__", original)


PATCHES = {"cast_kernels_once": "_cast_kernels_once", REMAT_DOTS: "_remat_layers"}


def _value(text: str):
    """A ``hf.FIELD=VALUE`` value: an int, a float, or the string itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run_case(case: Case, workdir: pathlib.Path) -> dict:
    from jaxir.cli.compile import mesh_settings
    from jaxir.config import load_config, override
    from jaxir.training import aot

    hf = {k[3:]: _value(v) for k, v in (e.split("=", 1) for e in case.extra if e.startswith("hf."))}
    patches = [globals()[PATCHES[e]] for e in case.extra if e in PATCHES]
    settings = [
        *BASE_SETTINGS,
        f"model.init={model_dir(case.model, workdir, hf)}",
        f"optim.kind={case.optim}",
        *(["optim.rank=128"] if case.optim == "galore" else []),
        *(e for e in case.extra if not e.startswith("hf.") and e not in PATCHES),
        *mesh_settings(case.mesh),
    ]
    config = override(load_config(ROOT / "configs" / "dense_tiny.py"), settings)
    topology = aot.parse_topology(case.topology, slices=case.slices)
    undo = [patch() for patch in patches]
    try:
        report = aot.compile_for_topology(config, workdir, topology, check_fit=False)
    finally:
        for u in reversed(undo):
            u()
    return report.to_json()


def state_table(cases: list[Case]) -> None:
    """AdamW vs GaLore (rank 128): parameter and optimizer-state bytes per chip, from the
    shardings alone (no compile: GaLore's step, with an SVD per kernel, compiles for tens
    of minutes on one shared core)."""
    from jaxir.cli.compile import mesh_settings
    from jaxir.config import load_config, override
    from jaxir.training import aot

    print("\nstate per chip, GiB (params / AdamW moments / GaLore rank-128 state), no compile:")
    with tempfile.TemporaryDirectory() as tmp:
        for case in dict.fromkeys(dataclasses.replace(c, optim="adamw") for c in cases):
            row = []
            for optim in ("adamw", "galore"):
                settings = [
                    *BASE_SETTINGS,
                    f"model.init={model_dir(case.model, pathlib.Path(tmp))}",
                    f"optim.kind={optim}",
                    "optim.rank=128",
                    *mesh_settings(case.mesh),
                ]
                config = override(load_config(ROOT / "configs" / "dense_tiny.py"), settings)
                topology = aot.parse_topology(case.topology, slices=case.slices)
                m = config.mesh
                mesh = aot.topology_mesh(
                    topology, aot.topology_devices(topology), (m.data, m.fsdp, m.tensor)
                )
                row.append(aot.run_state(config, pathlib.Path(tmp), mesh=mesh).bytes())
            label = dataclasses.replace(case, optim="").label
            print(
                f"  {label:44} {row[0]['params'] / 2**30:6.3f} / {row[0]['opt_state'] / 2**30:6.3f}"
                f" / {row[1]['opt_state'] / 2**30:6.3f}  (GaLore/AdamW "
                f"{row[1]['opt_state'] / row[0]['opt_state']:.2f})",
                flush=True,
            )


def print_row(case: Case, r: dict) -> None:
    gib = lambda n: f"{n / 2**30:6.2f}"  # noqa: E731
    s = r["step"]
    fits = "yes" if s["total"] <= r["hbm"] else "NO"
    print(
        f"{case.label:48} {gib(r['params'])} {gib(r['opt_state'])} {gib(s['argument'])} "
        f"{gib(s['temp'])} {gib(s['total'])} /{r['hbm'] / 2**30:3.0f} {fits:>4} "
        f"{s['flops'] / 1e12:7.2f} {s['bytes_accessed'] / 1e9:7.1f} "
        f"{r['roofline_seconds'] * 1e3:8.1f} {r['mfu_bound']:5.2f} {s['compile_seconds']:6.0f}",
        flush=True,
    )


HEADER = (
    f"{'case (model topology mesh optimizer)':48} {'params':>6} {'optim':>6} {'args':>6} "
    f"{'temp':>6} {'total':>6} {'HBM':>4} {'fits':>4} {'TFLOP':>7} {'HBM GB':>7} "
    f"{'ms/step':>8} {'MFU':>5} {'cmp s':>6}"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="BERT-base on v5e:2x4 only")
    parser.add_argument(
        "--rest",
        action="store_true",
        help="only the cases --quick leaves out (the 1B model, 64-chip topologies)",
    )
    parser.add_argument(
        "--lever",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a variant of the headline case (repeatable): a config override KEY=VALUE, "
        f"hf.FIELD=VALUE (the model's config.json, e.g. hf.hidden_dropout_prob=0) or "
        f"{CAST_KERNELS_ONCE} or {REMAT_DOTS}, e.g. model.dropout_mask=hash; join several "
        "with '+'",
    )
    parser.add_argument(
        "--state-only",
        action="store_true",
        help="only the AdamW vs GaLore state table of every case (no compile; a minute)",
    )
    args = parser.parse_args()

    import jax

    from jaxir.training import aot

    cpu = subprocess.run(
        ["grep", "-m1", "model name", "/proc/cpuinfo"], capture_output=True, text=True
    )
    print(
        f"jax {jax.__version__}, libtpu {_libtpu_version()}, python {platform.python_version()}; "
        f"host CPU: {cpu.stdout.split(':', 1)[-1].strip()}, load average {os.getloadavg()[0]:.2f}"
    )
    for name in SHAPES:
        print(f"{name}: {parameter_count(name) / 1e6:.1f}M parameters ({SHAPES[name]})")
    print("batch: 256 queries x 32 tokens + 512 passages x 128 tokens; bf16 compute, f32 params")
    headline = Case("bert-base", "v5e:2x4", 1, "data=8", "adamw")
    quick = [headline, Case("bert-base", "v5e:2x4", 1, "data=1,fsdp=8", "adamw")]
    rest = [
        Case("bert-1b", "v5e:2x4", 8, "data=8,fsdp=8", "adamw"),
        Case("bert-1b", "v5p:4x4x4", 1, "data=8,fsdp=8", "adamw"),
        Case("bert-1b", "v5e:2x4", 1, "data=1,fsdp=8", "adamw"),
    ]
    cases = rest if args.rest else quick if args.quick else quick + rest
    levers = [dataclasses.replace(headline, extra=tuple(lever.split("+"))) for lever in args.lever]
    if levers:  # the headline case and its variants only
        cases = [headline, *levers]
    if args.state_only or (not args.quick and not levers):
        state_table([*quick, *rest])
    if args.state_only:
        return
    print("\nper chip: GiB (params, optimizer state, XLA arguments, temporaries, total / HBM),")
    print("TFLOP and HBM GB of one step, roofline ms/step, MFU bound, compile seconds\n")
    print(HEADER)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            try:
                results[case] = run_case(case, pathlib.Path(tmp))
            except aot.DoesNotFitError as e:  # the compiler's verdict is a result too
                print(f"{case.label:48} does not fit: {str(e).splitlines()[0][:400]}", flush=True)
                continue
            print_row(case, results[case])
    load = f"load average after: {os.getloadavg()[0]:.2f}; wall {time.perf_counter() - START:.0f} s"
    print(f"\n{load}")
    for lever in levers:
        r, base = results[lever], results[headline]
        print(
            f"lever {'+'.join(lever.extra)}: MFU bound {r['mfu_bound']:.3f} (baseline {base['mfu_bound']:.3f}), "
            f"HBM traffic {r['step']['bytes_accessed'] / 1e9:.1f} GB "
            f"(baseline {base['step']['bytes_accessed'] / 1e9:.1f}), "
            f"TFLOP {r['step']['flops'] / 1e12:.2f} (baseline {base['step']['flops'] / 1e12:.2f})"
        )
    if args.rest or levers:
        return
    replicated = results[quick[0]]["params"]
    sharded = results[quick[1]]["params"]
    mfu = results[headline]["mfu_bound"]
    out = [
        {
            "name": "fsdp8_param_bytes_vs_replicated",
            "unit": "bytes per chip",
            "jaxir": sharded,
            "peer": "data=8 (replicated parameters), same compile",
            "peer_value": replicated,
            "ratio": round(sharded / replicated, 4),
            "roofline_fraction": None,
        },
        {
            "name": "tpu_v5e_mfu_bound",
            "unit": "model FLOP time / roofline step time",
            "jaxir": round(mfu, 4),
            "peer": "v5e peak (197 TFLOP/s bf16, 819 GB/s): MFU 1",
            "peer_value": 1.0,
            "ratio": round(mfu, 4),
            "roofline_fraction": round(mfu, 4),
            "roofline_ms": round(results[headline]["roofline_seconds"] * 1e3, 2),
        },
    ]
    for r in out:
        print("RESULT " + json.dumps(r))


def _libtpu_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("libtpu")
    except metadata.PackageNotFoundError:
        sys.exit('benchmarks/aot_memory.py needs the TPU compiler: pip install "jaxir[tpu]"')


START = time.perf_counter()

if __name__ == "__main__":
    main()
