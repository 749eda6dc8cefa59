"""Checkpoints: an orbax CheckpointManager holding the train state and the data iterator.

Saves are asynchronous for the arrays; the data iterator's position is written with them,
so a restarted run sees exactly the batches it would have seen. Orbax writes each save into
a temporary directory and renames it when complete, so a save cut short by a kill never
replaces a good checkpoint; a checkpoint that is damaged later (a truncated file) is
detected on restore, moved aside, and the one before it is used.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

CORRUPT_DIRECTORY_SUFFIX = "_corrupt"


class CheckpointMismatchError(ValueError):
    """A checkpoint's params do not fit the model being restored into."""


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _param_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``"params/text/..."`` -> shape for every leaf under the tree's ``params``."""
    shapes = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        names = [_key_name(k) for k in path]
        if names and names[0] == "params":
            shapes["/".join(names)] = tuple(leaf.shape)
    return shapes


class Checkpointer:
    """``workdir/checkpoints``: keep-N saves of ``{"state", "data"}`` every ``save_every`` steps."""

    def __init__(
        self, directory: str, *, save_every: int = 1, keep: int = 1, read_only: bool = False
    ):
        self.directory = os.path.abspath(directory)
        self.save_every = save_every
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest saved step, or None."""
        return self.manager.latest_step()

    def would_save(self, step: int) -> bool:
        """Whether :meth:`save` at ``step`` (without ``force``) would save."""
        return step % self.save_every == 0 and step != self.latest_step()

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

    def check_compatible(self, step: int, abstract_state: Any) -> None:
        """Raises :class:`CheckpointMismatchError` naming the first param path whose shape in
        the checkpoint at ``step`` differs from ``abstract_state``'s (or that only one has)."""
        with ocp.StandardCheckpointer() as reader:
            metadata = reader.metadata(os.path.join(self.directory, str(step), "state"))
        saved = _param_shapes(getattr(metadata, "item_metadata", None) or {})
        if not saved:
            raise OSError(f"the checkpoint at step {step} has no readable param metadata")
        wanted = _param_shapes(abstract_state)
        for path in sorted(saved.keys() | wanted.keys()):
            have, want = saved.get(path), wanted.get(path)
            if have != want:
                where = f"the checkpoint at step {step} in {self.directory}"
                if have is None:
                    detail = f"{path} (shape {want}) is missing from {where}"
                elif want is None:
                    detail = f"{path} (shape {have}) is in {where} but not in this model"
                else:
                    detail = f"{path} has shape {have} in {where} but {want} in this model"
                raise CheckpointMismatchError(
                    f"the checkpoint was made by a different model config: {detail}. "
                    "Use the config the run was trained with, or a new workdir."
                )

    def restore(
        self, abstract_state: Any, data_iterator: Any = None, step: int | None = None
    ) -> tuple[Any, int]:
        """Restores ``step`` (default: the newest readable one) into the shape/sharding of
        ``abstract_state``.

        ``data_iterator``, when given, is moved to the saved position in place. Without a
        ``step``, a checkpoint that cannot be read is reported, moved to
        ``<directory>_corrupt/`` and the previous one is tried. Returns ``(state, step)``.

        Raises:
          CheckpointMismatchError: the checkpoint's params have other paths or shapes.
          FileNotFoundError: there is no (readable) checkpoint.
        """

        def restore_step(step: int) -> Any:
            self.check_compatible(step, abstract_state)
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if data_iterator is not None:
                items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
            return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

        return self._restore_newest_readable(restore_step, step)

    def restore_arrays(self, step: int | None = None) -> tuple[Any, int]:
        """Restores the saved train state as a plain pytree of arrays, without a target.

        For inference (``mmtx.Model.from_checkpoint``) and inspection. Returns
        ``(state_tree, step)``; ``state_tree`` has ``step``, ``params``, ``opt_state``, ``rng``.
        Without a ``step``, unreadable checkpoints are skipped as in :meth:`restore`.
        """

        def restore_step(step: int) -> Any:
            args = ocp.args.Composite(state=ocp.args.StandardRestore())
            return self.manager.restore(step, args=args)["state"]

        return self._restore_newest_readable(restore_step, step)

    def _restore_newest_readable(self, restore_step: Any, step: int | None) -> tuple[Any, int]:
        if step is not None:
            return restore_step(step), step
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        for candidate in steps:
            try:
                return restore_step(candidate), candidate
            except CheckpointMismatchError:
                raise
            except Exception as error:  # any failure to read means the checkpoint is unusable
                logging.warning(
                    "checkpoint at step %d in %s is unreadable (%s: %s); trying an older one",
                    candidate,
                    self.directory,
                    type(error).__name__,
                    str(error).splitlines()[0] if str(error) else "",
                )
                self._set_aside(candidate)
        raise FileNotFoundError(f"no readable checkpoint in {self.directory} (tried {steps})")

    def _set_aside(self, step: int) -> None:
        """Moves an unreadable checkpoint out of the manager's directory (kept to inspect)."""
        if self.read_only or jax.process_index() != 0:
            return
        target = os.path.join(self.directory + CORRUPT_DIRECTORY_SUFFIX, str(step))
        if os.path.exists(target):
            shutil.rmtree(target)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(os.path.join(self.directory, str(step)), target)
        self.manager.reload()

    def wait(self) -> None:
        """Blocks until pending async saves are committed."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
