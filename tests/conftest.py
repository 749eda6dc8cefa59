"""Test-session setup: a persistent XLA compilation cache shared by the test workers.

Many tests compile the same tiny models; the cache turns repeated compiles into lookups.
"""

import os
import tempfile

# The suite runs on the CPU. With libtpu installed (the aot extra, for mmtx.compile's
# compile-only TPU devices) jax would also try to start a TPU backend in every process,
# printing libtpu's complaints about this host to stderr and taking libtpu's lock file; set
# before jax is imported, and inherited by the commands the tests run.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

_CACHE_DIR = os.environ.get(
    "MMTX_TEST_COMPILATION_CACHE", os.path.join(tempfile.gettempdir(), "mmtx-test-xla-cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# Files whose tests run for minutes (real training runs in subprocesses), longest first. They
# are started first, so that `pytest -n 2` does not end on one of them while the other worker
# idles (longest-first scheduling); the order of the other tests is kept.
SLOW_FIRST = (
    "tests/train/test_distributed.py",
    "tests/train/test_fault_tolerance.py",
    "tests/experiments/test_fusion_ablation.py",
    "tests/data/test_tfds_source.py",
    "tests/train/test_own_data_runs.py",
    "tests/test_main.py",
    "tests/train/test_bf16.py",
    "tests/test_notebooks.py",
)


def pytest_collection_modifyitems(items):
    rank = {path: index for index, path in enumerate(SLOW_FIRST)}

    def key(item):
        path = os.path.relpath(str(item.path), os.path.dirname(os.path.dirname(__file__)))
        return rank.get(path, len(SLOW_FIRST))

    items.sort(key=key)  # stable: the order within a file, and of the rest, is kept
