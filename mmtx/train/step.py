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
from mmtx.nn.platform import canonical_platform, target_platform
from mmtx.train import lora as lora_lib
from mmtx.train import trainable as trainable_lib
from mmtx.train.optimizer import learning_rate_schedule
from mmtx.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
LossFn = Callable[[dict[str, Any], Batch, ml_collections.ConfigDict], tuple[jax.Array, Metrics]]


def split_microbatches(batch: Batch, k: int) -> Batch:
    """``[B, ...]`` -> ``[k, B / k, ...]``, microbatch ``j`` holding rows ``j, j + k, ...``.

    Strided rather than contiguous: with the batch sharded over devices along ``B``, every
    device keeps its share of every microbatch (a contiguous split would leave most devices
    idle in each microbatch).
    """

    def split(x: jax.Array) -> jax.Array:
        if x.shape[0] % k:
            raise ValueError(f"batch of {x.shape[0]} does not split into {k} microbatches")
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def merge_microbatches(stacked: Any, batch_size: int) -> Any:
    """Inverse of :func:`split_microbatches` for per-example leaves ``[k, B / k, ...]``;
    per-batch leaves (``[k]``: scalars such as ``logit_scale``) take microbatch 0's value."""

    def merge(x: jax.Array) -> jax.Array:
        if x.ndim >= 2 and x.shape[0] * x.shape[1] == batch_size:
            return jnp.swapaxes(x, 0, 1).reshape(batch_size, *x.shape[2:])
        return x[0]

    return jax.tree.map(merge, stacked)


def all_finite(tree: Any) -> jax.Array:
    """bool ``[]``: whether every element of every array in ``tree`` is finite (one pass over
    the arrays, no overflow: unlike a norm, huge finite values count as finite)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def clamp_logit_scale(params: Any) -> Any:
    """``params`` with the scalar ``logit_scale`` clamped to ``[0, log 100]``, as CLIP and
    open_clip clamp it after every optimizer update (so the temperature stays in
    ``[0.01, 1]``); other params are returned as they are."""
    if "logit_scale" not in params:
        return params
    clamped = jnp.clip(params["logit_scale"], 0.0, losses.MAX_LOGIT_SCALE)
    return type(params)({**params, "logit_scale": clamped.astype(params["logit_scale"].dtype)})


def update_ema(ema: Any, params: Any, mask: Any, decay: float) -> Any:
    """``decay * ema + (1 - decay) * params`` per trainable leaf (float32 arithmetic, stored
    in the param's dtype); leaves that ``mask`` marks frozen keep their value bit for bit
    (their params do not move). ``ema`` None (no EMA) stays None."""
    if ema is None:
        return None

    def update(trainable: bool, average: jax.Array, param: jax.Array) -> jax.Array:
        if not trainable:
            return average
        mixed = decay * average.astype(jnp.float32) + (1.0 - decay) * param.astype(jnp.float32)
        return mixed.astype(average.dtype)

    return jax.tree.map(update, mask, ema, params)


def loss_couples_batch(config: ml_collections.ConfigDict) -> bool:
    """Whether :func:`mmtx.losses.total_loss` under ``config`` has a term that couples the
    examples of a batch (a contrastive term: its negatives are the other examples). Without
    one every term is a mean over the batch of per-example values, so the full-batch loss is
    the mean of equal microbatches' losses, and so is its gradient."""
    return (
        config.loss.contrastive != "none"
        and bool(config.loss.contrastive_weight)
        and len(config.model.modalities) >= 2
    )


def after(previous: Any, following: Any) -> Any:
    """``following``, made to depend on every array of ``previous``: equal to it while
    ``previous`` is finite, zeros where it is not (then the step is rejected anyway).

    An unrolled microbatch loop gates each microbatch's inputs on the gradients summed so
    far, so that XLA runs the microbatches one after another (only one microbatch's
    activations alive at a time), as a rolled loop does. A real data dependence is needed:
    XLA:CPU drops ``lax.optimization_barrier`` before scheduling. The dependence is on the
    sum of each whole array (on one element, XLA could compute that element alone and
    leave the rest of the array, and the activations it needs, for later): one pass over
    ``previous``, small next to a microbatch's forward and backward.
    """
    leaves = jax.tree.leaves(previous)
    if not leaves:
        return following
    probe = sum(jnp.sum(leaf.astype(jnp.float32)) for leaf in leaves)
    ready = jnp.isfinite(probe)
    return jax.tree.map(lambda x: jnp.where(ready, x, jnp.zeros_like(x)), following)


CPU_UNROLL = 8  # train.accumulation_unroll = -1 (auto): this on CPU, 0 elsewhere


def unroll_limit(config: ml_collections.ConfigDict, platform: str | None = None) -> int:
    """The most microbatches whose gradient loop is unrolled: ``train.accumulation_unroll``,
    or for ``-1`` (auto) :data:`CPU_UNROLL` when compiling for the CPU and 0 (always a loop)
    for accelerators, where the loop's memory matters most and no slowdown was measured.
    ``platform``: the platform the step is compiled for (``cpu`` | ``gpu`` | ``tpu``; default
    :func:`mmtx.nn.platform.target_platform`)."""
    limit = config.train.accumulation_unroll
    if limit >= 0:
        return limit
    platform = target_platform() if platform is None else canonical_platform(platform)
    return CPU_UNROLL if platform == "cpu" else 0


def make_train_step(
    module: MultiModalTransformer,
    tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    loss_fn: LossFn = losses.total_loss,
    platform: str | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Returns ``train_step(state, batch) -> (state, metrics)``.

    ``platform``: the platform the step will be compiled for (``cpu`` | ``gpu`` | ``tpu``;
    default :func:`mmtx.nn.platform.target_platform`); it picks the microbatch loop's form
    (:func:`unroll_limit`). :func:`mmtx.train.build.build` passes its mesh's.

    ``loss_fn(outputs, batch, config.loss) -> (loss, metrics)`` is the training loss of a
    batch: a float32 scalar and a dict of float32 scalars that includes ``"loss"``
    (default :func:`mmtx.losses.total_loss`; tests wrap it, e.g. to make one step's loss NaN).

    Dropout randomness is ``fold_in(state.rng, step)``, so a step's result depends only on
    the state and the batch (what exact resume needs). Metrics are float32 scalars: the loss
    terms, ``grad_norm``, ``learning_rate``, ``temperature`` and ``nonfinite`` (1.0 when the
    loss, a gradient or an updated param was not finite).

    With ``config.train.microbatches = k > 1`` the batch is split into ``k`` microbatches
    inside the step and the gradient is that of the full-batch loss, contrastive terms
    included, computed with an output cache (GradCache, Gao et al. 2021): a gradient-free
    forward pass over the microbatches collects every model output (embeddings, logits) for
    the whole batch; the full-batch loss and its gradient with respect to those outputs are
    computed once; then each microbatch's share of that gradient is backpropagated through
    the model, summing float32 param gradients. Only one microbatch's activations are alive
    at a time, so peak memory falls with ``k`` (for about one extra forward pass of compute).
    When the loss is :func:`mmtx.losses.total_loss` and no term couples the batch
    (:func:`loss_couples_batch`: classification and attribute heads only), the cache is not
    needed: the gradient is the mean of the microbatches' own loss gradients, with no extra
    forward pass. Each microbatch draws its own dropout key, so with dropout the random masks
    differ from the ``k = 1`` step's (not their distribution).

    The cache's forward pass is a ``lax.map``. The loop of microbatch gradients is a
    ``lax.scan``, or unrolled into straight-line code when ``k <=``
    :func:`unroll_limit` (``train.accumulation_unroll``; auto: 8 on CPU, where XLA runs
    convolution gradients, the image stem's, several times slower inside a loop; never on
    accelerators). Unrolled, each microbatch's inputs are gated on the gradients summed
    before it (:func:`after`), so that microbatches run one after another; XLA:CPU's
    scheduler still overlaps some of their work, so the step's temporary memory is higher
    than the loop's (benchmarks/README.md).

    After the optimizer update ``logit_scale`` is clamped to ``[0, log 100]``
    (:func:`clamp_logit_scale`), as CLIP does.

    Params that ``config.train`` freezes (:func:`mmtx.train.trainable.trainable_mask`:
    ``trainable`` / ``frozen`` regexes, the base model under LoRA) are left out of the
    gradient (no backward pass into them is computed or accumulated; ``grad_norm`` is the
    trainable params') and come out of the step bit for bit as they went in. With LoRA
    adapters (``params["lora"]``) the model runs on :func:`mmtx.train.lora.merge_lora`'s
    merged kernels.

    A non-finite step (loss, gradient norm, or any updated param) leaves params and optimizer
    state unchanged (only ``step`` advances), so a bad batch or setting never poisons the
    state; the loop then stops or carries on as ``config.train.nonfinite`` says.
    """
    schedule = learning_rate_schedule(config.train)
    k = config.train.microbatches
    unroll = k <= unroll_limit(config, platform)
    plain_sum = loss_fn is losses.total_loss and not loss_couples_batch(config)
    lora_scale = lora_lib.scale(config.train.lora)

    def loss_from_outputs(outputs: dict[str, Any], batch: Batch) -> tuple[jax.Array, Metrics]:
        loss, metrics = loss_fn(outputs, batch, config.loss)
        metrics = {**metrics, "loss": loss}
        metrics["temperature"] = 1.0 / jnp.exp(losses.capped_logit_scale(outputs["logit_scale"]))
        return loss, metrics

    def microbatch_sum(fn: Callable[..., Any], zeros: Any, xs: Any) -> Any:
        """``zeros + sum_j fn(xs[j])`` in float32 (``zeros``: a pair whose second part is the
        gradients): ``lax.scan``, or unrolled, each microbatch after the one before."""

        def add(total: Any, x: Any) -> tuple[Any, None]:
            return jax.tree.map(lambda t, g: t + g.astype(jnp.float32), total, fn(x)), None

        if not unroll:
            return jax.lax.scan(add, zeros, xs)[0]
        total = zeros
        for j in range(k):
            x = jax.tree.map(lambda leaf, j=j: leaf[j], xs)
            total, _ = add(total, after(total[1], x) if j else x)
        return total

    def forward(params: Any, batch: Batch, rng: jax.Array) -> dict[str, Any]:
        params = lora_lib.merge_lora(params, lora_scale)
        return module.apply({"params": params}, batch, train=True, rngs={"dropout": rng})

    # The gradient functions differentiate with respect to the trainable params only
    # (``trainable``: the params with None where frozen; ``frozen``: the others).

    def full_batch_gradient(
        trainable: Any, frozen: Any, batch: Batch, rng: jax.Array
    ) -> tuple[jax.Array, Metrics, Any]:
        def objective(params: Any) -> tuple[jax.Array, Metrics]:
            outputs = forward(trainable_lib.combine(params, frozen), batch, rng)
            return loss_from_outputs(outputs, batch)

        (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(trainable)
        return loss, metrics, grads

    def summed_gradient(
        trainable: Any, frozen: Any, batch: Batch, rng: jax.Array
    ) -> tuple[jax.Array, Metrics, Any]:
        """Per-example losses only: every loss term and metric is a mean over the batch, so
        the full batch's are the means of the microbatches' (no output cache)."""
        micro = split_microbatches(batch, k)
        rngs = jax.random.split(rng, k)

        def one(args: tuple[Batch, jax.Array]) -> tuple[Metrics, Any]:
            _, metrics, grads = full_batch_gradient(trainable, frozen, *args)
            return metrics, grads

        first = (jax.tree.map(lambda x: x[0], micro), rngs[0])
        shapes = (jax.eval_shape(lambda: one(first)[0]), trainable)
        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), shapes)
        metrics, grads = microbatch_sum(one, zeros, (micro, rngs))
        metrics = jax.tree.map(lambda m: m / k, metrics)
        grads = jax.tree.map(lambda g, p: (g / k).astype(p.dtype), grads, trainable)
        return metrics["loss"], metrics, grads

    def accumulated_gradient(
        trainable: Any, frozen: Any, batch: Batch, rng: jax.Array
    ) -> tuple[jax.Array, Metrics, Any]:
        batch_size = jax.tree.leaves(batch)[0].shape[0]
        micro = split_microbatches(batch, k)
        rngs = jax.random.split(rng, k)
        params = jax.lax.stop_gradient(trainable_lib.combine(trainable, frozen))
        # 1. Every output of the whole batch, without gradients.
        stacked = jax.lax.map(lambda args: forward(params, *args), (micro, rngs))
        outputs = merge_microbatches(stacked, batch_size)
        # 2. The full-batch loss and its gradient with respect to the outputs.
        (loss, metrics), output_grads = jax.value_and_grad(
            lambda o: loss_from_outputs(o, batch), has_aux=True
        )(outputs)
        # Per-example gradients go to their microbatch; a per-batch output (logit_scale)
        # appears in every microbatch, so each carries 1/k of its gradient.
        micro_grads = jax.tree.map(
            lambda g, s: (
                jnp.swapaxes(g.reshape(s.shape[1], k, *s.shape[2:]), 0, 1)
                if g.ndim >= 1 and g.shape[0] == batch_size
                else jnp.broadcast_to(g / k, (k, *g.shape))
            ),
            output_grads,
            stacked,
        )

        # 3. Backpropagate each microbatch's share through the model and sum.
        def backward(args: tuple[Batch, jax.Array, Any]) -> Any:
            micro_batch, micro_rng, grads_out = args

            def surrogate(params: Any) -> jax.Array:
                out = forward(trainable_lib.combine(params, frozen), micro_batch, micro_rng)
                terms = jax.tree.map(
                    lambda o, g: jnp.sum(o.astype(jnp.float32) * g.astype(jnp.float32)),
                    out,
                    grads_out,
                )
                return sum(jax.tree.leaves(terms))

            return (), jax.grad(surrogate)(trainable)

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable)
        _, grads = microbatch_sum(backward, ((), zeros), (micro, rngs, micro_grads))
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, trainable)
        return loss, metrics, grads

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        dropout_rng = jax.random.fold_in(state.rng, state.step)
        mask = trainable_lib.trainable_mask(state.params, config.train)  # python bools
        trainable, frozen = trainable_lib.split(state.params, mask)
        if k == 1:
            gradient = full_batch_gradient
        else:
            gradient = summed_gradient if plain_sum else accumulated_gradient
        loss, metrics, grads = gradient(trainable, frozen, batch, dropout_rng)
        grad_norm = optax.tree.norm(grads)
        grads = trainable_lib.combine(grads, jax.tree.map(jnp.zeros_like, frozen))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = clamp_logit_scale(optax.apply_updates(state.params, updates))
        # Frozen params pass through as they came (p + 0 would turn -0.0 into 0.0).
        params = jax.tree.map(lambda m, new, old: new if m else old, mask, params, state.params)
        # The updated params too: an infinite learning rate or a NaN weight decay turns
        # finite gradients into non-finite params, which must never be accepted (or saved).
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(params)
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old),
            (params, opt_state),
            (state.params, state.opt_state),
        )
        metrics["grad_norm"] = grad_norm
        metrics["learning_rate"] = schedule(state.step)
        metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
        ema = update_ema(state.ema_params, params, mask, config.train.ema_decay)
        if ema is not None:  # a rejected step leaves the average as it was, too
            ema = jax.tree.map(lambda new, old: jnp.where(finite, new, old), ema, state.ema_params)
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema
        )
        return new_state, metrics

    return train_step


def make_eval_step(
    module: MultiModalTransformer, config: ml_collections.ConfigDict | None = None
) -> Callable[[Any, Batch], dict[str, jax.Array]]:
    """Returns ``eval_step(params, batch) -> outputs``: the model's embeddings and logits
    (with LoRA adapters in ``params``, of the merged model: pass the run's ``config``)."""
    lora_scale = lora_lib.scale(config.train.lora) if config is not None else 0.0

    def eval_step(params: Any, batch: Batch) -> dict[str, jax.Array]:
        if lora_lib.LORA_KEY in params and config is None:
            raise ValueError("params hold LoRA adapters: make_eval_step needs the run's config")
        params = lora_lib.merge_lora(params, lora_scale)
        outputs = module.apply({"params": params}, batch, train=False)
        return {k: v for k, v in outputs.items() if k not in ("fusion_weights",)}

    return eval_step
