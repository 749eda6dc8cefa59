"""What every fusion module receives, and the pieces the fusion modules share."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from mmtx.modalities import modality_names, ordered
from mmtx.nn.attention import default_kernel_init
from mmtx.nn.options import options
from mmtx.nn.params import logical_param
from mmtx.nn.transformer import (
    BlockOptions,
    CrossAttentionBlock,
    StackOptions,
    TransformerBlock,
    remat_block,
)

Dtype = Any


class ModalityFeatures(NamedTuple):
    """One modality's encoder output.

    tokens: ``[B, T, D_m]`` float; mask: bool ``[B, T]`` (True = real token);
    pooled: ``[B, D_m]`` float; keep: bool ``[B]`` or None: False drops this modality for
    that example, as if it were absent (modality dropout); None keeps it everywhere.
    """

    tokens: jax.Array
    mask: jax.Array
    pooled: jax.Array
    keep: jax.Array | None = None


def check_features(features: dict[str, ModalityFeatures]) -> int:
    """Validates a features dict; returns the shared batch size."""
    if not features:
        raise ValueError("fusion needs at least one modality; got none")
    unknown = set(features) - set(modality_names())
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; registered: {modality_names()}")
    sizes = {name: f.tokens.shape[0] for name, f in features.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"modalities disagree on batch size: {sizes}")
    return next(iter(sizes.values()))


def present_modalities(features: dict[str, ModalityFeatures]) -> list[str]:
    """The modalities of ``features`` in the fusion order (the registry's,
    :func:`mmtx.modalities.modality_names`)."""
    return ordered(features)


def table_index(modalities: tuple[str, ...], name: str) -> int:
    """Row of ``name`` in a fusion's per-modality table whose rows are ``modalities``."""
    if name not in modalities:
        raise ValueError(
            f"modality {name!r} has no row in this fusion's per-modality table {modalities}; "
            "build the fusion with modalities=mmtx.modalities.fusion_order(<the model's>)"
        )
    return modalities.index(name)


def kept(features: ModalityFeatures) -> jax.Array:
    """bool ``[B]``: which examples use this modality (all of them unless ``keep`` says not)."""
    if features.keep is None:
        return jnp.ones((features.tokens.shape[0],), jnp.bool_)
    return features.keep.astype(jnp.bool_)


def visible_mask(features: ModalityFeatures) -> jax.Array:
    """bool ``[B, T]``: the tokens other modalities may attend to (real and kept)."""
    return features.mask.astype(jnp.bool_) & kept(features)[:, None]


def mean_over_kept(values: list[jax.Array], keeps: list[jax.Array]) -> jax.Array:
    """Per-example mean of ``values`` (each ``[B, ...]``) over the modalities an example keeps.

    ``keeps`` are bool ``[B]``. Returns ``[B, ...]`` in the values' dtype.
    """
    total = jnp.zeros_like(values[0])
    count = jnp.zeros((values[0].shape[0],), jnp.float32)
    for value, keep in zip(values, keeps, strict=True):
        weight = keep.astype(value.dtype).reshape((-1,) + (1,) * (value.ndim - 1))
        total = total + weight * value
        count = count + keep.astype(jnp.float32)
    scale = (1.0 / jnp.maximum(count, 1.0)).astype(total.dtype)
    return total * scale.reshape((-1,) + (1,) * (total.ndim - 1))


class TokenProjection(nn.Module):
    """Projects a modality's tokens ``[B, T, D_m]`` to ``[B, T, width]`` and adds a learned
    embedding of the modality's identity (so a joint attention can tell modalities apart)."""

    width: int
    modality: str
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens: ``[B, T, D_m]`` float -> ``[B, T, width]`` in ``dtype``."""
        x = nn.Dense(
            self.width,
            kernel_init=nn.with_logical_partitioning(default_kernel_init, (None, "embed")),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="dense",
        )(tokens)
        embedding = logical_param(
            self, "modality_embedding", nn.initializers.normal(0.02), ("embed",), (self.width,)
        )
        return x + embedding.astype(self.dtype)


def project_tokens(
    module: nn.Module, features: dict[str, ModalityFeatures], present: list[str]
) -> dict[str, jax.Array]:
    """Each present modality's tokens through its own :class:`TokenProjection`
    (``"<modality>_input"``, a submodule of ``module``): modality -> ``[B, T_m, width]``.
    Call from inside ``module``'s compact ``__call__``."""
    return {
        m: TokenProjection(
            module.width, m, dtype=module.dtype, param_dtype=module.param_dtype, name=f"{m}_input"
        )(features[m].tokens)
        for m in present
    }


def self_attention_block(module: StackOptions, *, train: bool) -> Callable[..., nn.Module]:
    """The :class:`mmtx.nn.TransformerBlock` of a fusion ``module``, rematerialised with its
    ``remat``, with its block options (dropout with ``train``): call it with ``name=``."""
    block = remat_block(TransformerBlock, module.remat)
    return functools.partial(block, **options(module, BlockOptions), deterministic=not train)


class CrossStackOptions(StackOptions, kw_only=True):
    """:class:`mmtx.nn.transformer.StackOptions` plus the kernel of a fusion's
    cross-attention blocks, ``cross_attention`` (:data:`mmtx.nn.CROSS_ATTENTION_KERNELS`), and
    its options ``cross_attention_options`` (``config.attention.<kernel>``; dense: none)."""

    cross_attention: str = "dense"
    cross_attention_options: FrozenDict[str, Any] = FrozenDict()


def cross_attention_block(module: CrossStackOptions, *, train: bool) -> Callable[..., nn.Module]:
    """As :func:`self_attention_block`, a :class:`mmtx.nn.CrossAttentionBlock` whose kernel is
    the module's ``cross_attention`` (options ``cross_attention_options``), never causal."""
    block = remat_block(CrossAttentionBlock, module.remat)
    cross = {
        **options(module, BlockOptions),
        "attention": module.cross_attention,
        "attention_options": module.cross_attention_options,
        "causal": False,
    }
    return functools.partial(block, **cross, deterministic=not train)
