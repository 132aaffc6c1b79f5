"""Test-wide JAX setup: a fake 8-device CPU mesh and a persistent compilation cache.

This file sits at the repository root so it also applies to the doctests collected
from ``jaxir/`` (every public docstring example is run by ``pytest jaxir``).
"""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

import jax

_CACHE = pathlib.Path(__file__).parent / ".jax_cache"
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
