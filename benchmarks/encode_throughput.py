"""Encoder throughput: jaxir vs PyTorch on the same weights, each framework in its own process.

**Fixed batch (default).** For each model shape (MiniLM-L6-H384, BERT-base) a
``transformers.BertModel`` is built from its config with a fixed seed and saved with
``save_pretrained``; jaxir loads the same file, so both run identical weights on the same
``--batch`` x ``--length`` random token ids (no padding), mean-pooled:

* jaxir: :meth:`jaxir.encode.TextEncoder.forward`, the jitted program ``encode()`` runs
  per batch (compile time reported apart);
* PyTorch: ``BertModel(...).last_hidden_state`` + mean pooling under ``inference_mode``.

RESULT ``encode_minilm_vs_torch``, ``encode_bertbase_vs_torch`` (seq/s; float32, and
with ``--dtypes float32,bfloat16`` also ``..._bf16``).

**Corpus (``--corpus``).** SciFact's 5,183 documents (``title + " " + text``, 72% of them
longer than the 256-token cap) with the real all-MiniLM-L6-v2 weights, max length 256,
mean pooling + L2 normalization, docs/s from texts to vectors, float32 and bfloat16:

* jaxir as ``jaxir encode --normalize --max-length 256 [--dtype bfloat16]`` runs it:
  :func:`jaxir.encode.load_encoder` + :func:`jaxir.encode.encode_corpus` (batch 64,
  texts sorted by token length, each batch padded to a
  :data:`~jaxir.data.tokenizer.DEFAULT_BUCKETS` length; vectors written to a store);
* sentence-transformers ``SentenceTransformer.encode`` (batch 32, texts sorted by
  character length, each batch padded to its longest text).

It prints the padding waste of both batchings (tokens and matmul FLOPs computed over
those of the real tokens) and of other bucket sets, and (except in ``--quick``) times
jaxir once more with buckets every 32 tokens to show what they change. RESULT
``encode_corpus_vs_sentence_transformers`` (+ ``_bf16``).

**SPLADE (``--splade``).** SciFact documents (a seeded sample, ``title + " " + text``) to
SPLADE vectors, max length 256, max pooling of ``log(1 + relu(logits))``, the same batch
(``--peer-batch``, 32) in both, texts to sparse vectors (tokenization included):

* jaxir: :func:`jaxir.load_splade` + :meth:`jaxir.sparse_encode.SparseEncoder.encode`
  (scipy CSR; the logits are pooled ``chunk`` tokens at a time inside the jitted program,
  never ``[B, L, V]`` whole);
* sentence-transformers ``SparseEncoder(modules=[Transformer(dir, transformer_task=
  "fill-mask", max_seq_length=256), SpladePooling("max")]).encode`` (torch sparse COO;
  its MLM head writes the whole ``[B, L, V]`` logits, then the pooling reads them).

Weights: all-MiniLM-L6-v2's encoder as a ``BertForMaskedLM`` whose decoder is tied to the
word embeddings and whose transform is freshly (seeded) initialised, as jaxir's
``model.splade.fresh_head`` starts, with the decoder bias set to :data:`SPLADE_BIAS` so
about 1% of the weights are active (the fresh zero bias activates all 30,522). Parity
first: every configuration's vectors on the first ``--parity-texts`` texts against
sentence-transformers float32 eager (max abs diff; jaxir must be within 1e-4 or nothing is
timed). Then the time split of one ``[32, 256]`` batch (jaxir's encoder alone and its
whole program at chunks 16/32/64/whole with XLA's temporary memory from
``memory_analysis()``; the peer's encoder, vocabulary projection and pooling), in
processes of their own. Every configuration runs in a process of its own, and each timed
pass records the process's resident-set peak (``VmHWM`` reset before the pass); the
fastest chunk of the split becomes jaxir's chunk for its other configurations, and jaxir
at twice the batch is timed too. Except in ``--quick``, the peer runs eager and
``torch.compile`` (dynamic shapes) under both allocators, every configuration is timed
once on a ``--sample-docs`` sample, and the fastest of each side plus the references go
on to the timed passes. Threads: run it under ``taskset`` (the CPUs it may use); torch gets
that many threads (``OMP_NUM_THREADS``, also in the GEMM processes) and XLA:CPU sizes its
pool by the affinity. ``roofline_fraction``: model FLOPs (encoder + transform +
vocabulary projection of the real tokens) per second over the best GEMM rate on the
encoder's and the vocabulary projection's shapes (``[B*L, H] x [H, V]`` and the chunks').
RESULT ``splade_encode_vs_sentence_transformers`` (docs/s; peak RSS of both in the line).

**The peer at its best.** The peer runs in one process per allocator setting, glibc's
defaults or jaxir's settings (``GLIBC_TUNABLES``, :mod:`jaxir.host_memory`), each holding
every configuration below, and the headline ratio is against the fastest configuration
(all are printed): in bfloat16 either
``torch.autocast`` around the float32 model or bfloat16 weights; eager or
``torch.compile`` (inductor, dynamic shapes in corpus mode; a configuration that fails to
compile is dropped with its error). torch uses every core (``torch.get_num_threads()``).
In the corpus mode the fastest configuration per precision is chosen on a 500-document
sample and only it (and float32 eager, the parity reference) runs on the whole corpus. ``--quick`` keeps glibc's default
allocator and eager mode. jaxir runs as its CLI does (glibc keeps freed memory).

**Roofline.** In the same run, :func:`protocol.gemm_roofline` times the model's GEMM
shapes (q/k/v/output, MLP up and down, ``M`` = the tokens of one batch) under XLA:CPU's
default dots, its Eigen emitter and PyTorch; ``roofline_fraction`` is jaxir's model FLOP
rate (:func:`protocol.bert_forward_flops` of the real tokens) over the best of them.

Timed passes alternate between the processes (median reported; warm-up and compilation
excluded). Usage::

    python benchmarks/encode_throughput.py                  # fixed batch, f32 (~10 min idle)
    python benchmarks/encode_throughput.py --quick          # about a minute idle
    python benchmarks/encode_throughput.py --corpus         # SciFact, f32 + bf16 (~30 min idle)
    python benchmarks/encode_throughput.py --corpus --quick # a 500-document sample
    python benchmarks/encode_throughput.py --gemm --shapes minilm   # the GEMM tables only
    taskset -c 1 python benchmarks/encode_throughput.py --splade --docs 384 --sample-docs 64
    taskset -c 1 python benchmarks/encode_throughput.py --splade --quick   # 64 documents

The last lines are ``RESULT {json}`` (DESIGN principle 8).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import protocol

from jaxir import host_memory

SHAPES = {  # key: (title, RESULT name, BertConfig sizes)
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
MINILM_SIZES = SHAPES["minilm"][2]
SUFFIX = {"float32": "", "bfloat16": "_bf16"}

#: Peer processes: label -> environment. jaxir's glibc settings reach a process that does
#: not call jaxir.host_memory through GLIBC_TUNABLES.
PEER_PROCESSES = {
    "glibc malloc": {},
    "jaxir malloc": {"GLIBC_TUNABLES": host_memory.GLIBC_TUNABLES},
}

#: Peer configurations per precision: (variant name, route, compiled).
PEER_VARIANTS = {
    "float32": [("eager", "float32", False), ("compile", "float32", True)],
    "bfloat16": [
        ("autocast", "autocast", False),
        ("bf16 weights", "weights", False),
        ("autocast, compile", "autocast", True),
        ("bf16 weights, compile", "weights", True),
    ],
}

#: Corpus mode: jaxir's alternative bucket set, timed to show the effect of finer buckets.
ALT_BUCKETS = tuple(range(32, 257, 32))

# =========================================================================== workers


def random_ids(batch: int, length: int, seed: int) -> np.ndarray:
    """Token ids in [1000, 30522) (no special or pad tokens), the same in every process."""
    return np.random.default_rng(seed).integers(1000, 30522, (batch, length)).astype(np.int32)


class JaxirServer(protocol.VariantServer):
    """jaxir's side: glibc keeps freed memory (as the ``jaxir`` command sets it)."""

    def __init__(self) -> None:
        super().__init__()
        from jaxir import host_memory

        self.keeps_memory = host_memory.keep_freed_memory()

    def config(self) -> str:
        return f"{protocol.jax_config()}; glibc keeps freed memory: {self.keeps_memory}"

    def load_fixed(self, path: str, dtype: str, batch: int, length: int, seed: int) -> dict:
        """``TextEncoder.forward`` on one batch of random ids; returns compile seconds."""
        import transformers
        from tokenizers import Tokenizer, models

        from jaxir.encode import TextEncoder
        from jaxir.models import hf

        # TextEncoder needs a tokenizer; this benchmark feeds token ids directly.
        core = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]"))
        tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]")
        encoder = TextEncoder(
            hf.load_pretrained(path, mlm_head=False, dtype=dtype), tokenizer, pooling="mean"
        )
        ids = random_ids(batch, length, seed)
        mask = np.ones_like(ids)
        self.variants = {"jaxir": lambda: encoder.forward(ids, mask).block_until_ready()}
        return {"compile_s": {"jaxir": self.time("jaxir")}}

    def load_corpus(
        self, model_dir: str, texts: dict[str, str], dtypes: list[str], alt_buckets: bool
    ) -> dict:
        """One encoder per dtype (+ the float32 one with :data:`ALT_BUCKETS`), all compiled.

        ``texts``: text-set name -> JSON file of ``[id, text]`` rows. Returns the compile
        seconds per variant and the model's sizes.
        """
        from jaxir.data.tokenizer import length_buckets
        from jaxir.encode import TextEncoder, encode_corpus, load_encoder

        self.texts = {
            name: [tuple(row) for row in json.loads(pathlib.Path(f).read_text())]
            for name, f in texts.items()
        }
        self.store = tempfile.mkdtemp(prefix="jaxir-encode-bench-")
        encoders = {}
        for dtype in dtypes:
            # `jaxir encode --normalize --max-length 256 [--dtype bfloat16]`.
            encoders[dtype] = load_encoder(
                model_dir, pooling="mean", normalize=True, max_length=256, dtype=dtype
            )
        if alt_buckets and "float32" in encoders:
            base = encoders["float32"]
            encoders["float32, buckets every 32"] = TextEncoder(
                base.model,
                base.tokenizer,
                pooling="mean",
                normalize=True,
                max_length=256,
                buckets=ALT_BUCKETS,
            )
        compile_s = {}
        for name, encoder in encoders.items():
            start = time.perf_counter()
            for length in length_buckets(encoder.buckets, encoder.max_length):  # every program
                zeros = np.zeros((64, length), np.int32)
                encoder.forward(zeros, np.ones_like(zeros)).block_until_ready()
            compile_s[name] = time.perf_counter() - start

            def run(texts: str, encoder=encoder):
                # `jaxir encode`'s call (batch 64, its default), into a fresh store.
                return encode_corpus(
                    encoder,
                    self.texts[texts],
                    self.store,
                    batch_size=64,
                    resume=False,
                    progress=False,
                )

            self.variants[name] = run
        self.tokenizer = encoders[dtypes[0]].tokenizer
        config = encoders[dtypes[0]].model.config
        sizes = {
            "hidden": config.hidden_size,
            "layers": config.num_layers,
            "intermediate": config.intermediate_size,
        }
        return {"compile_s": compile_s, "sizes": sizes}

    def padding(self, texts: str, buckets: list[int], batch_size: int) -> list:
        """``[padded length, rows, real lengths]`` per batch of ``jaxir encode``'s batching."""
        from jaxir.data.tokenizer import tokenize_texts_sorted

        batches = tokenize_texts_sorted(
            self.tokenizer,
            [text for _, text in self.texts[texts]],
            max_length=256,
            batch_size=batch_size,
            buckets=buckets,
        )
        return [
            [
                int(sb.batch["input_ids"].shape[1]),
                int(sb.batch["input_ids"].shape[0]),
                sb.batch["attention_mask"][: len(sb.indices)].sum(1).tolist(),
            ]
            for sb in batches
        ]


class TorchServer(protocol.VariantServer):
    """The peer: transformers ``BertModel`` (fixed batch) or sentence-transformers (corpus)."""

    def __init__(self, threads: int | None) -> None:
        super().__init__()
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.errors: dict[str, str] = {}

    def config(self) -> str:
        return protocol.torch_config()

    def write_checkpoint(self, path: str, shape: str, seed: int) -> None:
        import torch
        import transformers

        torch.manual_seed(seed)
        config = transformers.BertConfig(**SHAPES[shape][2])  # vocab 30522, GELU (erf)
        transformers.BertModel(config, add_pooling_layer=False).eval().save_pretrained(path)

    def _add(self, name: str, run, compiled: bool, **warm) -> float | None:
        """Registers ``run``; a compiled variant is called once here (compile seconds) or dropped."""
        if not compiled:
            self.variants[name] = run
            return None
        try:
            start = time.perf_counter()
            run(**warm)
            self.variants[name] = run
            return time.perf_counter() - start
        except Exception as e:  # torch.compile failed: the eager variants remain
            self.errors[name] = f"{type(e).__name__}: {str(e)[:300]}"
            return None

    def load_fixed(
        self, path: str, dtype: str, batch: int, length: int, seed: int, compile: bool
    ) -> dict:
        import torch
        import transformers

        self.variants, self.errors = {}, {}
        model = transformers.BertModel.from_pretrained(path).eval()
        ids = torch.from_numpy(random_ids(batch, length, seed).astype(np.int64))
        mask = torch.ones_like(ids)

        def embed(module, autocast: bool):
            def run():
                with (
                    torch.inference_mode(),
                    torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
                ):
                    hidden = module(input_ids=ids, attention_mask=mask).last_hidden_state
                    m = mask[..., None].to(hidden.dtype)
                    return (hidden * m).sum(1) / m.sum(1)

            return run

        compile_s = {}
        for name, route, compiled in PEER_VARIANTS[dtype]:
            if compiled and not compile:
                continue
            module = model
            if route == "weights":
                module = transformers.BertModel.from_pretrained(path).eval().to(torch.bfloat16)
            if compiled:
                module = torch.compile(module)
            compile_s[name] = self._add(name, embed(module, route == "autocast"), compiled)
        return {"compile_s": compile_s, "errors": self.errors}

    def load_corpus(
        self,
        model_dir: str,
        texts: dict[str, str],
        dtypes: list[str],
        compile: bool,
        batch_size: int,
    ) -> dict:
        """One ``SentenceTransformer`` per configuration; a compiled one is warmed on the sample."""
        import torch
        from sentence_transformers import SentenceTransformer

        self.texts = {
            name: [text for _, text in json.loads(pathlib.Path(f).read_text())]
            for name, f in texts.items()
        }
        self.batches: list = []  # what the last counted pass computed
        compile_s = {}
        for dtype in dtypes:
            for variant, route, compiled in PEER_VARIANTS[dtype]:
                if compiled and not compile:
                    continue
                model = SentenceTransformer(model_dir, device="cpu")
                assert model.max_seq_length == 256, model.max_seq_length
                if route == "weights":
                    model = model.to(torch.bfloat16)
                if compiled:
                    model.compile(dynamic=True)

                def run(texts: str, model=model, autocast=route == "autocast"):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                        return model.encode(
                            self.texts[texts],
                            batch_size=batch_size,
                            convert_to_numpy=True,
                            show_progress_bar=False,
                        )

                name = f"{dtype} {variant}"
                compile_s[name] = self._add(name, run, compiled, texts="sample")
                if variant == "eager":
                    self._count_batches(model)
        return {"compile_s": compile_s, "errors": self.errors}

    def _count_batches(self, model) -> None:
        """Records ``[padded length, rows, real lengths]`` of every batch the model encodes."""

        def hook(module, args):
            mask = args[0]["attention_mask"]
            self.batches.append([int(mask.shape[1]), int(mask.shape[0]), mask.sum(1).tolist()])

        model[0].register_forward_pre_hook(hook)

    def time(self, variant: str, save: str | None = None, **kwargs) -> float:
        if variant == "float32 eager":
            self.batches = []  # recorded anew by the hook during this pass
        return super().time(variant, save, **kwargs)

    def padding(self) -> list:
        """The batches of the last pass of the float32 eager model (recorded by its hook)."""
        return self.batches


# =========================================================================== the parent


def start_workers(args, quick: bool) -> tuple[protocol.Worker, list[protocol.Worker]]:
    threads = [f"--torch-threads={args.torch_threads}"] if args.torch_threads else []
    jaxir = protocol.Worker(__file__, "jaxir")
    peers = [
        protocol.Worker(__file__, f"torch:{label}", threads, env)
        for label, env in PEER_PROCESSES.items()
        if not (quick and label != "glibc malloc")
    ]
    return jaxir, peers


def print_configs(jaxir: protocol.Worker, peers: list[protocol.Worker]) -> None:
    print(f"jaxir process: {jaxir.call('config')}")
    for peer in peers:
        print(f"peer process ({peer.name}): {peer.call('config')}")


def rate_table(rows: list[tuple[str, list[float], float | None]], unit: str, work: int) -> None:
    """``rows``: (label, seconds per pass, compile s); ``work`` items per pass."""
    print(
        f"  {'process / configuration':<66}{unit:>10}{'median s':>10}{'min..max s':>18}"
        f"{'compile s':>11}"
    )
    for label, seconds, compile_s in rows:
        span = f"{min(seconds):.2f}..{max(seconds):.2f}"
        c = "-" if compile_s is None else f"{compile_s:.1f}"
        print(
            f"  {label:<66}{work / protocol.median(seconds):>10.1f}"
            f"{protocol.median(seconds):>10.3f}{span:>18}{c:>11}"
        )


def run_fixed(args) -> None:
    """The fixed-batch benchmark: per shape and dtype, jaxir vs every peer configuration."""
    iters = args.iters or (3 if args.quick else 10)
    warmup = 1 if args.quick else 2
    keys = args.shapes.split(",")
    tokens = args.batch * args.length
    print(f"batch {args.batch} x {args.length} tokens (no padding), {iters} timed passes (median)")
    rooflines = {
        dtype: protocol.gemm_roofline(
            [s for key in keys for s in gemm_shapes(key, tokens)],
            dtype,
            iters=2 if args.quick else 5,
        )
        for dtype in args.dtypes
    }
    for roofline in rooflines.values():
        print("\n" + roofline.report())
    if args.gemm:
        return
    jaxir, peers = start_workers(args, args.quick)
    results = []
    try:
        print()
        print_configs(jaxir, peers)
        with tempfile.TemporaryDirectory() as tmp:
            for key in keys:
                title, result_name, sizes = SHAPES[key]
                path = str(pathlib.Path(tmp) / key)
                peers[0].call("write_checkpoint", path=path, shape=key, seed=args.seed)
                reference = str(pathlib.Path(tmp) / f"{key}-torch.npy")
                for dtype in args.dtypes:  # float32 first: the parity reference
                    load = dict(path=path, dtype=dtype, batch=args.batch, length=args.length)
                    loaded = {jaxir.name: jaxir.call("load_fixed", seed=args.seed, **load)}
                    for peer in peers:
                        loaded[peer.name] = peer.call(
                            "load_fixed", seed=args.seed, compile=not args.quick, **load
                        )
                    plan = [(jaxir, "jaxir")] + [
                        (peer, v) for peer in peers for v in peer.call("names")
                    ]
                    protocol.alternate(plan, warmup)
                    # Parity: the last passes' vectors, against PyTorch float32 eager.
                    ours = str(pathlib.Path(tmp) / f"{key}-{dtype}-jaxir.npy")
                    save = {(jaxir.name, "jaxir"): ours}
                    if dtype == "float32":
                        save[peers[0].name, "eager"] = reference
                    times = protocol.alternate(plan, iters, save=save)
                    max_diff = float(np.abs(np.load(ours) - np.load(reference)).max())
                    flops = protocol.bert_forward_flops(
                        [args.length], rows=args.batch, **sizes_of_hf(sizes)
                    )
                    results.append(
                        report_fixed(
                            title,
                            f"{result_name}{SUFFIX[dtype]}",
                            dtype,
                            args.batch,
                            times,
                            loaded,
                            flops,
                            rooflines[dtype],
                            max_diff,
                        )
                    )
    finally:
        jaxir.close()
        for peer in peers:
            peer.close()
    print(f"\n{protocol.machine()} (at the end)")
    for r in results:
        protocol.result(**r)


def sizes_of_hf(sizes: dict) -> dict[str, int]:
    return {
        "hidden": sizes["hidden_size"],
        "layers": sizes["num_hidden_layers"],
        "intermediate": sizes["intermediate_size"],
    }


def gemm_shapes(key: str, tokens: int) -> list[protocol.Shape]:
    sizes = sizes_of_hf(SHAPES[key][2])
    return protocol.bert_gemm_shapes(tokens, sizes["hidden"], sizes["intermediate"])


def report_fixed(title, name, dtype, batch, times, loaded, flops, roofline, max_diff) -> dict:
    """Prints one (shape, dtype) table; returns its RESULT fields."""
    print(f"\n{title}, {dtype}:")
    rows = []
    for (worker, variant), seconds in times.items():
        compile_s = loaded[worker]["compile_s"].get(variant)
        label = "jaxir" if worker == "jaxir" else f"PyTorch {variant} ({worker.split(':')[1]})"
        rows.append((label, seconds, compile_s))
    rate_table(rows, "seq/s", batch)
    for worker, info in loaded.items():
        for variant, error in info.get("errors", {}).items():
            print(f"  dropped {worker} {variant}: {error}")
    ours = batch / protocol.median(times["jaxir", "jaxir"])
    peer_rates = {
        f"{variant} ({worker.split(':')[1]})": batch / protocol.median(s)
        for (worker, variant), s in times.items()
        if worker != "jaxir"
    }
    best = max(peer_rates, key=peer_rates.get)
    fraction = roofline.fraction(flops * ours / batch)
    print(
        f"  jaxir / best peer ({best}) = {ours / peer_rates[best]:.2f}x; "
        f"{flops / 1e9:.1f} GFLOP per batch, jaxir {flops * ours / batch / 1e9:.0f} GFLOP/s = "
        f"{fraction:.2f} of the {roofline.best_gflops:.0f} GFLOP/s roofline; "
        f"max |diff| vs PyTorch float32 eager {max_diff:.1e}"
    )
    return dict(
        name=name,
        unit="seq/s",
        jaxir=ours,
        peer=f"transformers-pytorch ({best})",
        peer_value=peer_rates[best],
        roofline_fraction=fraction,
        dtype=dtype,
        peer_configs=peer_rates,
    )


# --------------------------------------------------------------------------- corpus mode


def corpus_texts(tmp: pathlib.Path, docs: int | None, sample_docs: int, seed: int) -> dict:
    """SciFact as ``[id, title + " " + text]`` JSON files: corpus, sample, warm-up set.

    The corpus is all of SciFact or a seeded ``docs``-document sample of it; the sample
    (where the peer's configuration is chosen) is a seeded ``sample_docs``-document sample
    of the corpus, the warm-up set its first 64 documents.
    """
    from jaxir.data import load_corpus

    sys.path.insert(0, str(protocol.REPO))
    from tests.pretrained.conftest import SCIFACT

    rows = [[d.id, d.full_text] for d in load_corpus(SCIFACT).values()]
    rng = np.random.default_rng(seed)
    pick = lambda items, n: [items[i] for i in sorted(rng.choice(len(items), n, replace=False))]  # noqa: E731
    corpus = rows if docs is None or docs >= len(rows) else pick(rows, docs)
    sample = corpus if sample_docs >= len(corpus) else pick(corpus, sample_docs)
    files = {name: tmp / f"{name}.json" for name in ("warm", "sample", "corpus")}
    files["warm"].write_text(json.dumps(sample[:64]))
    files["sample"].write_text(json.dumps(sample))
    files["corpus"].write_text(json.dumps(corpus))
    return {name: str(f) for name, f in files.items()}


def minilm_dir() -> str:
    """The real all-MiniLM-L6-v2 checkpoint, unpacked and checked by the pretrained tests' helper."""
    sys.path.insert(0, str(protocol.REPO))
    from tests.pretrained.conftest import cache_root, extract_minilm

    return str(extract_minilm(cache_root()))


def padding_waste(batches: list, sizes: dict) -> tuple[float, float]:
    """(tokens computed / real tokens, matmul FLOPs computed / those of the real tokens)."""
    computed = sum(length * rows for length, rows, _ in batches)
    real_lengths = [n for _, _, lengths in batches for n in lengths]
    flops = sum(
        protocol.bert_forward_flops([length], rows=rows, **sizes) for length, rows, _ in batches
    )
    return computed / sum(real_lengths), flops / protocol.bert_forward_flops(real_lengths, **sizes)


def run_corpus(args) -> None:
    """SciFact through ``jaxir encode``'s path vs ``SentenceTransformer.encode``."""
    repeats = args.iters or 1  # a pass over SciFact is minutes long: --iters 3 for a median
    dtypes = args.dtypes
    model_dir = minilm_dir()
    sizes = sizes_of_hf(MINILM_SIZES)  # all-MiniLM-L6-v2 is MiniLM-L6-H384-shaped
    shapes = [
        *protocol.bert_gemm_shapes(64 * 256, sizes["hidden"], sizes["intermediate"]),
        *protocol.bert_gemm_shapes(args.peer_batch * 256, sizes["hidden"], sizes["intermediate"]),
    ]
    rooflines = {
        dtype: protocol.gemm_roofline(shapes, dtype, iters=2 if args.quick else 5)
        for dtype in dtypes
    }
    for roofline in rooflines.values():
        print("\n" + roofline.report())
    jaxir, peers = start_workers(args, args.quick)
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = pathlib.Path(tmp_name)
            docs = 500 if args.quick and args.docs is None else args.docs
            args.sample_docs = args.sample_docs or 500
            texts = corpus_texts(tmp, docs, args.sample_docs, args.seed)
            num_docs = len(json.loads(pathlib.Path(texts["corpus"]).read_text()))
            choice = (
                "all peer configurations timed on the corpus"
                if args.quick
                else f"the peer's fastest configuration per precision chosen on a "
                f"{args.sample_docs}-document sample"
            )
            print(
                f"\nSciFact corpus: {num_docs} documents"
                + ("" if docs is None else " (a seeded sample)")
                + f"; {choice}; {repeats} timed pass(es) per configuration (median)"
            )
            print(f"weights: {model_dir}")
            print_configs(jaxir, peers)
            print("loading and compiling ...", flush=True)
            loaded = {
                jaxir.name: jaxir.call(
                    "load_corpus",
                    model_dir=model_dir,
                    texts=texts,
                    dtypes=dtypes,
                    alt_buckets=not args.quick,
                )
            }
            for peer in peers:
                loaded[peer.name] = peer.call(
                    "load_corpus",
                    model_dir=model_dir,
                    texts=texts,
                    dtypes=dtypes,
                    compile=not args.quick,
                    batch_size=args.peer_batch,
                )
            assert loaded[jaxir.name]["sizes"] == sizes, loaded[jaxir.name]["sizes"]
            # Warm-up (first calls, oneDNN primitives) on a few documents, then the peer
            # configurations to time on the corpus: all of them in --quick (the corpus is
            # the sample), else the fastest per precision on the sample.
            peer_plan = [(p, v) for p in peers for v in p.call("names")]
            jaxir_plan = [(jaxir, v) for v in jaxir.call("names")]
            print("warm-up ...", flush=True)
            protocol.alternate(jaxir_plan + peer_plan, 1, texts="warm")
            if args.quick:
                finalists = peer_plan
            else:
                selection = protocol.alternate(peer_plan, 1, texts="sample")
                print_selection(selection, args.sample_docs)
                finalists = [
                    min(
                        (pv for pv in peer_plan if dtype_of(pv[1]) == dtype),
                        key=lambda pv: selection[pv[0].name, pv[1]][0],
                    )
                    for dtype in dtypes
                ]
            # sentence-transformers float32 eager always runs: the parity reference, and
            # the padding its batches computed is counted in that pass (see padding()).
            reference = (peers[0], "float32 eager")
            finalists += [reference] if reference not in finalists else []
            vectors = {d: str(tmp / f"jaxir-{d}.npy") for d in dtypes}
            vectors["float32 eager"] = str(tmp / "peer.npy")
            save = {(jaxir.name, d): vectors[d] for d in dtypes}
            save[peers[0].name, "float32 eager"] = vectors["float32 eager"]
            print("timed passes ...", flush=True)
            times = protocol.alternate(jaxir_plan + finalists, repeats, save=save, texts="corpus")
            waste, real_lengths = print_padding(jaxir, peers[0], sizes, args.peer_batch)
            real_flops = protocol.bert_forward_flops(real_lengths, **sizes)
            for dtype in dtypes:
                results.append(
                    report_corpus(
                        dtype, times, loaded, num_docs, real_flops, rooflines[dtype], vectors, waste
                    )
                )
    finally:
        jaxir.close()
        for peer in peers:
            peer.close()
    print(f"\n{protocol.machine()} (at the end)")
    for r in results:
        protocol.result(**r)


def dtype_of(variant: str) -> str:
    return "float32" if variant.startswith("float32") else "bfloat16"


def print_selection(selection: dict, docs: int) -> None:
    print(f"\npeer configurations on the {docs}-document sample (one timed pass each):")
    for (worker, variant), (seconds,) in selection.items():
        print(f"  {variant} ({worker.split(':')[1]}): {docs / seconds:.1f} docs/s")


def print_padding(
    jaxir: protocol.Worker, peer: protocol.Worker, sizes: dict, peer_batch: int
) -> dict:
    """Padding waste of jaxir's batching (several bucket sets) and of sentence-transformers'."""
    from jaxir.data.tokenizer import DEFAULT_BUCKETS

    print("\npadding waste on the corpus (computed / real; FLOPs: matmul FLOPs incl. attention):")
    print(f"  {'batching':<66}{'tokens':>8}{'FLOPs':>8}")
    sets = {
        f"jaxir DEFAULT_BUCKETS {DEFAULT_BUCKETS}": DEFAULT_BUCKETS,
        "jaxir buckets every 32 tokens (8 programs)": ALT_BUCKETS,
        "jaxir buckets every 16 tokens (16 programs)": tuple(range(16, 257, 16)),
        "jaxir buckets every 8 tokens (32 programs)": tuple(range(8, 257, 8)),
        "jaxir, each batch padded to its longest text": tuple(range(1, 257)),
    }
    waste = {}
    for batch_size in (64, 32):
        for label, buckets in sets.items():
            batches = jaxir.call(
                "padding", texts="corpus", buckets=list(buckets), batch_size=batch_size
            )
            waste[label, batch_size] = padding_waste(batches, sizes)
            tokens, flops = waste[label, batch_size]
            print(f"  {label + f', batch {batch_size}':<66}{tokens:>8.3f}{flops:>8.3f}")
    tokens, flops = padding_waste(peer.call("padding"), sizes)
    waste["sentence-transformers", peer_batch] = (tokens, flops)
    label = f"sentence-transformers (sorted by characters, padded per batch), batch {peer_batch}"
    print(f"  {label:<66}{tokens:>8.3f}{flops:>8.3f}")
    real_lengths = [n for _, _, lengths in batches for n in lengths]  # any batching's
    summary = {
        "jaxir": waste[f"jaxir DEFAULT_BUCKETS {DEFAULT_BUCKETS}", 64][0],
        "sentence_transformers": tokens,
    }
    return summary, real_lengths


def report_corpus(dtype, times, loaded, num_docs, real_flops, roofline, vectors, waste) -> dict:
    print(f"\nSciFact corpus, {dtype}:")
    rows = []
    for (worker, variant), seconds in times.items():
        if dtype_of(variant) != dtype:
            continue
        compile_s = loaded[worker]["compile_s"].get(variant)
        label = (
            f"jaxir {variant}"
            if worker == "jaxir"
            else f"sentence-transformers {variant} ({worker.split(':')[1]})"
        )
        rows.append((label, seconds, compile_s))
    rate_table(rows, "docs/s", num_docs)
    for worker, info in loaded.items():
        for variant, error in info.get("errors", {}).items():
            if dtype_of(variant) == dtype:
                print(f"  dropped {worker} {variant}: {error}")
    ours = num_docs / protocol.median(times["jaxir", dtype])
    peer_rates = {
        f"{variant} ({worker.split(':')[1]})": num_docs / protocol.median(s)
        for (worker, variant), s in times.items()
        if worker != "jaxir" and dtype_of(variant) == dtype
    }
    best = max(peer_rates, key=peer_rates.get)
    achieved = real_flops * ours / num_docs
    fraction = roofline.fraction(achieved)
    a, b = np.load(vectors[dtype]), np.load(vectors["float32 eager"])
    cosine = float((a * b).sum(1).min())
    print(
        f"  jaxir / best peer ({best}) = {ours / peer_rates[best]:.2f}x; jaxir "
        f"{achieved / 1e9:.0f} GFLOP/s of real-token matmuls = {fraction:.2f} of the "
        f"{roofline.best_gflops:.0f} GFLOP/s roofline; min cosine to sentence-transformers "
        f"float32 {cosine:.6f}"
    )
    return dict(
        name=f"encode_corpus_vs_sentence_transformers{SUFFIX[dtype]}",
        unit="docs/s",
        jaxir=ours,
        peer=f"sentence-transformers ({best})",
        peer_value=peer_rates[best],
        roofline_fraction=fraction,
        dtype=dtype,
        peer_configs=peer_rates,
        padding_waste=waste,
    )


# =========================================================================== SPLADE mode

#: The SPLADE benchmark's MLM decoder bias: a constant that leaves about 1% of a SciFact
#: document's 30,522 weights active (a trained SPLADE's density). The fresh head's zero bias
#: activates all of them (every term has some positive logit among 256 tokens), which would
#: turn the benchmark into one of assembling dense matrices in sparse formats.
SPLADE_BIAS = -4.5
SPLADE_LENGTH = 256
#: Token chunks the split phase times jaxir's pooling at (``SPLADE_LENGTH``: the whole sequence).
SPLADE_CHUNKS = (16, 32, 64, SPLADE_LENGTH)


def status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status``, in MB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def reset_peak_rss() -> None:
    """Resets ``VmHWM`` (the resident-set high-water mark) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class PeakMemoryServer(protocol.VariantServer):
    """Variants whose timed calls also record the process's peak RSS and the vectors' nnz.

    Each timed call resets the high-water mark first, so a pass's peak is its own (the
    process's lifetime peak, loading and compilation included, is ``ru_maxrss``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.memory: dict[str, dict[str, float]] = {}
        self.texts: dict[str, list[str]] = {}

    def read_texts(self, texts: dict[str, str]) -> None:
        self.texts = {
            name: [text for _, text in json.loads(pathlib.Path(f).read_text())]
            for name, f in texts.items()
        }

    def time(self, variant: str, save: str | None = None, **kwargs) -> float:
        before = status_mb("VmRSS")
        reset_peak_rss()
        start = time.perf_counter()
        out = self.variants[variant](**kwargs)
        seconds = time.perf_counter() - start
        peak = status_mb("VmHWM")
        nnz = out.nnz if hasattr(out, "nnz") else int(out._nnz())
        record = self.memory.setdefault(variant, {"rss_before_mb": before, "peak_mb": 0.0})
        record["peak_mb"] = max(record["peak_mb"], peak)
        record["nnz_per_doc"] = nnz / out.shape[0]
        return seconds

    def peaks(self) -> dict:
        import resource

        lifetime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"passes": self.memory, "ru_maxrss_mb": lifetime}


def median_seconds(fn, iters: int) -> float:
    fn()  # warm-up (and compilation)
    seconds = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return protocol.median(seconds)


class SpladeJaxirServer(PeakMemoryServer):
    """jaxir's side: ``jaxir.load_splade`` + ``SparseEncoder.encode``, one configuration per process."""

    def __init__(self) -> None:
        super().__init__()
        from jaxir import host_memory

        self.keeps_memory = host_memory.keep_freed_memory()

    def config(self) -> str:
        return f"{protocol.jax_config()}; glibc keeps freed memory: {self.keeps_memory}"

    def load(
        self,
        model_dir: str,
        texts: dict[str, str],
        dtype: str,
        batch: int,
        chunk: int | None,
        compile: bool = True,
    ) -> dict:
        """The encoder, every bucket's program compiled; returns compile seconds and the spec."""
        import jaxir
        from jaxir.data.tokenizer import length_buckets

        self.read_texts(texts)
        encoder = jaxir.load_splade(model_dir, max_length=SPLADE_LENGTH, dtype=dtype)
        # transformers 5 can build a 5-token vocabulary without a warning: check it is WordPiece's.
        assert len(encoder.tokenizer) == 30522, len(encoder.tokenizer)
        assert encoder.max_lengths["passage"] == SPLADE_LENGTH, encoder.max_lengths
        if chunk is not None:
            encoder.model.spec = encoder.spec.replace(chunk=chunk)
        start = time.perf_counter()
        for length in length_buckets(encoder.buckets, SPLADE_LENGTH) if compile else ():
            zeros = np.zeros((batch, length), np.int32)
            encoder.forward(zeros, np.ones_like(zeros)).block_until_ready()
        compile_s = time.perf_counter() - start
        self.encoder, self.dtype = encoder, dtype
        self.variants["jaxir"] = lambda texts: encoder.encode(self.texts[texts], batch_size=batch)
        spec = encoder.spec
        return {"compile_s": compile_s, "chunk": spec.chunk, "pooling": spec.pooling}

    def vectors(self, texts: str, path: str, count: int) -> None:
        np.save(path, self.variants["jaxir"](texts)[:count].toarray())

    def lengths(self, texts: str) -> list[int]:
        """Real token counts (special tokens included, truncated at ``SPLADE_LENGTH``)."""
        ids = self.encoder.tokenizer(self.texts[texts], truncation=True, max_length=SPLADE_LENGTH)[
            "input_ids"
        ]
        return [len(row) for row in ids]

    def _programs(self, chunk: int):
        """(graphdef, state, jitted forward) of the model with ``chunk``."""
        import jax
        from flax import nnx

        from jaxir.models.splade import forward
        from jaxir.xla import CPU_COMPILER_OPTIONS

        model = nnx.merge(*nnx.split(self.encoder.model))
        model.spec = model.spec.replace(chunk=chunk)
        graphdef, state = nnx.split(model)
        jitted = jax.jit(
            forward,
            compiler_options=CPU_COMPILER_OPTIONS[self.dtype],
            static_argnums=(0,),
            static_argnames=("role", "max_active_dims"),
        )
        return graphdef, state, jitted

    def split(self, batch: int, length: int, iters: int, seed: int, chunks: list[int]) -> dict:
        """Seconds (median) of one ``[batch, length]`` batch: the encoder alone, and the whole
        program (encoder + vocabulary projection + pooling) per chunk size, plus the
        compiled program's temporary memory (XLA's ``memory_analysis``)."""
        import jax
        from flax import nnx

        from jaxir.xla import CPU_COMPILER_OPTIONS

        ids = random_ids(batch, length, seed)
        mask = np.ones_like(ids)
        graphdef, state = nnx.split(self.encoder.model)

        def hidden(graphdef, state, ids, mask):
            return nnx.merge(graphdef, state).document_encoder(ids, mask)

        encoder_only = jax.jit(
            hidden, compiler_options=CPU_COMPILER_OPTIONS[self.dtype], static_argnums=(0,)
        )
        out = {
            "encoder_s": median_seconds(
                lambda: encoder_only(graphdef, state, ids, mask).block_until_ready(), iters
            ),
            "chunks": {},
        }
        for chunk in chunks:
            g, s, jitted = self._programs(chunk)
            memory = (
                jitted.lower(g, s, ids, mask, role="passage", max_active_dims=0)
                .compile()
                .memory_analysis()
            )
            seconds = median_seconds(
                lambda g=g, s=s, f=jitted: f(
                    g, s, ids, mask, role="passage", max_active_dims=0
                ).block_until_ready(),
                iters,
            )
            out["chunks"][str(chunk)] = {
                "seconds": seconds,
                "temp_bytes": int(memory.temp_size_in_bytes),
                "argument_bytes": int(memory.argument_size_in_bytes),
                "output_bytes": int(memory.output_size_in_bytes),
            }
        return out


class SpladeTorchServer(PeakMemoryServer):
    """The peer: sentence-transformers ``SparseEncoder`` (fill-mask ``Transformer`` + ``SpladePooling``)."""

    def __init__(self, threads: int | None) -> None:
        super().__init__()
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.errors: dict[str, str] = {}

    def config(self) -> str:
        import sentence_transformers

        return (
            f"{protocol.torch_config()}; sentence-transformers {sentence_transformers.__version__}"
        )

    def write_checkpoint(self, path: str, source: str, seed: int, bias: float) -> dict:
        """all-MiniLM-L6-v2's encoder under a fresh MLM head, as a ``BertForMaskedLM`` directory.

        The decoder is tied to the word embeddings and the transform (dense + LayerNorm)
        is ``transformers``' seeded initialisation -- what jaxir's
        ``model.splade.fresh_head`` starts from -- and the decoder bias is ``bias``.
        """
        import torch
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
        assert len(tokenizer) == 30522, len(tokenizer)  # the real WordPiece vocabulary
        config = transformers.BertConfig.from_pretrained(source)
        assert config.tie_word_embeddings and config.vocab_size == 30522
        torch.manual_seed(seed)
        model = transformers.BertForMaskedLM(config).eval()
        encoder = transformers.BertModel.from_pretrained(source, add_pooling_layer=False)
        model.bert.load_state_dict(encoder.state_dict(), strict=True)
        model.tie_weights()
        decoder = model.cls.predictions.decoder
        assert decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
        with torch.no_grad():
            model.cls.predictions.bias.fill_(bias)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        return {"hidden": config.hidden_size, "vocab": config.vocab_size}

    def load(
        self,
        model_dir: str,
        texts: dict[str, str],
        route: str,
        compiled: bool,
        batch: int,
        chunk_size: int | None = None,
    ) -> dict:
        """One ``SparseEncoder``; a compiled one is called once on the warm-up texts."""
        import torch
        from sentence_transformers import SparseEncoder
        from sentence_transformers.base.modules import Transformer
        from sentence_transformers.sparse_encoder.modules import SpladePooling

        self.read_texts(texts)
        model = SparseEncoder(
            modules=[
                Transformer(model_dir, transformer_task="fill-mask", max_seq_length=SPLADE_LENGTH),
                SpladePooling("max", chunk_size=chunk_size),
            ],
            device="cpu",
        )
        assert len(model.tokenizer) == 30522, len(model.tokenizer)
        assert model.max_seq_length == SPLADE_LENGTH, model.max_seq_length
        if route == "weights":
            model = model.to(torch.bfloat16)
        if compiled:
            model.compile(dynamic=True)
        self.model = model

        def run(texts: str):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=route == "autocast"):
                return model.encode(self.texts[texts], batch_size=batch, show_progress_bar=False)

        compile_s = self._add("peer", run, compiled, texts="warm")
        return {"compile_s": compile_s, "errors": self.errors}

    _add = TorchServer._add

    def vectors(self, texts: str, path: str, count: int) -> None:
        out = self.variants["peer"](texts)
        np.save(path, out.to_dense()[:count].float().numpy())

    def split(self, batch: int, length: int, iters: int, seed: int, chunks: list[int]) -> dict:
        """Seconds (median) of one ``[batch, length]`` batch through the eager model's parts."""
        import torch

        ids = torch.from_numpy(random_ids(batch, length, seed).astype(np.int64))
        mask = torch.ones_like(ids)
        mlm = self.model[0].model  # BertForMaskedLM
        pooling = self.model[1]
        features = {"input_ids": ids, "attention_mask": mask}
        with torch.inference_mode():
            hidden = mlm.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = mlm.cls(hidden)
            parts = {
                "encoder_s": lambda: mlm.bert(input_ids=ids, attention_mask=mask),
                "vocab_projection_s": lambda: mlm.cls(hidden),
                # SpladePooling multiplies by the mask first: it never writes into the logits.
                "pooling_s": lambda: pooling({"token_embeddings": logits, "attention_mask": mask}),
                "whole_s": lambda: self.model(dict(features)),
            }
            return {name: median_seconds(fn, iters) for name, fn in parts.items()}


#: Peer configurations of the SPLADE mode per precision: (name, route, compiled).
SPLADE_PEER = {
    "float32": [("eager", "float32", False), ("compile", "float32", True)],
    "bfloat16": [
        ("bf16 weights", "weights", False),
        ("bf16 weights, compile", "weights", True),
        ("autocast", "autocast", False),
    ],
}


def splade_flops(lengths: list[int], sizes: dict, vocab: int) -> tuple[float, float]:
    """(encoder, MLM head) matmul FLOPs of SPLADE over sequences of ``lengths`` real tokens.

    The head is the transform (``H x H``) and the vocabulary projection (``H x V``) of
    every token; the pooling is not counted (no matmul).
    """
    hidden = sizes["hidden"]
    return protocol.bert_forward_flops(lengths, **sizes), 2.0 * sum(lengths) * hidden * (
        hidden + vocab
    )


class SpladeRun:
    """The parent's side: one worker per configuration, with its load info and parity."""

    def __init__(self, args, texts: dict, model_dir: str, tmp: pathlib.Path):
        self.args, self.texts, self.model_dir, self.tmp = args, texts, model_dir, tmp
        self.workers: dict[str, protocol.Worker] = {}  # configuration -> its process
        self.loaded: dict[str, dict] = {}
        self.dtype: dict[str, str] = {}
        self.diff: dict[str, float] = {}  # max |diff| to the reference on the parity texts
        self.reference: str | None = None

    def peer(self, dtype: str, variant: str, route: str, compiled: bool, malloc: str) -> str:
        name = f"sentence-transformers {variant} ({malloc})"
        worker = protocol.Worker(
            __file__,
            "splade-torch",
            [f"--torch-threads={self.args.torch_threads}"],
            PEER_PROCESSES[malloc],
        )
        worker.name = name
        if self.reference is None:  # the first peer writes the checkpoint both frameworks load
            source = minilm_dir()
            worker.call(
                "write_checkpoint",
                path=self.model_dir,
                source=source,
                seed=self.args.seed,
                bias=SPLADE_BIAS,
            )
            print(
                f"weights: all-MiniLM-L6-v2 ({source}) as a BertForMaskedLM: decoder tied to the "
                f"word embeddings, transform freshly initialised (seed {self.args.seed}; what "
                f"jaxir's model.splade.fresh_head starts from), decoder bias {SPLADE_BIAS} "
                f"-> {self.model_dir}"
            )
        load = dict(route=route, compiled=compiled, batch=self.args.peer_batch)
        self.loaded[name] = worker.call("load", model_dir=self.model_dir, texts=self.texts, **load)
        if "peer" not in worker.call("names"):  # torch.compile failed: dropped
            print(f"  dropped {name}: {self.loaded[name]['errors']}")
            worker.close()
            return name
        return self._added(name, worker, dtype)

    def jaxir(self, dtype: str, batch: int, chunk: int) -> str:
        name = f"jaxir {dtype}, batch {batch}, chunk {chunk}"
        worker = protocol.Worker(__file__, "splade-jaxir")
        worker.name = name
        self.loaded[name] = worker.call(
            "load",
            model_dir=self.model_dir,
            texts=self.texts,
            dtype=dtype,
            batch=batch,
            chunk=chunk,
        )
        return self._added(name, worker, dtype)

    def _added(self, name: str, worker: protocol.Worker, dtype: str) -> str:
        """Registers the configuration; its vectors on the parity texts (also its warm-up)."""
        self.workers[name], self.dtype[name] = worker, dtype
        path = str(self.tmp / f"parity-{len(self.workers)}.npy")
        worker.call("vectors", texts="warm", path=path, count=self.args.parity_texts)
        if self.reference is None:
            self.reference = name
            self.reference_vectors = np.load(path)
        self.diff[name] = float(np.abs(np.load(path) - self.reference_vectors).max())
        compile_s = self.loaded[name].get("compile_s")
        print(
            f"  {name}: loaded (compile {'-' if compile_s is None else f'{compile_s:.1f}'} s), "
            f"max |diff| to {self.reference} on {self.args.parity_texts} texts {self.diff[name]:.1e}",
            flush=True,
        )
        return name

    def plan(self, names) -> list[tuple[protocol.Worker, str]]:
        return [
            (self.workers[n], "jaxir" if n.startswith("jaxir") else "peer")
            for n in names
            if n in self.workers
        ]

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()


def run_splade(args) -> None:
    """SciFact documents -> SPLADE vectors: ``jaxir.load_splade(...).encode`` vs sentence-transformers ``SparseEncoder.encode``."""
    from jaxir.models.splade import SpladeSpec

    affinity = sorted(os.sched_getaffinity(0))
    args.torch_threads = args.torch_threads or len(affinity)
    os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)  # every torch process, GEMMs too
    quick, batch, dtypes = args.quick, args.peer_batch, args.dtypes
    docs = args.docs or (64 if quick else 768)
    sample_docs = args.sample_docs or (docs if quick else 128)
    repeats = args.iters or 1
    default_chunk = SpladeSpec().chunk
    sizes, vocab = sizes_of_hf(MINILM_SIZES), 30522
    print(
        f"SPLADE document encoding: {docs} SciFact documents (a seeded sample), max length "
        f"{SPLADE_LENGTH}, max pooling of log(1 + relu(logits)), batch {batch} in both; CPUs "
        f"{affinity} (taskset), torch {args.torch_threads} thread(s) (OMP_NUM_THREADS), XLA's "
        f"CPU thread pool sized by the affinity ({len(affinity)} core(s))"
    )
    tokens = batch * SPLADE_LENGTH
    shapes = [
        *protocol.bert_gemm_shapes(tokens, sizes["hidden"], sizes["intermediate"]),
        (tokens, sizes["hidden"], vocab),  # the vocabulary projection, whole (the peer's)
        *[(batch * c, sizes["hidden"], vocab) for c in SPLADE_CHUNKS if c < SPLADE_LENGTH],
    ]
    rooflines = {
        dtype: protocol.gemm_roofline(shapes, dtype, iters=2 if quick else 3) for dtype in dtypes
    }
    for roofline in rooflines.values():
        print("\n" + roofline.report())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = pathlib.Path(tmp_name)
        texts = corpus_texts(tmp, docs, sample_docs, args.seed)
        run = SpladeRun(args, texts, str(tmp / "splade-minilm"), tmp)
        try:
            splade_passes(args, run, rooflines, sizes, vocab, default_chunk, docs, repeats)
        finally:
            run.close()


def splade_passes(args, run, rooflines, sizes, vocab, default_chunk, docs, repeats) -> None:
    quick, batch, dtypes = args.quick, args.peer_batch, args.dtypes
    print("\nloading, compiling, parity (float32 vectors of the first texts, max |diff|) ...")
    reference = run.peer("float32", "float32 eager", "float32", False, "glibc malloc")
    headline = run.jaxir("float32", batch, default_chunk)
    print(f"\njaxir process: {run.workers[headline].call('config')}")
    print(f"peer process: {run.workers[reference].call('config')}")
    if run.diff[headline] > 1e-4:
        raise SystemExit(f"parity failed: {run.diff[headline]:.1e} > 1e-4; not timing")

    # Where the time goes, on one [batch, 256] batch of random ids (no padding), in
    # processes of their own (the whole-sequence program's buffers would stay in the RSS).
    chunks = list(SPLADE_CHUNKS) if not quick else [default_chunk, SPLADE_LENGTH]
    split = dict(batch=batch, length=SPLADE_LENGTH, iters=1 if quick else 3, seed=args.seed)
    with (
        protocol.Worker(__file__, "splade-jaxir") as jaxir_split,
        protocol.Worker(
            __file__, "splade-torch", [f"--torch-threads={args.torch_threads}"]
        ) as peer_split,
    ):
        jaxir_split.call(
            "load",
            model_dir=run.model_dir,
            texts={},
            dtype="float32",
            batch=batch,
            chunk=None,
            compile=False,
        )
        peer_split.call(
            "load", model_dir=run.model_dir, texts={}, route="float32", compiled=False, batch=batch
        )
        print("\ntime split (processes of their own) ...", flush=True)
        ours = jaxir_split.call("split", chunks=chunks, **split)
        theirs = peer_split.call("split", chunks=chunks, **split)
    best_chunk = print_split(ours, theirs, batch, sizes, vocab, rooflines["float32"])

    finalists = [reference, headline]
    picks = {"float32": {"same": headline, "best": headline, "peer": reference}}
    if not quick:
        chunk = best_chunk
        candidates = [headline]
        if chunk != default_chunk:
            candidates.append(run.jaxir("float32", batch, chunk))
        candidates.append(run.jaxir("float32", 2 * batch, chunk))  # its own best batch?
        peers = [reference]
        for malloc in PEER_PROCESSES:
            for variant, route, compiled in SPLADE_PEER["float32"]:
                if (variant, malloc) != ("eager", "glibc malloc"):
                    peers.append(run.peer("float32", f"float32 {variant}", route, compiled, malloc))
        for dtype in dtypes[1:]:
            candidates.append(run.jaxir(dtype, batch, chunk))
            for variant, route, compiled in SPLADE_PEER[dtype]:
                peers.append(run.peer(dtype, variant, route, compiled, "glibc malloc"))
        plan = run.plan(candidates + peers)
        print("\nchoosing on the sample (one pass each) ...", flush=True)
        selection = protocol.alternate(plan, 1, texts="sample")
        sample = len(run.workers[headline].call("lengths", texts="sample"))
        for (name, _), (seconds,) in selection.items():
            print(f"  {name}: {sample / seconds:.2f} docs/s")
        rate = {name: -s[0] for (name, _), s in selection.items()}
        finalists = [reference]
        for dtype in dtypes:
            ours_d = [n for n in candidates if n in run.workers and run.dtype[n] == dtype]
            peers_d = [n for n in peers if n in run.workers and run.dtype[n] == dtype]
            same_batch = [n for n in ours_d if f"batch {batch}," in n]
            picks[dtype] = {
                "same": max(same_batch, key=rate.get),  # the headline: the peer's batch
                "best": max(ours_d, key=rate.get),  # jaxir at its own best batch
                "peer": max(peers_d, key=rate.get),
            }
            chosen = list(picks[dtype].values()) + ([headline] if dtype == "float32" else [])
            finalists += [n for n in chosen if n not in finalists]
    print(
        f"\ntimed passes on the {docs} documents ({repeats} per configuration, alternating) ...",
        flush=True,
    )
    times = protocol.alternate(run.plan(finalists), repeats, texts="corpus")
    lengths = run.workers[headline].call("lengths", texts="corpus")
    encoder_flops, head_flops = splade_flops(lengths, sizes, vocab)
    peaks = {n: run.workers[n].call("peaks") for n in finalists}
    results = []
    for dtype in dtypes:
        results.append(
            report_splade(
                dtype,
                run,
                times,
                peaks,
                picks[dtype],
                len(lengths),
                encoder_flops + head_flops,
                rooflines[dtype],
                ours,
            )
        )
    print(
        f"\n{len(lengths)} documents, {sum(lengths)} real tokens ({np.mean(lengths):.0f} per "
        f"document, {np.mean(np.array(lengths) == SPLADE_LENGTH):.0%} at the cap): "
        f"{encoder_flops / 1e12:.2f} TFLOP encoder + {head_flops / 1e12:.2f} TFLOP MLM head "
        f"(transform + vocabulary projection); jaxir compiles one program per length bucket "
        f"and batch size (4 buckets: 32, 64, 128, 256)"
    )
    print(f"\n{protocol.machine()} (at the end)")
    for r in results:
        protocol.result(**r)


def print_split(ours: dict, theirs: dict, batch: int, sizes: dict, vocab: int, roofline) -> int:
    """The time split of one ``[batch, 256]`` batch; returns jaxir's fastest chunk."""
    encoder, head = splade_flops([SPLADE_LENGTH] * batch, sizes, vocab)
    logits_mb = batch * SPLADE_LENGTH * vocab * 4 / 2**20

    def rate(flops: float, seconds: float) -> str:
        return f"{flops / seconds / 1e9:>8.0f}"

    print(
        f"\none [{batch}, {SPLADE_LENGTH}] batch, float32 ({encoder / 1e9:.0f} GFLOP encoder + "
        f"{head / 1e9:.0f} GFLOP MLM head; roofline {roofline.best_gflops:.0f} GFLOP/s); "
        f"the whole [B, L, V] float32 logits: {logits_mb:.0f} MB"
    )
    print(f"  {'part':<62}{'s':>8}{'GFLOP/s':>8}{'XLA temp MB':>13}")
    print(
        f"  {'jaxir encoder (jitted alone)':<62}{ours['encoder_s']:>8.3f}{rate(encoder, ours['encoder_s'])}"
    )
    for chunk, info in ours["chunks"].items():
        label = "whole sequence" if int(chunk) >= SPLADE_LENGTH else f"chunk {chunk}"
        rest = info["seconds"] - ours["encoder_s"]
        print(
            f"  {f'jaxir whole program, {label}':<62}{info['seconds']:>8.3f}"
            f"{rate(encoder + head, info['seconds'])}{info['temp_bytes'] / 2**20:>13.0f}"
        )
        print(f"  {'  of which head + pooling (difference)':<62}{rest:>8.3f}{rate(head, rest)}")
    for part, flops in (
        ("encoder_s", encoder),
        ("vocab_projection_s", head),
        ("pooling_s", 0.0),
        ("whole_s", encoder + head),
    ):
        seconds = theirs[part]
        label = f"sentence-transformers eager {part[:-2].replace('_', ' ')}"
        print(f"  {label:<62}{seconds:>8.3f}{rate(flops, seconds) if flops else '':>8}")
    return int(min(ours["chunks"], key=lambda c: ours["chunks"][c]["seconds"]))


def report_splade(dtype, run, times, peaks, picks, num_docs, flops, roofline, split) -> dict:
    print(f"\nSPLADE document encoding, {dtype} ({num_docs} SciFact documents):")
    print(
        f"  {'process / configuration':<58}{'docs/s':>8}{'median s':>10}{'compile s':>10}"
        f"{'peak RSS MB':>12}{'RSS before':>11}{'lifetime':>10}{'nnz/doc':>9}{'max|diff|':>10}"
    )
    rates = {}
    for (name, _), seconds in times.items():
        if run.dtype[name] != dtype and name != run.reference:
            continue
        rates[name] = num_docs / protocol.median(seconds)
        memory = peaks[name]["passes"][("jaxir" if name.startswith("jaxir") else "peer")]
        compile_s = run.loaded[name].get("compile_s")
        print(
            f"  {name:<58}{rates[name]:>8.2f}{protocol.median(seconds):>10.2f}"
            f"{'-' if compile_s is None else f'{compile_s:.1f}':>10}{memory['peak_mb']:>12.0f}"
            f"{memory['rss_before_mb']:>11.0f}{peaks[name]['ru_maxrss_mb']:>10.0f}"
            f"{memory['nnz_per_doc']:>9.0f}{run.diff[name]:>10.1e}"
        )
    ours, best_ours = picks["same"], picks["best"]
    peer_rates = {
        n: r for n, r in rates.items() if not n.startswith("jaxir") and run.dtype[n] == dtype
    }
    best = max(peer_rates, key=peer_rates.get)
    fraction = roofline.fraction(flops * rates[ours] / num_docs)
    chunk = int(ours.rsplit("chunk ", 1)[1])
    temp = split["chunks"].get(str(chunk), {"temp_bytes": float("nan")})["temp_bytes"] / 2**20
    logits = run.args.peer_batch * SPLADE_LENGTH * 30522 * 4 / 2**20
    mem = lambda n: peaks[n]["passes"]["jaxir" if n.startswith("jaxir") else "peer"]["peak_mb"]  # noqa: E731
    print(
        f"  {ours} / best peer ({best}) = {rates[ours] / peer_rates[best]:.2f}x; jaxir "
        f"{flops * rates[ours] / num_docs / 1e9:.0f} GFLOP/s of real-token matmuls = {fraction:.2f} "
        f"of the {roofline.best_gflops:.0f} GFLOP/s roofline; peak RSS {mem(ours):.0f} MB vs "
        f"{mem(best):.0f} MB; XLA temporary memory of the [{run.args.peer_batch}, "
        f"{SPLADE_LENGTH}] program {temp:.0f} MB (the whole logits: {logits:.0f} MB)"
    )
    if best_ours != ours:
        print(
            f"  jaxir at its best batch ({best_ours}): {rates[best_ours]:.2f} docs/s = "
            f"{rates[best_ours] / peer_rates[best]:.2f}x"
        )
    return dict(
        name=f"splade_encode_vs_sentence_transformers{SUFFIX[dtype]}",
        unit="docs/s",
        jaxir=rates[ours],
        peer=f"sentence-transformers SparseEncoder ({best})",
        peer_value=peer_rates[best],
        roofline_fraction=fraction,
        dtype=dtype,
        jaxir_config=ours,
        jaxir_best_batch={best_ours: rates[best_ours]},
        peak_rss_mb={"jaxir": mem(ours), "peer": mem(best)},
        xla_temp_mb=temp,
        logits_mb=logits,
        peer_configs=peer_rates,
    )


# =========================================================================== main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute")
    parser.add_argument("--corpus", action="store_true", help="SciFact corpus, real MiniLM weights")
    parser.add_argument(
        "--splade", action="store_true", help="SPLADE document encoding vs SparseEncoder"
    )
    parser.add_argument(
        "--parity-texts", type=int, default=48, help="SPLADE mode: texts compared before timing"
    )
    parser.add_argument(
        "--gemm", action="store_true", help="only the GEMM tables (fixed-batch shapes)"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--iters", type=int, default=None, help="timed passes per configuration")
    parser.add_argument("--shapes", default="minilm,bertbase", help="comma-separated subset")
    parser.add_argument(
        "--dtypes",
        default=None,
        help="float32 (always) and bfloat16; default: float32, with --corpus or --gemm both",
    )
    parser.add_argument(
        "--docs", type=int, default=None, help="corpus mode: a seeded sample (--quick: 500)"
    )
    parser.add_argument(
        "--sample-docs",
        type=int,
        default=None,
        help="corpus / SPLADE mode: where the best configurations are chosen (500 / 128)",
    )
    parser.add_argument("--peer-batch", type=int, default=32, help="sentence-transformers batch")
    parser.add_argument("--torch-threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(protocol.REPO))
        servers = {
            "jaxir": JaxirServer,
            "splade-jaxir": SpladeJaxirServer,
            "splade-torch": lambda: SpladeTorchServer(args.torch_threads),
        }
        server = servers.get(args.worker, lambda: TorchServer(args.torch_threads))()
        protocol.serve(server)
        return
    default = "float32,bfloat16" if (args.corpus or args.gemm) and not args.splade else "float32"
    dtypes = set((args.dtypes or default).split(","))
    if not dtypes <= {"float32", "bfloat16"} or "float32" not in dtypes:
        parser.error("--dtypes: float32 (the parity reference) and optionally bfloat16")
    args.dtypes = sorted(dtypes, key=["float32", "bfloat16"].index)
    print(protocol.machine())
    if args.splade:
        run_splade(args)
    elif args.corpus:
        run_corpus(args)
    else:
        run_fixed(args)


if __name__ == "__main__":
    main()
