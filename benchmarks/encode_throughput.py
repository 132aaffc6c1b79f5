"""Encoder throughput: jaxir (XLA, jit) vs transformers PyTorch (eager) on the same weights.

For each model shape (MiniLM-L6-H384 and BERT-base), a ``transformers.BertModel`` is
built from its config with a fixed seed, saved with ``save_pretrained`` and loaded into
jaxir, so both sides run identical float32 weights. Each side embeds the same batch of
``--batch`` random token ids x ``--length`` tokens (all real, no padding) into
mean-pooled vectors:

* jaxir: :meth:`jaxir.encode.TextEncoder.forward` -- the jitted function
  ``encode()`` runs per batch (one program; its compile time is reported apart);
* PyTorch: ``BertModel(...).last_hidden_state`` + mean pooling under
  ``torch.inference_mode()``.

Warm-up calls are excluded; timed iterations alternate jaxir / PyTorch (so load from
other processes hits both alike) and the median is reported. Both use every core
(``torch.get_num_threads()`` and the XLA CPU thread pool); the script prints both, and
the load average, because the figures are only meaningful on a quiet machine.

``--gemm`` also times the model's GEMM shapes alone under XLA:CPU's default dot
backend (YNNPACK), under the Eigen dot emitter jaxir's encoder selects on CPU
(:data:`jaxir.xla.CPU_COMPILER_OPTIONS`), and under PyTorch, the evidence for that choice.

Usage:
    python benchmarks/encode_throughput.py            # full run (a few minutes on 2 cores)
    python benchmarks/encode_throughput.py --quick    # about a minute
    python benchmarks/encode_throughput.py --gemm --shapes minilm   # + GEMM backends

The last lines are ``RESULT {json}`` (DESIGN principle 8).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax
import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, models

from jaxir.encode import TextEncoder
from jaxir.models import hf
from jaxir.xla import CPU_COMPILER_OPTIONS

SHAPES = {
    "minilm": (
        "MiniLM-L6-H384",
        "encode_minilm_vs_torch",
        dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    ),
    "bertbase": (
        "BERT-base",
        "encode_bertbase_vs_torch",
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    ),
}


def placeholder_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A tokenizer for TextEncoder's constructor; the benchmark feeds token ids directly."""
    core = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]")


def torch_embed(model, ids, mask):
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask[..., None].to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_shape(key: str, *, batch: int, length: int, iters: int, warmup: int) -> dict:
    title, result_name, sizes = SHAPES[key]
    torch.manual_seed(0)
    config = transformers.BertConfig(**sizes)  # vocab 30522, 512 positions, GELU (erf)
    torch_model = transformers.BertModel(config, add_pooling_layer=False).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, config.vocab_size, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))

    with tempfile.TemporaryDirectory() as path:
        torch_model.save_pretrained(path)
        encoder = TextEncoder(
            hf.load_pretrained(path, mlm_head=False), placeholder_tokenizer(), pooling="mean"
        )
    compile_s = timed(lambda: encoder.forward(ids, mask).block_until_ready())

    ours = np.asarray(encoder.forward(ids, mask))
    theirs = torch_embed(torch_model, ids_t, mask_t).numpy()
    max_diff = float(np.abs(ours - theirs).max())

    for _ in range(warmup):
        encoder.forward(ids, mask).block_until_ready()
        torch_embed(torch_model, ids_t, mask_t)
    jax_s, torch_s = [], []
    for _ in range(iters):
        jax_s.append(timed(lambda: encoder.forward(ids, mask).block_until_ready()))
        torch_s.append(timed(lambda: torch_embed(torch_model, ids_t, mask_t)))
    jaxir = batch / statistics.median(jax_s)
    peer = batch / statistics.median(torch_s)
    return {
        "title": title,
        "name": result_name,
        "jaxir": jaxir,
        "peer": peer,
        "compile_s": compile_s,
        "max_diff": max_diff,
        "jax_ms": [round(t * 1e3, 1) for t in jax_s],
        "torch_ms": [round(t * 1e3, 1) for t in torch_s],
    }


def bench_gemms(*, tokens: int, iters: int) -> None:
    """GFLOP/s of the encoder's GEMM shapes under each XLA:CPU dot backend and PyTorch.

    float32, and bfloat16 operands (XLA: accumulated in float32, as
    :mod:`jaxir.layers.dot` computes them; PyTorch: bf16 result via oneDNN).
    """
    shapes = [(tokens, 384, 1536), (tokens, 1536, 384), (tokens, 768, 3072), (tokens, 768, 768)]
    product = lambda a, b: jax.lax.dot(a, b, preferred_element_type=jax.numpy.float32)  # noqa: E731
    xla = {
        "default": jax.jit(product),
        "eigen": jax.jit(product, compiler_options=CPU_COMPILER_OPTIONS["float32"]),
    }
    print(f"\nGEMM [M, K] x [K, N], M = {tokens} tokens, best of {iters} (GFLOP/s)")
    columns = [
        f"{dt} {side}" for dt in ("f32", "bf16") for side in ("XLA default", "XLA Eigen", "PyTorch")
    ]
    print(f"{'M x K x N':<18}" + "".join(f"{c:>18}" for c in columns))
    rng = np.random.default_rng(0)
    for m, k, n in shapes:
        a, b = rng.random((m, k), np.float32), rng.random((k, n), np.float32)
        fns = {}
        for dt, jdt, tdt in (
            ("f32", jax.numpy.float32, torch.float32),
            ("bf16", jax.numpy.bfloat16, torch.bfloat16),
        ):
            ja, jb = jax.numpy.asarray(a, jdt), jax.numpy.asarray(b, jdt)
            ta, tb = torch.from_numpy(a).to(tdt), torch.from_numpy(b).to(tdt)
            for side, fn in xla.items():
                name = f"{dt} XLA {side if side == 'default' else 'Eigen'}"
                fns[name] = lambda fn=fn, ja=ja, jb=jb: fn(ja, jb).block_until_ready()
            fns[f"{dt} PyTorch"] = lambda ta=ta, tb=tb: ta @ tb
        best = dict.fromkeys(fns, float("inf"))
        for fn in fns.values():
            fn()
        for _ in range(iters):
            for name, fn in fns.items():
                best[name] = min(best[name], timed(fn))
        gflop = 2 * m * k * n / 1e9
        print(f"{f'{m}x{k}x{n}':<18}" + "".join(f"{gflop / best[c]:>18.0f}" for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (~1 minute)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per side")
    parser.add_argument("--shapes", default="minilm,bertbase", help="comma-separated subset")
    parser.add_argument(
        "--gemm", action="store_true", help="also time GEMMs under each XLA:CPU dot backend"
    )
    args = parser.parse_args()
    iters = args.iters or (3 if args.quick else 10)
    warmup = 1 if args.quick else 2

    print(
        f"devices: {jax.devices()} | torch threads: {torch.get_num_threads()} | "
        f"cpus: {os.cpu_count()} | load average at start: {os.getloadavg()[0]:.2f}"
    )
    print(
        f"jax {jax.__version__}, torch {torch.__version__}, transformers {transformers.__version__}"
    )
    print(f"batch {args.batch} x {args.length} tokens, float32, {iters} timed iterations (median)")
    if args.gemm:
        bench_gemms(tokens=args.batch * args.length, iters=iters)
    rows = [
        bench_shape(key, batch=args.batch, length=args.length, iters=iters, warmup=warmup)
        for key in args.shapes.split(",")
    ]
    print()
    header = f"{'model':<16}{'jaxir seq/s':>12}{'torch seq/s':>12}{'ratio':>8}{'compile s':>11}{'max |diff|':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['title']:<16}{r['jaxir']:>12.1f}{r['peer']:>12.1f}{r['jaxir'] / r['peer']:>8.2f}"
            f"{r['compile_s']:>11.1f}{r['max_diff']:>12.1e}"
        )
    print()
    for r in rows:
        print(f"{r['title']} per-iteration ms: jaxir {r['jax_ms']} torch {r['torch_ms']}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    for r in rows:
        result = {
            "name": r["name"],
            "unit": "seq/s",
            "jaxir": round(r["jaxir"], 2),
            "peer": "transformers-pytorch",
            "peer_value": round(r["peer"], 2),
            "ratio": round(r["jaxir"] / r["peer"], 3),
        }
        print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
