"""The platform a program is compiled for, which may differ from the host's backend.

Code paths that differ by platform (the CPU-friendly kernel gradient of
:func:`mmtx.nn.matmul.dense_dot`, the attention implementation ``auto`` picks, the
unrolled microbatch loop, the ``auto`` compute dtype) must follow the devices a step is
compiled for, not ``jax.default_backend()``: a train step compiled ahead of time for TPU
devices on a CPU host (``python -m mmtx.compile``) must be the program a TPU VM runs.

:func:`compiling_for` sets the platform while a step is traced (the train and eval steps of
:func:`mmtx.train.build.build` are traced inside it, with their mesh's platform);
:func:`target_platform` reads it, and outside any :func:`compiling_for` it is
``jax.default_backend()``, so code that runs on the host's own devices is unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from typing import Any

import jax

#: The platform names :func:`target_platform` returns.
PLATFORMS = ("cpu", "gpu", "tpu")

# jax names a GPU device's platform "gpu"; a PJRT plugin may say "cuda" or "rocm".
_ALIASES = {"cuda": "gpu", "rocm": "gpu"}

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mmtx_target_platform", default=None
)


def canonical_platform(name: str) -> str:
    """``"cpu"``, ``"gpu"`` or ``"tpu"`` for a device or backend platform name (``"cuda"`` and
    ``"rocm"`` are ``"gpu"``); ``ValueError`` for any other name."""
    platform = _ALIASES.get(name.lower(), name.lower())
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {name!r}; expected one of {PLATFORMS}")
    return platform


def devices_platform(devices: Iterable[Any]) -> str:
    """The one platform of ``devices`` (``jax.Device`` objects, real or compile-only);
    ``ValueError`` when they mix platforms or there are none."""
    platforms = {canonical_platform(device.platform) for device in devices}
    if len(platforms) != 1:
        raise ValueError(f"devices must share one platform; got {sorted(platforms) or 'none'}")
    return platforms.pop()


def mesh_platform(mesh: jax.sharding.Mesh) -> str:
    """The platform of ``mesh``'s devices (see :func:`devices_platform`)."""
    return devices_platform(mesh.devices.flat)


def target_platform() -> str:
    """The platform being compiled for: the innermost :func:`compiling_for`'s, else
    ``jax.default_backend()`` (canonical: ``cpu`` | ``gpu`` | ``tpu``)."""
    platform = _TARGET.get()
    return platform if platform is not None else canonical_platform(jax.default_backend())


@contextlib.contextmanager
def compiling_for(platform: str | None) -> Iterator[None]:
    """Within the block :func:`target_platform` is ``platform`` (``None``: unchanged)."""
    if platform is None:
        yield
        return
    token = _TARGET.set(canonical_platform(platform))
    try:
        yield
    finally:
        _TARGET.reset(token)
