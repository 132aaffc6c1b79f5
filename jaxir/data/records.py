"""BEIR records: documents, queries and relevance judgements (qrels).

A BEIR dataset is a directory::

    corpus.jsonl[.gz]    {"_id": "d1", "title": "...", "text": "..."}   one document a line
    queries.jsonl[.gz]   {"_id": "q1", "text": "..."}                   one query a line
    qrels/<split>.tsv    query-id <TAB> corpus-id <TAB> score            header line optional

Readers stream (:func:`iter_corpus`, :func:`iter_queries`, constant memory) or load
into ordered dicts (:func:`load_corpus`, :func:`load_queries`, :func:`load_qrels`);
:func:`load_beir` loads one split and checks that every judged id exists.

Field rules (bad input raises :class:`~jaxir.data.errors.DataError` naming file, line
and field):

* ``_id`` must be a non-empty JSON string (``"17"``, not ``17``) and unique in its file.
* ``text`` must be present and a string. A document may have ``"text": ""`` when it has
  a non-empty ``title`` (title-only records exist in real collections); a document with
  neither is an error, because it usually means a broken conversion. Some real
  collections do hold a few empty documents (Cranfield: docs 471 and 995, both judged);
  pass ``allow_empty_docs=True`` to keep them. A query always needs non-empty ``text``.
* ``title`` is optional (missing or ``null`` means ``""``); other keys (``metadata``) are
  ignored.
* Files must be UTF-8; a bad byte is reported with its line and byte offset.

Example:
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_corpus([Document("d1", "Cats purr.", "Cats"), Document("d2", "Dogs bark.")], d / "corpus.jsonl")
    >>> write_queries([Query("q1", "why do cats purr")], d / "queries.jsonl")
    >>> write_qrels({"q1": {"d1": 1}}, d / "qrels" / "test.tsv")
    >>> beir = load_beir(d, split="test")
    >>> beir.corpus["d1"].full_text, list(beir.queries), beir.qrels
    ('Cats Cats purr.', ['q1'], {'q1': {'d1': 1}})
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import pathlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from tqdm.auto import tqdm

from jaxir.data.errors import DataError

__all__ = [
    "BeirCollection",
    "Document",
    "Qrels",
    "Query",
    "count_lines",
    "iter_corpus",
    "iter_lines",
    "iter_queries",
    "load_beir",
    "load_corpus",
    "load_qrels",
    "load_queries",
    "open_text",
    "write_corpus",
    "write_qrels",
    "write_queries",
]

PathLike = str | os.PathLike[str]
Qrels = dict[str, dict[str, int]]
"""``qrels[query_id][doc_id] = relevance grade`` (0 = judged not relevant)."""

_GZIP_MAGIC = b"\x1f\x8b"


@dataclasses.dataclass(frozen=True, slots=True)
class Document:
    """One corpus document. ``text`` may be ``""`` when ``title`` is not (see module doc)."""

    id: str
    text: str
    title: str = ""

    @property
    def full_text(self) -> str:
        """``title + " " + text`` (just ``text`` without a title): what encoders and BM25 read.

        This is the BEIR / sentence-transformers convention.

        >>> Document("d", "body", "Head").full_text, Document("d", "body").full_text
        ('Head body', 'body')
        """
        if not self.title:
            return self.text
        if not self.text:
            return self.title
        return f"{self.title} {self.text}"


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    """One query. ``text`` is non-empty when read from a file; ``title`` is rarely used."""

    id: str
    text: str
    title: str = ""

    @property
    def full_text(self) -> str:
        """``title + " " + text`` (just ``text`` without a title).

        >>> Query("q", "why do cats purr").full_text
        'why do cats purr'
        """
        return f"{self.title} {self.text}" if self.title else self.text


@dataclasses.dataclass(frozen=True)
class BeirCollection:
    """One split of a BEIR dataset.

    Attributes:
      corpus: ``doc_id -> Document`` in file order.
      queries: ``query_id -> Query``, only the queries judged in ``qrels`` (file order).
      qrels: ``query_id -> {doc_id -> grade}``; every id exists in corpus / queries.
    """

    corpus: dict[str, Document]
    queries: dict[str, Query]
    qrels: Qrels

    def __repr__(self) -> str:
        judgements = sum(len(v) for v in self.qrels.values())
        return (
            f"BeirCollection(corpus={len(self.corpus)} docs, queries={len(self.queries)}, "
            f"qrels={judgements} judgements)"
        )


# --------------------------------------------------------------------------- files


def open_text(path: PathLike, mode: str = "r") -> io.TextIOBase:
    """Open a UTF-8 text file for ``"r"`` or ``"w"``; ``.gz`` files are (de)compressed.

    Reading detects gzip by its magic bytes, so a misnamed compressed file still works.
    Writing creates missing parent directories.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt.gz"
    >>> with open_text(p, "w") as f:
    ...     _ = f.write("héllo\\n")
    >>> open_text(p).read()
    'héllo\\n'
    """
    path = pathlib.Path(path)
    if mode == "w":
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "wb"), encoding="utf-8", newline="\n")
        return open(path, "w", encoding="utf-8", newline="\n")
    if mode != "r":
        raise ValueError(f"mode must be 'r' or 'w', got {mode!r}")
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8", newline="")


def _open_binary(path: pathlib.Path) -> io.BufferedIOBase:
    if not path.exists():
        raise DataError(
            path,
            "no such file; check the path (BEIR files are corpus.jsonl, queries.jsonl, qrels/<split>.tsv)",
        )
    if path.is_dir():
        raise DataError(path, "is a directory; pass a file here")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every line of a UTF-8 file (plain or gzip).

    Line numbers are 1-based; the trailing newline (and a leading BOM) is removed.
    Streams in constant memory. Bytes that are not UTF-8 raise :class:`DataError` with
    the line and the byte offset in the (decompressed) file.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "bad.txt"
    >>> _ = p.write_bytes(b"ok\\ncaf\\xe9\\n")
    >>> next(iter_lines(p))
    (1, 'ok')
    >>> list(iter_lines(p))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    jaxir.data.errors.DataError: ...bad.txt:2: not valid UTF-8: byte 0xe9 at byte offset 6 ...
    """
    path = pathlib.Path(path)
    offset = 0
    try:
        with _open_binary(path) as f:
            for number, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    bad = raw[e.start]
                    raise DataError(
                        path,
                        f"not valid UTF-8: byte 0x{bad:02x} at byte offset {offset + e.start} "
                        f"(column {e.start + 1} of the line); re-encode the file as UTF-8, "
                        "e.g. `iconv -f latin1 -t utf-8 in > out`",
                        line=number,
                    ) from None
                if number == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                offset += len(raw)
                yield number, text.rstrip("\r\n")
    except (EOFError, OSError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(path, f"cannot read the file ({e}); is the gzip file truncated?") from e


def count_lines(path: PathLike) -> int:
    """Number of lines in a file (plain or gzip): a ``total`` hint for progress bars.

    Counts newline bytes in 1 MiB chunks (plus a last line without a newline), so it is
    fast and needs no decoding.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.jsonl"
    >>> _ = p.write_text('{"a": 1}\\n{"a": 2}')
    >>> count_lines(p)
    2
    """
    n = 0
    last = b"\n"
    with _open_binary(pathlib.Path(path)) as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def _resolve(path: PathLike, stem: str) -> pathlib.Path:
    """``path`` itself, or ``path/<stem>.jsonl`` / ``path/<stem>.jsonl.gz`` for a directory."""
    path = pathlib.Path(path)
    if not path.is_dir():
        return path
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (path / name).is_file():
            return path / name
    raise DataError(
        path,
        f"no {stem}.jsonl or {stem}.jsonl.gz in this directory; pass a BEIR dataset "
        f"directory or the {stem} file itself",
    )


# --------------------------------------------------------------------------- JSONL records


_RECORD_EXAMPLE = '{"_id": "1", "text": "..."}'


def iter_json_objects(
    path: pathlib.Path, example: str = _RECORD_EXAMPLE
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, object)`` for each non-blank JSONL line; DataError for bad JSON or non-objects.

    ``example`` is the object shown in error messages (what a line should look like).
    """
    for number, text in iter_lines(path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(
                path,
                f"not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON "
                f"object such as {example}",
                line=number,
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                path,
                f"expected a JSON object, got {_type_name(obj)}; each line must be one JSON "
                f"object such as {example}",
                line=number,
            )
        yield number, obj


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    names.update({int: "a number", float: "a number", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def _get_string(
    path: pathlib.Path, number: int, obj: dict[str, Any], key: str, *, required: bool
) -> str:
    if key not in obj or (obj[key] is None and not required):
        if required:
            hint = ' (it may be "" when a "title" is given)' if key == "text" else ""
            raise DataError(
                path, f'missing; every line needs a "{key}" string{hint}', line=number, field=key
            )
        return ""
    value = obj[key]
    if not isinstance(value, str):
        example = '"_id": "17"' if key == "_id" else f'"{key}": "..."'
        raise DataError(
            path,
            f"expected a string, got {_type_name(value)} {json.dumps(value)[:40]}; write it as a "
            f"JSON string, e.g. {example}",
            line=number,
            field=key,
        )
    return value


def _iter_records(
    path: pathlib.Path, kind: str, allow_empty_docs: bool = False
) -> Iterator[tuple[int, str, str, str]]:
    """``(line, id, text, title)`` for corpus (``kind="document"``) or query records."""
    seen_any = False
    for number, obj in iter_json_objects(path):
        seen_any = True
        rid = _get_string(path, number, obj, "_id", required=True)
        if not rid.strip():
            raise DataError(path, "empty; ids must be non-empty strings", line=number, field="_id")
        text = _get_string(path, number, obj, "text", required=True)
        title = _get_string(path, number, obj, "title", required=False)
        if kind == "document" and not allow_empty_docs and not text.strip() and not title.strip():
            raise DataError(
                path,
                'empty and there is no "title" either; a document needs a non-empty "text" '
                'or "title" (fill it in, remove the line, or pass allow_empty_docs=True to '
                "keep empty documents)",
                line=number,
                field="text",
            )
        if kind == "query" and not text.strip():
            raise DataError(path, "empty; a query needs non-empty text", line=number, field="text")
        yield number, rid, text, title
    if not seen_any:
        raise DataError(path, f"empty file: expected one JSON {kind} per line")


def _load(
    path: pathlib.Path, kind: str, progress: bool, allow_empty_docs: bool = False
) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    records = _iter_records(path, kind, allow_empty_docs)
    if progress:
        records = tqdm(records, total=count_lines(path), desc=f"reading {path.name}", unit=kind[0])
    for number, rid, text, title in records:
        if rid in out:
            raise DataError(
                path,
                f"duplicate id {rid!r} (an earlier line has the same _id); ids must be unique",
                line=number,
                field="_id",
            )
        out[rid] = (text, title)
    return out


def iter_corpus(path: PathLike, *, allow_empty_docs: bool = False) -> Iterator[Document]:
    """Stream the documents of ``corpus.jsonl[.gz]`` in constant memory.

    Args:
      path: a BEIR dataset directory or the corpus file itself.
      allow_empty_docs: keep documents with empty text and title instead of raising.

    Does not check ids for uniqueness (that needs memory); :func:`load_corpus` does.
    For a progress bar use ``tqdm(iter_corpus(p), total=count_lines(p))``.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "corpus.jsonl"
    >>> _ = p.write_text('{"_id": "a", "title": "Only a title", "text": ""}\\n')
    >>> list(iter_corpus(p))
    [Document(id='a', text='', title='Only a title')]
    """
    path = _resolve(path, "corpus")
    for _, rid, text, title in _iter_records(path, "document", allow_empty_docs):
        yield Document(rid, text, title)


def load_corpus(
    path: PathLike, *, progress: bool = False, allow_empty_docs: bool = False
) -> dict[str, Document]:
    """Load ``corpus.jsonl[.gz]`` into an ordered ``doc_id -> Document`` dict.

    Args:
      path: a BEIR dataset directory or the corpus file itself.
      progress: show a tqdm bar (its ``total`` comes from :func:`count_lines`).
      allow_empty_docs: keep documents with empty text and title instead of raising.

    Raises DataError on a duplicate id and on every case :func:`iter_corpus` rejects.
    """
    path = _resolve(path, "corpus")
    return {
        rid: Document(rid, text, title)
        for rid, (text, title) in _load(path, "document", progress, allow_empty_docs).items()
    }


def iter_queries(path: PathLike) -> Iterator[Query]:
    """Stream the queries of ``queries.jsonl[.gz]`` (a BEIR directory or the file).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "queries.jsonl"
    >>> _ = p.write_text('{"_id": "q1", "text": "what is bm25"}\\n')
    >>> list(iter_queries(p))
    [Query(id='q1', text='what is bm25', title='')]
    """
    path = _resolve(path, "queries")
    for _, rid, text, title in _iter_records(path, "query"):
        yield Query(rid, text, title)


def load_queries(path: PathLike, *, progress: bool = False) -> dict[str, Query]:
    """Load ``queries.jsonl[.gz]`` into an ordered ``query_id -> Query`` dict (ids unique)."""
    path = _resolve(path, "queries")
    return {
        rid: Query(rid, text, title)
        for rid, (text, title) in _load(path, "query", progress).items()
    }


# --------------------------------------------------------------------------- qrels

_QRELS_FIELDS = ("query-id", "corpus-id", "score")
_HEADER_IDS = frozenset({"query-id", "query_id", "qid", "query", "topic"})
_HEADER_GRADES = frozenset({"score", "relevance", "rel", "label", "grade"})


def _read_qrels(path: pathlib.Path) -> tuple[Qrels, dict[str, int], dict[str, int]]:
    """qrels plus the first line on which each query id / doc id appears (for errors)."""
    qrels: Qrels = {}
    query_line: dict[str, int] = {}
    doc_line: dict[str, int] = {}
    first = True
    for number, text in iter_lines(path):
        if not text.strip():
            continue
        cols = [c.strip() for c in text.split("\t")]
        if len(cols) != 3:
            trec = (
                " This looks like TREC qrels (qid iter docid rel);"
                if len(text.split()) == 4
                else ""
            )
            raise DataError(
                path,
                f"expected 3 tab-separated columns (query-id, corpus-id, score), found "
                f"{len(cols)}.{trec} Write one judgement per line as "
                "'query-id<TAB>corpus-id<TAB>score'",
                line=number,
            )
        qid, did, grade_text = cols
        is_header = first and (qid.lower() in _HEADER_IDS or grade_text.lower() in _HEADER_GRADES)
        first = False
        if is_header:
            continue
        for field, value in zip(_QRELS_FIELDS[:2], (qid, did)):
            if not value:
                raise DataError(path, "empty; ids must be non-empty", line=number, field=field)
        if not _is_int(grade_text):
            raise DataError(
                path,
                f"expected an integer relevance grade, got {grade_text!r}; write grades as "
                "integers (0 = not relevant, 1, 2, ...)",
                line=number,
                field="score",
            )
        grade = int(grade_text)
        judged = qrels.setdefault(qid, {})
        if judged.get(did, grade) != grade:
            raise DataError(
                path,
                f"({qid!r}, {did!r}) is judged twice with different grades ({judged[did]} and "
                f"{grade}); keep one line per pair",
                line=number,
                field="score",
            )
        judged[did] = grade
        query_line.setdefault(qid, number)
        doc_line.setdefault(did, number)
    if not qrels:
        raise DataError(
            path, "empty file: expected 'query-id<TAB>corpus-id<TAB>score' lines (header optional)"
        )
    return qrels, query_line, doc_line


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def load_qrels(path: PathLike) -> Qrels:
    """Load a BEIR qrels TSV (``query-id<TAB>corpus-id<TAB>score``, header optional).

    Returns ``qrels[query_id][doc_id] = grade`` with queries and docs in file order.
    Raises DataError on a wrong column count, a non-integer grade, a pair judged twice
    with different grades, and an empty file.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "test.tsv"
    >>> _ = p.write_text("query-id\\tcorpus-id\\tscore\\nq1\\td1\\t1\\nq1\\td2\\t0\\n")
    >>> load_qrels(p)
    {'q1': {'d1': 1, 'd2': 0}}
    """
    return _read_qrels(pathlib.Path(path))[0]


def _check_known(
    path: pathlib.Path, ids: Mapping[str, int], known: Mapping[str, Any], field: str, where: str
) -> None:
    unknown = [i for i in ids if i not in known]
    if not unknown:
        return
    shown = ", ".join(repr(i) for i in unknown[:5])
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    raise DataError(
        path,
        f"{len(unknown)} ids are not in {where}: {shown}{more}; every {field} in the qrels "
        f"must be an _id in {where} (is this qrels file from the same dataset?)",
        line=ids[unknown[0]],
        field=field,
    )


def load_beir(
    path: PathLike, split: str = "test", *, progress: bool = False, allow_empty_docs: bool = False
) -> BeirCollection:
    """Load one split of a BEIR dataset directory and check it is consistent.

    Args:
      path: directory with ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]`` and
        ``qrels/<split>.tsv``.
      split: qrels file to use (``"train"``, ``"dev"``, ``"test"``...), or the path of a
        qrels TSV over this collection (one ending in ``.tsv``, e.g. the
        ``dev_qrels.tsv`` that ``jaxir train`` writes for the queries it held out).
      progress: show tqdm bars while reading corpus and queries.
      allow_empty_docs: keep documents with empty text and title (Cranfield has two).

    Returns a :class:`BeirCollection` whose ``queries`` are only those judged in the split.
    Raises DataError if the split is missing (listing those present) or the qrels name
    query / doc ids that do not exist (the error shows a few and the count).
    """
    root = pathlib.Path(path)
    if not root.is_dir():
        raise DataError(root, "not a directory; pass a BEIR dataset directory")
    if split.endswith(".tsv"):
        qrels_path = pathlib.Path(split)
        if not qrels_path.is_file():
            raise DataError(qrels_path, "no such qrels file; pass a split name or a qrels TSV")
    else:
        qrels_path = root / "qrels" / f"{split}.tsv"
        if not qrels_path.is_file():
            present = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
            raise DataError(
                qrels_path,
                f"no qrels for split {split!r}; splits present: {present or 'none'}",
            )
    corpus_path, queries_path = _resolve(root, "corpus"), _resolve(root, "queries")
    corpus = load_corpus(corpus_path, progress=progress, allow_empty_docs=allow_empty_docs)
    all_queries = load_queries(queries_path, progress=progress)
    qrels, query_line, doc_line = _read_qrels(qrels_path)
    _check_known(qrels_path, query_line, all_queries, "query-id", queries_path.name)
    _check_known(qrels_path, doc_line, corpus, "corpus-id", corpus_path.name)
    queries = {qid: q for qid, q in all_queries.items() if qid in qrels}
    return BeirCollection(corpus=corpus, queries=queries, qrels=qrels)


# --------------------------------------------------------------------------- writers


def _write_records(records: Iterable[Document | Query], path: PathLike) -> None:
    with open_text(path, "w") as f:
        for r in records:
            obj = (
                {"_id": r.id, "title": r.title, "text": r.text}
                if r.title
                else {"_id": r.id, "text": r.text}
            )
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


def write_corpus(docs: Iterable[Document], path: PathLike) -> None:
    """Write documents as BEIR ``corpus.jsonl`` (``.gz`` compresses); readable by :func:`load_corpus`."""
    _write_records(docs, path)


def write_queries(queries: Iterable[Query], path: PathLike) -> None:
    """Write queries as BEIR ``queries.jsonl`` (``.gz`` compresses)."""
    _write_records(queries, path)


def write_qrels(qrels: Mapping[str, Mapping[str, int]], path: PathLike) -> None:
    """Write qrels as a BEIR TSV with the ``query-id corpus-id score`` header."""
    with open_text(path, "w") as f:
        f.write("\t".join(_QRELS_FIELDS) + "\n")
        for qid, judged in qrels.items():
            for did, grade in judged.items():
                f.write(f"{qid}\t{did}\t{int(grade)}\n")
