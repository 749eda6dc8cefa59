"""The start of a run, shared by training and by evaluating a checkpoint: the run built, the
training data opened, the state initialised and restored (or initialised from another
workdir), each said in a progress line."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from mmtx.data import bad_examples, sources
from mmtx.data.pipeline import close_iterator, create_dataset, create_source
from mmtx.data.tokenizer import Tokenizer
from mmtx.evaluate.evaluator import Evaluator
from mmtx.models import resolve_dtype
from mmtx.nn.platform import mesh_platform
from mmtx.train import init_from as init_from_lib
from mmtx.train import mesh as mesh_lib
from mmtx.train import trainable as trainable_lib
from mmtx.train.build import Run, build
from mmtx.train.checkpoint import Checkpointer
from mmtx.train.console import log
from mmtx.train.metrics import MetricWriter
from mmtx.train.recorded_eval import EvalRecorder
from mmtx.train.state import TrainState
from mmtx.train.step import LossFn
from mmtx.train.workdir_claim import config_as_dict


@dataclasses.dataclass(frozen=True)
class TrainInput:
    """The training data: its source (opened once) and the iterator the steps read.

    Attributes:
      source: the ``"train"`` split's source.
      iterator: yields this process's batches (numpy, leading axis ``batch / processes``); a
        :class:`~mmtx.data.bad_examples.SkipTally` for a file source, which counts (and
        checkpoints) the bad examples skipped.
      file_source: whether ``data.source`` is a file source.
      epoch_size: examples in one pass (:func:`epoch_size`; 0: unknown).
    """

    source: Any
    iterator: Any
    file_source: bool
    epoch_size: int

    def skipped(self) -> dict[str, int]:
        """Bad examples skipped by every process so far, by reason (a collective: every
        process calls it at the same steps). Only for a file source."""
        totals = self.iterator.totals
        if jax.process_count() > 1:
            totals = np.asarray(multihost_utils.process_allgather(totals)).sum(0)
        return bad_examples.as_counts(totals)


def epoch_size(config: ml_collections.ConfigDict, train_source: Any) -> int:
    """Examples in one pass over the training data: ``data.train_num_samples``, else the
    length of a random-access file source (``train_source``, the whole split); 0 for a stream
    without ``train_num_samples`` and for the built-in sources."""
    if config.data.train_num_samples:
        return int(config.data.train_num_samples)
    if sources.source_kind(config.data.source) in sources.RANDOM_ACCESS_KINDS:
        return len(train_source)
    return 0


def open_train_input(config: ml_collections.ConfigDict, tokenizer: Tokenizer) -> TrainInput:
    """The training split's pipeline, this process's share of ``train.batch_size``."""
    source = create_source(config, "train")  # opened once: the pipeline, log, epochs
    data = create_dataset(
        config,
        "train",
        tokenizer,
        batch_size=config.train.batch_size // jax.process_count(),
        train=True,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        source=source,
    )
    file_source = sources.source_kind(config.data.source) in sources.FILE_KINDS
    iterator = iter(data)
    if file_source:  # skipped bad examples, counted and checkpointed with the position
        iterator = bad_examples.SkipTally(iterator)
    return TrainInput(source, iterator, file_source, epoch_size(config, source))


def say_data(config: ml_collections.ConfigDict, data: TrainInput) -> None:
    """Says which file source the run reads, and its eval split (nothing for the others)."""
    if data.file_source:
        log(f"data: {data.source!r}; {sources.describe_eval(config)}")


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """The summary's facts about the model and the devices: param counts, the compute
    dtype's name (``"float32"``, ``"bfloat16"``) and the devices' kind."""

    num_params: int
    num_trainable: int
    compute_dtype: str
    device_kind: str


def describe_model(
    config: ml_collections.ConfigDict, state: TrainState, mesh: jax.sharding.Mesh
) -> ModelFacts:
    """The model's :class:`ModelFacts`, said in a line (and one more with frozen params)."""
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    mask = trainable_lib.trainable_mask(state.params, config.train)
    num_trainable = trainable_lib.count(state.params, mask)
    device_kind = jax.devices()[0].device_kind
    compute_dtype = jnp.dtype(resolve_dtype(config.dtype, mesh_platform(mesh))).name
    log(
        f"model: {num_params:,} params ({config.param_dtype}), computing in "
        f"{compute_dtype}; {jax.device_count()} x {device_kind} "
        f"({jax.default_backend()}); mesh {dict(mesh.shape)}"
    )
    if num_trainable < num_params:
        log(
            f"trainable: {num_trainable:,} params "
            f"({100 * num_trainable / num_params:.1f}%), the rest frozen"
        )
    return ModelFacts(int(num_params), int(num_trainable), compute_dtype, device_kind)


def _commit_saves_on_exit(checkpointer: Checkpointer) -> Any:
    """An exit callback: waits for a save in flight to commit and closes the checkpointer,
    also on errors (so the checkpoints stay complete), except after a second Ctrl-C, which
    exits at once (the save in flight is abandoned: orbax removes its temporary directory at
    the next start, and the last committed checkpoint stays intact)."""

    def commit(exc_type: Any, *_: Any) -> bool:
        if exc_type is not KeyboardInterrupt:
            checkpointer.wait()
            checkpointer.close()
        return False

    return commit


@dataclasses.dataclass(frozen=True)
class Started:
    """A started run: built (:class:`~mmtx.train.build.Run`), its training data open, its
    state freshly initialised (not yet restored), its checkpoints open."""

    run: Run
    data: TrainInput
    state: TrainState
    facts: ModelFacts
    checkpointer: Checkpointer


def start(
    config: ml_collections.ConfigDict,
    workdir: str,
    loss_fn: LossFn,
    cleanup: contextlib.ExitStack,
) -> Started:
    """Builds the run of the validated ``config`` in ``workdir`` and initialises its state.

    ``cleanup`` closes what was opened: on the way out it first waits for a checkpoint save
    in flight to commit (:class:`~mmtx.train.checkpoint.Checkpointer`), then stops the
    training data's workers.
    """
    run = build(config, mesh_lib.create_mesh(config.mesh), workdir=workdir, loss_fn=loss_fn)
    data = open_train_input(config, run.tokenizer)
    cleanup.callback(close_iterator, data.iterator)
    state = run.init_state()
    facts = describe_model(config, state, run.mesh)
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        save_every=config.train.checkpoint_every,
        keep=config.train.keep_checkpoints,
        config=config_as_dict(config),
    )
    cleanup.push(_commit_saves_on_exit(checkpointer))
    return Started(run, data, state, facts, checkpointer)


def open_writer(workdir: str, cleanup: contextlib.ExitStack) -> MetricWriter:
    """The run's TensorBoard writer (first process only), flushed and closed by ``cleanup``."""
    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    cleanup.callback(writer.close)
    cleanup.callback(writer.flush)
    return writer


def eval_recorder(
    started: Started,
    config: ml_collections.ConfigDict,
    workdir: str,
    cleanup: contextlib.ExitStack,
    *,
    show: bool = True,
) -> EvalRecorder:
    """The run's evaluations, run and recorded: an :class:`~mmtx.evaluate.evaluator.Evaluator`
    of its eval step, writing to the run's TensorBoard writer (:func:`open_writer`, closed by
    ``cleanup``; the recorder's ``writer``) and ``evals.json``; ``show`` as
    :class:`~mmtx.train.recorded_eval.EvalRecorder` takes it."""
    run = started.run
    evaluator = Evaluator(run.eval_step, config, run.tokenizer, to_global=run.to_global)
    return EvalRecorder(evaluator, open_writer(workdir, cleanup), workdir, show=show)


def restore(started: Started, config: ml_collections.ConfigDict) -> tuple[TrainState, int]:
    """The newest intact checkpoint's state and step (the training data moved to its
    position); without one, the fresh state at step 0, its params from
    ``train.init_from`` when set."""
    checkpointer = started.checkpointer
    if checkpointer.latest_step() is not None:
        state, step = checkpointer.restore(started.state, started.data.iterator)
        log(f"resumed from checkpoint at step {step}")
        changed = checkpointer.config_changes(step)
        if changed:
            log(f"config changes since that checkpoint: {changed}")
        return state, step
    if config.train.init_from:
        return _init_from(started, config), 0
    return started.state, 0


def _init_from(started: Started, config: ml_collections.ConfigDict) -> TrainState:
    """The fresh state with ``train.init_from``'s params, a fresh optimizer state for them
    and the EMA (when ``train.ema_decay > 0``) equal to them."""
    state, run = started.state, started.run
    params, report = init_from_lib.load_params(config.train.init_from, state.params, config)
    opt_state = jax.jit(run.tx.init, out_shardings=run.state_shardings.opt_state)(params)
    ema = jax.tree.map(lambda x: x.copy(), params) if config.train.ema_decay > 0 else None
    for line in report.lines():
        log(line)
    return state.replace(params=params, opt_state=opt_state, ema_params=ema)
