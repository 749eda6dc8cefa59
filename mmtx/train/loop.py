"""``train_and_evaluate(config, workdir)``: the whole training program, top to bottom.

Stages: config -> mesh -> input -> model and optimizer -> sharded init -> restore ->
jitted steps -> loop (log, evaluate, checkpoint) -> summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from mmtx import config as config_lib
from mmtx import losses
from mmtx.data import bad_examples, sources
from mmtx.data.pipeline import create_dataset, create_source, has_eval_data
from mmtx.evaluate.evaluators import eval_tasks
from mmtx.models import resolve_dtype
from mmtx.nn.platform import mesh_platform
from mmtx.train import flops as flops_lib
from mmtx.train import init_from as init_from_lib
from mmtx.train import mesh as mesh_lib
from mmtx.train import trainable as trainable_lib
from mmtx.train import workdir as workdir_lib
from mmtx.train.build import (  # noqa: F401  (re-exported: the loop's names before build.py)
    abstract_train_state,
    build,
    create_train_state,
    jit_train_step,
)
from mmtx.train.checkpoint import Checkpointer
from mmtx.train.evaluate import evaluate, text_embedder
from mmtx.train.flops import throughput
from mmtx.train.metrics import MetricWriter, Progress, format_seconds
from mmtx.train.preemption import PreemptionWatcher
from mmtx.train.step import LossFn

SUMMARY_KEYS = (
    "accuracy",
    "text_to_image_recall@1",
    "text_to_image_recall@5",
    "image_to_text_recall@1",
    "image_to_text_recall@5",
    "audio_to_text_recall@1",
    "audio_to_text_recall@5",
    "image_zero_shot_top1",
    "image_zero_shot_top5",
    "audio_zero_shot_top1",
)


def _shown(metrics: dict[str, float]) -> dict[str, float]:
    """The headline metrics, rounded: :data:`SUMMARY_KEYS` in that order, then those of the
    other modalities (``video_to_text_recall@1`` ...) and the task accuracies, sorted."""
    rest = sorted(
        k
        for k in metrics
        if k not in SUMMARY_KEYS
        and (k.endswith(("_recall@1", "_zero_shot_top1")) or k.startswith("task_"))
        and not k.startswith("text_to_audio")
    )
    return {k: round(float(metrics[k]), 4) for k in (*SUMMARY_KEYS, *rest) if k in metrics}


class NonFiniteError(RuntimeError):
    """The loss or a gradient was not finite and ``config.train.nonfinite`` is ``"stop"``."""


def _log(message: str) -> None:
    """Progress goes to stdout on the first process (and to the absl log)."""
    logging.info(message)
    if jax.process_index() == 0:
        print(message, flush=True)


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the resolved config to ``workdir/config.json`` atomically (first process only)."""
    if jax.process_index() == 0:
        workdir_lib.write_json_atomically(os.path.join(workdir, "config.json"), _as_dict(config))


def _as_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON types (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


def _remove_on_error(workdir: str) -> Callable[..., bool]:
    """An ``__exit__`` that removes a just-created ``workdir`` when the run fails before
    writing anything worth keeping; the error goes on."""

    def exit_(kind: type[BaseException] | None, *_: object) -> bool:
        if kind is not None:
            workdir_lib.remove_if_nothing_kept(workdir)
        return False

    return exit_


@contextlib.contextmanager
def _claimed_workdir(workdir: str) -> Iterator[None]:
    """Claims ``workdir`` and holds its run lock (:mod:`mmtx.train.workdir`) on the first
    process; the other processes wait for it and fail too when it fails. A workdir this run
    created is removed again when the run fails before writing anything worth keeping
    (:func:`mmtx.train.workdir.remove_if_nothing_kept`: no checkpoint, no evaluation)."""
    with contextlib.ExitStack() as stack:
        error: Exception | None = None
        if jax.process_index() == 0:
            try:
                if workdir_lib.claim(workdir):
                    # Pushed before the lock: on the way out the lock is released first.
                    stack.push(_remove_on_error(workdir))
                stack.enter_context(workdir_lib.lock(workdir))
            except workdir_lib.WorkdirError as caught:
                error = caught
        if jax.process_count() > 1:
            ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
            if not ok and error is None:
                error = workdir_lib.WorkdirError(
                    f"process 0 could not claim the workdir {workdir} (see its log)"
                )
        if error is not None:
            raise error
        yield


def close_iterator(iterator: Any) -> None:
    """Stops a data iterator's worker processes now (grain ``mp_prefetch``), rather than in
    interpreter-exit finalizers, which fail noisily once their queues are gone."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


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


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    eval_only: bool = False,
    loss_fn: LossFn = losses.total_loss,
) -> dict[str, Any]:
    """Trains and evaluates as ``config`` says, in ``workdir``; returns the final summary.

    With ``eval_only``, nothing is trained: the newest checkpoint is evaluated (again, when
    it was already) and ``summary.json``'s ``eval`` is updated; a ``workdir`` that does not
    exist or holds no checkpoint raises :class:`~mmtx.train.workdir.WorkdirError` and is
    neither created nor claimed. A rerun of a finished run
    without it reports the final step's recorded evaluation instead of evaluating again.

    ``workdir`` must be new, empty or an mmtx workdir (:func:`mmtx.train.workdir.claim`), and
    one run at a time holds it (:func:`mmtx.train.workdir.lock`); otherwise
    :class:`~mmtx.train.workdir.WorkdirError` is raised before anything is written.

    A rerun with the same workdir resumes from the newest intact checkpoint and continues
    exactly (same batches, same RNG, same numbers); a checkpoint of a different run (another
    model, optimizer or data config) raises
    :class:`~mmtx.train.checkpoint.CheckpointMismatchError` and leaves the workdir as it was.
    An evaluation cut short by a kill is run again on resume. On SIGTERM or a first Ctrl-C
    the loop finishes the current step, saves a checkpoint, waits for it to commit and
    returns (``summary["preempted"]``); a second Ctrl-C raises ``KeyboardInterrupt`` at once.
    A non-finite loss, gradient or updated param raises :class:`NonFiniteError` naming the
    step when ``config.train.nonfinite == "stop"``, without saving a new checkpoint; with
    ``"skip"`` the update is skipped and the step listed in ``summary["nonfinite_steps"]``.
    Leaves ``workdir/config.json``, ``workdir/checkpoints``, ``workdir/evals.json``,
    TensorBoard event files and ``workdir/summary.json``.
    """
    config = config_lib.validate(config)
    if eval_only:
        _require_checkpoint(workdir)
    with _claimed_workdir(workdir):
        return _train_and_evaluate(config, workdir, eval_only, loss_fn)


def _require_checkpoint(workdir: str) -> None:
    """Raises :class:`~mmtx.train.workdir.WorkdirError` unless ``workdir`` holds a saved
    step (``checkpoints/<step>``): evaluating never creates or claims a directory."""
    if not os.path.isdir(workdir):
        raise workdir_lib.WorkdirError(f"no such workdir: {workdir} (nothing to evaluate)")
    directory = os.path.join(workdir, "checkpoints")
    steps = os.listdir(directory) if os.path.isdir(directory) else []
    if not any(name.isdigit() for name in steps):
        raise workdir_lib.WorkdirError(f"no checkpoint in {workdir} to evaluate")


class StepProfiler:
    """A ``jax.profiler`` trace of train steps ``START..END`` (1-based, inclusive) in ``logdir``.

    The trace starts before step START fetches its batch, once the previous steps are done
    (blocked on), and stops after step END's state and metrics are ready, so it holds exactly
    those steps. ``logdir`` gets TensorBoard's profile plugin layout
    (``plugins/profile/<run>/<host>.xplane.pb``). ``(0, 0)`` or ``()`` is off. A resumed run
    past START traces from its first step up to END; one past END traces nothing.
    """

    def __init__(self, steps: Any, logdir: str):
        steps = tuple(steps)
        self.start, self.end = steps if len(steps) == 2 else (0, 0)
        self.logdir = logdir
        self.active = False
        self.done = self.start <= 0

    def before(self, step: int, state: Any) -> None:
        """Called before step ``step`` (1-based) runs."""
        if self.done or self.active or not self.start <= step <= self.end:
            return
        jax.block_until_ready(state)
        jax.profiler.start_trace(self.logdir)
        self.active = True
        _log(f"profiling steps {step}..{self.end} to {self.logdir}")

    def after(self, step: int, outputs: Any) -> None:
        """Called after step ``step`` was dispatched, with its outputs."""
        if self.active and step >= self.end:
            jax.block_until_ready(outputs)
            self.close()
            _log(f"profile of steps up to {step} written to {self.logdir}")

    def close(self) -> None:
        """Stops a running trace (also on an early exit)."""
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
            self.done = True


def _epoch_size(config: ml_collections.ConfigDict, train_source: Any) -> int:
    """Examples in one pass over the training data: ``data.train_num_samples``, else the
    length of a random-access file source (``train_source``, the whole split); 0 for a stream
    without ``train_num_samples`` and for the built-in sources."""
    if config.data.train_num_samples:
        return int(config.data.train_num_samples)
    if sources.source_kind(config.data.source) in sources.RANDOM_ACCESS_KINDS:
        return len(train_source)
    return 0


def _flops_and_peak(config: ml_collections.ConfigDict, device_kind: str) -> tuple[float, float]:
    """The step's analytic FLOPs (all devices) and the peak FLOP/s per device, logged once."""
    count = flops_lib.analytic_flops(config, config.train.batch_size)
    peak, source = flops_lib.device_peak_flops(config.train.peak_flops, device_kind)
    partial = "" if count["complete"] else " (the fusion is not counted)"
    _log(
        f"MFU: {count['train'] / 1e9:.4g} GFLOP per step (analytic{partial}) against "
        f"{peak / 1e12:.4g} TFLOP/s per device ({source})"
    )
    return float(count["train"]), float(peak)


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, eval_only: bool, loss_fn: LossFn
) -> dict[str, Any]:
    wall_started = time.perf_counter()
    train_config = config.train
    run = build(config, mesh_lib.create_mesh(config.mesh), workdir=workdir, loss_fn=loss_fn)
    mesh, tokenizer, tx, state_shardings = run.mesh, run.tokenizer, run.tx, run.state_shardings
    local_batch = train_config.batch_size // jax.process_count()
    local_eval_batch = config.eval.batch_size // jax.process_count()

    train_source = create_source(config, "train")  # opened once: the pipeline, log, epochs
    train_data = create_dataset(
        config,
        "train",
        tokenizer,
        batch_size=local_batch,
        train=True,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        source=train_source,
    )
    file_source = sources.source_kind(config.data.source) in sources.FILE_KINDS
    with contextlib.ExitStack() as cleanup:
        train_iter = iter(train_data)
        if file_source:  # skipped bad examples, counted and checkpointed with the position
            train_iter = bad_examples.SkipTally(train_iter)
        cleanup.callback(close_iterator, train_iter)
        state = run.init_state()
        num_params = sum(x.size for x in jax.tree.leaves(state.params))
        trainable_mask = trainable_lib.trainable_mask(state.params, train_config)
        num_trainable = trainable_lib.count(state.params, trainable_mask)
        device_kind = jax.devices()[0].device_kind
        compute_dtype = jnp.dtype(resolve_dtype(config.dtype, mesh_platform(mesh))).name
        _log(
            f"model: {num_params:,} params ({config.param_dtype}), computing in "
            f"{compute_dtype}; {jax.device_count()} x {device_kind} "
            f"({jax.default_backend()}); mesh {dict(mesh.shape)}"
        )
        if num_trainable < num_params:
            _log(
                f"trainable: {num_trainable:,} params "
                f"({100 * num_trainable / num_params:.1f}%), the rest frozen"
            )
        checkpointer = Checkpointer(
            os.path.join(workdir, "checkpoints"),
            save_every=train_config.checkpoint_every,
            keep=train_config.keep_checkpoints,
            config=_as_dict(config),
        )
        cleanup.push(_commit_saves_on_exit(checkpointer))
        start = 0
        if checkpointer.latest_step() is not None:
            state, start = checkpointer.restore(state, train_iter)
            _log(f"resumed from checkpoint at step {start}")
            changed = checkpointer.config_changes(start)
            if changed:
                _log(f"config changes since that checkpoint: {changed}")
        elif eval_only:  # every saved step was damaged and set aside
            raise workdir_lib.WorkdirError(f"no intact checkpoint in {workdir} to evaluate")
        elif train_config.init_from:
            params, report = init_from_lib.load_params(train_config.init_from, state.params, config)
            opt_state = jax.jit(tx.init, out_shardings=state_shardings.opt_state)(params)
            ema = jax.tree.map(lambda x: x.copy(), params) if train_config.ema_decay > 0 else None
            state = state.replace(params=params, opt_state=opt_state, ema_params=ema)
            for line in report.lines():
                _log(line)
        if eval_only:
            _log(f"evaluating step {start} only (eval_only)")
        elif start < train_config.steps:
            _log(f"training from step {start} to {train_config.steps}")
        else:
            _log(
                f"nothing left to train: step {start} of train.steps={train_config.steps} is "
                "done (raise --config.train.steps to train on; --eval_only evaluates again)"
            )
        # Only now, with the checkpoint known to fit: config.json describes the checkpoints.
        write_config(config, workdir)
        if file_source:
            _log(f"data: {train_source!r}; {sources.describe_eval(config)}")
        evaluates = has_eval_data(config)
        epoch_size = _epoch_size(config, train_source)

        to_global, train_step, eval_step = run.to_global, run.train_step, run.eval_step

        # Zero-shot class names and every caption of the eval split, read at the first eval.
        eval_extras: list[Any] = []

        def evaluate_params(params: Any) -> dict[str, float]:
            eval_data = create_dataset(
                config,
                "eval",
                tokenizer,
                batch_size=local_eval_batch,
                train=False,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
                with_index=True,
            )
            if not eval_extras:
                eval_extras.append(eval_tasks(config))
            eval_iter = iter(eval_data)
            if file_source:
                eval_iter = bad_examples.SkipTally(eval_iter)
            try:
                return evaluate(
                    eval_step,
                    params,
                    eval_iter,
                    local_batch_size=local_eval_batch,
                    to_global=to_global,
                    tasks=eval_extras[0],
                    embed_text=text_embedder(
                        eval_step,
                        params,
                        tokenizer,
                        config.model.text.max_length,
                        local_batch_size=local_eval_batch,
                        to_global=to_global,
                    ),
                )
            finally:
                close_iterator(eval_iter)

        def run_eval(step: int) -> dict[str, float]:
            if not evaluates:
                return {}
            started = time.perf_counter()
            metrics = evaluate_params(state.params)
            # eval_only: the command prints the metrics once, as its result.
            shown = "" if eval_only else f": {_shown(metrics)}"
            _log(f"eval at step {step} ({time.perf_counter() - started:.1f}s){shown}")
            if state.ema_params is not None:  # the moving average, beside the params
                started = time.perf_counter()
                ema_metrics = evaluate_params(state.ema_params)
                shown = "" if eval_only else f": {_shown(ema_metrics)}"
                _log(
                    f"eval of the EMA params at step {step} "
                    f"({time.perf_counter() - started:.1f}s){shown}"
                )
                metrics.update({f"ema/{k}": v for k, v in ema_metrics.items()})
            writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
            if jax.process_index() == 0:
                workdir_lib.record_eval(workdir, step, metrics)
            return metrics

        writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
        step = int(state.step)
        progress = Progress(train_config.steps, step)
        started = time.perf_counter()
        first_step = step
        end = step if eval_only else train_config.steps
        eval_metrics: dict[str, float] = {}
        pending: list[tuple[int, dict[str, jax.Array]]] = []
        nonfinite_steps: list[int] = []
        preempted = False
        compile_seconds: float | None = None
        flops_per_step, peak_flops = 0.0, 0.0
        last_loss: float | None = None

        def skipped_counts() -> dict[str, int]:
            """Bad examples skipped by every process so far, by reason (a collective: every
            process calls it at the same steps)."""
            totals = train_iter.totals
            if jax.process_count() > 1:
                totals = np.asarray(multihost_utils.process_allgather(totals)).sum(0)
            return bad_examples.as_counts(totals)

        def flush_metrics(log: bool) -> None:
            """Fetches the pending steps' metrics, writes them and applies the non-finite policy.

            Fetching only at log, eval and checkpoint steps keeps the host from blocking on
            each step, so input and compute overlap.
            """
            nonlocal pending, last_loss
            if not pending:
                return
            fetched = jax.device_get(pending)
            pending = []
            for metric_step, values in fetched:
                writer.write_scalars(metric_step, {f"train/{k}": v for k, v in values.items()})
                if values["nonfinite"] > 0:
                    nonfinite_steps.append(metric_step)
                    if train_config.nonfinite == "stop":
                        raise NonFiniteError(
                            f"non-finite loss, gradients or updated params at step {metric_step} "
                            f"(loss {float(values['loss'])}, grad_norm "
                            f"{float(values['grad_norm'])}); stopped without saving a new "
                            f"checkpoint (latest: step {checkpointer.latest_step()}). "
                            "Set config.train.nonfinite='skip' to skip such steps instead."
                        )
                    _log(
                        f"step {metric_step}: non-finite loss, gradients or updated params; "
                        "update skipped"
                    )
            last_loss = float(fetched[-1][1]["loss"])
            if log:
                latest = {k: v for k, v in fetched[-1][1].items()}
                line = progress.line(
                    step, {k: latest[k] for k in ("loss", "accuracy") if k in latest}
                )
                if epoch_size:
                    line += f" | epoch {step * train_config.batch_size / epoch_size:.2f}"
                skipped = bad_examples.describe(skipped_counts()) if file_source else ""
                _log(f"{line} | {skipped}" if skipped else line)
                if progress.perf:
                    writer.write_scalars(step, {f"train/{k}": v for k, v in progress.perf.items()})

        profiler = StepProfiler(train_config.profile_steps, os.path.join(workdir, "profile"))
        try:
            recorded = workdir_lib.read_evals(workdir)
            if eval_only:
                eval_metrics = run_eval(step)
            elif evaluates and step > 0 and (step % train_config.eval_every == 0 or step >= end):
                if step not in recorded:
                    _log(f"evaluating step {step}, which the interrupted run did not finish")
                    eval_metrics = run_eval(step)
                elif step >= end:
                    eval_metrics = recorded[step]
                    shown = _shown(eval_metrics)
                    _log(f"eval at step {step} (recorded in {workdir_lib.EVALS}): {shown}")
            with PreemptionWatcher() as preemption:
                # A wait for a save in flight gives up STOP_GRACE_SECONDS after a stop request.
                checkpointer.stop_requested = lambda: preemption.signalled or preemption.aborted
                first_batch = None
                if step < end:
                    first_batch = to_global(next(train_iter))
                    flops_per_step, peak_flops = _flops_and_peak(config, device_kind)
                    _log("compiling the train step...")
                    compile_started = time.perf_counter()
                    train_step = train_step.lower(state, first_batch).compile()
                    compile_seconds = time.perf_counter() - compile_started
                    _log(f"compiled the train step in {compile_seconds:.1f}s")
                    # ETAs, TFLOP/s and MFU without the compile.
                    progress = Progress(
                        train_config.steps, step, flops_per_step, jax.device_count(), peak_flops
                    )
                while step < end:
                    profiler.before(step + 1, state)
                    batch = to_global(next(train_iter)) if first_batch is None else first_batch
                    first_batch = None
                    state, metrics = train_step(state, batch)
                    step += 1
                    pending.append((step, metrics))
                    profiler.after(step, (state, metrics))
                    if preemption.should_stop(step):
                        flush_metrics(log=True)
                        _log(
                            f"{preemption.reason or 'preemption notice'}: saving a checkpoint at "
                            f"step {step} and exiting"
                        )
                        preempted = True
                        break
                    is_eval = step % train_config.eval_every == 0 or step == train_config.steps
                    is_log = step % train_config.log_every == 0 or step == train_config.steps
                    if is_log or is_eval or checkpointer.would_save(step):
                        flush_metrics(log=is_log)
                    checkpointer.save(step, state, train_iter)
                    checkpointer.poll()  # a failed background save ends the run now
                    if is_eval:
                        eval_metrics = run_eval(step)
                flush_metrics(log=False)
                if not eval_only:
                    checkpointer.save(step, state, train_iter, force=True)
                if not eval_metrics and not preempted:
                    eval_metrics = run_eval(step)
        finally:
            profiler.close()
            writer.flush()
            writer.close()
    # Leaving the block committed the final checkpoint: the summary may say it is saved.
    elapsed = time.perf_counter() - started

    summary = {
        "step": step,
        "num_params": int(num_params),
        "num_trainable_params": int(num_trainable),
        "dtype": compute_dtype,
        "param_dtype": config.param_dtype,
        "device_kind": device_kind,
        "device_count": jax.device_count(),
        "compile_seconds": round(compile_seconds, 2) if compile_seconds is not None else None,
        "train_seconds_this_run": round(elapsed, 2),
        "wall_seconds_this_run": round(time.perf_counter() - wall_started, 2),
        "steps_this_run": step - first_step,
        "steps_per_second": round((step - first_step) / elapsed, 3) if step > first_step else None,
        "final_train_loss": last_loss,
        # Analytic model FLOPs (mmtx.train.flops) at steps_per_second, per device, and MFU.
        "flops_per_step": flops_per_step or None,
        "peak_flops_per_device": peak_flops or None,
        "tflops_per_device": None,
        "mfu": None,
        "eval": {k: round(float(v), 4) for k, v in eval_metrics.items()},
        "nonfinite_steps": nonfinite_steps,
        "preempted": preempted,
    }
    if file_source:  # bad examples skipped, by reason, over the whole run (resumes included)
        summary["skipped"] = skipped_counts()
    if step > first_step and flops_per_step:
        # Over this run's steps, the compile excluded (evals and checkpoints included).
        rate = (step - first_step) / max(elapsed - (compile_seconds or 0.0), 1e-9)
        perf = throughput(rate, flops_per_step, jax.device_count(), peak_flops)
        summary["tflops_per_device"] = round(perf["tflops_per_device"], 6)
        summary["mfu"] = round(perf["mfu"], 5) if peak_flops else None
    summary_path = os.path.join(workdir, "summary.json")
    if step == first_step and os.path.exists(summary_path):
        # A run that trained nothing keeps the training figures of the run that did.
        with open(summary_path) as f:
            previous = json.load(f)
        for key in (
            "steps_per_second",
            "final_train_loss",
            "compile_seconds",
            "flops_per_step",
            "peak_flops_per_device",
            "tflops_per_device",
            "mfu",
        ):
            if summary[key] is None and previous.get(key) is not None:
                summary[key] = previous[key]
    if jax.process_index() == 0:
        workdir_lib.write_json_atomically(summary_path, summary)
    if eval_only:  # the evaluate command prints the metrics, once
        _log(f"summary in {os.path.join(workdir, 'summary.json')}")
        return summary
    _log("final: " + json.dumps({k: summary["eval"].get(k) for k in _shown(summary["eval"])}))
    _log(
        f"trained {summary['steps_this_run']} steps in {format_seconds(elapsed)}; "
        f"summary in {os.path.join(workdir, 'summary.json')}"
    )
    return summary
