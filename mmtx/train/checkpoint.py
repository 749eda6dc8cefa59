"""Checkpoints: an orbax CheckpointManager holding the train state and the data iterator.

Saves are asynchronous for the arrays; the data iterator's position is written with them,
so a restarted run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import orbax.checkpoint as ocp


class Checkpointer:
    """``workdir/checkpoints``: keep-N saves of ``{"state", "data"}`` every ``save_every`` steps."""

    def __init__(
        self, directory: str, *, save_every: int = 1, keep: int = 1, read_only: bool = False
    ):
        self.directory = os.path.abspath(directory)
        self.save_every = save_every
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, read_only=read_only
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest saved step, or None."""
        return self.manager.latest_step()

    def save(
        self, step: int, state: Any, data_iterator: Any = None, *, force: bool = False
    ) -> bool:
        """Saves when ``step`` is a multiple of ``save_every`` (or ``force``) and not yet saved.

        Returns whether a save started.
        """
        if step == self.latest_step() or not (force or step % self.save_every == 0):
            return False
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(
        self, abstract_state: Any, data_iterator: Any = None, step: int | None = None
    ) -> tuple[Any, int]:
        """Restores ``step`` (default: latest) into the shape/sharding of ``abstract_state``.

        ``data_iterator``, when given, is moved to the saved position in place.
        Returns ``(state, step)``.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], step

    def restore_arrays(self, step: int | None = None) -> tuple[Any, int]:
        """Restores the saved train state as a plain pytree of arrays, without a target.

        For inference (``mmtx.Model.from_checkpoint``) and inspection. Returns
        ``(state_tree, step)``; ``state_tree`` has ``step``, ``params``, ``opt_state``, ``rng``.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
        )
        return restored["state"], step

    def wait(self) -> None:
        """Blocks until pending async saves are committed."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
