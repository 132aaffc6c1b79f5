"""Searchers: exact top-k on device and ScaNN (dense), the inverted index (sparse).

``jaxir.index.ScannSearcher`` is imported lazily so that ``scann`` (an optional
dependency) is only needed by code that uses it.
"""

from jaxir.index.base import Searcher, build_searcher, load_searcher, read_manifest, recall_against
from jaxir.index.exact import ExactSearcher, exact_search

__all__ = [
    "ExactSearcher",
    "ScannSearcher",
    "Searcher",
    "build_searcher",
    "exact_search",
    "load_searcher",
    "read_manifest",
    "recall_against",
]


def __getattr__(name: str):
    if name == "ScannSearcher":
        from jaxir.index.scann_index import ScannSearcher

        return ScannSearcher
    raise AttributeError(f"module 'jaxir.index' has no attribute {name!r}")
