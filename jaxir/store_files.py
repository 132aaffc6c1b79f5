"""The files every jaxir store is made of: atomic writes, manifests, id files, resumable shards.

A *store* is a directory of row shards plus a ``manifest.json`` listing them; the dense
embedding store (:mod:`jaxir.encode`) and the sparse store (:mod:`jaxir.sparse_store`)
share this module's rules:

* every file is written to a temporary name (``.NAME.tmp``) and renamed into place
  (:func:`atomic_write`), and the manifest is rewritten the same way after each shard
  (:func:`append_shards`), so a shard exists exactly when the manifest lists it and an
  interrupted run leaves a valid store with ``"complete": false``;
* ids are UTF-8 text, one a line, row ``i`` of a shard is line ``i`` of its id file
  (:func:`write_ids`, :func:`read_ids`); document ids must be unique
  (:func:`document_rows`);
* a resumed run keeps the listed shards after checking that their ids are the first
  ids of the new input (:func:`resume_shards`);
* each manifest says its ``"format"`` and ``"kind"``; :func:`check_store` turns a store
  of another kind into an error that says which function reads it (:data:`STORES`).

Example:
    >>> import tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> manifest = {"format": "jaxir-embeddings", "version": 1, "count": 0, "shards": []}
    >>> def write_shard(index, texts):
    ...     write_ids(root / f"lengths-{index:05d}.txt", [str(len(t)) for t in texts])
    ...     return {"lengths": f"lengths-{index:05d}.txt"}
    >>> append_shards(root, manifest, document_rows([("a", "cats"), ("b", "purr!")]),
    ...               shard_size=1, write_shard=write_shard)
    >>> manifest["count"], manifest["complete"], read_ids(root / "lengths-00001.txt")
    (2, True, ['5'])
    >>> read_manifest_json(root / MANIFEST, missing="no store")["shards"][1]["ids"]
    'ids-00001.txt'
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO

from jaxir.data.passages import Passage, UniqueIds
from jaxir.data.records import Document, Query
from jaxir.reps.kinds import read_kind, resolve

__all__ = [
    "MANIFEST",
    "STORES",
    "append_shards",
    "atomic_write",
    "check_store",
    "check_version",
    "clear_store",
    "document_rows",
    "load_store",
    "read_ids",
    "read_manifest_json",
    "require_fields",
    "resume_shards",
    "write_ids",
    "write_manifest",
]

MANIFEST = "manifest.json"

#: Store kind -> (its manifest's ``"format"``, the function that reads it). Named in the
#: error when a store of one kind is handed to the reader of another.
STORES: dict[str, tuple[str, str]] = {
    "dense": ("jaxir-embeddings", "jaxir.encode.load_embeddings"),
    "sparse": ("jaxir-sparse", "jaxir.sparse_store.load_sparse_store"),
}

_RERUN = "re-encode the corpus (resume=False / --no-resume)"


def atomic_write(path: pathlib.Path, write: Callable[[BinaryIO], Any]) -> None:
    """Calls ``write(binary file)`` on a temporary file, then renames it to ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(root: pathlib.Path, manifest: dict[str, Any]) -> None:
    """Writes ``root/manifest.json`` atomically (indented JSON)."""
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(root / MANIFEST, lambda f: f.write(text.encode("utf-8")))


def read_manifest_json(file: pathlib.Path, *, missing: str) -> Any:
    """The parsed JSON of a manifest file.

    Raises:
      FileNotFoundError: ``file`` does not exist (the message is ``"{file}: {missing}"``).
      ValueError: not valid JSON (naming the line).
    """
    if not file.is_file():
        raise FileNotFoundError(f"{file}: {missing}")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}:{e.lineno}: invalid JSON ({e.msg}).") from None


def check_store(manifest: Any, file: pathlib.Path, kind: str) -> None:
    """Raises ``ValueError`` unless ``manifest`` is that of a ``kind`` store (:data:`STORES`).

    A store of another known kind is named, with the function that reads it.

    Example:
      >>> check_store({"format": "jaxir-sparse", "kind": "sparse"}, "s/manifest.json", "dense")
      Traceback (most recent call last):
      ...
      ValueError: s/manifest.json: field "format" is 'jaxir-sparse': this is a sparse store, not a dense one; read it with jaxir.sparse_store.load_sparse_store()
    """
    fmt, _ = STORES[kind]
    found = manifest.get("format") if isinstance(manifest, dict) else None
    for other, (other_fmt, reader) in STORES.items():
        if other != kind and found == other_fmt:
            raise ValueError(
                f'{file}: field "format" is {found!r}: this is a {other} store, not a {kind} '
                f"one; read it with {reader}()"
            )
    if found != fmt:
        raise ValueError(f'{file}: field "format" must be "{fmt}"; this is not a jaxir store.')
    try:
        read_kind(manifest, file, (kind,))
    except ValueError as e:
        found_kind = manifest.get("kind")
        if found_kind in STORES and found_kind != kind:
            raise ValueError(
                f"{e}; a {found_kind} store is read with {STORES[found_kind][1]}()"
            ) from None
        raise


def load_store(path: str | os.PathLike[str]) -> Any:
    """The store at ``path``, read by the reader of its manifest's kind (:data:`STORES`).

    A dense store comes back as :class:`jaxir.encode.EmbeddingStore`, a sparse one as
    :class:`jaxir.sparse_store.SparseStore`; both have ``manifest``, ``ids`` and
    ``len()``.

    Raises:
      FileNotFoundError: no ``manifest.json`` at ``path``.
      ValueError: the manifest is not valid JSON or has an unknown kind.
    """
    root = pathlib.Path(path)
    file = root / MANIFEST
    manifest = read_manifest_json(
        file, missing="no jaxir store here; write one with `jaxir encode`"
    )
    if not isinstance(manifest, dict):
        raise ValueError(f"{file}: expected a JSON object; this is not a jaxir store.")
    kind = read_kind(manifest, file, STORES)
    module, _, name = STORES[kind][1].rpartition(".")
    return resolve(f"{module}:{name}")(root)


def check_version(manifest: dict[str, Any], file: pathlib.Path, version: int) -> None:
    """Raises ``ValueError`` unless ``manifest["version"] == version``."""
    if manifest.get("version") != version:
        raise ValueError(
            f'{file}: field "version" is {manifest.get("version")!r}; this jaxir reads version '
            f"{version}. Re-encode the corpus with this jaxir version."
        )


def require_fields(manifest: dict[str, Any], file: pathlib.Path, names: Sequence[str]) -> None:
    """Raises ``ValueError`` naming the first of ``names`` missing from ``manifest``."""
    for name in names:
        if name not in manifest:
            raise ValueError(f'{file}: field "{name}" is missing; the manifest is damaged.')


def write_ids(file: pathlib.Path, ids: Iterable[str]) -> None:
    """Writes ``ids`` one a line (UTF-8), atomically."""
    data = "".join(f"{i}\n" for i in ids).encode("utf-8")
    atomic_write(file, lambda f: f.write(data))


def read_ids(file: pathlib.Path) -> list[str]:
    """The lines of an id file written by :func:`write_ids` (``FileNotFoundError`` if missing)."""
    if not file.is_file():
        raise FileNotFoundError(
            f"{file}: id file listed in {file.parent / MANIFEST} is missing; {_RERUN}."
        )
    text = file.read_text(encoding="utf-8")
    return text.split("\n")[:-1] if text else []


def _id_and_text(item: Any, position: int) -> tuple[str, str]:
    if isinstance(item, (Document, Query)):
        doc_id, text = item.id, item.full_text
    elif isinstance(item, tuple) and len(item) == 2:
        doc_id, text = item
    else:
        raise TypeError(
            f"document #{position}: expected a Document, a Query or an (id, text) tuple, got "
            f"{type(item).__name__}."
        )
    if not isinstance(doc_id, str) or not doc_id or "\n" in doc_id or "\r" in doc_id:
        raise ValueError(
            f"document #{position}: id {doc_id!r} must be a non-empty string without line "
            "breaks (ids are stored one a line)."
        )
    if not isinstance(text, str):
        raise ValueError(
            f"document #{position} (id {doc_id!r}): text must be a string, got "
            f"{type(text).__name__}."
        )
    return doc_id, text


def document_rows(documents: Iterable[Any]) -> Iterator[tuple[str, str]]:
    """``(id, text)`` per item of ``documents``, checking that document ids are unique.

    Items are :class:`~jaxir.data.records.Document` / ``Query`` records (text is
    ``title + " " + text``) or ``(id, text)`` tuples. :class:`~jaxir.data.passages.Passage`
    rows (MaxP) are exempt from the uniqueness check: a document's passages share its id,
    and :func:`~jaxir.data.passages.split_passages` checked the documents.

    Raises (lazily, at the offending item):
      TypeError: an item of another type.
      ValueError: an empty id or one with a line break, a non-string text, or
        :class:`~jaxir.data.passages.DuplicateIdError` naming both positions.
    """
    seen = UniqueIds()
    for position, item in enumerate(documents):
        doc_id, text = _id_and_text(item, position)
        if not isinstance(item, Passage):
            seen.add(doc_id, position)
        yield doc_id, text


def resume_shards(
    root: pathlib.Path,
    manifest: dict[str, Any],
    stream: Iterator[tuple[str, str]],
    data_fields: Sequence[str],
) -> tuple[list[dict[str, Any]], int]:
    """The shards of an interrupted store whose ids are the first ids of ``stream``.

    Consumes those rows from ``stream``. Every shard's ``data_fields`` files (e.g.
    ``("vectors",)``) must exist. Returns ``(shards, count)``.

    Raises:
      FileNotFoundError: a listed shard file is missing.
      ValueError: a stored id differs from the input's (naming the id file and line),
        or the store holds more rows than the input.
    """
    where = root / MANIFEST
    count = 0
    for shard in manifest["shards"]:
        for field in data_fields:
            if not (root / shard[field]).is_file():
                raise FileNotFoundError(
                    f"{root / shard[field]}: listed in {where} but missing; pass resume=False "
                    "(--no-resume) to re-encode everything."
                )
        ids_file = root / shard["ids"]
        for line, stored in enumerate(read_ids(ids_file), start=1):
            got = next(stream, None)
            if got is None:
                raise ValueError(
                    f"{ids_file}:{line}: the store already holds more documents than the "
                    "input has; the input changed, pass resume=False (--no-resume)."
                )
            if got[0] != stored:
                raise ValueError(
                    f"{ids_file}:{line}: stored id {stored!r} but input document #{count} has "
                    f"id {got[0]!r}; the input changed since the interrupted run, pass "
                    "resume=False (--no-resume) to re-encode it."
                )
            count += 1
    return list(manifest["shards"]), count


def clear_store(root: pathlib.Path, patterns: Sequence[str]) -> None:
    """Removes the manifest, the id files and the files matching ``patterns`` in ``root``.

    Their temporary (``.NAME.tmp``) versions go too; nothing else is touched.
    """
    (root / MANIFEST).unlink(missing_ok=True)
    for pattern in (*patterns, "ids-*.txt"):
        for file in (*root.glob(pattern), *root.glob(f".{pattern}.tmp")):
            file.unlink()


def append_shards(
    root: pathlib.Path,
    manifest: dict[str, Any],
    stream: Iterator[tuple[str, str]],
    *,
    shard_size: int,
    write_shard: Callable[[int, list[str]], dict[str, Any]],
) -> None:
    """Writes the rest of ``stream`` as shards of ``shard_size`` rows, then marks the store complete.

    For each shard, ``write_shard(index, texts)`` writes its data files and returns its
    manifest entry (e.g. ``{"vectors": "vectors-00003.npy"}``); this function adds
    ``"ids"`` (the id file it writes) and ``"count"``, appends the entry to
    ``manifest["shards"]``, adds the rows to ``manifest["count"]`` and rewrites the
    manifest. At the end ``manifest["complete"]`` becomes ``True``.

    Raises:
      ValueError: the store holds no row at all (an empty input).
    """
    while chunk := list(itertools.islice(stream, shard_size)):
        index = len(manifest["shards"])
        entry = write_shard(index, [text for _, text in chunk])
        ids_name = f"ids-{index:05d}.txt"
        write_ids(root / ids_name, (doc_id for doc_id, _ in chunk))
        manifest["shards"].append({**entry, "ids": ids_name, "count": len(chunk)})
        manifest["count"] += len(chunk)
        write_manifest(root, manifest)
    if manifest["count"] == 0:
        raise ValueError("documents is empty; there is nothing to encode.")
    manifest["complete"] = True
    write_manifest(root, manifest)
