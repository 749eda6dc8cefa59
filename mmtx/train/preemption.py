"""Stop requests: schedulers send SIGTERM before they take a TPU/GPU machine away, and a user
at a terminal presses Ctrl-C (SIGINT). Both mean "save a checkpoint and exit"."""

from __future__ import annotations

import os
import signal
import sys
import threading
import types
from typing import Any

import jax
from jax._src import distributed
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """Context manager telling the training loop when to checkpoint and stop.

    SIGTERM and the first SIGINT (Ctrl-C) ask the loop to finish the current step, save a
    checkpoint and return; a second Ctrl-C raises ``KeyboardInterrupt`` at once (the run then
    exits without saving; its last committed checkpoint is intact). Python drops an exception
    raised while a garbage-collector callback runs (jax registers one), so a second Ctrl-C
    that lands there is raised again by :meth:`should_stop`, before any save.

    One process: signal handlers set a flag (the previous handlers come back on exit).
    Several processes: JAX's preemption sync manager (started by
    ``jax.distributed.initialize``) hears SIGTERM on any host and picks one step at which
    every host's :meth:`should_stop` returns True, so all hosts save the same step; a Ctrl-C
    is turned into a SIGTERM to this process so that it takes the same path.
    """

    def __init__(self) -> None:
        self.signalled = False
        self.aborted = False  # a second Ctrl-C: exit without saving
        self.reason = ""
        self._previous: dict[int, Any] = {}

    def _on_sigterm(self, signum: int, frame: types.FrameType | None) -> None:
        del signum, frame
        self.signalled = True
        self.reason = self.reason or "preemption notice"

    def _on_sigint(self, signum: int, frame: types.FrameType | None) -> None:
        del signum, frame
        signal.signal(signal.SIGINT, self._on_second_sigint)
        print(
            "\ninterrupted (Ctrl-C): saving a checkpoint after this step, then exiting; "
            "press Ctrl-C again to exit now without saving",
            file=sys.stderr,
            flush=True,
        )
        self.reason = self.reason or "interrupted (Ctrl-C)"
        if self._synchronised():
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            self.signalled = True

    def _on_second_sigint(self, signum: int, frame: types.FrameType | None) -> None:
        del signum, frame
        self.aborted = True
        raise KeyboardInterrupt

    def _synchronised(self) -> bool:
        return (
            jax.process_count() > 1 and distributed.global_state.preemption_sync_manager is not None
        )

    def __enter__(self) -> PreemptionWatcher:
        # Signal handlers can only be set from the main thread (a notebook's thread may not be).
        if threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
            if not self._synchronised():
                self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def should_stop(self, step: int) -> bool:
        """Whether to save a checkpoint now and exit; call once after every step.

        Raises ``KeyboardInterrupt`` after a second Ctrl-C whose own exception was lost.
        """
        if self.aborted:
            raise KeyboardInterrupt
        if self._synchronised():
            return multihost_utils.reached_preemption_sync_point(step)
        return self.signalled
