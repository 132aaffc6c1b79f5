"""Peak memory of SPLADE's encode and train step: chunked pooling vs the whole ``[B, L, V]`` logits.

SPLADE's vocabulary projection turns every token into ``V`` logits (``V = 30,522`` for a
BERT vocabulary); max-pooling ``log(1 + relu(.))`` over the sequence then keeps one
``[B, V]`` vector. Materialized whole, the logits of one 32 x 256 batch are 1.0 GB in
float32, and a training step holds them (or their gradient) for the backward pass too.
:func:`jaxir.reps.sparse.pool_mlm` pools ``chunk`` positions at a time inside jit (a
``lax.scan`` over chunks, with a custom backward for max pooling that recomputes a
chunk's logits instead of keeping them), so memory holds ``[B, chunk, V]``.

This script measures it without running anything: each program is compiled by XLA for
the local backend (CPU here) from abstract shapes, and
``compiled.memory_analysis()`` gives the bytes the program allocates besides its
arguments and outputs (``temp``: activations, logits, gradients in flight). For each
model shape and each ``chunk`` (``chunk = L`` is the unchunked program: one chunk holds
all the logits) it prints

* encode: ``Splade.encode_passages`` of ``B`` passages of ``L`` tokens (what
  ``SparseEncoder.forward`` runs per batch);
* train step: the value and gradient of the SPLADE objective
  (:class:`jaxir.families.splade.SpladeObjective`: in-batch softmax + FLOPS) for
  ``B / 2`` queries of 48 tokens, each with a positive and a hard negative of ``L``
  tokens (``B`` passages), through :func:`jaxir.training.step.make_grad_fn`;

next to the size of the whole float32 logits of that step's passages, and the train
step of the same encoder without the vocabulary projection (mean-pooled hidden states,
in-batch softmax): what the transformer's own activations cost.

Usage::

    python benchmarks/splade_memory.py                          # MiniLM-L6 and BERT-base shapes
    python benchmarks/splade_memory.py --shapes minilm --chunks 16,32,256 --batch 32 --length 256

The last lines are ``RESULT {json}`` (DESIGN principle 8): the encode program's temp bytes
at the library's default chunk over the unchunked program's, and the train step's bytes
*above the encoder-only step* (what the vocabulary projection and pooling cost) at the
default chunk over the unchunked step's.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxir.families.splade import SpladeObjective
from jaxir.models.bert import EncoderConfig
from jaxir.models.splade import Splade, SpladeSpec
from jaxir.training.step import make_grad_fn

VOCAB = 30522
SHAPES = {
    "minilm": dict(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536),
    "bertbase": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
}
QUERY_LENGTH = 48


def abstract_model(
    shape: str, length: int, chunk: int
) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """``(graphdef, params, rest)`` of a tied SPLADE model, as shapes only (nothing allocated)."""
    config = EncoderConfig(
        vocab_size=VOCAB, max_positions=512, mlm_head=True, pooler=False, **SHAPES[shape]
    )
    spec = SpladeSpec(query_max_length=QUERY_LENGTH, passage_max_length=length, chunk=chunk)
    model = nnx.eval_shape(lambda: Splade.create(config, spec, rngs=nnx.Rngs(0)))
    return nnx.split(model, nnx.Param, ...)


def tokens(rows: int, length: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((rows, length), jnp.int32)


def temp_bytes(compiled) -> int:
    return int(compiled.memory_analysis().temp_size_in_bytes)


def encode_temp(shape: str, batch: int, length: int, chunk: int) -> int:
    graphdef, params, rest = abstract_model(shape, length, chunk)

    def encode(params, rest, ids, mask):
        return nnx.merge(graphdef, params, rest).encode_passages(ids, mask)

    lowered = jax.jit(encode).lower(params, rest, tokens(batch, length), tokens(batch, length))
    return temp_bytes(lowered.compile())


def train_temp(shape: str, batch: int, length: int, chunk: int) -> int:
    graphdef, params, rest = abstract_model(shape, length, chunk)
    queries, group = batch // 2, 2
    example = {
        "query_ids": tokens(queries, QUERY_LENGTH),
        "query_mask": tokens(queries, QUERY_LENGTH),
        "passage_ids": jax.ShapeDtypeStruct((queries, group, length), jnp.int32),
        "passage_mask": jax.ShapeDtypeStruct((queries, group, length), jnp.int32),
        "passage_key": jax.ShapeDtypeStruct((queries, group), jnp.int32),
        "query_key": jax.ShapeDtypeStruct((queries,), jnp.int32),
        "step": jax.ShapeDtypeStruct((queries,), jnp.int32),
    }
    grad_fn = make_grad_fn(SpladeObjective(warmup_steps=100), graphdef)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    lowered = jax.jit(grad_fn).lower(params, rest, example, key)
    return temp_bytes(lowered.compile())


def encoder_train_temp(shape: str, batch: int, length: int) -> int:
    """The same step without the vocabulary projection: mean-pooled hidden states, in-batch softmax.

    The baseline: what the transformer's own activations cost at these shapes.
    """
    graphdef, params, rest = abstract_model(shape, length, 32)

    def loss(params, rest, q_ids, p_ids):
        encoder = nnx.merge(graphdef, params, rest).document_encoder
        q_bh = encoder(q_ids, jnp.ones_like(q_ids)).mean(1)
        p_nh = encoder(p_ids, jnp.ones_like(p_ids)).mean(1)
        scores = q_bh @ p_nh.T
        return (jax.nn.logsumexp(scores, -1) - scores[:, 0]).mean()

    grad = jax.value_and_grad(loss)
    lowered = jax.jit(grad).lower(
        params, rest, tokens(batch // 2, QUERY_LENGTH), tokens(batch, length)
    )
    return temp_bytes(lowered.compile())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="minilm,bertbase")
    parser.add_argument("--chunks", default="16,32,64,256", help="chunk sizes (L = unchunked)")
    parser.add_argument("--batch", type=int, default=32, help="passages per step (B)")
    parser.add_argument("--length", type=int, default=256, help="passage tokens (L)")
    args = parser.parse_args()
    chunks = sorted({min(int(c), args.length) for c in args.chunks.split(",")})
    default_chunk = SpladeSpec().chunk
    logits = args.batch * args.length * VOCAB * 4
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}; B={args.batch} passages x "
        f"L={args.length} tokens, V={VOCAB}; whole float32 logits of the passages: "
        f"{logits / 2**30:.2f} GiB; library default chunk {default_chunk}"
    )
    print(f"{'shape':10} {'chunk':>6} {'encode temp GiB':>16} {'train step temp GiB':>20}")
    results = []
    for shape in args.shapes.split(","):
        baseline = encoder_train_temp(shape, args.batch, args.length)
        print(f"{shape:10} {'no MLM head (dense baseline)':>23} {baseline / 2**30:20.3f}")
        rows = {}
        for chunk in chunks:
            rows[chunk] = (
                encode_temp(shape, args.batch, args.length, chunk),
                train_temp(shape, args.batch, args.length, chunk),
            )
            label = f"{chunk}" + (" (whole)" if chunk == args.length else "")
            enc, step = rows[chunk]
            print(f"{shape:10} {label:>6} {enc / 2**30:16.3f} {step / 2**30:20.3f}", flush=True)
        whole = rows[max(chunks)]
        chosen = rows.get(default_chunk, rows[min(chunks)])
        chunk = default_chunk if default_chunk in rows else min(chunks)
        results.append(
            {
                "name": f"splade_encode_temp_chunked_vs_whole_{shape}",
                "unit": "bytes",
                "jaxir": chosen[0],
                "peer": f"unchunked (chunk={max(chunks)})",
                "peer_value": whole[0],
                "ratio": round(chosen[0] / whole[0], 4),
                "chunk": chunk,
                "logits_bytes": logits,
                "roofline_fraction": None,
            }
        )
        # The train step's cost of the vocabulary projection: temp bytes above the encoder's.
        results.append(
            {
                "name": f"splade_train_step_overhead_chunked_vs_whole_{shape}",
                "unit": "bytes above the encoder-only step",
                "jaxir": chosen[1] - baseline,
                "peer": f"unchunked (chunk={max(chunks)})",
                "peer_value": whole[1] - baseline,
                "ratio": round((chosen[1] - baseline) / (whole[1] - baseline), 4),
                "chunk": chunk,
                "train_step_bytes": chosen[1],
                "encoder_only_train_step_bytes": baseline,
                "logits_bytes": logits,
                "roofline_fraction": None,
            }
        )
    for r in results:
        print("RESULT " + json.dumps(r))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
