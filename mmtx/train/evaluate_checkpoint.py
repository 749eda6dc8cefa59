"""``evaluate_checkpoint(config, workdir)``: the newest checkpoint of a workdir evaluated
again, without training: what ``python -m mmtx.evaluate`` and ``mmtx.main --eval_only`` run.

The state is restored as a resumed run restores it (the same checks, the training data moved
to its saved position) and evaluated by the :class:`~mmtx.evaluate.evaluator.Evaluator` the
loop uses, so the metrics are the loop's; they land where the loop writes them
(``evals.json``, TensorBoard's ``eval/*`` at the checkpoint's step, ``summary.json``'s
``eval``), and ``config.json`` is rewritten with the config, as a rerun would.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import ml_collections

from mmtx import config as config_lib
from mmtx import losses
from mmtx.train import startup
from mmtx.train import workdir as workdir_lib
from mmtx.train.console import log
from mmtx.train.summary import TrainFigures, summarize, write_summary
from mmtx.train.workdir_claim import claimed_workdir, require_checkpoint, write_config


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Evaluates ``workdir``'s newest checkpoint with ``config`` (validated here) and returns
    the summary (``summary["eval"]``: the metrics rounded to 4 places; ``step``: the
    checkpoint's; the training figures kept from the run that trained).

    Says what it does in progress lines, the metrics not among them: the caller prints them
    once, as its result. A ``workdir`` that does not exist or holds no checkpoint raises
    :class:`~mmtx.train.workdir.WorkdirError` and is neither created nor claimed; one in use
    by a run raises it too; a checkpoint that does not fit ``config`` raises
    :class:`~mmtx.train.checkpoint.CheckpointMismatchError`.
    """
    config = config_lib.validate(config)
    require_checkpoint(workdir)
    with claimed_workdir(workdir):
        wall_started = time.perf_counter()
        with contextlib.ExitStack() as cleanup:
            started = startup.start(config, workdir, losses.total_loss, cleanup)
            if started.checkpointer.latest_step() is None:  # every step damaged, set aside
                raise workdir_lib.WorkdirError(f"no intact checkpoint in {workdir} to evaluate")
            state, step = startup.restore(started, config)
            log(f"evaluating step {step} only (eval_only)")
            write_config(config, workdir)
            startup.say_data(config, started.data)
            record_eval = startup.eval_recorder(started, config, workdir, cleanup, show=False)
            eval_started = time.perf_counter()
            metrics = record_eval(state, step)
        figures = TrainFigures(step, step, time.perf_counter() - eval_started)
        skipped = started.data.skipped() if started.data.file_source else None
        wall_seconds = time.perf_counter() - wall_started
        summary = summarize(config, started.facts, figures, metrics, wall_seconds, skipped)
        log(f"summary in {write_summary(workdir, summary)}")
    return summary
