"""Package a trained dual encoder and its document index as a serving bundle.

Input: a dual-encoder model directory (query/ [+ passage/] Hugging Face towers, each
with its tokenizer and jaxir_encoder.json), or a `jaxir train` workdir, in which case
WORKDIR/model is the model and WORKDIR/embeddings the default embedding store (the
layout `jaxir train` writes today; pass both paths explicitly if yours differs). The
embedding store (written by `jaxir encode` with the model's passage tower) must use
the model's pooling and normalization.

Output: the bundle directory

  OUT/manifest.json    format + bundle version, jaxir version, creation time, encoder
                       contract, index kind, num_docs, dim, metrics, every file with
                       its size and SHA-256 (checked by `jaxir search` on load)
  OUT/query_encoder/   the query tower + tokenizer + jaxir_encoder.json (query role)
  OUT/index/           the saved ScaNN (default) or exact searcher
  OUT/doc_ids.txt      one document id a line, in index row order
  OUT/corpus.jsonl     only with --corpus: lets `jaxir search` print document text

A bundle from another bundle format version, or with a missing or modified file, is
refused with the file named; one from another jaxir version of the same format loads
with a warning.

Example:
  jaxir export runs/d1 --out bundles/d1 --corpus ../shared/data/scifact/corpus.jsonl.gz
  jaxir export runs/d1/model --embeddings emb/scifact --out bundles/d1 --index exact
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

HELP = "package a model + embeddings as a serving bundle (query encoder, index, ids)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``jaxir export``."""
    parser.add_argument(
        "model",
        type=pathlib.Path,
        metavar="RUN_OR_MODEL_DIR",
        help="dual-encoder model directory, or a train workdir holding model/ (and embeddings/)",
    )
    parser.add_argument(
        "--embeddings",
        type=pathlib.Path,
        metavar="DIR",
        help="document embedding store (default: WORKDIR/embeddings for a train workdir)",
    )
    parser.add_argument(
        "--out", required=True, type=pathlib.Path, metavar="BUNDLE", help="bundle directory"
    )
    parser.add_argument(
        "--index",
        choices=("scann", "exact"),
        default="scann",
        help="searcher to build: approximate ScaNN or exact on-device (default: %(default)s)",
    )
    parser.add_argument(
        "--corpus",
        type=pathlib.Path,
        metavar="FILE",
        help="corpus.jsonl[.gz] to include, so search results show document text",
    )
    parser.add_argument(
        "--metrics",
        type=pathlib.Path,
        metavar="FILE",
        help='JSON file {"nDCG@10": 0.61, ...} (or {system: {metric: value}}: the first '
        "system) to record in the manifest",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing bundle at --out"
    )


def resolve_inputs(
    model: pathlib.Path, embeddings: pathlib.Path | None
) -> tuple[pathlib.Path, pathlib.Path]:
    """``(model dir, embeddings dir)``: a train workdir's ``model/`` and ``embeddings/`` as defaults."""
    from jaxir.models.dual_encoder import is_dual_encoder_dir
    from jaxir.reps.contract import CONTRACT_FILE

    if not is_dual_encoder_dir(model) and is_dual_encoder_dir(model / "model"):
        if embeddings is None:
            embeddings = model / "embeddings"
        model = model / "model"
    elif not is_dual_encoder_dir(model):
        raise FileNotFoundError(
            f"{model / 'query' / CONTRACT_FILE}: not found, nor "
            f"{model / 'model' / 'query' / CONTRACT_FILE}; pass a dual-encoder model "
            "directory or a train workdir holding model/"
        )
    if embeddings is None:
        raise ValueError(
            "--embeddings is required with a model directory; encode the corpus first "
            "(jaxir encode --model MODEL/passage-or-query ... --out DIR)"
        )
    if not (embeddings / "manifest.json").is_file():
        raise FileNotFoundError(
            f"{embeddings / 'manifest.json'}: no embedding store there; write one with "
            "`jaxir encode` (or pass --embeddings)"
        )
    return model, embeddings


def _read_metrics(path: pathlib.Path | None) -> dict[str, float] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if data and all(isinstance(v, dict) for v in data.values()):
        data = next(iter(data.values()))
    if not isinstance(data, dict) or not all(isinstance(v, int | float) for v in data.values()):
        raise ValueError(f'{path}: expected a JSON object of numbers like {{"nDCG@10": 0.61}}')
    return data


def run(args: argparse.Namespace) -> int:
    """Writes the bundle and prints what it holds."""
    from jaxir.export import export_bundle

    model, embeddings = resolve_inputs(args.model, args.embeddings)
    start = time.perf_counter()
    out = export_bundle(
        model,
        embeddings,
        args.out,
        index=args.index,
        metrics=_read_metrics(args.metrics),
        corpus=args.corpus,
        overwrite=args.overwrite,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    size = sum(f["size"] for f in manifest["files"])
    print(
        f"jaxir export: {model} + {embeddings} -> {out}\n"
        f"  {manifest['num_docs']} documents, dim {manifest['dim']}, {args.index} index, "
        f"{len(manifest['files'])} files, {size / 2**20:.1f} MiB, "
        f"{time.perf_counter() - start:.1f} s\n"
        f'  try: jaxir search {out} "your query"'
    )
    return 0
