"""Preemption notices: schedulers send SIGTERM before they take a TPU/GPU machine away."""

from __future__ import annotations

import signal
import threading
import types
from typing import Any

import jax
from jax._src import distributed
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """Context manager telling the training loop when to checkpoint and stop.

    One process: a SIGTERM handler sets a flag (the previous handler comes back on exit).
    Several processes: JAX's preemption sync manager (started by
    ``jax.distributed.initialize``) hears SIGTERM on any host and picks one step at which
    every host's :meth:`should_stop` returns True, so all hosts save the same step.
    """

    def __init__(self) -> None:
        self.signalled = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        del signum, frame
        self.signalled = True

    def _synchronised(self) -> bool:
        return (
            jax.process_count() > 1 and distributed.global_state.preemption_sync_manager is not None
        )

    def __enter__(self) -> PreemptionWatcher:
        # Signal handlers can only be set from the main thread (a notebook's thread may not be).
        if not self._synchronised() and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False

    def should_stop(self, step: int) -> bool:
        """Whether to save a checkpoint now and exit; call once after every step."""
        if self._synchronised():
            return multihost_utils.reached_preemption_sync_point(step)
        return self.signalled
