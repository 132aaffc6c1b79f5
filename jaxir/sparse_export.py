"""Learned-sparse vectors exported for Anserini/Pyserini impact search and for Seismic.

Both writers take what a sparse store holds: ``ids`` (``N`` document ids), a
``scipy.sparse`` matrix ``[N, V]`` of non-negative term weights, optionally the queries
as ``(query_ids, matrix [M, V])``, and (for Anserini, which works on term strings) the
vocabulary ``terms`` (``terms[i]`` is term id ``i``: WordPiece tokens such as ``"##ing"``
or ``"[CLS]"``). Each export directory ends with a manifest, written last, so an
interrupted export has none; the readers refuse such a directory, a missing file, or one
whose size or SHA-256 differs from the manifest.

**Anserini / Pyserini** (:func:`write_anserini`, :func:`read_anserini`)::

    OUT/corpus/docs-00000.jsonl  JsonVectorCollection: one document a line,
                                 {"id": "d1", "contents": "", "vector": {"cat": 125, "##s": 3}}
    OUT/queries.tsv              query_id<TAB>terms, each term repeated `impact` times
    OUT/terms.json               the vocabulary, a JSON list (term id -> string)
    OUT/jaxir_anserini.json      format version, quantization factor, counts, vocab size,
                                 empty documents/queries, every file's size and SHA-256

Impacts are integers: ``impact = round(weight * quantization)`` (round half to even,
computed in float64); an impact of 0 is dropped. Anserini needs integers:
``JsonVectorCollection`` reads each value with Jackson's ``asInt()`` (0.53 would be
indexed as 0) and builds a pseudo-document with the term repeated ``impact`` times;
``-impact`` scores a document by the sum of its term frequencies, each weighted by how
often the term occurs in the query. So the Anserini score is exactly
``q_impacts . d_impacts``, i.e. ``quantization**2 * (q . d)`` up to rounding, and ranks
as the dequantized vectors do. Choose ``quantization`` so impacts stay in the hundreds
(the default 100 is what Anserini's and Pyserini's SPLADE regressions use): every unit
of impact is one more term occurrence in the pseudo-document or the query line.

The documents live in ``corpus/`` because ``IndexCollection`` reads every file under
``-input``; keeping the manifest and the queries out of it stops them being indexed.
Index and search from ``OUT`` with (``bin/run.sh`` is how current Anserini releases run
a class; older ones ship ``target/appassembler/bin/IndexCollection`` and friends)::

    bin/run.sh io.anserini.index.IndexCollection -collection JsonVectorCollection \\
      -input corpus -index lucene-index -generator DefaultLuceneDocumentGenerator \\
      -threads 8 -impact -pretokenized
    bin/run.sh io.anserini.search.SearchCollection -index lucene-index \\
      -topics queries.tsv -topicReader TsvString -output run.trec \\
      -impact -pretokenized -hits 1000

or with Pyserini::

    python -m pyserini.index.lucene --collection JsonVectorCollection --input corpus \\
      --index lucene-index --generator DefaultLuceneDocumentGenerator --threads 8 \\
      --impact --pretokenized
    python -m pyserini.search.lucene --index lucene-index --topics queries.tsv \\
      --output run.trec --output-format trec --hits 1000 --impact

The query file is the pre-tokenized TSV form (what Anserini's own SPLADE regressions
ship, ``topics.*.splade-*.tsv.gz``): the whitespace analyzer splits it and Anserini's
bag-of-words query generator gives a term that occurs ``n`` times one clause with boost
``n`` (so a query has one Lucene clause per distinct term; Lucene's default limit is
1,024). ``TsvString`` (not ``TsvInt``) keeps query ids that are not integers.

Edge cases, decided:

* **Terms** are JSON-escaped in the corpus, so quotes and backslashes are safe. A term
  that carries a non-zero impact must be non-empty, have no whitespace (the
  ``-pretokenized`` whitespace analyzer would split it, in the pseudo-document
  Anserini builds and in the query line alike), be at most 255 characters (Lucene's
  whitespace tokenizer cuts longer tokens) and be unique in ``terms`` (Anserini sees
  strings, so two ids with one string would merge). Otherwise :class:`SparseExportError`
  names the term id and the first document or query that uses it. Terms nobody uses
  are not checked.
* **An all-zero document** (or one whose weights all round to 0) is written with an
  empty ``"vector"``, so the export stays row-aligned and reads back whole.
  ``IndexCollection`` skips it and counts it as an empty document (its
  ``DefaultLuceneDocumentGenerator`` raises ``EmptyDocumentException``); it could not
  be retrieved anyway (it scores 0 against every query). The manifest counts them.
* **An all-zero query** cannot be written: ``TsvString`` would fail on a line with no
  text. It is left out of ``queries.tsv``, listed in the manifest under
  ``"empty_queries"`` with its row, reported with a :class:`UserWarning`, and put back
  in its place by :func:`read_anserini`. Such a query retrieves nothing in any engine.
* **Negative, NaN or infinite weights** raise :class:`SparseExportError` naming the
  row, id and term id (learned-sparse weights ``log(1 + relu(x))`` are >= 0), and so
  does an impact beyond ``2**31 - 1`` (the largest term frequency Lucene stores).
* **Ids** must be unique and free of whitespace and control characters (they are TSV
  fields and TREC run columns; Anserini keeps one topic per query id). Give the
  passages of one document distinct ids (``"d1#0"``, ``"d1#1"``) and search with
  Pyserini's ``--max-passage`` for MaxP.

**Seismic** (:func:`write_seismic`, :func:`read_seismic`), the inputs
``pyseismic-lsr`` (``import seismic``) and the Seismic Rust tools build from::

    OUT/documents.bin      Seismic's binary ("inner") format, little endian:
                           u32 n_vectors, then per vector: u32 nnz, nnz u32 term ids
                           (strictly increasing), nnz f32 values
    OUT/doc_ids.npy        [N] unicode array: row i of documents.bin is doc_ids[i]
    OUT/documents.jsonl    {"id": "d1", "vector": {"17": 0.53, "2003": 1.25}}: the
                           JSONL form, keyed by the term id written as a decimal string
    OUT/queries.bin, OUT/queries_ids.npy, OUT/queries.jsonl   the same for the queries
    OUT/terms.json         only when ``terms`` is given
    OUT/jaxir_seismic.json format version, counts, vocab size, component type, files

The file names and the binary layout are those of Seismic's own
``scripts/convert_json_to_inner_format.py``, and the layout is the one
``vectorium::read_seismic_format`` reads (checked against the Seismic sources, and by
the tests, which build indexes with ``pyseismic-lsr`` from both files and query them).
JSONL components are term ids, not term strings: ``SeismicIndex`` keeps components as
NumPy fixed-width strings (``get_seismic_string()``, ``"U100"``), where ids can never
collide or be truncated, and they match ``SeismicDataset.add_documents_by_id``, which
also addresses component ``42`` as ``"42"``. Use them as::

    import numpy as np, seismic
    index = seismic.SeismicIndex.build("OUT/documents.jsonl")     # ids are doc ids
    results = index.batch_search(query_ids, components, values, k=10,
                                 query_cut=20, heap_factor=0.7)   # components: "U100"
    raw = seismic.SeismicIndexRaw.build("OUT/documents.bin")       # rows, not ids
    rows = raw.batch_search("OUT/queries.bin", 10, 20, 0.7, 0, True)
    doc_ids = np.load("OUT/doc_ids.npy")                           # row -> doc id

    ./target/release/build_inverted_index -i OUT/documents.bin -o OUT/index \\
        --n-postings 4000 --summary-energy 0.4 --centroid-fraction 0.1 \\
        --clustering-algorithm random-kmeans-inverted-index-approx
    ./target/release/perf_inverted_index -i OUT/index.index.seismic \\
        -q OUT/queries.bin -o results.tsv --query-cut 10 --heap-factor 0.7

``SeismicIndex``/``SeismicIndexRaw`` store term ids as u16: a vocabulary of more than
65,536 terms needs ``SeismicIndexLV``/``SeismicIndexRawLV`` (``--component-type u32``);
the manifest's ``"component_type"`` says which. Seismic stores values as f16 by
default, so its scores differ slightly from ``X @ q`` (about 3 significant digits
agree), which can swap near-ties. All-zero documents
and queries are written as vectors with no components (Seismic accepts both; such a
query returns no results), and ``batch_search`` may return queries in any order:
match its results by query id. Values are written exactly (float32).

Example:
    >>> import json, tempfile, pathlib
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> terms = ["[CLS]", "cat", "##s", "purr"]
    >>> docs = sp.csr_matrix(np.array([[0, 1.25, 0.031, 0], [0, 0, 0, 0.5]], np.float32))
    >>> queries = (["q1"], sp.csr_matrix(np.array([[0, 0.02, 0, 0.01]], np.float32)))
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> manifest = write_anserini(out / "anserini", ["d1", "d2"], docs, terms, queries=queries)
    >>> print((out / "anserini/corpus/docs-00000.jsonl").read_text(), end="")
    {"id": "d1", "contents": "", "vector": {"cat": 125, "##s": 3}}
    {"id": "d2", "contents": "", "vector": {"purr": 50}}
    >>> (out / "anserini/queries.tsv").read_text().split("\\t")
    ['q1', 'cat cat purr\\n']
    >>> json.loads(manifest.read_text())["quantization"]
    100.0
    >>> ids, docs_back, qids, queries_back = read_anserini(out / "anserini")
    >>> ids, qids, docs_back.toarray()[0]
    (['d1', 'd2'], ['q1'], array([0.  , 1.25, 0.03, 0.  ], dtype=float32))
    >>> _ = write_seismic(out / "seismic", ["d1", "d2"], docs, queries=queries)
    >>> ids, docs_back, qids, queries_back = read_seismic(out / "seismic")
    >>> bool((docs_back != docs).nnz == 0), qids
    (True, ['q1'])
    >>> print((out / "seismic/documents.jsonl").read_text().splitlines()[0])
    {"id": "d1", "vector": {"1": 1.25, "2": 0.031}}
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import pathlib
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

import jaxir
from jaxir.data.errors import DataError
from jaxir.index.base import file_sha256

__all__ = [
    "ANSERINI_FORMAT",
    "ANSERINI_MANIFEST",
    "FORMAT_VERSION",
    "SEISMIC_FORMAT",
    "SEISMIC_MANIFEST",
    "SparseExportError",
    "read_anserini",
    "read_seismic",
    "write_anserini",
    "write_seismic",
]

FORMAT_VERSION = 1
ANSERINI_FORMAT = "jaxir-anserini"
SEISMIC_FORMAT = "jaxir-seismic"
ANSERINI_MANIFEST = "jaxir_anserini.json"
SEISMIC_MANIFEST = "jaxir_seismic.json"
TERMS = "terms.json"
CORPUS = "corpus"
QUERIES_TSV = "queries.tsv"
#: JsonVectorCollection's (unused) text field, written before "vector".
CONTENTS = '"contents": "", '
INT32_MAX = 2**31 - 1
#: Lucene's WhitespaceTokenizer splits tokens longer than this many characters.
MAX_TERM_CHARS = 255
#: Largest vocabulary whose term ids fit Seismic's default u16 components.
U16_VOCAB = 2**16
#: Rows per block when writing files (bounds the temporary arrays).
_BLOCK_ROWS = 1 << 13

PathLike = str | os.PathLike[str]
Queries = tuple[Sequence[str], Any]
"""``(query_ids [M], scipy.sparse matrix [M, V])``."""


class SparseExportError(ValueError):
    """Vectors, ids or terms that cannot be exported; the message names the row/term and the fix."""


# --------------------------------------------------------------------------- inputs


def _check_ids(ids: Sequence[str], what: str) -> list[str]:
    """``ids`` as a list, or raise if one is not a unique, whitespace-free, printable string."""
    if isinstance(ids, str):
        raise SparseExportError(f"{what} ids: a list of strings is needed, not one string")
    ids = list(ids)
    seen: dict[str, int] = {}
    for row, value in enumerate(ids):
        if not isinstance(value, str):
            raise SparseExportError(
                f"{what} ids[{row}] is {value!r} ({type(value).__name__}); ids must be strings"
            )
        # isprintable() is False for every whitespace character but " " and for controls.
        if not value or not value.isprintable() or " " in value:
            raise SparseExportError(
                f"{what} ids[{row}] = {value!r} is empty or contains whitespace or control "
                "characters, which TSV query files, id lists and TREC runs cannot hold; use "
                "ids without spaces"
            )
        if value in seen:
            raise SparseExportError(
                f"{what} ids[{row}] = {value!r} repeats ids[{seen[value]}]; every row needs its "
                "own id (name the passages of one document 'doc#0', 'doc#1', ... and use "
                "Pyserini's --max-passage for MaxP)"
            )
        seen[value] = row
    return ids


def _check_terms(terms: Sequence[str]) -> list[str]:
    if isinstance(terms, str):
        raise SparseExportError("terms: a list of strings (term id -> token) is needed")
    terms = list(terms)
    for i, term in enumerate(terms):
        if not isinstance(term, str):
            raise SparseExportError(
                f"terms[{i}] is {term!r} ({type(term).__name__}); every term id needs a string "
                "(for a vocabulary padded beyond the tokenizer, name the extra ids, e.g. "
                f"'[unused{i}]')"
            )
    return terms


def _entry(csr: sp.csr_matrix, pos: int, ids: Sequence[str], name: str) -> str:
    """``"matrix[row 3 (id 'd3'), term 17]"`` for the ``pos``-th stored value."""
    row = int(np.searchsorted(csr.indptr, pos, side="right") - 1)
    return f"{name}[row {row} (id {ids[row]!r}), term {int(csr.indices[pos])}]"


def _canonical_csr(
    matrix: Any,
    name: str,
    ids: Sequence[str],
    vocab_size: int | None,
    dtype: type[np.floating] | None,
) -> sp.csr_matrix:
    """A validated copy: CSR, sorted unique indices, explicit zeros dropped, float values.

    ``dtype=None`` keeps float64 input as float64 (other dtypes become float32).
    """
    if not sp.issparse(matrix):
        raise SparseExportError(
            f"{name}: expected a scipy.sparse matrix [N, V], got {type(matrix).__name__}; wrap "
            "a dense array with scipy.sparse.csr_matrix(x)"
        )
    if matrix.ndim != 2:
        raise SparseExportError(f"{name}: expected 2 dimensions [N, V], got shape {matrix.shape}")
    num_rows, num_cols = matrix.shape
    if num_rows != len(ids):
        raise SparseExportError(
            f"{name} has {num_rows} rows but {len(ids)} ids were given; pass one id per row"
        )
    if vocab_size is not None and num_cols != vocab_size:
        raise SparseExportError(
            f"{name} has {num_cols} columns but the vocabulary has {vocab_size} terms; pass the "
            "terms of the model that made the vectors"
        )
    if matrix.dtype.kind not in "fiu":
        raise SparseExportError(f"{name}: dtype {matrix.dtype}; expected float32 term weights")
    if dtype is None:
        dtype = np.float64 if matrix.dtype == np.float64 else np.float32
    csr = sp.csr_matrix(matrix, dtype=dtype, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    bad = np.flatnonzero(~np.isfinite(csr.data))
    if bad.size:
        raise SparseExportError(
            f"{_entry(csr, int(bad[0]), ids, name)} is {csr.data[bad[0]]}; weights must be "
            f"finite ({bad.size} values are not); check the encoder's output"
        )
    bad = np.flatnonzero(csr.data < 0)
    if bad.size:
        raise SparseExportError(
            f"{_entry(csr, int(bad[0]), ids, name)} is {csr.data[bad[0]]:g}; learned-sparse "
            f"weights must be >= 0 ({bad.size} are negative): SPLADE's log(1 + relu(x)) never "
            "is. Clip them (matrix.data = np.maximum(matrix.data, 0)) or check the encoder"
        )
    return csr


def _check_queries(
    queries: Queries | None, vocab_size: int, dtype: type[np.floating] | None
) -> tuple[list[str], sp.csr_matrix] | None:
    if queries is None:
        return None
    if not isinstance(queries, tuple | list) or len(queries) != 2:
        raise SparseExportError(
            "queries: expected a pair (query_ids, scipy.sparse matrix [M, V]), got "
            f"{type(queries).__name__}"
        )
    qids = _check_ids(queries[0], "query")
    return qids, _canonical_csr(queries[1], "queries", qids, vocab_size, dtype)


# --------------------------------------------------------------------------- directories


def _prepare_out(out: pathlib.Path, manifest_name: str, fmt: str, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SparseExportError(f"{out}: exists and is not a directory; choose another --out")
    if out.exists() and any(out.iterdir()):
        ours = _format_of(out / manifest_name) == fmt
        if not (overwrite and ours):
            raise SparseExportError(
                f"{out}: exists and is not empty; choose a new output directory"
                + (" or pass overwrite=True (--overwrite) to replace this export" if ours else "")
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _format_of(path: pathlib.Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def _finish(out: pathlib.Path, manifest_name: str, manifest: dict[str, Any]) -> pathlib.Path:
    """Add every file's size and SHA-256, then write the manifest atomically (last)."""
    files = sorted(p for p in out.rglob("*") if p.is_file())
    manifest["files"] = [
        {"path": p.relative_to(out).as_posix(), "size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in files
    ]
    path = out / manifest_name
    tmp = out / f".{manifest_name}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _header(fmt: str) -> dict[str, Any]:
    return {
        "format": fmt,
        "format_version": FORMAT_VERSION,
        "jaxir_version": jaxir.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _open_export(
    path: PathLike, manifest_name: str, fmt: str, verify: bool
) -> tuple[pathlib.Path, dict[str, Any]]:
    """``(root, manifest)`` of an export directory (or its manifest file), checked."""
    root = pathlib.Path(path)
    if root.name == manifest_name and root.is_file():
        root = root.parent
    where = root / manifest_name
    if not root.is_dir():
        raise DataError(root, "no such export directory; write one with jaxir export")
    if not where.is_file():
        raise DataError(
            where,
            "missing; this is not a complete export (an interrupted export leaves none); "
            "export again",
        )
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(where, f"not valid JSON ({e.msg}); export again", line=e.lineno) from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise DataError(where, f'must be "{fmt}"; this is not that kind of export', field="format")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            where,
            f"is {manifest.get('format_version')!r} (written by jaxir "
            f"{manifest.get('jaxir_version')}), but jaxir {jaxir.__version__} reads version "
            f"{FORMAT_VERSION}; export again with this jaxir",
            field="format_version",
        )
    fix = "the export is incomplete or corrupted; copy it again or export again"
    for entry in manifest.get("files", []):
        file = root / entry["path"]
        if not file.is_file():
            raise DataError(file, f"missing (listed in {where}); {fix}")
        if file.stat().st_size != entry["size"]:
            raise DataError(
                file, f"{file.stat().st_size} bytes, but {where} records {entry['size']}; {fix}"
            )
        if verify and file_sha256(file) != entry["sha256"]:
            raise DataError(file, f"SHA-256 differs from the one in {where}; {fix}")
    return root, manifest


def _write_terms(path: pathlib.Path, terms: Sequence[str]) -> None:
    path.write_text(json.dumps(list(terms), ensure_ascii=False) + "\n", encoding="utf-8")


def _read_terms(path: pathlib.Path, vocab_size: int) -> list[str]:
    try:
        terms = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e.msg})", line=e.lineno) from None
    if not isinstance(terms, list) or len(terms) != vocab_size:
        raise DataError(path, f"expected a JSON list of {vocab_size} strings (the vocabulary)")
    return terms


def _build_csr(
    lengths: np.ndarray, cols: np.ndarray, values: np.ndarray, vocab_size: int
) -> sp.csr_matrix:
    """float32 CSR ``[len(lengths), vocab_size]`` with sorted term ids from row-major parts."""
    indptr = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    csr = sp.csr_matrix(
        (values.astype(np.float32), cols.astype(np.int64), indptr), shape=(len(lengths), vocab_size)
    )
    csr.sort_indices()
    return csr


def _write_json_vectors(
    path: pathlib.Path, ids: Sequence[str], csr: sp.csr_matrix, keys: np.ndarray, head: str
) -> None:
    """Write ``{"id": <id>, <head>"vector": {<key>: <value>, ...}}`` for each row of ``csr``.

    ``keys[t]`` is term ``t``'s JSON key, quoted. A value is NumPy's ``str`` of the int or
    float32, the shortest text that reads back as the same number. The text is built with
    vectorized NumPy string operations a block of rows at a time (a ``json.dumps`` per row
    is several times slower); for integers it is exactly what
    ``json.dumps(doc, ensure_ascii=False)`` writes.
    """
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for start in range(0, csr.shape[0], _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, csr.shape[0])
            a, b = csr.indptr[start], csr.indptr[stop]
            items = np.char.add(
                np.char.add(keys[csr.indices[a:b]], ": "), csr.data[a:b].astype(np.str_)
            ).tolist()
            bounds = (csr.indptr[start : stop + 1] - a).tolist()
            f.writelines(
                f'{{"id": {json.dumps(ids[start + r], ensure_ascii=False)}, {head}"vector": {{'
                + ", ".join(items[bounds[r] : bounds[r + 1]])
                + "}}\n"
                for r in range(stop - start)
            )


def _read_json_vectors(
    path: pathlib.Path,
    decode: Callable[[dict[str, Any]], list[int]],
    vocab_size: int,
    *,
    integers: bool,
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, lengths [R], term ids [nnz], values [nnz])`` of a file of vector lines.

    ``decode(vector)`` maps the keys of one ``"vector"`` object to term ids (raising
    ``ValueError`` naming a bad key); values must be integers >= 1 (``integers``) or
    finite numbers. Errors name the file, line and field.
    """
    ids: list[str] = []
    lengths: list[int] = []
    cols: list[int] = []
    values: list[Any] = []
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(path, f"not valid JSON ({e.msg})", line=line) from None
            doc_id = doc.get("id") if isinstance(doc, dict) else None
            if not isinstance(doc_id, str) or not doc_id:
                raise DataError(path, "missing or not a string", line=line, field="id")
            vector = doc.get("vector")
            if not isinstance(vector, dict):
                raise DataError(path, "missing or not a JSON object", line=line, field="vector")
            try:
                cols.extend(decode(vector))
            except ValueError as e:
                raise DataError(path, str(e), line=line, field="vector") from None
            values.extend(vector.values())
            ids.append(doc_id)
            lengths.append(len(vector))
    ends = np.cumsum(lengths, dtype=np.int64)

    def fail(pos: int, what: str) -> DataError:
        row = int(np.searchsorted(ends, pos, side="right"))
        return DataError(path, what, line=row + 1, field="vector")

    try:
        data = np.array(values, np.float64)
    except (TypeError, ValueError):
        pos = next(i for i, v in enumerate(values) if not isinstance(v, int | float))
        raise fail(pos, f"value {values[pos]!r} is not a number") from None
    good = (data >= 1) & (data == np.rint(data)) if integers else np.isfinite(data)
    if not good.all():
        pos = int(np.flatnonzero(~good)[0])
        want = "an integer impact >= 1" if integers else "a finite number"
        raise fail(pos, f"value {values[pos]!r}; expected {want}")
    term_ids = np.array(cols, np.int64)
    bad = np.flatnonzero((term_ids < 0) | (term_ids >= vocab_size))
    if bad.size:
        raise fail(
            int(bad[0]), f"term id {term_ids[bad[0]]} is not below the vocab size {vocab_size}"
        )
    return ids, np.array(lengths, np.int64), term_ids, data


# --------------------------------------------------------------------------- Anserini


def _quantize(
    csr: sp.csr_matrix, quantization: float, ids: Sequence[str], name: str
) -> sp.csr_matrix:
    """Integer impacts ``round_half_even(weight * quantization)``, zeros dropped (int64 CSR)."""
    impacts = np.rint(csr.data.astype(np.float64) * quantization)
    too_big = np.flatnonzero(impacts > INT32_MAX)
    if too_big.size:
        pos = int(too_big[0])
        raise SparseExportError(
            f"{_entry(csr, pos, ids, name)} = {csr.data[pos]:g} quantizes to {impacts[pos]:.0f}, "
            f"beyond 2**31 - 1, the largest term frequency Lucene stores; lower quantization "
            f"(now {quantization:g}) or check the encoder"
        )
    out = sp.csr_matrix(
        (impacts.astype(np.int64), csr.indices.copy(), csr.indptr.copy()), shape=csr.shape
    )
    out.eliminate_zeros()
    return out


def _first_use(parts: Sequence[tuple[str, sp.csr_matrix, Sequence[str]]], term_id: int) -> str:
    for what, impacts, ids in parts:
        hits = np.flatnonzero(impacts.indices == term_id)
        if hits.size:
            row = int(np.searchsorted(impacts.indptr, hits[0], side="right") - 1)
            return f"{what} {ids[row]!r} (row {row})"
    raise AssertionError(f"term {term_id} is not used")  # pragma: no cover


def _check_used_terms(
    terms: Sequence[str], parts: Sequence[tuple[str, sp.csr_matrix, Sequence[str]]]
) -> None:
    """Raise unless every term with a non-zero impact survives Anserini's whitespace analyzer."""
    used = np.unique(np.concatenate([impacts.indices for _, impacts, _ in parts]))
    where_is: dict[str, list[int]] = collections.defaultdict(list)
    for i, term in enumerate(terms):
        where_is[term].append(i)
    for t in used.tolist():
        term = terms[t]
        if not term:
            problem, fix = "is empty", "give the id a name"
        elif any(c.isspace() for c in term):
            problem = "contains whitespace"
            fix = (
                "Anserini's -pretokenized whitespace analyzer would split it into several "
                "terms, both in the pseudo-document JsonVectorCollection builds and in the "
                "queries.tsv line; map it to a string without whitespace (e.g. replace ' ' by "
                "'\u2581') in terms, or zero its weights"
            )
        elif len(term) > MAX_TERM_CHARS:
            problem = f"is {len(term)} characters long"
            fix = f"Lucene's whitespace tokenizer cuts tokens after {MAX_TERM_CHARS} characters"
        elif len(where_is[term]) > 1:
            other = next(i for i in where_is[term] if i != t)
            problem = f"is also terms[{other}]"
            fix = (
                "Anserini matches terms by string, so the two ids would merge into one Lucene "
                "term; give every term id its own string"
            )
        else:
            continue
        raise SparseExportError(
            f"terms[{t}] = {term!r} {problem}, and it has a non-zero impact in "
            f"{_first_use(parts, t)}: {fix}"
        )


def write_anserini(
    out_dir: PathLike,
    ids: Sequence[str],
    matrix: Any,
    terms: Sequence[str],
    *,
    queries: Queries | None = None,
    quantization: float = 100.0,
    shard_size: int = 100_000,
    overwrite: bool = False,
) -> pathlib.Path:
    """Write an Anserini ``JsonVectorCollection`` (+ queries) and return its manifest path.

    Layout, the Anserini/Pyserini commands that read it and the edge-case rules are in
    the module docstring.

    Args:
      out_dir: the export directory; must not exist or be empty.
      ids: ``[N]`` document ids, unique, without whitespace.
      matrix: ``scipy.sparse`` ``[N, V]`` non-negative term weights (float32).
      terms: ``[V]`` the vocabulary; ``terms[i]`` is the string of term id ``i``.
      queries: ``(query_ids [M], matrix [M, V])`` to write as ``queries.tsv``.
      quantization: impacts are ``round(weight * quantization)``; recorded in the
        manifest so :func:`read_anserini` divides it back out.
      shard_size: documents per ``corpus/docs-NNNNN.jsonl`` file (``IndexCollection
        -threads`` indexes files in parallel).
      overwrite: replace an earlier Anserini export at ``out_dir``.

    Returns:
      ``out_dir/jaxir_anserini.json``.

    Raises:
      SparseExportError: bad ids, shapes, negative/non-finite weights, impacts beyond
        ``2**31 - 1``, or a used term that Anserini cannot hold (the message names it).

    Warns:
      UserWarning: queries with no impact >= 1 were left out of ``queries.tsv``.
    """
    quantization = float(quantization)
    if not np.isfinite(quantization) or quantization <= 0:
        raise SparseExportError(
            f"quantization={quantization!r}: must be a finite number > 0 (impacts are "
            "round(weight * quantization); 100 is the usual choice)"
        )
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise SparseExportError(f"shard_size={shard_size!r}: must be an integer >= 1")
    ids = _check_ids(ids, "document")
    if not ids:
        raise SparseExportError("no documents: ids and matrix are empty")
    terms = _check_terms(terms)
    docs = _canonical_csr(matrix, "matrix", ids, len(terms), None)
    doc_impacts = _quantize(docs, quantization, ids, "matrix")
    parts = [("document", doc_impacts, ids)]
    checked = _check_queries(queries, len(terms), None)
    if checked is not None:
        qids, qmat = checked
        query_impacts = _quantize(qmat, quantization, qids, "queries")
        parts.append(("query", query_impacts, qids))
    _check_used_terms(terms, parts)

    out = pathlib.Path(out_dir)
    _prepare_out(out, ANSERINI_MANIFEST, ANSERINI_FORMAT, overwrite)
    # Keys only for the terms documents use (at most 255 characters each, checked above), so
    # one very long unused token cannot widen the fixed-width string arrays of every block.
    used = np.zeros(len(terms), bool)
    used[doc_impacts.indices] = True
    keys = np.array(
        [json.dumps(t, ensure_ascii=False) if u else "" for t, u in zip(terms, used.tolist())]
    )

    (out / CORPUS).mkdir()
    shards = []
    for number, start in enumerate(range(0, len(ids), shard_size)):
        stop = min(start + shard_size, len(ids))
        rel = f"{CORPUS}/docs-{number:05d}.jsonl"
        _write_json_vectors(out / rel, ids[start:stop], doc_impacts[start:stop], keys, CONTENTS)
        shards.append({"path": rel, "num_docs": stop - start})
    _write_terms(out / TERMS, terms)

    empty_queries: list[dict[str, Any]] = []
    if checked is not None:
        with open(out / QUERIES_TSV, "w", encoding="utf-8", newline="\n") as f:
            indptr, indices, data = query_impacts.indptr, query_impacts.indices, query_impacts.data
            for row, qid in enumerate(qids):
                a, b = indptr[row], indptr[row + 1]
                if a == b:
                    empty_queries.append({"row": row, "id": qid})
                    continue
                text = " ".join(
                    " ".join([terms[t]] * n)
                    for t, n in zip(indices[a:b].tolist(), data[a:b].tolist())
                )
                f.write(f"{qid}\t{text}\n")
        if empty_queries:
            shown = ", ".join(repr(q["id"]) for q in empty_queries[:5])
            warnings.warn(
                f"{out / QUERIES_TSV}: {len(empty_queries)} of {len(qids)} queries have no term "
                f"with impact >= 1 (weights below {0.5 / quantization:g} round to 0) and are left "
                f"out, as Anserini cannot read a query line without terms: {shown}"
                f"{', ...' if len(empty_queries) > 5 else ''}; they are listed under "
                f'"empty_queries" in {ANSERINI_MANIFEST}',
                UserWarning,
                stacklevel=2,
            )

    manifest = _header(ANSERINI_FORMAT) | {
        "quantization": quantization,
        "rounding": "impact = round_half_even(weight * quantization); impacts of 0 are dropped",
        "vocab_size": len(terms),
        "num_docs": len(ids),
        "nnz": int(doc_impacts.nnz),
        "max_impact": int(doc_impacts.data.max(initial=0)),
        "empty_docs": int(np.count_nonzero(np.diff(doc_impacts.indptr) == 0)),
        "corpus": shards,
        "terms": TERMS,
        "queries": None,
        "commands": {
            "cwd": "this directory",
            "index": (
                "bin/run.sh io.anserini.index.IndexCollection -collection JsonVectorCollection "
                f"-input {CORPUS} -index lucene-index -generator DefaultLuceneDocumentGenerator "
                "-threads 8 -impact -pretokenized"
            ),
        },
    }
    if checked is not None:
        manifest["queries"] = {
            "path": QUERIES_TSV,
            "num_queries": len(qids),
            "num_written": len(qids) - len(empty_queries),
            "nnz": int(query_impacts.nnz),
            "max_impact": int(query_impacts.data.max(initial=0)),
            "empty_queries": empty_queries,
        }
        manifest["commands"]["search"] = (
            "bin/run.sh io.anserini.search.SearchCollection -index lucene-index -topics "
            f"{QUERIES_TSV} -topicReader TsvString -output run.trec -impact -pretokenized "
            "-hits 1000"
        )
    return _finish(out, ANSERINI_MANIFEST, manifest)


def _term_decoder(terms: Sequence[str]) -> Callable[[dict[str, Any]], list[int]]:
    """``decode(vector)``: the term ids of a vector's keys (strings held by several ids fail)."""
    counts = collections.Counter(terms)
    lookup = {term: i for i, term in enumerate(terms) if counts[term] == 1}

    def decode(vector: dict[str, Any]) -> list[int]:
        try:
            return [lookup[term] for term in vector]
        except KeyError as e:
            raise ValueError(
                f"term {e.args[0]!r} is not (once) in {TERMS}; the files do not belong "
                "together, export again"
            ) from None

    return decode


def _read_tsv_queries(
    path: pathlib.Path, decode: Callable[[dict[str, Any]], list[int]]
) -> Iterator[tuple[str, list[int], list[int]]]:
    """``(query id, term ids, impacts)`` per line: an impact is how often its term repeats."""
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            qid, tab, body = text.rstrip("\n").partition("\t")
            if not tab or not qid or not body.strip():
                raise DataError(
                    path, "expected 'query_id<TAB>term term ...' with at least one term", line=line
                )
            counts = collections.Counter(body.split())
            try:
                cols = decode(counts)
            except ValueError as e:
                raise DataError(path, str(e), line=line, field="terms") from None
            yield qid, cols, list(counts.values())


def read_anserini(
    path: PathLike, *, verify: bool = True
) -> tuple[list[str], sp.csr_matrix, list[str], sp.csr_matrix]:
    """Read back what :func:`write_anserini` wrote, dequantized.

    Args:
      path: the export directory (or its ``jaxir_anserini.json``).
      verify: check every file's SHA-256 against the manifest (sizes always are).

    Returns:
      ``(ids [N], matrix [N, V], query_ids [M], queries [M, V])``: float32 CSR matrices
      of ``impact / quantization`` (each within ``0.5 / quantization`` of the weight
      written); all-zero queries are back in their rows. Without queries, ``M = 0``.

    Raises:
      DataError: not an export, another format version, a missing or modified file, or
        a line that does not parse (file, line and field named).
    """
    root, manifest = _open_export(path, ANSERINI_MANIFEST, ANSERINI_FORMAT, verify)
    vocab_size = int(manifest["vocab_size"])
    scale = float(manifest["quantization"])
    decode = _term_decoder(_read_terms(root / manifest["terms"], vocab_size))
    ids: list[str] = []
    parts = []
    for shard in manifest["corpus"]:
        path = root / shard["path"]
        shard_ids, *arrays = _read_json_vectors(path, decode, vocab_size, integers=True)
        if len(shard_ids) != shard["num_docs"]:
            raise DataError(
                path,
                f"{len(shard_ids)} documents, but the manifest records {shard['num_docs']}; "
                "export again",
            )
        ids += shard_ids
        parts.append(arrays)
    lengths, cols, impacts = (np.concatenate(column) for column in zip(*parts))
    docs = _build_csr(lengths, cols, impacts / scale, vocab_size)

    qids: list[str] = []
    qlengths: list[int] = []
    qcols: list[int] = []
    qimpacts: list[int] = []
    info = manifest.get("queries")
    if info:
        path = root / info["path"]
        empty = {int(q["row"]): q["id"] for q in info["empty_queries"]}
        parsed = _read_tsv_queries(path, decode)
        for row in range(int(info["num_queries"])):
            if row in empty:  # left out of the TSV: put back, with no terms, in its row
                qid, cols_q, impacts_q = empty[row], [], []
            else:
                written = next(parsed, None)
                if written is None:
                    raise DataError(
                        path, f"fewer than the {info['num_written']} queries the manifest records"
                    )
                qid, cols_q, impacts_q = written
            qids.append(qid)
            qlengths.append(len(cols_q))
            qcols += cols_q
            qimpacts += impacts_q
        if next(parsed, None) is not None:
            raise DataError(
                path, f"more than the {info['num_written']} queries the manifest records"
            )
    queries = _build_csr(
        np.array(qlengths, np.int64),
        np.array(qcols, np.int64),
        np.array(qimpacts, np.float64) / scale,
        vocab_size,
    )
    return ids, docs, qids, queries


# --------------------------------------------------------------------------- Seismic


def _bin_positions(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Word offsets, in a block of vectors of the binary format, of each count/component/value.

    A vector with ``n`` components takes ``1 + 2n`` u32 words: its count, its ``n`` term
    ids, its ``n`` values. Returns ``(count_pos [R], component_pos [nnz], value_pos [nnz])``.
    """
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    count_pos = np.arange(len(lengths)) + 2 * indptr[:-1]
    row = np.repeat(np.arange(len(lengths)), lengths)
    component_pos = count_pos[row] + 1 + (np.arange(indptr[-1]) - indptr[row])
    return count_pos, component_pos, component_pos + lengths[row]


def _write_bin(path: pathlib.Path, csr: sp.csr_matrix) -> None:
    """Seismic's binary format: u32 count, then per vector u32 nnz, u32 ids, f32 values."""
    with open(path, "wb") as f:
        f.write(np.array([csr.shape[0]], "<u4").tobytes())
        for start in range(0, csr.shape[0], _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, csr.shape[0])
            a, b = csr.indptr[start], csr.indptr[stop]
            lengths = np.diff(csr.indptr[start : stop + 1])
            count_pos, component_pos, value_pos = _bin_positions(lengths)
            block = np.empty(len(lengths) + 2 * (b - a), "<u4")
            block[count_pos] = lengths
            block[component_pos] = csr.indices[a:b]
            block[value_pos] = csr.data[a:b].astype("<f4").view("<u4")
            f.write(block.tobytes())


def _read_bin(path: pathlib.Path, vocab_size: int, num_rows: int) -> sp.csr_matrix:
    """Parse :func:`_write_bin`'s format, checking every length, id and the file's end."""
    size = path.stat().st_size
    if size < 4 or size % 4:
        raise DataError(path, f"{size} bytes; the Seismic binary format is whole u32/f32 words")
    words = np.memmap(path, dtype="<u4", mode="r")
    count = int(words[0])
    if count != num_rows:
        raise DataError(path, f"holds {count} vectors, but there are {num_rows} ids")
    lengths = np.empty(count, np.int64)
    pos = 1
    for row in range(count):
        if pos >= words.size:
            raise DataError(path, f"ends inside vector {row} of {count}; export again")
        lengths[row] = words[pos]
        pos += 1 + 2 * int(lengths[row])
    if pos != words.size:
        raise DataError(
            path, f"{'ends inside the last vector' if pos > words.size else 'trailing bytes'}"
        )
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    _, component_pos, value_pos = _bin_positions(lengths)
    indices = np.asarray(words[component_pos + 1], np.int64)
    values = np.asarray(words[value_pos + 1]).view("<f4").astype(np.float32)
    row_of = np.repeat(np.arange(count), lengths)
    bad = np.flatnonzero(indices >= vocab_size)
    if bad.size:
        raise DataError(
            path,
            f"vector {row_of[bad[0]]} has term id {indices[bad[0]]} >= vocab size {vocab_size}",
        )
    same_row = row_of[1:] == row_of[:-1]
    bad = np.flatnonzero(same_row & (indices[1:] <= indices[:-1]))
    if bad.size:
        raise DataError(
            path,
            f"vector {row_of[bad[0] + 1]}: term ids are not strictly increasing (Seismic "
            "requires sorted components)",
        )
    return sp.csr_matrix((values, indices, indptr), shape=(count, vocab_size))


def _seismic_decode(vector: dict[str, Any]) -> list[int]:
    """Term ids of a Seismic JSONL vector: its keys are the ids as decimal strings."""
    try:
        return [int(key) for key in vector]
    except ValueError:
        bad = next((k for k in vector if not k.strip().isdecimal()), "?")
        raise ValueError(f"component {bad!r} is not a term id (a decimal string)") from None


def _seismic_keys(vocab_size: int) -> np.ndarray:
    return np.char.add(np.char.add('"', np.arange(vocab_size).astype(np.str_)), '"')


def _save_ids(path: pathlib.Path, ids: Sequence[str]) -> None:
    np.save(path, np.array(ids, dtype=str), allow_pickle=False)


def _load_ids(path: pathlib.Path) -> list[str]:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise DataError(path, f"not a unicode id array ({e})") from None
    if array.ndim != 1 or array.dtype.kind != "U":
        raise DataError(
            path, f"expected a 1-d unicode array of ids, got {array.dtype} {array.shape}"
        )
    return array.tolist()


def write_seismic(
    out_dir: PathLike,
    ids: Sequence[str],
    matrix: Any,
    *,
    queries: Queries | None = None,
    terms: Sequence[str] | None = None,
    jsonl: bool = True,
    overwrite: bool = False,
) -> pathlib.Path:
    """Write Seismic's inputs (binary + JSONL, id maps, queries); return the manifest path.

    Layout and the Seismic calls that read it are in the module docstring.

    Args:
      out_dir: the export directory; must not exist or be empty.
      ids: ``[N]`` document ids, unique, without whitespace (``doc_ids.npy``).
      matrix: ``scipy.sparse`` ``[N, V]`` non-negative term weights, written as float32.
      queries: ``(query_ids [M], matrix [M, V])`` for ``queries.bin`` / ``.jsonl``.
      terms: ``[V]`` the vocabulary, saved as ``terms.json`` to decode term ids.
      jsonl: also write the JSONL files (``SeismicIndex.build``'s input; about twice
        the size of the binary).
      overwrite: replace an earlier Seismic export at ``out_dir``.

    Returns:
      ``out_dir/jaxir_seismic.json``.

    Raises:
      SparseExportError: bad ids or shapes, negative or non-finite weights.
    """
    ids = _check_ids(ids, "document")
    if not ids:
        raise SparseExportError("no documents: ids and matrix are empty")
    if terms is not None:
        terms = _check_terms(terms)
    docs = _canonical_csr(matrix, "matrix", ids, None if terms is None else len(terms), np.float32)
    vocab_size = docs.shape[1]
    checked = _check_queries(queries, vocab_size, np.float32)

    out = pathlib.Path(out_dir)
    _prepare_out(out, SEISMIC_MANIFEST, SEISMIC_FORMAT, overwrite)
    _write_bin(out / "documents.bin", docs)
    _save_ids(out / "doc_ids.npy", ids)
    if jsonl:
        _write_json_vectors(out / "documents.jsonl", ids, docs, _seismic_keys(vocab_size), "")
    if terms is not None:
        _write_terms(out / TERMS, terms)
    large = vocab_size > U16_VOCAB
    manifest = _header(SEISMIC_FORMAT) | {
        "vocab_size": vocab_size,
        "component_type": "u32" if large else "u16",
        "index_classes": (
            ["SeismicIndexLV", "SeismicIndexRawLV"]
            if large
            else ["SeismicIndex", "SeismicIndexRaw"]
        ),
        "num_docs": len(ids),
        "nnz": int(docs.nnz),
        "empty_docs": int(np.count_nonzero(np.diff(docs.indptr) == 0)),
        "documents": {
            "bin": "documents.bin",
            "ids": "doc_ids.npy",
            "jsonl": "documents.jsonl" if jsonl else None,
        },
        "queries": None,
        "terms": TERMS if terms is not None else None,
    }
    if checked is not None:
        qids, qmat = checked
        _write_bin(out / "queries.bin", qmat)
        _save_ids(out / "queries_ids.npy", qids)
        if jsonl:
            _write_json_vectors(out / "queries.jsonl", qids, qmat, _seismic_keys(vocab_size), "")
        manifest["queries"] = {
            "bin": "queries.bin",
            "ids": "queries_ids.npy",
            "jsonl": "queries.jsonl" if jsonl else None,
            "num_queries": len(qids),
            "nnz": int(qmat.nnz),
            "empty_queries": int(np.count_nonzero(np.diff(qmat.indptr) == 0)),
        }
    return _finish(out, SEISMIC_MANIFEST, manifest)


def read_seismic(
    path: PathLike, *, source: Literal["bin", "jsonl"] = "bin", verify: bool = True
) -> tuple[list[str], sp.csr_matrix, list[str], sp.csr_matrix]:
    """Read back what :func:`write_seismic` wrote.

    Args:
      path: the export directory (or its ``jaxir_seismic.json``).
      source: ``"bin"`` reads ``documents.bin`` + ``doc_ids.npy`` (and the queries');
        ``"jsonl"`` reads the JSONL files and checks their ids against the id maps.
      verify: check every file's SHA-256 against the manifest (sizes always are).

    Returns:
      ``(ids [N], matrix [N, V], query_ids [M], queries [M, V])``, float32 CSR with the
      exact values written. Without queries, ``M = 0``.

    Raises:
      DataError: not an export, another format version, a missing or modified file, or
        a file that does not parse (file, line or vector named).
    """
    if source not in ("bin", "jsonl"):
        raise ValueError(f"source={source!r}: expected 'bin' or 'jsonl'")
    root, manifest = _open_export(path, SEISMIC_MANIFEST, SEISMIC_FORMAT, verify)
    vocab_size = int(manifest["vocab_size"])

    def read(files: dict[str, Any]) -> tuple[list[str], sp.csr_matrix]:
        ids = _load_ids(root / files["ids"])
        if source == "bin":
            return ids, _read_bin(root / files["bin"], vocab_size, len(ids))
        if not files.get("jsonl"):
            raise DataError(
                root / SEISMIC_MANIFEST, "no JSONL files were written; use source='bin'"
            )
        jsonl_ids, *arrays = _read_json_vectors(
            root / files["jsonl"], _seismic_decode, vocab_size, integers=False
        )
        matrix = _build_csr(*arrays, vocab_size)
        if jsonl_ids != ids:
            raise DataError(
                root / files["jsonl"], f"ids differ from {files['ids']}; export again", field="id"
            )
        return ids, matrix

    ids, docs = read(manifest["documents"])
    if manifest.get("queries"):
        qids, queries = read(manifest["queries"])
    else:
        qids, queries = [], sp.csr_matrix((0, vocab_size), dtype=np.float32)
    return ids, docs, qids, queries
