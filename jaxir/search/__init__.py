"""Search: dense retrieval over any searcher, and hard-negative mining with the current model.

* :mod:`jaxir.search.retrieve` -- :func:`retrieve` (encoder + searcher -> run),
  :func:`dense_search_run` (dual encoder + corpus -> exact run), :func:`tower_encoders`;
* :mod:`jaxir.search.mining` -- :func:`mine_model_negatives` with false-negative
  filters, :func:`write_mined_groups`.
"""

from jaxir.search.mining import mine_model_negatives, write_mined_groups
from jaxir.search.retrieve import dense_search_run, query_texts, retrieve, tower_encoders

__all__ = [
    "dense_search_run",
    "mine_model_negatives",
    "query_texts",
    "retrieve",
    "tower_encoders",
    "write_mined_groups",
]
