"""Serving bundles: one directory holding everything needed to answer queries.

A bundle is what ``jaxir export`` writes and ``jaxir search BUNDLE "query"`` reads::

    manifest.json     format, versions, encoder contract, kind, index kind, sizes,
                      metrics, and every other file with its size and SHA-256
    query_encoder/    dense: Hugging Face directory of the query tower (config.json,
                      model.safetensors, tokenizer files, jaxir_encoder.json restricted
                      to the query role); a tied dual encoder's single tower.
                      sparse: the SPLADE model directory (save_splade: jaxir_splade.json,
                      the *ForMaskedLM weights, tokenizer; query/ or query_weights.npy)
    index/            a saved searcher: searcher.json + data (dense: ScaNN by default,
                      exact allowed; sparse: the inverted index)
    doc_ids.txt       N document ids, one a line; row i of the index is line i
    corpus.jsonl[.gz] optional: the documents, so search results can show their text

``manifest.json`` looks like::

    {"format": "jaxir-bundle", "bundle_version": 1, "jaxir_version": "0.1.0",
     "created": "2025-01-01T12:00:00+00:00",
     "encoder": {"pooling": "mean", "normalize": true, "prefix": "", "max_length": 32},
     "documents": {... the embedding store's encoder settings ...},
     "kind": "dense", "index": {"kind": "scann"}, "num_docs": 5183, "dim": 768,
     "metrics": {"nDCG@10": 0.61},
     "files": [{"path": "doc_ids.txt", "size": 41234, "sha256": "..."}, ...]}

**Compatibility.** :func:`load_bundle` refuses a bundle whose ``bundle_version``
differs from :data:`BUNDLE_VERSION` (the layout above changed; re-export it with this
jaxir) and a bundle with a missing file or a file whose size or SHA-256 differs from
the manifest (a partial copy or a corruption; copy or export it again). A bundle made
by another *jaxir package version* with the same bundle version loads with a
:class:`UserWarning`: the layout is the same, only numerics may differ slightly. The
manifest is written last, so an interrupted export leaves no loadable bundle.

Example:
    >>> import tempfile, numpy as np
    >>> from flax import nnx
    >>> from tokenizers import Tokenizer, models, pre_tokenizers, processors
    >>> from transformers import PreTrainedTokenizerFast
    >>> from jaxir.encode import encode_corpus
    >>> from jaxir.models.bert import PRESETS
    >>> from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec
    >>> from jaxir.search import tower_encoders
    >>> vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "cats": 4, "purr": 5, "dogs": 6}
    >>> core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    >>> core.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> core.post_processor = processors.TemplateProcessing(
    ...     single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    >>> tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]",
    ...                               cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]")
    >>> spec = DualEncoderSpec(query_max_length=8, passage_max_length=16)
    >>> model = DualEncoder.create(PRESETS["tiny"], spec, rngs=nnx.Rngs(0))
    >>> _, passages = tower_encoders(model, tok)
    >>> store = encode_corpus(passages, [("d1", "cats purr"), ("d2", "dogs")],
    ...                       tempfile.mkdtemp(), progress=False)
    >>> out = export_bundle(model, store, tempfile.mkdtemp() + "/bundle", index="exact",
    ...                     tokenizer=tok, metrics={"nDCG@10": 1.0})
    >>> bundle = load_bundle(out)
    >>> [doc for doc, _ in bundle.search(["cats purr"], k=2)[0]]
    ['d1', 'd2']
    >>> bundle.kind, bundle.manifest["index"]["kind"], bundle.manifest["num_docs"], bundle.metrics
    ('dense', 'exact', 2, {'nDCG@10': 1.0})
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import pathlib
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import transformers

import jaxir
from jaxir.data.runs import Run
from jaxir.data.tokenizer import CONTRACT_FILE as TOKENIZER_CONTRACT_FILE
from jaxir.encode import EmbeddingStore, TextEncoder, load_encoder
from jaxir.index import Searcher, build_searcher, load_searcher
from jaxir.index.base import SEARCHERS_FOR, check_searcher_kind, file_sha256
from jaxir.models import hf
from jaxir.models.dual_encoder import DualEncoder, DualEncoderSpec, load_spec, tower_contracts
from jaxir.models.splade import CONTRACT_FILE as SPLADE_CONTRACT
from jaxir.models.splade import Splade, is_splade_dir, save_splade
from jaxir.reps.contract import CONTRACT_FILE, load_tower_tokenizer, save_contract
from jaxir.reps.kinds import DEFAULT_KIND, read_kind
from jaxir.search.retrieve import max_rows_per_doc, retrieve
from jaxir.sparse_encode import SparseEncoder, load_splade
from jaxir.sparse_store import SparseStore
from jaxir.store_files import load_store

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "Bundle",
    "BundleError",
    "export_bundle",
    "load_bundle",
]

BUNDLE_FORMAT = "jaxir-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
QUERY_ENCODER = "query_encoder"
INDEX = "index"
DOC_IDS = "doc_ids.txt"

PathLike = str | os.PathLike[str]


class BundleError(ValueError):
    """A bundle that cannot be written or loaded; the message names the file and the fix."""


# --------------------------------------------------------------------------- export


def _resolve_model(
    model: DualEncoder | PathLike, tokenizer: transformers.PreTrainedTokenizerBase | None
) -> tuple[DualEncoderSpec, pathlib.Path | DualEncoder, transformers.PreTrainedTokenizerBase]:
    """``(spec, query tower dir or model, tokenizer)`` of a dual encoder object or directory."""
    if isinstance(model, DualEncoder):
        if tokenizer is None:
            raise BundleError(
                "export_bundle: a DualEncoder object needs tokenizer= (the tokenizer it was "
                "trained with); or pass the model directory written by save_dual_encoder"
            )
        spec = dataclasses.replace(model.spec, temperature=model.temperature())
        return spec, model, tokenizer
    root = pathlib.Path(model)
    spec = load_spec(root)
    tower = root / "query"
    if not (tower / "config.json").is_file():
        raise BundleError(
            f"{tower / 'config.json'}: missing; {root} is not a complete dual-encoder directory "
            "(save it with jaxir.models.dual_encoder.save_dual_encoder)"
        )
    return spec, tower, tokenizer if tokenizer is not None else load_tower_tokenizer(tower)


def _hidden_size(tower: pathlib.Path | DualEncoder) -> int:
    if isinstance(tower, DualEncoder):
        return tower.query_encoder.config.hidden_size
    config = hf.read_hf_config(tower)
    return int(config.get("hidden_size", config.get("dim", -1)))


def _check_store(store: EmbeddingStore, spec: DualEncoderSpec, dim: int) -> None:
    """Raise if the document vectors were not made the way the query tower makes its vectors."""
    where = store.path / "manifest.json"
    settings = store.manifest["encoder"]
    for name, want in (("pooling", spec.pooling), ("normalize", spec.normalize)):
        if settings.get(name) != want:
            raise BundleError(
                f'{where}: field "encoder.{name}" is {settings.get(name)!r} but the model\'s '
                f"spec says {want!r}; queries and documents would be encoded differently. "
                f"Re-encode the corpus with the model's settings (jaxir encode --pooling "
                f"{spec.pooling}{' --normalize' if spec.normalize else ''})"
            )
    if store.dim != dim:
        raise BundleError(
            f'{where}: field "dim" is {store.dim} but the query tower makes {dim}-d vectors; '
            "encode the corpus with this model"
        )
    if settings.get("prefix", "") != spec.passage_prefix:
        warnings.warn(
            f"{where}: documents were encoded with prefix {settings.get('prefix')!r} but the "
            f"model's passage prefix is {spec.passage_prefix!r}",
            stacklevel=3,
        )


def _prepare_out(out: pathlib.Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        is_bundle = (out / MANIFEST).is_file() and _is_bundle_manifest(out / MANIFEST)
        if not (overwrite and is_bundle):
            raise BundleError(
                f"{out}: exists and is not empty; choose a new output directory"
                + (
                    " or pass overwrite=True (--overwrite) to replace this bundle"
                    if is_bundle
                    else ""
                )
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _is_bundle_manifest(path: pathlib.Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == BUNDLE_FORMAT
    except (ValueError, AttributeError, OSError):
        return False


def _file_entries(root: pathlib.Path) -> list[dict[str, Any]]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p != root / MANIFEST)
    return [
        {
            "path": p.relative_to(root).as_posix(),
            "size": p.stat().st_size,
            "sha256": file_sha256(p),
        }
        for p in files
    ]


@dataclasses.dataclass(frozen=True)
class _QuerySide:
    """What a bundle needs of its model: the manifest's ``"encoder"`` section and a writer."""

    contract: dict[str, Any]
    write: Callable[[pathlib.Path], None]


def _dense_query_side(
    model: DualEncoder | PathLike,
    tokenizer: transformers.PreTrainedTokenizerBase | None,
    store: EmbeddingStore,
) -> _QuerySide:
    if not isinstance(model, DualEncoder) and is_splade_dir(model):
        raise BundleError(
            f"{model}: a SPLADE model, but {store.path} is a dense store; export a SPLADE "
            "model with the sparse store it encoded (jaxir encode --model MODEL ...)"
        )
    spec, tower, tokenizer = _resolve_model(model, tokenizer)
    _check_store(store, spec, _hidden_size(tower))

    def write(encoder_dir: pathlib.Path) -> None:
        if isinstance(tower, DualEncoder):
            hf.save_pretrained(tower.query_encoder, encoder_dir)
        else:
            ignore = shutil.ignore_patterns(CONTRACT_FILE, TOKENIZER_CONTRACT_FILE)
            shutil.copytree(tower, encoder_dir, ignore=ignore)
        tokenizer.save_pretrained(encoder_dir)
        contract = tower_contracts(spec, tokenizer)["query"].with_roles("query")
        save_contract(encoder_dir, contract)

    contract = {
        "pooling": spec.pooling,
        "normalize": spec.normalize,
        "prefix": spec.query_prefix,
        "max_length": spec.query_max_length,
    }
    return _QuerySide(contract, write)


#: Fields of a sparse store's ``"encoder"`` that the bundle's query encoder must share.
_SPARSE_MATCH = ("pooling", "vocab_size", "inference_free", "tied")


def _sparse_query_side(model: Splade | PathLike, tokenizer: Any, store: SparseStore) -> _QuerySide:
    """The SPLADE model (directory, run workdir or :class:`Splade` + tokenizer) of a sparse bundle."""
    if isinstance(model, Splade):
        if tokenizer is None:
            raise BundleError(
                "export_bundle: a Splade object needs tokenizer= (the tokenizer it was trained "
                "with); or pass the directory written by save_splade"
            )
        encoder = SparseEncoder(model, tokenizer, role="query")
        root = None
    else:
        root = next(
            (d for d in (pathlib.Path(model), pathlib.Path(model) / "model") if is_splade_dir(d)),
            None,
        )
        if root is None:
            raise BundleError(
                f"{model}: no {SPLADE_CONTRACT} there (nor in {pathlib.Path(model) / 'model'}); "
                "a sparse store is served with the SPLADE model that encoded it: pass its "
                "directory (save_splade) or its training run"
            )
        encoder = load_splade(root, role="query")
    where = store.path / "manifest.json"
    made = encoder.describe()
    for name in _SPARSE_MATCH:
        if store.encoder.get(name) != made[name]:
            raise BundleError(
                f'{where}: field "encoder.{name}" is {store.encoder.get(name)!r} but the model '
                f"{root or 'given'} has {made[name]!r}; encode the corpus with this model "
                "(jaxir encode --model MODEL ...)"
            )
    if list(store.terms) != encoder.terms:
        raise BundleError(
            f"{store.path}: the store's vocabulary (terms.txt) differs from the model's "
            "tokenizer; encode the corpus with this model"
        )

    def write(encoder_dir: pathlib.Path) -> None:
        if root is None:
            save_splade(model, encoder_dir, tokenizer=tokenizer)
        else:
            shutil.copytree(root, encoder_dir)

    contract = {k: made[k] for k in ("kind", "pooling", "inference_free", "tied", "vocab_size")}
    contract.update(prefix=made["query_prefix"], max_length=made["query_max_length"])
    return _QuerySide(contract, write)


def export_bundle(
    model: DualEncoder | Splade | PathLike,
    embeddings: EmbeddingStore | SparseStore | PathLike,
    out_dir: PathLike,
    *,
    index: str | None = None,
    metrics: Mapping[str, float] | None = None,
    tokenizer: transformers.PreTrainedTokenizerBase | None = None,
    corpus: PathLike | None = None,
    index_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Write a serving bundle (module docstring) and return its directory.

    The bundle's kind is the store's: a dense embedding store is served by the query
    tower of a dual encoder and a ScaNN or exact searcher, a sparse store (SPLADE) by
    the SPLADE model's query side and an inverted index.

    Args:
      model: dense: a dual-encoder directory (``save_dual_encoder``: ``query/`` with its
        tokenizer and ``jaxir_encoder.json``) or a :class:`DualEncoder` object (then
        pass ``tokenizer``); only the query tower is exported. Sparse: a SPLADE model
        directory (``save_splade``), a training run holding one in ``model/``, or a
        :class:`~jaxir.models.splade.Splade` object (then pass ``tokenizer``); the whole
        model is copied (its query side needs the tokenizer, the head and, for a tied
        model, the one encoder).
      embeddings: the document store (directory, :class:`EmbeddingStore` or
        :class:`~jaxir.sparse_store.SparseStore`) encoded by this model; a dense store's
        pooling and normalization must match the model's spec, a sparse store's
        pooling, vocabulary, towers and inference-free setting the model's.
      out_dir: the bundle directory; must not exist or be empty.
      index: the searcher kind (``jaxir.index.base.SEARCHERS_FOR``): dense ``"scann"``
        (default; approximate, needs ``scann``) or ``"exact"`` (on device); sparse
        ``"inverted"`` (default).
      metrics: evaluation results to record (e.g. ``{"nDCG@10": 0.61}``).
      tokenizer: the model's tokenizer (default: the one saved with the model).
      corpus: optional ``corpus.jsonl[.gz]`` copied in, so search shows document text.
      index_options: keyword arguments of the searcher's build (``ScannSearcher.build``:
        ``num_leaves``, ``reorder``, ...; ``InvertedIndex``: ``block_size``, ``quantize``).
      overwrite: replace an existing bundle at ``out_dir``.

    Raises:
      BundleError: a store inconsistent with the model, bad ``index``, or a non-empty
        ``out_dir``.
    """
    if isinstance(embeddings, (EmbeddingStore, SparseStore)):
        store = embeddings
    else:
        try:
            store = load_store(embeddings)
        except (FileNotFoundError, ValueError) as e:
            raise BundleError(str(e)) from None
    representation = store.manifest.get("kind", DEFAULT_KIND)
    index = SEARCHERS_FOR[representation][0] if index is None else index
    try:
        check_searcher_kind(representation, index, str(store.path / "manifest.json"))
    except ValueError as e:
        raise BundleError(f"index={index!r}: {e}") from None
    if representation == "sparse":
        query_side = _sparse_query_side(model, tokenizer, store)
        docs = store.matrix
    else:
        query_side = _dense_query_side(model, tokenizer, store)
        docs = np.asarray(store.vectors)
    if corpus is not None and not pathlib.Path(corpus).is_file():
        raise BundleError(f"{corpus}: corpus file not found; pass a corpus.jsonl[.gz] file")
    out = pathlib.Path(out_dir)
    _prepare_out(out, overwrite)

    query_side.write(out / QUERY_ENCODER)
    build_searcher(index, docs, **(index_options or {})).save(out / INDEX)
    (out / DOC_IDS).write_text("".join(f"{i}\n" for i in store.ids), encoding="utf-8")
    if corpus is not None:
        name = "corpus.jsonl.gz" if str(corpus).endswith(".gz") else "corpus.jsonl"
        shutil.copyfile(corpus, out / name)

    manifest = {
        "format": BUNDLE_FORMAT,
        "bundle_version": BUNDLE_VERSION,
        "jaxir_version": jaxir.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "encoder": query_side.contract,
        "documents": dict(store.manifest["encoder"]),
        "kind": representation,
        "index": {"kind": index},
        "num_docs": len(store.ids),
        "dim": store.vocab_size if representation == "sparse" else store.dim,
        "metrics": {str(k): float(v) for k, v in (metrics or {}).items()},
        "files": _file_entries(out),
    }
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
    return out


# --------------------------------------------------------------------------- load


@dataclasses.dataclass
class Bundle:
    """A loaded serving bundle: query encoder + searcher + document ids.

    Attributes:
      path: the bundle directory.
      manifest: the parsed ``manifest.json``.
      encoder: the query encoder: a :class:`~jaxir.encode.TextEncoder` (dense; contract
        applied) or a :class:`~jaxir.sparse_encode.SparseEncoder` (sparse, role query).
      searcher: the loaded :class:`~jaxir.index.Searcher`.
      doc_ids: ``[N]`` ids; row ``i`` of the searcher is ``doc_ids[i]``.
    """

    path: pathlib.Path
    manifest: dict[str, Any]
    encoder: TextEncoder | SparseEncoder
    searcher: Searcher
    doc_ids: list[str]

    @property
    def kind(self) -> str:
        """The representation kind the bundle serves (``"dense"`` or ``"sparse"``; :mod:`jaxir.reps.kinds`)."""
        return self.manifest.get("kind", DEFAULT_KIND)

    @functools.cached_property
    def rows_per_doc(self) -> int:
        """The most index rows of one document (> 1 for a passage-split, MaxP index)."""
        return max_rows_per_doc(self.doc_ids)

    @property
    def metrics(self) -> dict[str, float]:
        """The evaluation results recorded at export (may be empty)."""
        return dict(self.manifest.get("metrics", {}))

    @property
    def corpus_path(self) -> pathlib.Path | None:
        """The bundled ``corpus.jsonl[.gz]``, or ``None`` when the bundle has none."""
        for entry in self.manifest["files"]:
            if entry["path"] in ("corpus.jsonl", "corpus.jsonl.gz"):
                return self.path / entry["path"]
        return None

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(doc_id, score)`` pairs per query text, best first, in input order."""
        if isinstance(queries, str):
            raise TypeError("queries must be a list of texts, not one string; wrap it in [...]")
        run = self.search_run(list(queries), k=k)
        return [list(run[str(i)].items()) for i in range(len(queries))]

    def search_run(
        self, queries: Mapping[str, Any] | Sequence[str], k: int = 10, *, batch_size: int = 1024
    ) -> Run:
        """``{query_id: {doc_id: score}}`` for ``{query_id: text | Query}`` (or a list: ids ``"0"``...)."""
        return retrieve(
            self.encoder,
            self.searcher,
            self.doc_ids,
            queries,
            k,
            batch_size=batch_size,
            rows_per_doc=self.rows_per_doc,
        )


def _read_manifest(root: pathlib.Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle directory; write one with `jaxir export`")
    if not path.is_file():
        raise BundleError(
            f"{path}: missing; {root} is not a complete jaxir bundle (an interrupted export "
            "leaves none); run `jaxir export` again"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BundleError(
            f"{path}:{e.lineno}: not valid JSON ({e.msg}); the manifest is corrupted, export "
            "the bundle again"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f'{path}: field "format" must be "{BUNDLE_FORMAT}"; this is not a jaxir bundle'
        )
    version = manifest.get("bundle_version")
    if version != BUNDLE_VERSION:
        made_by = manifest.get("jaxir_version", "an unknown version")
        raise BundleError(
            f'{path}: field "bundle_version" is {version!r} (written by jaxir {made_by}), but '
            f"jaxir {jaxir.__version__} reads bundle version {BUNDLE_VERSION}. Re-export the "
            f"model with this jaxir (`jaxir export MODEL --embeddings DIR --out BUNDLE`), or "
            f"load it with jaxir {made_by}"
        )
    for name in ("encoder", "index", "num_docs", "dim", "files"):
        if name not in manifest:
            raise BundleError(f'{path}: field "{name}" is missing; export the bundle again')
    try:
        read_kind(manifest, path, SEARCHERS_FOR)
    except ValueError as e:
        raise BundleError(str(e)) from None
    if manifest.get("jaxir_version") != jaxir.__version__:
        warnings.warn(
            f"{path}: bundle written by jaxir {manifest.get('jaxir_version')}, loading with "
            f"jaxir {jaxir.__version__}; the bundle format ({BUNDLE_VERSION}) is the same, so "
            "it loads, but scores may differ slightly",
            UserWarning,
            stacklevel=3,
        )
    return manifest


def _verify_files(root: pathlib.Path, manifest: dict[str, Any], checksums: bool) -> None:
    fix = "the bundle is incomplete or corrupted; copy it again or re-run `jaxir export`"
    for entry in manifest["files"]:
        file = root / entry["path"]
        if not file.is_file():
            raise BundleError(f"{file}: missing (listed in {root / MANIFEST}); {fix}")
        size = file.stat().st_size
        if size != entry["size"]:
            raise BundleError(
                f"{file}: {size} bytes, but {root / MANIFEST} records {entry['size']}; {fix}"
            )
        if checksums and file_sha256(file) != entry["sha256"]:
            raise BundleError(f"{file}: SHA-256 differs from the one in {root / MANIFEST}; {fix}")


def load_bundle(path: PathLike, *, verify: bool = True, dtype: str = "float32") -> Bundle:
    """Load a bundle written by :func:`export_bundle`, checking it first.

    Args:
      path: the bundle directory.
      verify: check every file's SHA-256 (sizes and presence are always checked).
        Hashing reads every byte once; turn off only for trusted local copies.
      dtype: compute dtype of the query encoder (``"float32"`` or ``"bfloat16"``).

    A sparse bundle's query encoder is its SPLADE model's query side
    (:func:`jaxir.load_splade` with ``role="query"``) and its searcher the inverted
    index, searched in exact mode (block-max safe pruning: the exhaustive top-k).

    Raises:
      BundleError: not a bundle, another bundle format version, a missing file, or a
        file whose size / SHA-256 differs from the manifest (the message names the
        file and the fix).

    Warns:
      UserWarning: the bundle was written by another jaxir version with the same
        bundle format version (it loads).
    """
    root = pathlib.Path(path)
    manifest = _read_manifest(root)
    _verify_files(root, manifest, verify)
    contract = manifest["encoder"]
    if manifest.get("kind", DEFAULT_KIND) == "sparse":
        encoder = load_splade(
            root / QUERY_ENCODER, dtype=dtype, max_length=contract["max_length"], role="query"
        )
    else:
        encoder = load_encoder(
            root / QUERY_ENCODER,
            pooling=contract["pooling"],
            normalize=contract["normalize"],
            max_length=contract["max_length"],
            prefix=contract["prefix"],
            dtype=dtype,
        )
    searcher = load_searcher(root / INDEX)
    text = (root / DOC_IDS).read_text(encoding="utf-8")
    doc_ids = text.split("\n")[:-1] if text else []
    if not len(doc_ids) == searcher.num_docs == manifest["num_docs"]:
        raise BundleError(
            f"{root / DOC_IDS}: {len(doc_ids)} ids, index has {searcher.num_docs} vectors, "
            f'manifest says "num_docs": {manifest["num_docs"]}; export the bundle again'
        )
    return Bundle(root, manifest, encoder, searcher, doc_ids)
