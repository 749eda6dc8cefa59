"""The train and eval steps: pure functions of (state, batch), jitted by the loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mmtx import losses
from mmtx.models import MultiModalTransformer
from mmtx.train.optimizer import learning_rate_schedule
from mmtx.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def make_train_step(
    module: MultiModalTransformer,
    tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Returns ``train_step(state, batch) -> (state, metrics)``.

    Dropout randomness is ``fold_in(state.rng, step)``, so a step's result depends only on
    the state and the batch (what exact resume needs). Metrics are float32 scalars: the loss
    terms, ``grad_norm``, ``learning_rate``, ``temperature`` and ``nonfinite`` (1.0 when the
    loss or a gradient was not finite).

    A non-finite step leaves params and optimizer state unchanged (only ``step`` advances),
    so a bad batch never poisons the state; the loop then stops or carries on as
    ``config.train.nonfinite`` says.
    """
    schedule = learning_rate_schedule(config.train)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        dropout_rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params: Any) -> tuple[jax.Array, Metrics]:
            outputs = module.apply(
                {"params": params}, batch, train=True, rngs={"dropout": dropout_rng}
            )
            loss, metrics = losses.total_loss(outputs, batch, config.loss)
            if config.train.inject_nan_at_step >= 0:
                loss = jnp.where(state.step + 1 == config.train.inject_nan_at_step, jnp.nan, loss)
                metrics = {**metrics, "loss": loss}
            metrics["temperature"] = 1.0 / jnp.exp(
                jnp.minimum(outputs["logit_scale"], losses.MAX_LOGIT_SCALE)
            )
            return loss, metrics

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old),
            (params, opt_state),
            (state.params, state.opt_state),
        )
        metrics["grad_norm"] = grad_norm
        metrics["learning_rate"] = schedule(state.step)
        metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


def make_eval_step(
    module: MultiModalTransformer,
) -> Callable[[Any, Batch], dict[str, jax.Array]]:
    """Returns ``eval_step(params, batch) -> outputs``: the model's embeddings and logits."""

    def eval_step(params: Any, batch: Batch) -> dict[str, jax.Array]:
        outputs = module.apply({"params": params}, batch, train=False)
        return {k: v for k, v in outputs.items() if k not in ("fusion_weights",)}

    return eval_step
