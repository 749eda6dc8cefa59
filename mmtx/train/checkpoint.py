"""Checkpoints: an orbax CheckpointManager holding the train state and the data iterator.

Every save holds three items: ``state`` (the train state's arrays, saved asynchronously),
``data`` (the data iterator's position, so a restarted run sees exactly the batches it would
have seen) and ``integrity`` (a JSON record: a fingerprint of every array of the state, a
SHA-256 of every process's data-iterator file, and the run's config). Orbax writes each save
into a temporary directory and renames it when complete, so a save cut short by a kill never
replaces a good checkpoint.

Restoring tells damage from a changed run:

- *damage* is proven: a file the checkpoint needs is missing or unreadable, or its contents
  differ from the integrity record (bit rot, a truncated or zeroed file). A damaged step is
  moved to ``<directory>_corrupt/`` (never deleted) and the step before it is used;
- *a different run* (other model shapes, another optimizer structure, another data pipeline)
  raises :class:`CheckpointMismatchError` naming what does not fit and the config fields
  that differ from the checkpoint's; nothing on disk is touched.

Arrays are restored onto the shardings of the target the caller gives (the current mesh), or
onto one local device for :meth:`Checkpointer.restore_arrays`, whatever topology saved them.
Nothing is ever deleted except by the keep-N policy.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from etils import epath
from jax.experimental import multihost_utils

from mmtx.train import integrity

CORRUPT_DIRECTORY_SUFFIX = "_corrupt"
INTEGRITY_FORMAT = 1


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the run restoring it (other shapes, optimizer or data)."""


class CheckpointDamagedError(OSError):
    """A checkpoint's bytes are missing, unreadable or differ from its integrity record."""


class CheckpointSaveError(OSError):
    """A save failed (a full disk, a write error) or was abandoned after a stop request; the
    message is one line: the step, the cause, the free space and the size needed for a full
    disk, and the last good step (intact on disk)."""


# How long a save in flight may still take once SIGTERM or Ctrl-C asked the run to stop.
STOP_GRACE_SECONDS = 30.0
_POLL_SECONDS = 0.05
_TMP_SUFFIX = ".orbax-checkpoint-tmp"


def _is_out_of_space(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is ENOSPC: an ``OSError`` with that
    errno, or tensorstore's ``RESOURCE_EXHAUSTED`` text carrying ``os_error_code='28'``."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        text = str(error)
        if "No space left on device" in text or f"os_error_code='{errno.ENOSPC}'" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def _bytes_text(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _tree_bytes(tree: Any) -> int:
    return sum(
        int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree)
    )


def _directory_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def _flat_arrays(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """Leaf path -> (shape, dtype name) for every array leaf of ``tree``."""
    return {
        path: (tuple(leaf.shape), np.dtype(leaf.dtype).name)
        for path, leaf in zip(integrity.leaf_paths(tree), jax.tree.leaves(tree), strict=True)
    }


def _flat_config(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flat_config(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tuple(value) if isinstance(value, list) else value}


# Config fields that change nothing a checkpoint holds: a resumed run may change them.
SHOWN_CONFIG_FIELDS = 5  # A mismatch error lists this many differing fields (-v: all).
RESUMABLE_FIELDS = (
    "train.steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.nonfinite",
    "train.accumulation_unroll",
    "train.learning_rate",
    "train.warmup_steps",
    "train.end_learning_rate_factor",
    "train.init_from",  # read only at a fresh start; the run's own checkpoints take over
    "train.layer_decay",
    "eval.",
    "data.num_threads",
    "data.prefetch",
    "data.eval_size",
    "data.eval_split",
    "data.data_dir",
    "variant",
)


def config_differences(
    saved: Mapping[str, Any] | None,
    current: Mapping[str, Any] | None,
    *,
    limit: int | None = None,
) -> str:
    """The fields that differ between a checkpoint's config and the current one, those that
    change what a checkpoint holds first: ``"train.grad_clip: 1.0 -> 0.0 (also, fine to
    change on resume: train.steps: 6 -> 8)"``, or ``"train.steps: 6 -> 8 (fine to change on
    resume)"``; "" when they agree or either is unknown. With ``limit``, only the first
    ``limit`` fields are shown, followed by ``"; and N more"``."""
    if not saved or not current:
        return ""
    old, new = _flat_config(saved), _flat_config(current)
    matter, fine = [], []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            text = f"{key}: {old.get(key, '(absent)')!r} -> {new.get(key, '(absent)')!r}"
            resumable = any(
                key == field or (field.endswith(".") and key.startswith(field))
                for field in RESUMABLE_FIELDS
            )
            (fine if resumable else matter).append(text)
    hidden = 0
    if limit is not None and len(matter) + len(fine) > limit:
        hidden = len(matter) + len(fine) - limit
        fine = fine[: max(limit - len(matter), 0)]
        matter = matter[:limit]
    more = f"; and {hidden} more" if hidden else ""
    if not matter:
        return f"{'; '.join(fine)}{more} (fine to change on resume)" if fine else ""
    if fine:
        return f"{'; '.join(matter)} (also, fine to change on resume: {'; '.join(fine)}){more}"
    return "; ".join(matter) + more


def _iterator_state_text(iterator: Any) -> str:
    """The text grain's checkpoint handler writes for ``iterator`` (see its ``save``)."""
    state = iterator.get_state()
    if isinstance(state, bytes):
        return state.decode()
    return json.dumps(state, indent=4)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _gather_from_processes(digest: str) -> list[str]:
    """Every process's ``digest`` (hex SHA-256), in process order."""
    if jax.process_count() == 1:
        return [digest]
    local = np.frombuffer(bytes.fromhex(digest), np.uint8)
    gathered = multihost_utils.process_allgather(local)
    return [bytes(np.asarray(row, np.uint8)).hex() for row in gathered]


class Checkpointer:
    """``workdir/checkpoints``: keep-N saves of the train state and data position.

    Args:
      directory: the checkpoint directory (created unless ``read_only``).
      save_every: :meth:`save` saves at multiples of this step count.
      keep: checkpoints kept on disk (older ones are deleted after a newer one commits).
      read_only: open for restoring only (nothing is created, moved or deleted).
      config: the run's config as a dict, stored in every save's integrity record and
        compared with a checkpoint's on a mismatch, to name the fields that changed.
    """

    def __init__(
        self,
        directory: str,
        *,
        save_every: int = 1,
        keep: int = 1,
        read_only: bool = False,
        config: Mapping[str, Any] | None = None,
    ):
        self.directory = os.path.abspath(directory)
        self.save_every = save_every
        self.read_only = read_only
        self.config = dict(config) if config is not None else None
        # Set by the training loop: True once SIGTERM or Ctrl-C asked the run to stop, so that
        # a wait for a save in flight gives up after STOP_GRACE_SECONDS instead of hanging.
        self.stop_requested: Callable[[], bool] = lambda: False
        self._pending: int | None = None  # the step of the save in flight
        self._broken = False  # a save failed or was abandoned: close() must not wait for it
        self._state_bytes = 0
        # orbax warns that a read-only manager is read-only, three times.
        with _absl_warnings_off() if read_only else contextlib.nullcontext():
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=not read_only,
                read_only=read_only,
                cleanup_tmp_directories=not read_only,
                # Create a save's directory before save() returns, so that a failure to write
                # (a read-only or full disk) raises there; created in the background, it left the
                # array writer waiting for a signal that never came, for orbax's whole timeout.
                async_options=ocp.options.AsyncOptions(create_directories_asynchronously=False),
            )
            self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest saved step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every saved step, oldest first."""
        return sorted(self.manager.all_steps())

    def would_save(self, step: int) -> bool:
        """Whether :meth:`save` at ``step`` (without ``force``) would save."""
        return step % self.save_every == 0 and step != self.latest_step()

    def save(
        self, step: int, state: Any, data_iterator: Any = None, *, force: bool = False
    ) -> bool:
        """Saves when ``step`` is a multiple of ``save_every`` (or ``force``) and not yet saved.

        The state's fingerprints are computed first (a small jitted reduction, waiting for
        the state), then orbax writes the arrays in the background. Returns whether a save
        started. A save still in flight is waited for first (:meth:`wait`).

        Raises:
          CheckpointSaveError: this save, or the one before it, failed (its partial directory
            is removed; the last good checkpoint is intact).
        """
        if step == self.latest_step() or not (force or step % self.save_every == 0):
            return False
        self.wait()
        record: dict[str, Any] = {
            "format": INTEGRITY_FORMAT,
            "step": int(step),
            "fingerprints": integrity.fingerprint(state),
            "config": self.config,
        }
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            record["data_sha256"] = _gather_from_processes(
                _sha256(_iterator_state_text(data_iterator))
            )
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        items["integrity"] = ocp.args.JsonSave(record)
        self._state_bytes = _tree_bytes(state)
        try:
            started = self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        except Exception as error:  # orbax raises ValueError, OSError and others
            raise self._failed(step, error) from None
        self._pending = step if started else None
        return started

    def poll(self) -> None:
        """Returns at once unless the save in flight has just failed, which raises
        :class:`CheckpointSaveError`; the training loop calls it every step, so that a failed
        save ends the run at the next step rather than at the next save."""
        if self._pending is not None and not self.manager.is_saving_in_progress():
            self.wait()

    def _last_committed_step(self) -> int | None:
        """The newest step on disk, read again (orbax's own list counts a save in flight)."""
        with contextlib.suppress(Exception):
            self.manager.reload()
        return self.latest_step()

    def _failed(self, step: int, error: BaseException) -> CheckpointSaveError:
        """Cleans up after save ``step`` failed with ``error``: removes its temporary
        directory (a full disk is as it was before the save) and returns the error to raise."""
        self._pending, self._broken = None, True
        for name in os.listdir(self.directory) if os.path.isdir(self.directory) else ():
            if name.startswith(f"{step}{_TMP_SUFFIX}"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        last_good = self._last_committed_step()
        kept = (
            f"the last good checkpoint is step {last_good} (intact)"
            if last_good is not None
            else "there is no earlier checkpoint"
        )
        if _is_out_of_space(error):
            previous = _directory_bytes(self._step_path(last_good)) if last_good is not None else 0
            needed = previous or self._state_bytes
            free = shutil.disk_usage(self.directory).free
            out_of_space = CheckpointSaveError(
                f"no space left on device for the checkpoint of step {step} in "
                f"{self.directory}: {_bytes_text(free)} free, about {_bytes_text(needed)} "
                f"needed; {kept}"
            )
            out_of_space.errno = errno.ENOSPC
            return out_of_space
        return CheckpointSaveError(
            f"saving the checkpoint of step {step} in {self.directory} failed: "
            f"{type(error).__name__}: {_first_line(error)}; {kept}"
        )

    # Restoring.

    def _step_path(self, step: int, item: str = "") -> str:
        return os.path.join(self.directory, str(step), item)

    def read_record(self, step: int) -> dict[str, Any] | None:
        """The integrity record of ``step``, or None for a checkpoint saved before records
        existed. Raises :class:`CheckpointDamagedError` when it is there but unreadable."""
        item = self._step_path(step, "integrity")
        if not os.path.isdir(item):
            return None
        try:
            with open(os.path.join(item, "metadata")) as f:
                record = json.load(f)
            if not isinstance(record, dict) or not isinstance(record.get("fingerprints"), dict):
                raise ValueError("not an integrity record")
        except (OSError, ValueError) as error:
            raise CheckpointDamagedError(f"its integrity record is unreadable ({error})") from error
        return record

    def has_data_position(self, step: int) -> bool:
        """Whether ``step`` was saved with the data pipeline's position (every training save
        is; an imported model's step-0 checkpoint is not)."""
        return os.path.isdir(self._step_path(step, "data"))

    def saved_arrays(self, step: int) -> Any:
        """The tree of ``ArrayMetadata`` (shape, dtype, saved sharding) of ``step``'s state."""
        try:
            handler = ocp.StandardCheckpointHandler()
            tree = handler.metadata(epath.Path(self._step_path(step, "state")))
        except Exception as error:  # orbax raises many types for an unreadable metadata file
            raise CheckpointDamagedError(
                f"its array metadata is unreadable ({type(error).__name__}: {_first_line(error)})"
            ) from error
        tree = getattr(tree, "tree", tree)
        if not jax.tree.leaves(tree):
            raise CheckpointDamagedError("its array metadata lists no arrays")
        return tree

    def check_compatible(self, step: int, abstract_state: Any) -> None:
        """Raises :class:`CheckpointMismatchError` naming the first array whose path, shape or
        dtype in the checkpoint at ``step`` differs from ``abstract_state``'s, and the config
        fields that differ from the checkpoint's."""
        saved = _flat_arrays(self.saved_arrays(step))
        wanted = _flat_arrays(abstract_state)
        # Params first: a model change shows there, and the optimizer's moments mirror it.
        order = {"params": 0, "opt_state": 1}
        for path in sorted(
            saved.keys() | wanted.keys(), key=lambda p: (order.get(p.split("/")[0], 2), p)
        ):
            have, want = saved.get(path), wanted.get(path)
            if have == want:
                continue
            where = f"the checkpoint at step {step} in {self.directory}"
            if have is None:
                detail = f"{path} (shape {want[0]}) is missing from {where}"
            elif want is None:
                detail = f"{path} (shape {have[0]}) is in {where} but not in this run"
            else:
                detail = (
                    f"{path} is {have[1]} {have[0]} in {where} but {want[1]} {want[0]} in this run"
                )
            part = "optimizer" if path.startswith("opt_state") else "model"
            raise CheckpointMismatchError(
                f"the checkpoint was made by a different {part} config: {detail}."
                f"{self._config_hint(step)} Use the config the run was trained with, or a new "
                "workdir. Nothing was moved or deleted."
            )

    def config_changes(self, step: int, limit: int | None = None) -> str:
        """:func:`config_differences` between the config saved with ``step`` and this
        checkpointer's ``config`` ("" when either is unknown or the record unreadable), the
        first ``limit`` fields of them (all with ``None``)."""
        try:
            record = self.read_record(step)
        except CheckpointDamagedError:
            record = None
        return config_differences(record and record.get("config"), self.config, limit=limit)

    def _config_hint(self, step: int) -> str:
        # absl's verbosity (--verbosity=1, or -v) lists every field; by default the first few.
        limit = None if absl_logging.get_verbosity() >= 1 else SHOWN_CONFIG_FIELDS
        changed = self.config_changes(step, limit)
        if not changed:
            return ""
        if changed != self.config_changes(step):
            workdir = os.path.dirname(os.path.abspath(self.directory))
            changed += (
                f" (--verbosity=1 lists them all; the checkpoint's config is "
                f"{os.path.join(workdir, 'config.json')})"
            )
        return f" Config fields that differ from the checkpoint's: {changed}."

    def _verify_data_file(self, step: int, record: Mapping[str, Any] | None) -> None:
        digests = (record or {}).get("data_sha256")
        if not digests:
            return
        if len(digests) != jax.process_count():
            raise CheckpointMismatchError(
                f"the checkpoint at step {step} holds the data positions of {len(digests)} "
                f"processes; this run has {jax.process_count()}. Resume with "
                f"{len(digests)} processes or start a new workdir."
            )
        index, count = jax.process_index(), jax.process_count()
        path = self._step_path(step, f"data/process_{index}-of-{count}.json")
        try:
            with open(path) as f:
                text = f.read()
        except OSError as error:
            raise CheckpointDamagedError(f"its data position is unreadable ({error})") from error
        if _sha256(text) != digests[index]:
            raise CheckpointDamagedError(
                f"its data position file {path} differs from its integrity record"
            )

    def _verify_arrays(self, step: int, state: Any, record: Mapping[str, Any] | None) -> None:
        if record is None:
            return
        differing = integrity.differences(record["fingerprints"], integrity.fingerprint(state))
        if differing:
            shown = ", ".join(differing[:3]) + (", ..." if len(differing) > 3 else "")
            raise CheckpointDamagedError(
                f"{len(differing)} array(s) differ from the checkpoint's integrity record "
                f"({shown}): the files were changed after the save"
            )

    def restore(
        self, abstract_state: Any, data_iterator: Any = None, step: int | None = None
    ) -> tuple[Any, int]:
        """Restores ``step`` (default: the newest intact one) into the shapes and shardings
        of ``abstract_state`` (arrays, or ``jax.ShapeDtypeStruct`` leaves with shardings).

        ``data_iterator``, when given, is moved to the saved position in place (it stays at
        its start when the checkpoint holds no data position: an imported model). Without a
        ``step``, a damaged checkpoint is reported, moved to ``<directory>_corrupt/`` and the
        previous one is tried. Returns ``(state, step)``.

        Raises:
          CheckpointMismatchError: the checkpoint was made by a different run (model shapes,
            optimizer structure, data pipeline); nothing is moved.
          CheckpointDamagedError: ``step`` was given and that checkpoint is damaged.
          FileNotFoundError: there is no intact checkpoint.
        """

        def restore_step(step: int) -> Any:
            record = self.read_record(step)
            self.check_compatible(step, abstract_state)
            # A checkpoint saved without a data position (an imported model's step 0, see
            # mmtx.checkpoints.write_workdir) starts the data pipeline from its beginning.
            restore_data = data_iterator is not None and self.has_data_position(step)
            if restore_data:
                self._verify_data_file(step, record)
            state = self._restore_state(step, abstract_state)
            self._verify_arrays(step, state, record)
            if restore_data:
                try:
                    self.manager.restore(
                        step,
                        args=ocp.args.Composite(
                            data=grain.checkpoint.CheckpointRestore(data_iterator)
                        ),
                    )
                except Exception as error:  # its bytes were verified: the pipeline differs
                    raise CheckpointMismatchError(
                        f"the data position saved at step {step} does not fit this run's data "
                        f"pipeline ({type(error).__name__}: {_first_line(error)})."
                        f"{self._config_hint(step)} Resume with the checkpoint's data config "
                        "or use a new workdir. Nothing was moved or deleted."
                    ) from error
            return state

        return self._restore_newest_intact(restore_step, step)

    def restore_arrays(self, step: int | None = None) -> tuple[Any, int]:
        """Restores the saved train state as a plain pytree of arrays on one local device,
        whatever mesh saved it, for inference (``mmtx.Model.from_checkpoint``) and inspection.
        Every process that calls it gets the whole arrays.

        Returns ``(state_tree, step)``; ``state_tree`` has ``step``, ``params``, ``opt_state``,
        ``rng``. Without a ``step``, damaged checkpoints are skipped as in :meth:`restore`.
        """
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

        def restore_step(step: int) -> Any:
            record = self.read_record(step)
            target = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                self.saved_arrays(step),
            )
            state = self._restore_state(step, target)
            self._verify_arrays(step, state, record)
            return state

        return self._restore_newest_intact(restore_step, step)

    def _restore_state(self, step: int, target: Any) -> Any:
        """Reads ``step``'s arrays into ``target``'s shapes and shardings; any failure to read
        is damage, since the structure was checked against the metadata first."""
        try:
            args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
            return self.manager.restore(step, args=args)["state"]
        except Exception as error:
            raise CheckpointDamagedError(
                f"its arrays are unreadable ({type(error).__name__}: {_first_line(error)})"
            ) from error

    def _restore_newest_intact(
        self, restore_step: Callable[[int], Any], step: int | None
    ) -> tuple[Any, int]:
        if step is not None:
            if step not in self.manager.all_steps():
                raise FileNotFoundError(
                    f"no checkpoint at step {step} in {self.directory}; saved steps: "
                    f"{self.all_steps()}"
                )
            return restore_step(step), step
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        for candidate in steps:
            try:
                return restore_step(candidate), candidate
            except CheckpointDamagedError as error:
                moved = self._set_aside(candidate, str(error))
                logging.warning(
                    "checkpoint at step %d in %s is damaged: %s; %s; trying an older one",
                    candidate,
                    self.directory,
                    error,
                    f"moved to {moved}" if moved else "left in place (read-only)",
                )
        raise FileNotFoundError(
            f"no intact checkpoint in {self.directory} (tried {steps}; the damaged ones are "
            f"in {self.directory + CORRUPT_DIRECTORY_SUFFIX})"
        )

    def _set_aside(self, step: int, reason: str) -> str | None:
        """Moves a damaged checkpoint out of the manager's directory, under a name not yet
        taken, with a ``REASON.txt``; returns where it went (None when read-only)."""
        if self.read_only:
            return None
        aside = self.directory + CORRUPT_DIRECTORY_SUFFIX
        target = os.path.join(aside, str(step))
        if jax.process_index() == 0:
            os.makedirs(aside, exist_ok=True)
            suffix = 1
            while os.path.exists(target):
                target = os.path.join(aside, f"{step}.{suffix}")
                suffix += 1
            shutil.move(self._step_path(step), target)
            with open(os.path.join(target, "REASON.txt"), "w") as f:
                f.write(f"step {step} of {self.directory}: {reason}\n")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"mmtx_checkpoint_set_aside_{step}")
        self.manager.reload()
        return target

    def wait(self) -> None:
        """Blocks until the save in flight is committed (returns at once when none is).

        Polls, so that signal handlers run meanwhile; once :attr:`stop_requested` says the
        run should stop, the save gets :data:`STOP_GRACE_SECONDS` more.

        Raises:
          CheckpointSaveError: the save failed, or was still running that long after a stop
            request (it is abandoned; the last good checkpoint is intact).
        """
        step = self._pending
        if step is None:
            return
        stop_seen = None
        while self.manager.is_saving_in_progress():
            if stop_seen is None and self.stop_requested():
                stop_seen = time.monotonic()
            if stop_seen is not None and time.monotonic() - stop_seen > STOP_GRACE_SECONDS:
                self._pending, self._broken = None, True
                raise CheckpointSaveError(
                    f"the checkpoint of step {step} was still being written "
                    f"{STOP_GRACE_SECONDS:g} s after the stop request; exiting without it "
                    f"(the last good checkpoint is step {self._last_committed_step()})"
                )
            time.sleep(_POLL_SECONDS)
        try:
            self.manager.wait_until_finished()
        except Exception as error:
            raise self._failed(step, error) from None
        self._pending = None

    def close(self) -> None:
        """Releases orbax's threads (call :meth:`wait` first). After a failed or abandoned save
        it returns at once: orbax would raise that save's error again, or wait for it."""
        if not self._broken:
            self.manager.close()


@contextlib.contextmanager
def _absl_warnings_off() -> Iterator[None]:
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""
