"""Launch concerns of mmtx's entry points, kept out of the library: the host-malloc restart,
and the commands' answer to ``--help`` (:func:`answer_help`).

Nothing here runs on import. The restart is called only by programs (``python -m mmtx.main``
and the benchmark scripts, first thing under ``if __name__ == "__main__":``); the commands
(``mmtx.compile``, ``mmtx.embed``, ``mmtx.evaluate``, ``mmtx.import_checkpoint``) call
:func:`answer_help`. No other library module imports it.

Host memory for CPU runs: keep freed memory in the process instead of faulting it in again.

XLA:CPU allocates each program's temporaries as one buffer per call (1 GiB for the
``configs/bench_clip.py`` train step) with ``malloc``. glibc serves any block above its
mmap threshold (32 MiB at most) with a fresh ``mmap`` and unmaps it on ``free``, so every call
page-faults its whole temporary buffer in again and the kernel zeroes it page by page:
266,000 faults and ~0.7 s of system time per step of ``bench_clip`` on a 2-core machine. On
GPU and TPU this does not arise (the device allocator keeps its pool).

:data:`TUNABLES` makes glibc keep such blocks: one malloc arena (allocations above the
threshold made from other threads would otherwise get a private ``mmap`` whatever
``mmap_max`` says), no ``mmap`` for blocks, and no trimming of the heap's top, so that memory
freed by one call is reused by the next. The process's resident memory then stays at its peak,
which is what the accelerator allocators do too.

glibc reads ``GLIBC_TUNABLES`` only when a process starts, so :func:`restart_with_tuned_malloc`
re-executes the current command (same interpreter, same arguments) with them set. ``python -m
mmtx.main`` and the benchmark scripts call it first thing. ``MMTX_HOST_MALLOC=default`` turns
it off; ``MMTX_HOST_MALLOC=tuned`` turns it on also where an accelerator plugin is installed.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

__all__ = [
    "HELP_FLAGS",
    "SWITCH",
    "TUNABLES",
    "answer_help",
    "current_setting",
    "restart_with_tuned_malloc",
    "skip_absent_tpu",
    "tuned_environment",
]

SWITCH = "MMTX_HOST_MALLOC"
SWITCH_VALUES = ("auto", "tuned", "default")
TUNABLES = {
    "glibc.malloc.arena_max": "1",
    "glibc.malloc.mmap_max": "0",
    "glibc.malloc.trim_threshold": str(2**32 - 1),
}
# Distributions that mean this host runs JAX on an accelerator; "auto" leaves those hosts alone.
_ACCELERATOR_PLUGINS = ("libtpu", "jax-cuda", "jax-rocm", "jax_cuda", "jax_rocm")


# absl's help flags, which the commands answer with their docstring.
HELP_FLAGS = ("--help", "-h", "--helpfull", "--helpshort")


def answer_help(
    argv: Sequence[str],
    doc: str,
    flag_help: Callable[[], str] | None = None,
    file: TextIO | None = None,
) -> bool:
    """Prints a command's help if ``argv`` (``sys.argv``: the program, then its arguments)
    holds one of :data:`HELP_FLAGS`: ``doc`` (the module docstring), then ``flags:`` and
    ``flag_help()`` where given, to ``file`` (default stdout). Returns whether it did (the
    command then exits 0)."""
    if not any(arg in HELP_FLAGS for arg in argv[1:]):
        return False
    text = doc.strip() if flag_help is None else f"{doc.strip()}\n\nflags:\n{flag_help()}"
    print(text, file=file)
    return True


def _parse_tunables(text: str) -> dict[str, str]:
    pairs = (item.partition("=") for item in text.split(":") if item)
    return {name: value for name, _, value in pairs}


def _tpu_device_files() -> bool:
    """Whether the host shows TPU chips: ``/dev/accel*`` (TPU v2 to v5e) or ``/dev/vfio/*``
    (v5p, v6e). libtpu alone (the ``aot`` extra, for ``python -m mmtx.compile``) does not
    make a CPU host a TPU host."""
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/*"))


def _accelerator_plugin_installed() -> bool:
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(_ACCELERATOR_PLUGINS):
            if name.startswith("libtpu") and not _tpu_device_files():
                continue
            return True
    return False


def only_an_absent_tpu(environ: Mapping[str, str]) -> bool:
    """Whether JAX would try a TPU that is not there: ``JAX_PLATFORMS`` unset, libtpu
    installed (the ``aot`` extra) but no TPU device files, and no other accelerator plugin.
    JAX would then start libtpu's runtime in every process, which fails (falling back to the
    CPU) after printing several lines of errors."""
    if environ.get("JAX_PLATFORMS", "").strip():
        return False
    names = [(d.metadata["Name"] or "").lower() for d in importlib.metadata.distributions()]
    plugins = [n for n in names if n.startswith(_ACCELERATOR_PLUGINS)]
    return (
        bool(plugins) and all(n.startswith("libtpu") for n in plugins) and not (_tpu_device_files())
    )


def skip_absent_tpu(environ: dict[str, str] | None = None) -> bool:
    """Sets ``JAX_PLATFORMS=cpu`` in ``environ`` (default ``os.environ``, and jax's
    ``jax_platforms`` when it is imported already: call it before any device is used) when
    :func:`only_an_absent_tpu`, so that a CPU host with libtpu
    installed for ahead-of-time compiles runs quietly on its CPU (``python -m mmtx.compile``
    still compiles for TPU topologies). Returns whether it did."""
    environ = os.environ if environ is None else environ
    if not only_an_absent_tpu(environ):
        return False
    environ["JAX_PLATFORMS"] = "cpu"
    jax = sys.modules.get("jax") if environ is os.environ else None
    if jax is not None:  # imported already: its flag read the environment then
        jax.config.update("jax_platforms", "cpu")
    return True


def _runs_on_cpu(environ: Mapping[str, str]) -> bool:
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not _accelerator_plugin_installed()


def tuned_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to restart with, or ``None`` when no restart is wanted.

    ``None`` when ``environ[SWITCH]`` is ``"default"``; when not on Linux with glibc; in
    ``"auto"`` mode (the default) when JAX would run on an accelerator (``JAX_PLATFORMS`` names
    one first, or a TPU/CUDA/ROCm plugin is installed); and when ``GLIBC_TUNABLES`` already has
    every name in :data:`TUNABLES` (so a restarted process does not restart again). Otherwise a
    copy of ``environ`` whose ``GLIBC_TUNABLES`` adds the missing names; values the user set
    are kept.

    Raises:
      ValueError: ``environ[SWITCH]`` is not one of ``auto``, ``tuned``, ``default``.
    """
    switch = environ.get(SWITCH, "auto").strip().lower() or "auto"
    if switch not in SWITCH_VALUES:
        raise ValueError(f"{SWITCH}={environ[SWITCH]!r}; expected one of {SWITCH_VALUES}")
    if switch == "default" or sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    current = _parse_tunables(environ.get("GLIBC_TUNABLES", ""))
    missing = {name: value for name, value in TUNABLES.items() if name not in current}
    # Checked before the plugin scan, so the restarted process does not scan again.
    if not missing or (switch == "auto" and not _runs_on_cpu(environ)):
        return None
    merged = ":".join(f"{name}={value}" for name, value in {**current, **missing}.items())
    return {**environ, "GLIBC_TUNABLES": merged}


def current_setting(environ: Mapping[str, str] = os.environ) -> str:
    """The ``glibc.malloc.*`` part of ``environ``'s ``GLIBC_TUNABLES``, or ``"default"``.

    Benchmarks record it next to their numbers.
    """
    current = _parse_tunables(environ.get("GLIBC_TUNABLES", ""))
    settings = [f"{k}={v}" for k, v in current.items() if k.startswith("glibc.malloc.")]
    return ":".join(settings) or "default"


def restart_with_tuned_malloc() -> None:
    """Re-executes this process with :func:`tuned_environment`'s ``GLIBC_TUNABLES``, if wanted.

    Call it before any work, from a program's ``__main__`` path only: the process image is
    replaced (same pid, interpreter, interpreter options and arguments, from
    ``sys.orig_argv``). Returns without doing anything when :func:`tuned_environment` gives
    ``None``.
    """
    environ = tuned_environment(os.environ)
    if environ is None:
        return
    print(
        f"mmtx: restarting with GLIBC_TUNABLES={environ['GLIBC_TUNABLES']} so that XLA's "
        f"host buffers are reused, not page-faulted in on every step ({SWITCH}=default: off)",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    # argv[0] must be the interpreter's path too: Python derives its prefix (the virtualenv)
    # from it, and ``sys.orig_argv[0]`` may be a bare ``python`` found on PATH.
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
