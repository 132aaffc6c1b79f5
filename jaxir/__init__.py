"""jaxir: JAX-native neural information retrieval.

The top-level names mirror the CLI (imported lazily, so ``import jaxir`` is instant):

* :func:`load_encoder` -- a Hugging Face encoder directory as a text encoder;
* :func:`train` -- a training run from a config (resumes from its workdir);
* :func:`load_splade` -- a ``*ForMaskedLM`` directory or a SPLADE run as a sparse encoder;
* :func:`evaluate` -- ir_measures metrics of a run against qrels;
* :func:`evaluate_model` -- a trained model (or its run directory) on a BEIR split;
* :func:`load_embeddings`, :func:`load_store`, :func:`load_bundle` -- read what
  ``encode`` / ``export`` wrote (``load_store`` dispatches on the store's kind);
* :func:`load_pretrained` -- a Hugging Face checkpoint as an NNX model.

Importing jaxir changes nothing process-wide. The ``jaxir`` CLI makes glibc keep the host
memory XLA:CPU frees (:func:`jaxir.host_memory.keep_freed_memory`); call it yourself at the
top of a training script for the same speed-up.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "load_encoder": "jaxir.encode",
    "load_splade": "jaxir.sparse_encode",
    "load_embeddings": "jaxir.encode",
    "evaluate": "jaxir.eval.evaluate",
    "evaluate_model": "jaxir.eval.model_eval",
    "load_store": "jaxir.store_files",
    "load_bundle": "jaxir.export",
    "export_bundle": "jaxir.export",
    "load_pretrained": "jaxir.models.hf",
    "save_pretrained": "jaxir.models.hf",
    "quickstart": "jaxir.pipeline",
    "train": "jaxir.training.loop",
}

if TYPE_CHECKING:  # what the lazy names resolve to, for type checkers and IDEs
    from jaxir.encode import load_embeddings as load_embeddings
    from jaxir.encode import load_encoder as load_encoder
    from jaxir.eval.evaluate import evaluate as evaluate
    from jaxir.eval.model_eval import evaluate_model as evaluate_model
    from jaxir.export import export_bundle as export_bundle
    from jaxir.export import load_bundle as load_bundle
    from jaxir.models.hf import load_pretrained as load_pretrained
    from jaxir.models.hf import save_pretrained as save_pretrained
    from jaxir.pipeline import quickstart as quickstart
    from jaxir.sparse_encode import load_splade as load_splade
    from jaxir.store_files import load_store as load_store
    from jaxir.training.loop import train as train

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jaxir' has no attribute {name!r}")
