"""Declaring a param with its logical axis names, as every mmtx module does.

The names (``embed``, ``heads``, ``kv``, ``length``, ...) let one table of rules shard the
params over a mesh; without a mesh they are inert metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax

Initializer = Callable[..., Any]


def logical_param(
    module: nn.Module,
    name: str,
    init: Initializer,
    axes: Sequence[str | None],
    shape: Sequence[int],
) -> jax.Array:
    """``module``'s param ``name`` of ``shape``, initialised by ``init`` and stored in
    ``module.param_dtype``, its dimensions named ``axes`` (one logical axis name, or None,
    per dimension of ``shape``).

    ``module.param(name, nn.with_logical_partitioning(init, axes), shape, module.param_dtype)``:
    call it from ``module``'s compact ``__call__`` (or its ``setup``). Returns the param's
    value, an array of ``shape`` in ``module.param_dtype``.
    """
    return module.param(
        name,
        nn.with_logical_partitioning(init, tuple(axes)),
        tuple(shape),
        module.param_dtype,
    )
