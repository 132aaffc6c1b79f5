"""Mine hard negatives for the judged queries of a split and write training groups.

Reads a BEIR dataset directory (corpus.jsonl[.gz], queries.jsonl[.gz],
qrels/SPLIT.tsv), ranks the corpus for every query judged in the split, keeps the
highest-ranked documents that are not judged relevant, and writes one training group
per query with a positive: its positives plus the mined negatives, as text-form JSONL
(jaxir.data.groups; .gz compresses) that `jaxir train --set data.groups=FILE` reads.

Negatives come from one of:
  --negatives bm25   BM25 (bm25s) over the corpus: lexical hard negatives;
  --model DIR        a dense model: a jaxir dual-encoder directory (query/ [+ passage/],
                     each with jaxir_encoder.json), a `jaxir train` workdir holding
                     model/, or a Hugging Face encoder directory (config.json, weights,
                     tokenizer; its jaxir_encoder.json, if any, or --pooling /
                     --normalize set how it embeds). The corpus is encoded and searched
                     exactly on device (ANCE-style negatives).

Likely false negatives (relevant but unjudged documents) are kept out by the rank
window (skip the top ranks), by --margin (drop a candidate scoring at least the
query's lowest-scoring positive minus MARGIN; the same rule for both sources) and,
with --model, by a teacher run (--teacher-run + --teacher-threshold). Groups carry no
teacher scores: the library writes score-free groups.

Examples:
  jaxir mine --data ../shared/data/scifact --negatives bm25 --out groups/bm25.jsonl
  jaxir mine --data ../shared/data/scifact --model runs/d1 --rank-window 3,50 \\
      --num-negatives 8 --margin 0 --out groups/ance.jsonl.gz
  jaxir train --config configs/dense_scifact.py --workdir runs/d2 \\
      --set data.groups=groups/ance.jsonl.gz
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

HELP = "mine BM25 or model hard negatives and write training groups (JSONL)"

#: Queries mined per BM25 step (one progress-bar tick); the index is built once.
BM25_CHUNK = 1024


def _rank_window(text: str) -> tuple[int, int]:
    """``"LO,HI"`` -> ``(LO, HI)`` with ``0 <= LO < HI`` (argparse type)."""
    parts = text.split(",")
    try:
        lo, hi = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected LO,HI (two integers, e.g. 3,30), got {text!r}"
        ) from None
    if not 0 <= lo < hi:
        raise argparse.ArgumentTypeError(f"need 0 <= LO < HI, got {lo},{hi}")
    return lo, hi


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir mine``."""
    parser.add_argument(
        "--data",
        required=True,
        type=pathlib.Path,
        metavar="BEIR_DIR",
        help="BEIR dataset directory: corpus.jsonl[.gz], queries.jsonl[.gz], qrels/SPLIT.tsv",
    )
    parser.add_argument(
        "--split",
        default="train",
        help="qrels split whose judged queries are mined (qrels/SPLIT.tsv; default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=pathlib.Path,
        metavar="FILE",
        help="training-group JSONL to write (.gz compresses); replaced if it exists",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--negatives",
        choices=("bm25",),
        help="mine with BM25 (bm25s, English stemming and stopwords)",
    )
    source.add_argument(
        "--model",
        type=pathlib.Path,
        metavar="DIR",
        help="mine with a dense model: dual-encoder directory, train workdir (model/), or "
        "Hugging Face encoder directory",
    )
    parser.add_argument(
        "--num-negatives",
        type=_positive_int,
        default=8,
        metavar="N",
        help="negatives per query; fewer when the window runs out (default: %(default)s)",
    )
    parser.add_argument(
        "--rank-window",
        type=_rank_window,
        default=(3, 30),
        metavar="LO,HI",
        help="0-based ranks LO..HI-1 candidates are drawn from, best first; LO > 0 skips "
        "the top ranks, the likeliest unjudged positives (default: 3,30)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=None,
        help="drop candidates scoring >= (lowest positive's score - MARGIN); 0 drops those "
        "at or above the weakest positive, larger drops more (default: off)",
    )
    parser.add_argument(
        "--min-relevance",
        type=int,
        default=1,
        metavar="GRADE",
        help="smallest qrels grade counted as positive (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    dense = parser.add_argument_group("with --model")
    dense.add_argument(
        "--max-length",
        type=_positive_int,
        default=None,
        metavar="TOKENS",
        help="tokens per document (longer ones are truncated); default: the passage role's "
        "max_length in the model's jaxir_encoder.json; for a Hugging Face encoder without one "
        "(queries too) 256, or its position limit if smaller",
    )
    dense.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="texts per encoder forward pass (default: %(default)s)",
    )
    dense.add_argument(
        "--pooling",
        choices=("mean", "cls", "last", "max"),
        default=None,
        help="Hugging Face encoders only: token vectors -> one vector (default: the "
        "encoder's jaxir_encoder.json, else mean); a dual encoder's contract decides",
    )
    dense.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Hugging Face encoders only: L2-normalize vectors, cosine scores (default: the "
        "encoder's jaxir_encoder.json, else no)",
    )
    dense.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype (default: %(default)s)",
    )
    dense.add_argument(
        "--teacher-run",
        type=pathlib.Path,
        metavar="RUN",
        help="TREC run of teacher scores (e.g. a cross-encoder's); with --teacher-threshold, "
        "candidates the teacher scores above it are dropped (RocketQA denoising)",
    )
    dense.add_argument(
        "--teacher-threshold",
        type=float,
        default=None,
        metavar="SCORE",
        help="see --teacher-run (both or neither)",
    )


def _check_args(args: argparse.Namespace) -> None:
    if args.model is None:
        given = [
            flag
            for flag, value in (
                ("--max-length", args.max_length),
                ("--pooling", args.pooling),
                ("--normalize", args.normalize),
                ("--teacher-run", args.teacher_run),
                ("--teacher-threshold", args.teacher_threshold),
            )
            if value is not None
        ]
        if given:
            raise ValueError(f"{', '.join(given)}: only used with --model, not --negatives bm25")
    if args.out.is_dir():
        raise ValueError(f"{args.out}: is a directory; --out takes a .jsonl or .jsonl.gz file")
    if (args.teacher_run is None) != (args.teacher_threshold is None):
        raise ValueError("--teacher-run and --teacher-threshold go together; give both or neither")
    if args.teacher_run is not None and not args.teacher_run.is_file():
        raise FileNotFoundError(f"{args.teacher_run}: no such teacher run file")


class _Progress:
    """A query encoder whose :meth:`encode` shows a progress bar (for mine_model_negatives)."""

    def __init__(self, encoder, show: bool):
        self.encoder, self.show = encoder, show

    def encode(self, texts, batch_size: int = 64):
        return self.encoder.encode(texts, batch_size=batch_size, progress=self.show)


def _model_encoders(path: pathlib.Path, args: argparse.Namespace):
    """``(query_encoder, passage_encoder, passage_max_length, description)`` for ``--model``."""
    import jax

    from jaxir import sharding
    from jaxir.data.errors import DataError
    from jaxir.encode import TextEncoder
    from jaxir.models import hf
    from jaxir.models.dual_encoder import is_dual_encoder_dir, load_dual_encoder
    from jaxir.reps.contract import (
        CONTRACT_FILE,
        contract_file,
        load_tower_tokenizer,
        read_contract,
    )
    from jaxir.search.retrieve import tower_encoders

    kinds = (
        f"a jaxir dual-encoder directory (query/{CONTRACT_FILE}), a `jaxir train` workdir "
        "holding model/, or a Hugging Face encoder directory (config.json + weights + tokenizer)"
    )
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model directory; pass {kinds}")
    root = path
    if not is_dual_encoder_dir(root) and is_dual_encoder_dir(root / "model"):
        root = root / "model"
    mesh = sharding.make_mesh(data=-1) if jax.device_count() > 1 else None
    if is_dual_encoder_dir(root):
        if args.pooling is not None or args.normalize is not None:
            raise ValueError(
                f"--pooling / --normalize are for Hugging Face encoders; "
                f"{contract_file(root / 'query')} sets the dual encoder's pooling and "
                "normalization"
            )
        model = load_dual_encoder(root, dtype=args.dtype)
        query, passage = tower_encoders(model, load_tower_tokenizer(root / "query"), mesh=mesh)
        length = args.max_length or model.spec.passage_max_length
        spec = model.spec
        what = f"dual encoder {root} ({spec.pooling} pooling{', normalized' if spec.normalize else ''})"
        return query, passage, length, what
    if not (root / "config.json").is_file():
        raise FileNotFoundError(
            f"{root / 'config.json'}: not found, nor {root / 'query' / CONTRACT_FILE} or "
            f"{root / 'model' / 'query' / CONTRACT_FILE}; pass {kinds}"
        )
    contract = read_contract(root)
    encoder = hf.load_pretrained(root, dtype=args.dtype, mlm_head=False)
    config = encoder.config
    tokenizer = load_tower_tokenizer(root, contract)
    if contract is None:  # queries and documents alike
        length = args.max_length or min(256, config.max_positions - (config.position_offset or 0))
        roles = {"query": ("", length), "passage": ("", length)}
        pooling, normalize = args.pooling or "mean", bool(args.normalize)
    else:  # a tower saved by jaxir: both roles from its contract, --max-length for documents
        try:
            settings = {role: contract.role(role)[1] for role in ("query", "passage")}
        except ValueError as e:
            raise DataError(contract_file(root), str(e), field="roles") from None
        roles = {role: (r.prefix, r.max_length) for role, r in settings.items()}
        length = args.max_length or settings["passage"].max_length
        pooling = args.pooling or contract.pooling
        normalize = contract.normalize if args.normalize is None else args.normalize
    query, passage = (
        TextEncoder(
            encoder,
            tokenizer,
            pooling=pooling,
            normalize=normalize,
            max_length=max_length,
            prefix=prefix,
            mesh=mesh,
        )
        for prefix, max_length in roles.values()
    )
    what = f"encoder {root} ({pooling} pooling{', normalized' if normalize else ''})"
    return query, passage, length, what


def _mine_bm25(collection, args, timings: dict[str, float]) -> dict[str, list[str]]:
    from tqdm.auto import tqdm

    from jaxir.data.negatives import bm25_index, mine_bm25_negatives

    start = time.perf_counter()
    if not args.no_progress:
        print(f"indexing {len(collection.corpus)} documents with BM25 ...", file=sys.stderr)
    index = bm25_index(collection.corpus)
    timings["index"] = time.perf_counter() - start
    start = time.perf_counter()
    qids = list(collection.qrels)
    mined: dict[str, list[str]] = {}
    with tqdm(total=len(qids), desc="mining bm25", unit="query", disable=args.no_progress) as bar:
        for lo in range(0, len(qids), BM25_CHUNK):
            chunk = {q: collection.qrels[q] for q in qids[lo : lo + BM25_CHUNK]}
            mined |= mine_bm25_negatives(
                collection.queries,
                collection.corpus,
                chunk,
                num_negatives=args.num_negatives,
                rank_window=args.rank_window,
                margin=args.margin,
                min_relevance=args.min_relevance,
                index=index,
            )
            bar.update(len(chunk))
    timings["mine"] = time.perf_counter() - start
    return mined


def _mine_model(collection, args, timings: dict[str, float]) -> tuple[dict[str, list[str]], str]:
    from jaxir.data.runs import read_trec_run
    from jaxir.search.mining import mine_model_negatives

    start = time.perf_counter()
    query, passage, length, what = _model_encoders(args.model, args)
    teacher = read_trec_run(args.teacher_run) if args.teacher_run is not None else None
    timings["load model"] = time.perf_counter() - start
    start = time.perf_counter()
    doc_ids = list(collection.corpus)
    texts = [doc.full_text for doc in collection.corpus.values()]
    if not args.no_progress:
        print(f"encoding {len(texts)} documents with the passage tower ...", file=sys.stderr)
    docs_nd = passage.encode(
        texts, batch_size=args.batch_size, max_length=length, progress=not args.no_progress
    )
    timings["encode corpus"] = time.perf_counter() - start
    start = time.perf_counter()
    if not args.no_progress:
        print(f"encoding {len(collection.qrels)} queries and searching ...", file=sys.stderr)
    mined = mine_model_negatives(
        _Progress(query, not args.no_progress),
        collection.queries,
        collection.qrels,
        num_negatives=args.num_negatives,
        doc_ids=doc_ids,
        doc_vectors=docs_nd,
        rank_window=args.rank_window,
        margin=args.margin,
        teacher_scores=teacher,
        teacher_threshold=args.teacher_threshold,
        min_relevance=args.min_relevance,
        batch_size=args.batch_size,
    )
    timings["mine"] = time.perf_counter() - start
    return mined, what


def run(args: argparse.Namespace) -> int:
    """Mines negatives for ``args.split`` of ``args.data``, writes ``args.out``, prints a summary."""
    from jaxir.data.groups import groups_from_qrels, write_groups
    from jaxir.data.records import load_beir

    _check_args(args)
    begin = time.perf_counter()
    timings: dict[str, float] = {}
    collection = load_beir(args.data, args.split, progress=not args.no_progress)
    timings["load data"] = time.perf_counter() - begin
    qrels_path = args.data / "qrels" / f"{args.split}.tsv"
    grades = (g for docs in collection.qrels.values() for g in docs.values())
    if not any(g >= args.min_relevance for g in grades):
        raise ValueError(
            f"{qrels_path}: no query has a positive (grade >= {args.min_relevance}); "
            "there is nothing to mine for (check --min-relevance)"
        )
    if args.model is None:
        mined = _mine_bm25(collection, args, timings)
        source = "bm25"
    else:
        mined, source = _mine_model(collection, args, timings)

    start = time.perf_counter()
    groups = groups_from_qrels(
        collection.queries,
        collection.corpus,
        collection.qrels,
        mined,
        min_relevance=args.min_relevance,
    )
    # Write next to the target and rename, so an interrupted run never leaves a half file
    # that `jaxir train` would read (the suffix is kept: .gz still compresses).
    partial = args.out.parent / f".partial-{args.out.name}"
    write_groups(groups, partial)
    os.replace(partial, args.out)
    timings["write"] = time.perf_counter() - start

    counts = [len(g.negatives) for g in groups]
    total = time.perf_counter() - begin
    lo, hi = args.rank_window
    skipped = len(collection.qrels) - len(groups)
    short = sum(c < args.num_negatives for c in counts)
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    print(
        f"jaxir mine: {len(collection.qrels)} {args.split} queries, negatives from {source} "
        f"(rank window {lo},{hi}"
        f"{'' if args.margin is None else f', margin {args.margin:g}'}) -> {args.out}\n"
        f"  groups written:      {len(groups)}"
        f"{f' ({skipped} queries without a positive skipped)' if skipped else ''}\n"
        f"  negatives per group: mean {sum(counts) / len(counts):.2f}, min {min(counts)}, "
        f"max {max(counts)}; {short} group(s) below --num-negatives {args.num_negatives}\n"
        f"  time:                {total:.1f} s ({phases})"
    )
    return 0
