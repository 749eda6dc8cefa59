"""The train and eval steps: pure functions of (state, batch), jitted by the loop.

The train step (:func:`make_train_step`) takes the gradient of the batch's loss one of three
ways, chosen when it is built:

- ``config.train.microbatches = 1``: one forward and backward pass over the batch.
- ``k > 1`` microbatches, the default loss and no term that couples the batch
  (:func:`loss_couples_batch`: classification and attribute heads only): every term is a
  mean of per-example values, so the gradient is the mean of the microbatches' own loss
  gradients, with no extra forward pass.
- ``k > 1`` otherwise: an output cache (GradCache, Gao et al. 2021). A gradient-free forward
  pass over the microbatches (a ``lax.map``) collects every model output (embeddings,
  logits) of the whole batch; the full-batch loss and its gradient with respect to those
  outputs are computed once; then each microbatch's share of that gradient is
  backpropagated through the model, summing float32 param gradients. Only one
  microbatch's activations are alive at a time, for about one extra forward pass.

The loop of microbatch gradients is a ``lax.scan``, or unrolled into straight-line code when
``k <=`` :func:`unroll_limit` (``train.accumulation_unroll``; auto: 8 on CPU, where XLA runs
convolution gradients, the image stem's, several times slower inside a loop; never on
accelerators). Unrolled, each microbatch's inputs are gated on the gradients summed before
it (:func:`after`), so that microbatches run one after another; XLA:CPU's scheduler still
overlaps some of their work, so the step's temporary memory is higher than the loop's
(benchmarks/README.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

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


class _Objective(NamedTuple):
    """What the gradient functions differentiate: the model in training mode (on LoRA-merged
    kernels) and the training loss of its outputs. Fixed when the step is built."""

    module: MultiModalTransformer
    loss_fn: LossFn
    loss_config: ml_collections.ConfigDict
    lora_scale: float

    def forward(self, params: Any, batch: Batch, rng: jax.Array) -> dict[str, Any]:
        """The model's outputs for ``batch`` (embeddings ``[B, D]``, logits, ``logit_scale``
        ``[]``), with dropout drawn from ``rng``."""
        params = lora_lib.merge_lora(params, self.lora_scale)
        return self.module.apply({"params": params}, batch, train=True, rngs={"dropout": rng})

    def loss(self, outputs: dict[str, Any], batch: Batch) -> tuple[jax.Array, Metrics]:
        """``(loss, metrics)``: float32 ``[]`` and a dict of float32 ``[]`` with the loss terms,
        ``loss`` and ``temperature``."""
        loss, metrics = self.loss_fn(outputs, batch, self.loss_config)
        metrics = {**metrics, "loss": loss}
        metrics["temperature"] = 1.0 / jnp.exp(losses.capped_logit_scale(outputs["logit_scale"]))
        return loss, metrics


class _Microbatching(NamedTuple):
    """How a step with microbatches runs them: ``count`` (``k``) of them, in a ``lax.scan``
    or (``unroll``) as straight-line code."""

    count: int
    unroll: bool

    def split(self, batch: Batch, rng: jax.Array) -> tuple[Batch, jax.Array]:
        """``batch`` as ``[k, B / k, ...]`` microbatches (:func:`split_microbatches`) and a
        dropout key for each, ``[k, ...]``."""
        return split_microbatches(batch, self.count), jax.random.split(rng, self.count)


# The gradient functions below differentiate with respect to the trainable params only
# (``trainable``: the params with None where frozen; ``frozen``: the others, None where
# trainable) and return ``(loss, metrics, grads)``: the float32 ``[]`` loss, the float32
# ``[]`` metrics of :meth:`_Objective.loss`, and gradients shaped and typed as ``trainable``.
_Gradient = tuple[jax.Array, Metrics, Any]
_GradientFn = Callable[[Any, Any, Batch, jax.Array], _Gradient]


def _float32_zeros(tree: Any) -> Any:
    """float32 zeros shaped like every leaf of ``tree`` (arrays or shape structs)."""
    return jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), tree)


def _keep_if(ok: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where the bool ``[]`` ``ok`` holds, else ``old``, leaf by leaf."""
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def _add_float32(total: Any, term: Any) -> Any:
    """``total + term`` leaf by leaf, ``term`` cast to float32 first."""
    return jax.tree.map(lambda t, g: t + g.astype(jnp.float32), total, term)


def _unrolled_sum(fn: Callable[[Any], Any], zeros: Any, xs: Any, count: int) -> Any:
    """:func:`_microbatch_sum` as straight-line code, each microbatch's inputs gated on the
    gradients summed before it (:func:`after`)."""
    total = zeros
    for j in range(count):
        x = jax.tree.map(lambda leaf, j=j: leaf[j], xs)
        total = _add_float32(total, fn(after(total[1], x) if j else x))
    return total


def _microbatch_sum(
    fn: Callable[[Any], Any], zeros: Any, xs: Any, microbatching: _Microbatching
) -> Any:
    """``zeros + sum_j fn(xs[j])`` in float32 over the microbatches (the leading ``k`` axis
    of every leaf of ``xs``); ``zeros``: float32 zeros shaped like ``fn``'s result, a pair
    whose second part is the gradients.

    A ``lax.scan``, or unrolled into straight-line code when ``microbatching.unroll`` (the
    module docstring says when and why).
    """
    if microbatching.unroll:
        return _unrolled_sum(fn, zeros, xs, microbatching.count)
    return jax.lax.scan(lambda total, x: (_add_float32(total, fn(x)), None), zeros, xs)[0]


def _full_batch_gradient(
    objective: _Objective, trainable: Any, frozen: Any, batch: Batch, rng: jax.Array
) -> _Gradient:
    """The gradient of ``batch``'s loss: one forward and backward pass over the batch."""

    def loss_of(params: Any) -> tuple[jax.Array, Metrics]:
        outputs = objective.forward(trainable_lib.combine(params, frozen), batch, rng)
        return objective.loss(outputs, batch)

    (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable)
    return loss, metrics, grads


def _mean_microbatch_gradient(
    objective: _Objective,
    microbatching: _Microbatching,
    trainable: Any,
    frozen: Any,
    batch: Batch,
    rng: jax.Array,
) -> _Gradient:
    """The loss, metrics and gradient of ``batch`` as the means of its microbatches' own.

    Exact when every loss term and metric is a mean over the batch of per-example values
    (:func:`loss_couples_batch` false): then the microbatches need no output cache and no
    extra forward pass.
    """
    k = microbatching.count
    batches, rngs = microbatching.split(batch, rng)

    def metrics_and_grads(args: tuple[Batch, jax.Array]) -> tuple[Metrics, Any]:
        _, metrics, grads = _full_batch_gradient(objective, trainable, frozen, *args)
        return metrics, grads

    first = (jax.tree.map(lambda x: x[0], batches), rngs[0])
    zeros = _float32_zeros((jax.eval_shape(lambda: metrics_and_grads(first)[0]), trainable))
    metrics, grads = _microbatch_sum(metrics_and_grads, zeros, (batches, rngs), microbatching)
    metrics = jax.tree.map(lambda m: m / k, metrics)
    grads = jax.tree.map(lambda g, p: (g / k).astype(p.dtype), grads, trainable)
    return metrics["loss"], metrics, grads


def _cached_outputs(
    objective: _Objective, trainable: Any, frozen: Any, batches: Batch, rngs: jax.Array
) -> dict[str, Any]:
    """Every microbatch's model outputs, without gradients (a ``lax.map``), stacked:
    ``[k, B / k, ...]`` per-example leaves, ``[k]`` per-batch ones (``logit_scale``)."""
    params = jax.lax.stop_gradient(trainable_lib.combine(trainable, frozen))
    return jax.lax.map(lambda args: objective.forward(params, *args), (batches, rngs))


def _output_gradient_shares(output_grads: Any, stacked: Any, k: int, batch_size: int) -> Any:
    """The gradient with respect to the whole batch's outputs, split as ``stacked`` is.

    Per-example rows ``[B, ...]`` go to their microbatch (``[k, B / k, ...]``, strided as
    :func:`split_microbatches` splits); a per-batch output (``logit_scale``) appears in
    every microbatch, so each carries ``1/k`` of its gradient.
    """

    def share(grad: jax.Array, like: jax.Array) -> jax.Array:
        if grad.ndim >= 1 and grad.shape[0] == batch_size:
            return jnp.swapaxes(grad.reshape(like.shape[1], k, *like.shape[2:]), 0, 1)
        return jnp.broadcast_to(grad / k, (k, *grad.shape))

    return jax.tree.map(share, output_grads, stacked)


def _microbatch_backward(
    objective: _Objective, trainable: Any, frozen: Any, args: tuple[Batch, jax.Array, Any]
) -> tuple[tuple[()], Any]:
    """``((), grads)``: one microbatch's share of the full-batch gradient, its outputs'
    gradients (``args``: microbatch, dropout key, output gradients) backpropagated through
    the model (the empty part pairs with the gradients for :func:`_microbatch_sum`)."""
    batch, rng, output_grads = args

    def surrogate(params: Any) -> jax.Array:
        outputs = objective.forward(trainable_lib.combine(params, frozen), batch, rng)
        terms = jax.tree.map(
            lambda o, g: jnp.sum(o.astype(jnp.float32) * g.astype(jnp.float32)),
            outputs,
            output_grads,
        )
        return sum(jax.tree.leaves(terms))

    return (), jax.grad(surrogate)(trainable)


def _output_cache_gradient(
    objective: _Objective,
    microbatching: _Microbatching,
    trainable: Any,
    frozen: Any,
    batch: Batch,
    rng: jax.Array,
) -> _Gradient:
    """The gradient of the full-batch loss, any loss (contrastive terms included), one
    microbatch at a time: the output cache of the module docstring. The outputs of every
    microbatch (:func:`_cached_outputs`), the full-batch loss's gradient with respect to
    them, each microbatch's share of it backpropagated (:func:`_microbatch_backward`)."""
    k = microbatching.count
    batch_size = jax.tree.leaves(batch)[0].shape[0]
    batches, rngs = microbatching.split(batch, rng)
    stacked = _cached_outputs(objective, trainable, frozen, batches, rngs)
    outputs = merge_microbatches(stacked, batch_size)
    (loss, metrics), output_grads = jax.value_and_grad(
        lambda o: objective.loss(o, batch), has_aux=True
    )(outputs)
    shares = _output_gradient_shares(output_grads, stacked, k, batch_size)
    backward = functools.partial(_microbatch_backward, objective, trainable, frozen)
    zeros = ((), _float32_zeros(trainable))
    _, grads = _microbatch_sum(backward, zeros, (batches, rngs, shares), microbatching)
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, trainable)
    return loss, metrics, grads


def _gradient_fn(
    module: MultiModalTransformer,
    config: ml_collections.ConfigDict,
    loss_fn: LossFn,
    platform: str | None,
) -> _GradientFn:
    """``(trainable, frozen, batch, rng) -> (loss, metrics, grads)``: the batch's gradient as
    ``config.train.microbatches`` and the loss call for (see :func:`make_train_step`)."""
    objective = _Objective(module, loss_fn, config.loss, lora_lib.scale(config.train.lora))
    k = config.train.microbatches
    microbatching = _Microbatching(k, unroll=k <= unroll_limit(config, platform))
    plain_mean = loss_fn is losses.total_loss and not loss_couples_batch(config)
    if k == 1:
        return functools.partial(_full_batch_gradient, objective)
    if plain_mean:
        return functools.partial(_mean_microbatch_gradient, objective, microbatching)
    return functools.partial(_output_cache_gradient, objective, microbatching)


def _updated_params(
    tx: optax.GradientTransformation, state: TrainState, mask: Any, grads: Any, frozen: Any
) -> tuple[Any, optax.OptState]:
    """``(params, opt_state)`` after the optimizer's update by ``grads`` (the trainable
    params' gradients, None where frozen), ``logit_scale`` clamped (:func:`clamp_logit_scale`);
    params that ``mask`` marks frozen come back as they went in, bit for bit."""
    grads = trainable_lib.combine(grads, jax.tree.map(jnp.zeros_like, frozen))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = clamp_logit_scale(optax.apply_updates(state.params, updates))
    # Frozen params pass through as they came (p + 0 would turn -0.0 into 0.0).
    params = jax.tree.map(lambda m, new, old: new if m else old, mask, params, state.params)
    return params, opt_state


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
    inside the step (:func:`split_microbatches`) and the gradient is that of the full-batch
    loss, contrastive terms included, with only one microbatch's activations alive at a time
    (peak memory falls with ``k``); the module docstring says how. Each microbatch draws its
    own dropout key, so with dropout the random masks differ from the ``k = 1`` step's (not
    their distribution).

    Params that ``config.train`` freezes (:func:`mmtx.train.trainable.trainable_mask`:
    ``trainable`` / ``frozen`` regexes, the base model under LoRA) are left out of the
    gradient (no backward pass into them is computed or accumulated; ``grad_norm`` is the
    trainable params') and come out of the step bit for bit as they went in. With LoRA
    adapters (``params["lora"]``) the model runs on :func:`mmtx.train.lora.merge_lora`'s
    merged kernels.

    After the optimizer update ``logit_scale`` is clamped to ``[0, log 100]``
    (:func:`clamp_logit_scale`), as CLIP does. A non-finite step (loss, gradient norm, or any
    updated param) leaves params, optimizer state and EMA unchanged (only ``step``
    advances), so a bad batch or setting never poisons the state; the loop then stops or
    carries on as ``config.train.nonfinite`` says.
    """
    schedule = learning_rate_schedule(config.train)
    gradient = _gradient_fn(module, config, loss_fn, platform)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        dropout_rng = jax.random.fold_in(state.rng, state.step)
        mask = trainable_lib.trainable_mask(state.params, config.train)  # python bools
        trainable, frozen = trainable_lib.split(state.params, mask)
        loss, metrics, grads = gradient(trainable, frozen, batch, dropout_rng)
        grad_norm = optax.tree.norm(grads)
        params, opt_state = _updated_params(tx, state, mask, grads, frozen)
        # The updated params too: an infinite learning rate or a NaN weight decay turns
        # finite gradients into non-finite params, which must never be accepted (or saved).
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(params)
        params, opt_state = _keep_if(finite, (params, opt_state), (state.params, state.opt_state))
        metrics = {
            **metrics,
            "grad_norm": grad_norm,
            "learning_rate": schedule(state.step),
            "nonfinite": 1.0 - finite.astype(jnp.float32),
        }
        ema = update_ema(state.ema_params, params, mask, config.train.ema_decay)
        if ema is not None:  # a rejected step leaves the average as it was, too
            ema = _keep_if(finite, ema, state.ema_params)
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
