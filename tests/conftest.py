"""Test-session setup: a persistent XLA compilation cache shared by the test workers.

Many tests compile the same tiny models; the cache turns repeated compiles into lookups.
"""

import os
import tempfile

import jax

_CACHE_DIR = os.environ.get(
    "MMTX_TEST_COMPILATION_CACHE", os.path.join(tempfile.gettempdir(), "mmtx-test-xla-cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
