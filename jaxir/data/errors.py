"""The one exception raised for bad data files.

Every reader in :mod:`jaxir.data` raises :class:`DataError` on bad input. It names the
file, the 1-based line (when there is one), the field, what was found and what was
expected, so a user can fix the file without reading jaxir's source.

Example:
    >>> err = DataError("corpus.jsonl", "missing; every line needs an \\"_id\\" string",
    ...                 line=17, field="_id")
    >>> print(err)
    corpus.jsonl:17: field '_id': missing; every line needs an "_id" string
    >>> isinstance(err, ValueError), err.line, err.field
    (True, 17, '_id')
"""

from __future__ import annotations

import os

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data: which file, line and field, and how to fix it.

    Args:
      path: the file (or directory) that holds the bad data.
      message: what was found and what was expected (the fix).
      line: 1-based line number, or ``None`` when the problem is not on one line
        (an empty file, a missing file, ids unknown across files).
      field: the JSON key or TSV column at fault, or ``None``.

    ``str(err)`` is ``"<path>:<line>: field '<field>': <message>"`` with the absent parts
    left out.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.message = message
        self.line = line
        self.field = field
        where = self.path if line is None else f"{self.path}:{line}"
        what = message if field is None else f"field '{field}': {message}"
        super().__init__(f"{where}: {what}")

    def __reduce__(self):
        # Keyword-only arguments need an explicit reduce so the error survives pickling
        # (e.g. when raised inside a grain worker process).
        return (_rebuild, (self.path, self.message, self.line, self.field))


def _rebuild(path: str, message: str, line: int | None, field: str | None) -> DataError:
    return DataError(path, message, line=line, field=field)
