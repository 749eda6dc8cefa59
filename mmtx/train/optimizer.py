"""AdamW with warmup + cosine decay, global-norm clipping and a weight-decay mask."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax


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


def create_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optimizer that ``config.train`` describes."""
    adamw = optax.adamw(
        learning_rate_schedule(train),
        b1=train.b1,
        b2=train.b2,
        weight_decay=train.weight_decay,
        mask=weight_decay_mask,
    )
    if train.grad_clip:
        return optax.chain(optax.clip_by_global_norm(train.grad_clip), adamw)
    return adamw
