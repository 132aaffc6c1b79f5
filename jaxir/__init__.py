"""jaxir: JAX-native neural information retrieval.

The top-level names mirror the CLI (imported lazily, so ``import jaxir`` is instant):

* :func:`load_encoder` -- a Hugging Face encoder directory as a text encoder;
* :func:`train` -- a dense dual-encoder run from a config (resumes from its workdir);
* :func:`evaluate` -- ir_measures metrics of a run against qrels;
* :func:`load_embeddings`, :func:`load_bundle` -- read what ``encode`` / ``export`` wrote;
* :func:`load_pretrained` -- a Hugging Face checkpoint as an NNX model.

Importing jaxir also makes glibc keep the host memory XLA:CPU frees, so a jitted
program's temporary buffers are reused instead of page-faulted in on every call
(:mod:`jaxir.host_memory`; ``JAXIR_SYSTEM_MALLOC=1`` opts out).
"""

import importlib

from jaxir.host_memory import keep_freed_memory

keep_freed_memory()

__version__ = "0.1.0"

_EXPORTS = {
    "load_encoder": "jaxir.encode",
    "load_embeddings": "jaxir.encode",
    "evaluate": "jaxir.eval.evaluate",
    "load_bundle": "jaxir.export",
    "export_bundle": "jaxir.export",
    "load_pretrained": "jaxir.models.hf",
    "save_pretrained": "jaxir.models.hf",
    "quickstart": "jaxir.pipeline",
}

__all__ = ["__version__", "train", *_EXPORTS]


def __getattr__(name: str):
    if name == "train":  # the package is callable: jaxir.train(config, workdir)
        return importlib.import_module("jaxir.train")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jaxir' has no attribute {name!r}")
