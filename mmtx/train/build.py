"""``build(config, mesh) -> Run``: everything a run needs, built once, the way training runs it.

The training loop, the benchmarks and the experiments all take their module, tokenizer,
optimizer, sharded state and jitted steps from :func:`build`, so that what they measure is
what ``train_and_evaluate`` trains. Nothing is materialised or compiled by :func:`build`:
the state is abstract (``jax.ShapeDtypeStruct`` leaves) until :meth:`Run.init_state`, and the
steps compile on their first call (or ``.lower(...).compile()``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmtx import config as config_lib
from mmtx import losses
from mmtx.data.tokenizer import Tokenizer, create_tokenizer
from mmtx.models import MultiModalTransformer, dummy_batch
from mmtx.nn.platform import compiling_for, mesh_platform
from mmtx.train import lora as lora_lib
from mmtx.train import mesh as mesh_lib
from mmtx.train.optimizer import create_optimizer
from mmtx.train.state import TrainState
from mmtx.train.step import LossFn, make_eval_step, make_train_step

__all__ = [
    "Run",
    "abstract_train_state",
    "build",
    "create_train_state",
    "jit_train_step",
]


@dataclasses.dataclass(frozen=True)
class Run:
    """What :func:`build` returns: one run's parts, all consistent with each other.

    Attributes:
      config: the validated config the run was built from.
      mesh: the device mesh (axes ``("data", "fsdp", "tensor")``).
      module: the linen :class:`~mmtx.models.MultiModalTransformer`.
      tokenizer: the run's tokenizer (its ``vocab_size`` sized the text embedding).
      tx: the optax optimizer (``create_optimizer(config.train)`` unless one was given).
      abstract_state: the :class:`~mmtx.train.state.TrainState` as ``ShapeDtypeStruct``
        leaves: ``step`` int32 ``[]``, params and optimizer moments in ``config.param_dtype``
        (float32), ``rng`` uint32 ``[2]``, ``ema_params`` (or None).
      state_shardings: a ``TrainState`` of ``NamedSharding`` leaves: params by their logical
        axes (LoRA adapters replicated), optimizer moments as their params, the rest
        replicated.
      data_sharding: the batch's sharding, leading axis split over ``("data", "fsdp")``.
      train_step: ``(state, batch) -> (state, metrics)`` jitted as training runs it: under the
        mesh's logical-axis rules, in and out state sharded as ``state_shardings``, the batch
        as ``data_sharding``, the input state donated. Metrics are float32 scalars.
      eval_step: ``(params, batch) -> outputs`` jitted with params sharded as
        ``state_shardings.params``: pooled embeddings ``[B, D]`` per modality, ``"fused"``
        ``[B, D]`` and ``"logits"`` ``[B, C]`` with a classifier (LoRA adapters merged).
      init: ``rng -> TrainState`` jitted with ``out_shardings=state_shardings``; use
        :meth:`init_state`.
    """

    config: ml_collections.ConfigDict
    mesh: Mesh
    module: MultiModalTransformer
    tokenizer: Tokenizer
    tx: optax.GradientTransformation
    abstract_state: TrainState
    state_shardings: TrainState
    data_sharding: NamedSharding
    train_step: Any
    eval_step: Any
    init: Callable[[jax.Array], TrainState]

    def init_state(self, rng: jax.Array | None = None) -> TrainState:
        """A freshly initialised state, placed directly into :attr:`state_shardings`.

        ``rng`` (a ``jax.random.PRNGKey``, uint32 ``[2]``) defaults to
        ``PRNGKey(config.train.seed)``, what training starts from. Params come from a
        one-example dummy batch (with LoRA adapters when ``config.train.lora.rank > 0``),
        ``step`` is 0 and the EMA (when ``config.train.ema_decay > 0``) equals the params.
        """
        if rng is None:
            rng = jax.random.PRNGKey(self.config.train.seed)
        chex.assert_shape(rng, (2,))
        return self.init(rng)

    def to_global(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's share of a batch (numpy, leading axis ``global batch / processes``)
        -> global arrays sharded as :attr:`data_sharding` (dtypes and trailing shapes kept)."""
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(self.data_sharding, x), batch
        )

    @property
    def num_params(self) -> int:
        """Scalars in the params (LoRA adapters included), from the abstract state."""
        return int(sum(x.size for x in jax.tree.leaves(self.abstract_state.params)))


def build(
    config: ml_collections.ConfigDict,
    mesh: Mesh | None = None,
    *,
    workdir: str | None = None,
    tx: optax.GradientTransformation | None = None,
    loss_fn: LossFn = losses.total_loss,
) -> Run:
    """Builds a run's module, tokenizer, optimizer, abstract state, shardings and jitted steps.

    Args:
      config: a validated config (:func:`mmtx.config.validate`).
      mesh: the device mesh; default ``create_mesh(config.mesh)`` over all devices.
      workdir: a run's workdir: a relative ``config.tokenizer.model_file`` that exists
        there (an imported checkpoint's ``tokenizer/<file>``) is read from it
        (:func:`mmtx.config.workdir_file`).
      tx: an optimizer to use instead of ``create_optimizer(config.train)``.
      loss_fn: the train step's loss, as :func:`mmtx.train.step.make_train_step` takes it
        (tests wrap the real one, e.g. to make one step's loss NaN).

    Returns:
      A :class:`Run`. Nothing is initialised or compiled yet.

    Raises:
      ValueError: the batch does not divide over the mesh's data axes x microbatches x
        processes (:func:`mmtx.train.mesh.check_divisibility`), before anything is traced.
    """
    if mesh is None:
        mesh = mesh_lib.create_mesh(config.mesh)
    mesh_lib.check_divisibility(config, mesh, jax.process_count())
    model_file = config.tokenizer.model_file
    if workdir is not None:
        model_file = config_lib.workdir_file(model_file, workdir)
    tokenizer = create_tokenizer(config.tokenizer.type, model_file)
    platform = mesh_platform(mesh)
    module = MultiModalTransformer.from_config(
        config, vocab_size=tokenizer.vocab_size, platform=platform
    )
    tx = create_optimizer(config.train) if tx is None else tx
    abstract_state, state_shardings = abstract_train_state(module, tx, config, mesh)
    data_sharding = mesh_lib.batch_sharding(mesh)
    return Run(
        config=config,
        mesh=mesh,
        module=module,
        tokenizer=tokenizer,
        tx=tx,
        abstract_state=abstract_state,
        state_shardings=state_shardings,
        data_sharding=data_sharding,
        train_step=jit_train_step(module, tx, config, mesh, state_shardings, loss_fn),
        eval_step=jax.jit(
            mesh_lib.with_sharding_rules(make_eval_step(module, config), mesh),
            in_shardings=(state_shardings.params, data_sharding),
        ),
        init=jax.jit(
            _for_platform(_state_init(module, tx, config), platform),
            out_shardings=state_shardings,
        ),
    )


def _for_platform(fn: Callable[..., Any], platform: str) -> Callable[..., Any]:
    """``fn`` traced for ``platform`` (:func:`mmtx.nn.platform.compiling_for`)."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with compiling_for(platform):
            return fn(*args, **kwargs)

    return wrapped


def _state_init(module: MultiModalTransformer, tx: Any, config: ml_collections.ConfigDict) -> Any:
    """``init(rng) -> TrainState``: params from a one-example dummy batch (with LoRA
    adapters when ``config.train.lora.rank > 0``), optimizer state."""
    batch = dummy_batch(config, batch_size=1)

    def init(rng: jax.Array) -> TrainState:
        init_rng, train_rng = jax.random.split(rng)
        params = nn.meta.unbox(module.init(init_rng, batch, train=False)["params"])
        lora_rng = jax.random.fold_in(init_rng, lora_lib.RNG_STREAM)
        params = lora_lib.add_adapters(params, config.train.lora, lora_rng)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=train_rng,
            ema_params=params if config.train.ema_decay > 0 else None,
        )

    return init


def abstract_train_state(
    module: MultiModalTransformer, tx: Any, config: ml_collections.ConfigDict, mesh: Mesh
) -> tuple[TrainState, TrainState]:
    """What :func:`create_train_state` makes, as shapes: ``(abstract state, shardings)``.

    Params are sharded by their logical axes on ``mesh`` (LoRA adapters are replicated);
    optimizer moments mirror the params' shardings; everything else is replicated. Nothing
    is materialised.
    """
    batch = dummy_batch(config, batch_size=1)
    rng = jax.random.PRNGKey(config.train.seed)
    with compiling_for(mesh_platform(mesh)):
        abstract_boxed = jax.eval_shape(lambda r: module.init(r, batch, train=False)["params"], rng)
        abstract_state = jax.eval_shape(_state_init(module, tx, config), rng)
    param_shardings = mesh_lib.logical_shardings(mesh, abstract_boxed)
    replicated = NamedSharding(mesh, PartitionSpec())
    if lora_lib.LORA_KEY in abstract_state.params:
        adapters = abstract_state.params[lora_lib.LORA_KEY]
        param_shardings = {
            **param_shardings,
            lora_lib.LORA_KEY: jax.tree.map(lambda _: replicated, adapters),
        }
    opt_shardings = _mirror_param_shardings(
        abstract_state.opt_state, abstract_state.params, param_shardings, replicated
    )
    shardings = TrainState(
        step=replicated,
        params=param_shardings,
        opt_state=opt_shardings,
        rng=replicated,
        ema_params=param_shardings if config.train.ema_decay > 0 else None,
    )
    return abstract_state, shardings


def create_train_state(
    module: MultiModalTransformer, tx: Any, config: ml_collections.ConfigDict, mesh: Mesh
) -> tuple[TrainState, Any]:
    """Initialises the state directly into its shardings; returns (state, state shardings)."""
    _, shardings = abstract_train_state(module, tx, config, mesh)
    init = _state_init(module, tx, config)
    state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(config.train.seed))
    return state, shardings


def _mirror_param_shardings(opt_state: Any, params: Any, param_shardings: Any, default: Any) -> Any:
    """Maps every leaf of ``opt_state`` whose key path ends with a param's path and has its
    shape (Adam's moments, also those of a partitioned optimizer that holds moments for the
    trainable params only) to that param's sharding, and every other leaf (counts, scalars)
    to ``default``."""
    by_path = {
        tuple(path): (leaf.shape, sharding)
        for (path, leaf), sharding in zip(
            jax.tree_util.tree_leaves_with_path(params),
            jax.tree.leaves(param_shardings),
            strict=True,
        )
    }

    def sharding(path: tuple[Any, ...], leaf: Any) -> Any:
        for start in range(len(path)):
            match = by_path.get(tuple(path[start:]))
            if match is not None and tuple(match[0]) == tuple(leaf.shape):
                return match[1]
        return default

    return jax.tree_util.tree_map_with_path(sharding, opt_state)


def jit_train_step(
    module: MultiModalTransformer,
    tx: Any,
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    state_shardings: Any,
    loss_fn: LossFn = losses.total_loss,
) -> Any:
    """The jitted ``(state, batch) -> (state, metrics)`` step exactly as training runs it:
    under the mesh's logical-axis rules, state sharded as ``state_shardings``, batch split
    over the data axes, and the input state donated (its buffers reused for the new one).
    ``loss_fn``: as :func:`mmtx.train.step.make_train_step` takes it. Code paths chosen by
    platform follow ``mesh``'s devices (:func:`mmtx.nn.platform.mesh_platform`)."""
    step = make_train_step(module, tx, config, loss_fn, platform=mesh_platform(mesh))
    return jax.jit(
        mesh_lib.with_sharding_rules(step, mesh),
        in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh)),
        out_shardings=(state_shardings, None),
        donate_argnums=0,
    )
