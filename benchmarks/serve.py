"""Load test of ``jaxir serve`` on loopback vs calling the bundle in-process.

Bundle: a random ``--preset`` BERT dual encoder (default "small": hidden 256, 2 layers)
over a word-level tokenizer of the embedded synthetic collection
(:func:`jaxir.data.synthetic.write_collection`), its corpus encoded and exported with
an exact index, so the script runs on a fresh machine. Workload: single-query
``/search?q=...&k=10`` requests, the collection's queries in turn.

* **server** -- ``jaxir serve`` (uvicorn) in a process of its own (``--max-batch 64
  --batch-window-ms 3``); the load generator in another process: 1 / 8 / 32 concurrent
  clients, each a keep-alive HTTP/1.1 connection (a minimal asyncio client, so the
  generator's own CPU stays small next to the server's), sending one request at a time
  for ``--duration`` seconds. p50 / p99 latency and QPS.
* **in-process** (the reference) -- ``bundle.search([q], k=10)`` one query at a time
  (the same single-query workload without HTTP), and ``bundle.search(32 queries)``
  batched (the throughput batching could reach at best).

RESULT ``serve_qps_vs_inprocess``: server QPS at 32 clients / in-process single-query
QPS (target >= 0.7). Its ``roofline_fraction`` is the server's QPS over the ceiling of
the same work on this machine: the in-process rate with 32 queries per call (the most
that batching the 32 clients' requests can reach; a 32-client server that batched
perfectly and added no HTTP cost would score 1.0). Run pinned to one core (server,
client and reference share it)::

    taskset -c 0 python benchmarks/serve.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np
import protocol


def build_bundle(root: pathlib.Path, preset: str, topics: int) -> tuple[pathlib.Path, list[str]]:
    from flax import nnx
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from jaxir.data.records import load_beir
    from jaxir.data.synthetic import write_collection
    from jaxir.encode import encode_corpus
    from jaxir.export import export_bundle
    from jaxir.models.bert import PRESETS
    from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec
    from jaxir.search import tower_encoders

    beir = load_beir(
        write_collection(
            root / "beir", num_topics=topics, num_train_queries=topics, num_test_queries=topics // 3
        )
    )
    words = sorted(
        {w for d in beir.corpus.values() for w in d.full_text.lower().split()}
        | {w for q in beir.queries.values() for w in q.text.lower().split()}
    )
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        unk_token="[UNK]",
    )  # fmt: skip
    spec = DualEncoderSpec(query_max_length=32, passage_max_length=128)
    config = PRESETS[preset].replace(vocab_size=len(vocab))
    model = DualEncoder.create(config, spec, rngs=nnx.Rngs(0))
    _, passages = tower_encoders(model, tok)
    docs = [(d.id, d.full_text.lower()) for d in beir.corpus.values()]
    store = encode_corpus(passages, docs, root / "emb", progress=False)
    out = export_bundle(
        model, store, root / "bundle", index="exact", tokenizer=tok,
        corpus=root / "beir" / "corpus.jsonl",
    )  # fmt: skip
    return out, [q.text.lower() for q in beir.queries.values()]


def in_process(bundle_dir: pathlib.Path, queries: list[str], duration: float) -> dict:
    from jaxir.export import load_bundle

    bundle = load_bundle(bundle_dir)
    bundle.search(queries[:32], k=10)
    for q in queries[:50]:
        bundle.search([q], k=10)  # compile every length bucket
    lat, n, start = [], 0, time.perf_counter()
    while time.perf_counter() - start < duration:
        t = time.perf_counter()
        bundle.search([queries[n % len(queries)]], k=10)
        lat.append(time.perf_counter() - t)
        n += 1
    single = n / (time.perf_counter() - start)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < duration:
        bundle.search([queries[(n + i) % len(queries)] for i in range(32)], k=10)
        n += 32
    batched = n / (time.perf_counter() - start)
    return {"single_qps": single, "single_p50_ms": 1e3 * float(np.median(lat)),
            "single_p99_ms": 1e3 * float(np.percentile(lat, 99)), "batched32_qps": batched}  # fmt: skip


async def _client(port: int, queries: list[str], offset: int, stop: float, lat: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    while time.perf_counter() < stop:
        q = urllib.parse.quote_plus(queries[i % len(queries)])
        i += 1
        t = time.perf_counter()
        writer.write(f"GET /search?q={q}&k=10 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )  # fmt: skip
        body = await reader.readexactly(length)
        assert head.startswith(b"HTTP/1.1 200"), head + body
        lat.append(time.perf_counter() - t)
    writer.close()


def load(port: int, queries: list[str], clients: int, duration: float) -> dict:
    lat: list[float] = []

    async def main() -> float:
        start = time.perf_counter()
        stop = start + duration
        await asyncio.gather(*(_client(port, queries, 97 * c, stop, lat) for c in range(clients)))
        return time.perf_counter() - start

    seconds = asyncio.run(main())
    return {"clients": clients, "qps": len(lat) / seconds,
            "p50_ms": 1e3 * float(np.median(lat)), "p99_ms": 1e3 * float(np.percentile(lat, 99))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smaller collection, 5 s per point")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--duration", type=float, default=None)
    args = parser.parse_args()
    duration = args.duration or (5.0 if args.quick else 15.0)
    print(protocol.machine())
    print(protocol.jax_config())
    print(f"affinity: cores {sorted(os.sched_getaffinity(0))}")
    root = pathlib.Path(tempfile.mkdtemp())
    bundle_dir, queries = build_bundle(root, args.preset, 100 if args.quick else 667)
    print(f"bundle: {args.preset} preset, {len(queries)} queries, {bundle_dir}")
    ref = in_process(bundle_dir, queries, duration)
    print(f"in-process single query: {ref['single_qps']:.1f} QPS, p50 {ref['single_p50_ms']:.2f}"
          f" ms, p99 {ref['single_p99_ms']:.2f} ms; batched x32: {ref['batched32_qps']:.1f} QPS")  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "jaxir.cli.main", "serve", str(bundle_dir), "--port", str(port),
         "--max-batch", "64", "--batch-window-ms", "3", "--log-level", "warning"],
    )  # fmt: skip
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        load(port, queries, 32, 2.0)  # warm-up: compile the batch shapes
        rows = [load(port, queries, c, duration) for c in (1, 8, 32)]
    finally:
        server.terminate()
        server.wait(timeout=60)
    print("| clients | QPS | p50 ms | p99 ms |\n| ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['clients']} | {r['qps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    print(f"| in-process, 1 query/call | {ref['single_qps']:.1f} | {ref['single_p50_ms']:.2f} | "
          f"{ref['single_p99_ms']:.2f} |\n| in-process, 32 queries/call | {ref['batched32_qps']:.1f} | | |")  # fmt: skip
    protocol.result(
        "serve_qps_vs_inprocess", "queries/s", rows[-1]["qps"],
        "jaxir in-process bundle.search, 1 query per call", ref["single_qps"],
        rows[-1]["qps"] / ref["batched32_qps"],
        inprocess_batched32_qps=ref["batched32_qps"], p99_ms_32_clients=rows[-1]["p99_ms"],
        rows=json.loads(json.dumps(rows)),
    )  # fmt: skip


if __name__ == "__main__":
    main()
