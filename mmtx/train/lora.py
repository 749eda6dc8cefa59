"""LoRA (Hu et al. 2021): low-rank adapters on the towers' block kernels.

With ``config.train.lora.rank = r > 0`` every targeted kernel ``W`` gets two adapter params,
kept beside the model's params in a ``lora`` subtree that mirrors the kernel's path::

    params["lora"]["image"]["tower"]["encoder"]["blocks"]["attention"]["query"]["kernel"]
        = {"a": [L, in, r], "b": [L, r, out]}      # L: the scanned blocks' layer axis

The model runs on the merged kernels ``W + alpha / r * (A @ B)`` (:func:`merge_lora`, a pure
function applied inside the train step before ``module.apply``). ``A`` starts uniform in
``+-1 / sqrt(in)`` (as peft's Kaiming init), ``B`` at zero, so step 0 is the base model
exactly. The base params are frozen (:mod:`mmtx.train.trainable`): only the adapters train,
with the ``config.train.trainable`` matches. Checkpoints hold base + adapters;
:meth:`mmtx.Model.from_checkpoint` returns the merged params (export them as any model's).

A kernel's matrix: ``in`` is its first axis and ``out`` the rest (``query/key/value``
``[D, H, Dh]`` is ``D x H*Dh``; ``fc1``/``fc2`` ``[D, M]``/``[M, D]``), except the attention
``out`` kernel ``[H, Dh, D]``, whose ``in`` is ``H*Dh``; the scanned blocks' leading layer
axis is carried along (one adapter pair per layer).

``config.train.lora.targets`` names the kernels: ``attention`` (query, key, value and out of
every tower block), ``mlp`` (fc1 and fc2), one of those six names alone, or any other regex
over param paths (``re.search``), which must match kernels only (``fusion/.*/fc1/kernel$``
adapts the fusion's MLPs too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import traverse_util

from mmtx.train.trainable import LORA_KEY, path_string

_BLOCKS = r"^(text|image|audio)/tower/encoder/(blocks|block_\d+)/"
# The named targets (config.train.lora.targets): regexes over param paths.
TARGETS = {
    "attention": _BLOCKS + r"attention/(query|key|value|out)/kernel$",
    "mlp": _BLOCKS + r"mlp/(fc1|fc2)/kernel$",
    **{name: _BLOCKS + rf"attention/{name}/kernel$" for name in ("query", "key", "value", "out")},
    **{name: _BLOCKS + rf"mlp/{name}/kernel$" for name in ("fc1", "fc2")},
}
# Folded into the params' init key for the adapters' own stream (the model's init is as
# without LoRA).
RNG_STREAM = 0x10A


def scale(lora: ml_collections.ConfigDict) -> float:
    """``alpha / rank``: the factor of ``A @ B`` in the merged kernel (0 when off)."""
    return lora.alpha / lora.rank if lora.rank > 0 else 0.0


def _scanned(path: str) -> bool:
    return "/encoder/blocks/" in f"/{path}"


def adapter_shapes(
    path: str, shape: tuple[int, ...], rank: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(A shape, B shape)`` for the kernel at ``path`` of ``shape`` (see the module doc)."""
    lead, matrix = (shape[:1], shape[1:]) if _scanned(path) else ((), shape)
    in_axes = 2 if path.endswith("attention/out/kernel") else 1
    if len(matrix) <= in_axes:
        raise ValueError(f"LoRA target {path} of shape {shape} is not a matrix")
    fan_in, fan_out = math.prod(matrix[:in_axes]), math.prod(matrix[in_axes:])
    return (*lead, fan_in, rank), (*lead, rank, fan_out)


def target_paths(params: Any, lora: ml_collections.ConfigDict) -> list[str]:
    """The paths of the kernels ``lora.targets`` selects in ``params``, in tree order.

    Raises ``ValueError`` when a target matches no param or matches a param that is not a
    kernel.
    """
    paths = [
        path_string(path)
        for path, _ in jax.tree_util.tree_leaves_with_path(params)
        if path_string(path).split("/")[0] != LORA_KEY
    ]
    chosen: set[str] = set()
    for target in lora.targets:
        regex = TARGETS.get(target, target)
        matched = [path for path in paths if re.search(regex, path)]
        if not matched:
            raise ValueError(
                f"config.train.lora.targets: {target!r} matches no param (named targets: "
                f"{', '.join(TARGETS)}; anything else is a regex over param paths)"
            )
        not_kernels = [path for path in matched if not path.endswith("/kernel")]
        if not_kernels:
            raise ValueError(
                f"config.train.lora.targets: {target!r} matches {not_kernels[0]}, which is not "
                "a kernel; adapters go on kernels only"
            )
        chosen.update(matched)
    return [path for path in paths if path in chosen]


def add_adapters(params: Any, lora: ml_collections.ConfigDict, rng: jax.Array) -> Any:
    """``params`` with a ``lora`` subtree of adapters for every target (``params`` itself
    when ``lora.rank`` is 0). ``A`` is uniform in ``+-1 / sqrt(in)``, ``B`` zero, both in the
    kernel's dtype."""
    if lora.rank == 0:
        return params
    flat = traverse_util.flatten_dict(params, sep="/")
    adapters = {}
    for index, path in enumerate(target_paths(params, lora)):
        kernel = flat[path]
        a_shape, b_shape = adapter_shapes(path, tuple(kernel.shape), lora.rank)
        bound = 1.0 / math.sqrt(a_shape[-2])
        key = jax.random.fold_in(rng, index)
        adapters[f"{path}/a"] = jax.random.uniform(key, a_shape, kernel.dtype, -bound, bound)
        adapters[f"{path}/b"] = jnp.zeros(b_shape, kernel.dtype)
    return {**params, LORA_KEY: traverse_util.unflatten_dict(adapters, sep="/")}


def adapters(params: Mapping[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    """``(kernel path, A, B)`` for every adapter pair in ``params[\"lora\"]``."""
    flat = traverse_util.flatten_dict(params.get(LORA_KEY, {}), sep="/")
    for path in flat:
        if path.endswith("/a"):
            kernel = path[: -len("/a")]
            yield kernel, flat[path], flat[f"{kernel}/b"]


def merge_lora(params: Mapping[str, Any], scale: float) -> Any:
    """The params the model runs on: every adapted kernel ``W + scale * (A @ B)`` (reshaped
    to ``W``'s shape, in ``W``'s dtype) and no ``lora`` subtree. ``scale`` is
    :func:`scale` of the config that trained them (``alpha / rank``). ``params`` without a
    ``lora`` subtree are returned as they are. Pure and jit-able: export the result as a
    plain model's params."""
    if LORA_KEY not in params:
        return params
    base = {key: value for key, value in params.items() if key != LORA_KEY}
    flat = traverse_util.flatten_dict(base, sep="/")
    for path, a, b in adapters(params):
        if path not in flat:
            raise ValueError(f"LoRA adapter for {path}, which the params do not have")
        kernel = flat[path]
        delta = jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
        flat[path] = kernel + (scale * delta).reshape(kernel.shape).astype(kernel.dtype)
    return traverse_util.unflatten_dict(flat, sep="/")
