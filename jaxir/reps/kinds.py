"""Representation kinds: how stores, searchers and bundles say what they hold, and registries over them.

A *kind* names a representation family: ``"dense"`` (one float vector per text) today;
a learned-sparse store, an inverted index or a docid trie get their own kind later.
Every directory jaxir writes records its kind in its manifest (``"kind"`` in an
embedding store's ``manifest.json`` and a bundle's ``manifest.json``;
``"representation"`` in a searcher's ``searcher.json``, whose ``"kind"`` is the
searcher's own kind). A manifest without the field was written before kinds existed
and is read as ``"dense"``.

Registries are plain dicts from a kind to ``"module:attribute"`` strings, imported only
when that kind is used (:func:`resolve`), so a dense user never imports a sparse
family's dependencies. :func:`read_kind` reads and checks a manifest's kind against a
registry; an unknown kind fails naming the file, the field and the known kinds.

Example:
    >>> registry = {"dense": "jaxir.reps.dense:KIND"}
    >>> read_kind({"format": "x"}, "store/manifest.json", registry)
    'dense'
    >>> resolve(registry["dense"])
    'dense'
    >>> read_kind({"kind": "sparse"}, "store/manifest.json", registry)
    Traceback (most recent call last):
    ...
    ValueError: store/manifest.json: field "kind" is 'sparse'; known kinds: ['dense'] (this jaxir cannot read it)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DEFAULT_KIND", "read_kind", "resolve"]

#: The kind of a manifest that has no kind field (everything jaxir wrote before kinds).
DEFAULT_KIND = "dense"


def read_kind(
    manifest: Mapping[str, Any],
    file: str | os.PathLike[str],
    known: Iterable[str],
    *,
    field: str = "kind",
) -> str:
    """``manifest[field]`` (default :data:`DEFAULT_KIND`), checked against ``known``.

    Args:
      manifest: the parsed manifest.
      file: the manifest's path, named in the error.
      known: the kinds the caller can handle (a registry's keys).
      field: the manifest key holding the kind.

    Raises:
      ValueError: the kind is not a string or not in ``known``; the message names
        ``file``, ``field`` and the known kinds.
    """
    kind = manifest.get(field, DEFAULT_KIND)
    names = sorted(known)
    if not isinstance(kind, str) or kind not in names:
        raise ValueError(
            f'{os.fspath(file)}: field "{field}" is {kind!r}; known kinds: {names} '
            "(this jaxir cannot read it)"
        )
    return kind


def resolve(target: str) -> Any:
    """Imports ``"package.module:attribute"`` (the attribute may be dotted) and returns it.

    The lazy entries of every registry (searcher kinds, retriever families) go through it.
    """
    module, _, name = target.partition(":")
    value = importlib.import_module(module)
    for part in name.split("."):
        value = getattr(value, part)
    return value
