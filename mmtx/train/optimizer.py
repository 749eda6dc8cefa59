"""AdamW with warmup + cosine decay, global-norm clipping and a weight-decay mask; for
fine-tuning, frozen params (no optimizer state) and layer-wise learning-rate decay."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mmtx.train import trainable as trainable_lib


def learning_rate_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup to ``learning_rate`` then cosine decay to ``end_learning_rate_factor`` x."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=train.learning_rate,
        warmup_steps=train.warmup_steps,
        decay_steps=max(train.steps, train.warmup_steps + 1),
        end_value=train.learning_rate * train.end_learning_rate_factor,
    )


def weight_decay_mask(params: Any) -> Any:
    """True for weight matrices (``kernel`` leaves); biases, norms, embeddings are not decayed."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params
    )


_TOWER = re.compile(r"^(text|image|audio)/")
_BLOCK = re.compile(r"^(text|image|audio)/tower/encoder/(blocks|block_(\d+))/")
_TOWER_TOP = re.compile(r"^(text|image|audio)/tower/(encoder|map_head)/")


def _tower_depths(paths: list[str], shapes: list[tuple[int, ...]]) -> dict[str, int]:
    """Blocks per tower, read off the params: a scanned stack's leading axis, or the count
    of unrolled ``block_<i>`` modules."""
    depths: dict[str, int] = {}
    for path, shape in zip(paths, shapes, strict=True):
        match = _BLOCK.match(path)
        if match:
            depth = shape[0] if match.group(3) is None else int(match.group(3)) + 1
            depths[match.group(1)] = max(depths.get(match.group(1), 0), depth)
    return depths


def layer_scales(params: Any, decay: float) -> Any:
    """Learning-rate multipliers, a tree shaped as ``params`` (the layer-wise decay of
    BEiT, big_vision and open_clip's ``--image-layer-decay``).

    In a tower (``text/``, ``image/``, ``audio/``) of depth ``L``, block ``i`` (from 0) gets
    ``decay ** (L - i)``, the embeddings (patches or stem, position table, token embedding,
    class tokens, ``pre_norm``) ``decay ** (L + 1)``, and the final norm and attention-pooling
    head 1; everything outside the towers (projection heads, fusion, ``logit_scale``) 1. A
    scanned stack's leaf gets a float32 ``[L, 1, ...]`` vector (one entry per layer along its
    leading axis); other leaves a python float. A LoRA adapter
    (``lora/<kernel path>/a``) takes its kernel's multiplier.
    """
    leaves = jax.tree_util.tree_leaves_with_path(params)
    paths = [trainable_lib.path_string(path) for path, _ in leaves]
    plain = [p.removeprefix(f"{trainable_lib.LORA_KEY}/") for p in paths]
    shapes = [tuple(leaf.shape) for _, leaf in leaves]
    depths = _tower_depths(plain, shapes)

    def multiplier(path: str, shape: tuple[int, ...]) -> Any:
        tower = _TOWER.match(path)
        if not tower:
            return 1.0
        depth = depths.get(tower.group(1), 0)
        block = _BLOCK.match(path)
        if block and block.group(3) is None:  # scanned: one multiplier per layer
            exponents = depth - np.arange(shape[0])
            vector = np.power(decay, exponents, dtype=np.float64).astype(np.float32)
            return vector.reshape((shape[0],) + (1,) * (len(shape) - 1))
        if block:
            return float(decay ** (depth - int(block.group(3))))
        if _TOWER_TOP.match(path):
            return 1.0
        return float(decay ** (depth + 1))

    multipliers = [multiplier(p, s) for p, s in zip(plain, shapes, strict=True)]
    return jax.tree.unflatten(jax.tree.structure(params), multipliers)


def scale_by_layer_decay(decay: float) -> optax.GradientTransformation:
    """Multiplies each update by its :func:`layer_scales` multiplier (stateless; the
    multipliers are constants derived from the params' paths and shapes)."""

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        scales = layer_scales(updates, decay)
        scaled = jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales)
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def create_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optimizer that ``config.train`` describes.

    Global-norm clipping then AdamW (decoupled decay on kernels only). When
    ``train.trainable`` / ``frozen`` / ``lora`` freeze params
    (:func:`mmtx.train.trainable.trainable_mask`), that chain sees the trainable params only
    (so the clipping norm is theirs) and the frozen ones get ``optax.set_to_zero``: no
    moments, no decay, a zero update. With ``train.layer_decay < 1`` the update is then
    multiplied by :func:`layer_scales` (decay term included, as open_clip's param groups
    scale both). With neither, the state is the plain chain's (as runs saved it before
    fine-tuning existed).
    """
    adamw = optax.adamw(
        learning_rate_schedule(train),
        b1=train.b1,
        b2=train.b2,
        weight_decay=train.weight_decay,
        mask=weight_decay_mask,
    )
    tx = (
        optax.chain(optax.clip_by_global_norm(train.grad_clip), adamw) if train.grad_clip else adamw
    )
    if trainable_lib.freezes_anything(train):

        def labels(params: Any) -> Any:
            mask = trainable_lib.trainable_mask(params, train)
            return jax.tree.map(lambda t: "trainable" if t else "frozen", mask)

        tx = optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)
    if train.layer_decay != 1.0:
        # Outside the partition: the multipliers are read off the whole tree (a tower's depth
        # from its blocks, frozen or not).
        tx = optax.chain(tx, scale_by_layer_decay(train.layer_decay))
    return tx
