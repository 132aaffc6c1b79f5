"""Encode a corpus (or queries) into a sharded, resumable embedding store.

Reads documents from a BEIR dataset directory (corpus.jsonl[.gz] / queries.jsonl[.gz])
or a JSONL file ({"_id", "title", "text"} a line; a document's text is
title + " " + text), embeds them with a Hugging Face-layout encoder directory
(config.json + model.safetensors + tokenizer) or a jaxir dual-encoder directory (its
passage tower for a corpus, its query tower for queries) and writes:

  OUT/manifest.json      format, dim, count, shard list, encoder settings
  OUT/vectors-00000.npy  float32 [n, dim] per shard (np.load(..., mmap_mode="r"))
  OUT/ids-00000.txt      the shard's ids, one a line, in row order

Shards are written atomically; an interrupted run resumes where it stopped when run
again with the same arguments (--no-resume starts over). Read the result with
jaxir.encode.load_embeddings(OUT). With several devices, batches are split over all
of them. Ids must be unique: a repeated _id is reported with its file and both lines.

A SPLADE model (a directory written by `jaxir train` with family=splade, holding
jaxir_splade.json, or its train workdir) writes a sparse store instead (kind "sparse":
CSR shards indptr/indices/values-*.npy + ids-*.txt + terms.txt; read it with
jaxir.sparse_store.load_sparse_store); its pooling, lengths and prefixes come from the
model, so --pooling / --normalize / --prefix do not apply.

Multi-host: run the same command on every host (one process each, --out on a file
system they share), with the job flags of `jaxir train` (--coordinator HOST:PORT
--num-processes N --process-id I, or $JAXIR_*; found by themselves on a Cloud TPU VM
pod or in a SLURM job). Process i % N encodes shard i (choose --shard-size so that
there are several shards per process) and process 0 writes the manifest: the store is
the one a single process writes, and a killed job resumes when run again. Dense
encoders only.

Pooling, normalization, maximum length and prefix default to the tower's serving
contract (jaxir_encoder.json: the passage role for a corpus, the query role for
queries), else to a sentence-transformers directory's settings, else to mean pooling,
no normalization, the model's length limit and no prefix; flags override them.

Example:
  jaxir encode --model runs/d1/model --data ../shared/data/scifact --out emb/scifact
  jaxir encode --model path/to/hf-model --data ../shared/data/scifact \\
      --out emb/scifact --pooling mean --normalize --max-length 256
  # long documents: one row per 256-token passage, a document scores its best (MaxP)
  jaxir encode ... --split-documents --stride 128
  jaxir encode --model runs/s1/model --data ../shared/data/scifact --out runs/s1/store
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from jaxir.cli.job_flags import add_job_flags

HELP = "embed a corpus or queries into a sharded .npy embedding store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir encode``."""
    parser.add_argument(
        "--model",
        required=True,
        type=pathlib.Path,
        metavar="DIR",
        help="encoder directory (config.json, model.safetensors, tokenizer files), a "
        "dual-encoder directory (query/ [+ passage/]), or a SPLADE model or run directory "
        "(sparse store)",
    )
    parser.add_argument(
        "--data",
        required=True,
        type=pathlib.Path,
        metavar="PATH",
        help="BEIR dataset directory, or a corpus/queries .jsonl[.gz] file",
    )
    parser.add_argument(
        "--what",
        choices=("corpus", "queries"),
        default="corpus",
        help="which records of a BEIR directory to encode (default: %(default)s)",
    )
    parser.add_argument(
        "--out", required=True, type=pathlib.Path, metavar="DIR", help="output store directory"
    )
    parser.add_argument(
        "--pooling",
        choices=("mean", "cls", "last", "max"),
        default=None,
        help="how token vectors become one vector (default: the model's contract, else mean)",
    )
    parser.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="L2-normalize vectors, cosine = dot product (default: the model's contract, else no)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="texts per forward pass (default: %(default)s)"
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        metavar="TOKENS",
        help="tokens per text, special tokens included; longer texts are truncated "
        "(default: the model's contract, else what the model supports, the smaller of its "
        "position embeddings and the tokenizer's model_max_length)",
    )
    parser.add_argument(
        "--split-documents",
        action="store_true",
        help="index each document as overlapping passages of at most --max-length tokens "
        "(rows share the document's id; search scores a document by its best passage, MaxP) "
        "instead of truncating it",
    )
    parser.add_argument(
        "--stride",
        type=int,
        default=0,
        metavar="TOKENS",
        help="with --split-documents: tokens between passage starts (default 0: half a passage)",
    )
    parser.add_argument(
        "--shard-size",
        type=int,
        default=100_000,
        help="vectors per shard file, the unit of resumption (default: %(default)s)",
    )
    parser.add_argument(
        "--prefix",
        default=None,
        help="text prepended to every input (e.g. 'query: '); default: the query/passage "
        "prefix of the model's contract (jaxir_encoder.json), else none",
    )
    parser.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="delete an existing store in --out instead of resuming it",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype (vectors are always stored float32; default: %(default)s)",
    )
    add_job_flags(parser)


def _records(data: pathlib.Path, what: str):
    """``(record iterator, total or None, file or None)`` for a BEIR directory or a JSONL file."""
    from jaxir.data.records import count_lines, iter_corpus, iter_queries

    stem = "corpus" if what == "corpus" else "queries"
    candidates = [data / f"{stem}.jsonl", data / f"{stem}.jsonl.gz"] if data.is_dir() else [data]
    file = next((f for f in candidates if f.is_file()), None)
    total = count_lines(file) if file is not None else None
    records = iter_corpus(data) if what == "corpus" else iter_queries(data)
    return records, total, file


def _record_lines(file: pathlib.Path, positions: tuple[int, ...]) -> list[int]:
    """1-based lines of the records at 0-based ``positions`` (``iter_corpus`` order).

    The readers yield one record per non-blank line, so record ``i`` is the ``i``-th
    non-blank line. Only called to report an error: re-reading the file there keeps
    the encode pass from holding a line number per id.
    """
    from jaxir.data.records import iter_lines

    wanted, found, position = set(positions), {}, 0
    for number, text in iter_lines(file):
        if not text.strip():
            continue
        if position in wanted:
            found[position] = number
            if len(found) == len(wanted):
                break
        position += 1
    return [found[p] for p in positions]


def _duplicate_error(file: pathlib.Path, error):
    """The :class:`DataError` for a ``DuplicateIdError`` raised on the records of ``file``."""
    from jaxir.data.errors import DataError

    first, second = _record_lines(file, (error.first, error.second))
    return DataError(
        file,
        f"duplicate id {error.doc_id!r} (line {first} has the same _id); ids must be unique, "
        "an embedding is looked up by its id",
        line=second,
        field="_id",
    )


def _stored_count(out: pathlib.Path) -> int:
    """Embeddings already in a store at ``out`` (0 if there is none)."""
    try:
        return int(json.loads((out / "manifest.json").read_text())["count"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0  # no store, or a damaged one that encode_corpus reports


def _splade_model(path: pathlib.Path) -> pathlib.Path | None:
    """The SPLADE model directory at ``path`` or in the run workdir ``path``, else ``None``."""
    from jaxir.models.splade import is_splade_dir

    return next((d for d in (path, path / "model") if is_splade_dir(d)), None)


def _encode_records(write, args: argparse.Namespace, records, total, file):
    """``write(records, total)`` with duplicate ids reported as lines of ``file``; seconds taken."""
    from jaxir.data.passages import DuplicateIdError

    start = time.perf_counter()
    # The store writer holds the only progress bar and closes it before an error propagates.
    try:
        store = write(records, total)
    except DuplicateIdError as e:  # positions in the file's records -> its lines
        if file is None:
            raise
        raise _duplicate_error(file, e) from None
    return store, time.perf_counter() - start


def _summary(args: argparse.Namespace, count: int, kept: int, seconds: float, shape: str) -> str:
    new = count - kept
    resumed = f" ({kept} kept from an earlier run)" if kept else ""
    return (
        f"jaxir encode: {count} {args.what} texts{resumed} -> {args.out}\n"
        f"  {shape}, {new} encoded in {seconds:.1f} s ({new / max(seconds, 1e-9):.1f} docs/s)"
    )


def _run_sparse(args: argparse.Namespace, model: pathlib.Path, role: str) -> int:
    """``jaxir encode`` of a SPLADE model: a sparse store."""
    from jaxir.sparse_encode import load_splade
    from jaxir.sparse_store import encode_sparse_corpus

    dense_only = {"--pooling": args.pooling, "--normalize": args.normalize, "--prefix": args.prefix}
    given = [flag for flag, value in dense_only.items() if value is not None]
    if given:
        raise ValueError(
            f"{', '.join(given)}: not for a SPLADE model ({model}); its pooling and prefixes "
            "are in its jaxir_splade.json"
        )
    if args.split_documents:
        raise ValueError(
            "--split-documents is for dense encoders; a SPLADE store holds one vector per "
            "document (truncated to --max-length)"
        )
    encoder = load_splade(model, dtype=args.dtype, max_length=args.max_length, role=role)
    records, total, file = _records(args.data, args.what)
    kept = _stored_count(args.out) if args.resume else 0

    def write(records, total):
        return encode_sparse_corpus(
            encoder,
            records,
            args.out,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            resume=args.resume,
            progress=True,
            total=total,
            role=role,
        )

    store, seconds = _encode_records(write, args, records, total, file)
    per_row = store.nnz / max(len(store), 1)
    shape = f"sparse, vocabulary {store.vocab_size}, {per_row:.1f} non-zeros per {role}"
    print(_summary(args, len(store), kept, seconds, shape))
    return 0


def run(args: argparse.Namespace) -> int:
    """Joins the job (if any), encodes ``args.data`` into ``args.out`` and prints a summary."""
    import jax

    from jaxir import distributed

    # First: importing the data readers (bm25s, via jaxir.data) starts the XLA backend.
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    from jaxir import sharding
    from jaxir.encode import encode_corpus, load_encoder
    from jaxir.models.dual_encoder import is_dual_encoder_dir, tower_dir

    if args.split_documents and args.what != "corpus":
        raise ValueError("--split-documents applies to --what corpus only (queries are not split)")
    role = "passage" if args.what == "corpus" else "query"
    if _splade_model(args.model) is not None:
        if jax.process_count() > 1:
            raise ValueError(
                f"--model {args.model} is a SPLADE model: a multi-process job encodes dense "
                "stores only; run this encode as one process (--num-processes 1)"
            )
        return _run_sparse(args, _splade_model(args.model), role)
    model = tower_dir(args.model, role) if is_dual_encoder_dir(args.model) else args.model
    # This process's devices only: in a job each process encodes its own shards.
    local = jax.local_devices()
    mesh = sharding.make_mesh(data=-1, devices=local) if len(local) > 1 else None
    encoder = load_encoder(
        model,
        role=role,
        pooling=args.pooling,
        normalize=args.normalize,
        max_length=args.max_length,
        dtype=args.dtype,
        prefix=args.prefix,
        mesh=mesh,
    )
    records, total, file = _records(args.data, args.what)
    if args.split_documents:  # duplicate ids are then checked on the documents, not passages
        records, total = encoder.passages(records, stride=args.stride), None
    kept = _stored_count(args.out) if args.resume else 0

    def write(records, total):
        return encode_corpus(
            encoder,
            records,
            args.out,
            shard_size=args.shard_size,
            batch_size=args.batch_size,
            resume=args.resume,
            progress=True,
            total=total,
        )

    store, seconds = _encode_records(write, args, records, total, file)
    if jax.process_index() == 0:
        shape = f"dim {store.dim}, {len(store.shards)} shard(s)"
        print(_summary(args, len(store), kept, seconds, shape))
    return 0
