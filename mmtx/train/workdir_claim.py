"""A run's hold on its workdir: claimed and locked while it runs, removed again when a run
that created it fails before writing anything worth keeping, and ``config.json``."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from mmtx.train import workdir as workdir_lib


def config_as_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON types (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes the resolved config to ``workdir/config.json`` atomically (first process only)."""
    if jax.process_index() == 0:
        path = os.path.join(workdir, "config.json")
        workdir_lib.write_json_atomically(path, config_as_dict(config))


def require_checkpoint(workdir: str) -> None:
    """Raises :class:`~mmtx.train.workdir.WorkdirError` unless ``workdir`` holds a saved
    step (``checkpoints/<step>``): evaluating never creates or claims a directory."""
    if not os.path.isdir(workdir):
        raise workdir_lib.WorkdirError(f"no such workdir: {workdir} (nothing to evaluate)")
    directory = os.path.join(workdir, "checkpoints")
    steps = os.listdir(directory) if os.path.isdir(directory) else []
    if not any(name.isdigit() for name in steps):
        raise workdir_lib.WorkdirError(f"no checkpoint in {workdir} to evaluate")


def _remove_on_error(workdir: str) -> Callable[..., bool]:
    """An ``__exit__`` that removes a just-created ``workdir`` when the run fails before
    writing anything worth keeping; the error goes on."""

    def exit_(kind: type[BaseException] | None, *_: object) -> bool:
        if kind is not None:
            workdir_lib.remove_if_nothing_kept(workdir)
        return False

    return exit_


@contextlib.contextmanager
def claimed_workdir(workdir: str) -> Iterator[None]:
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
