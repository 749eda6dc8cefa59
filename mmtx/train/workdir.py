"""The workdir a run owns: claiming it, one run at a time, and its small record files.

A workdir holds ``mmtx-workdir.json`` (the marker: mmtx made this directory), ``config.json``,
``checkpoints/``, ``evals.json`` (the evaluations done, by step), TensorBoard event files and
``summary.json``. mmtx writes only into a directory that is new, empty, or has the marker, so
pointing ``--workdir`` at another project's directory cannot overwrite it. While a run trains,
it holds an exclusive lock on ``workdir/.lock`` (``flock``: the kernel releases it when the
process dies, so a killed run never leaves a stale lock behind); a second run in the same
workdir stops at once, naming the process that holds it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from mmtx import output_paths

MARKER = output_paths.WORKDIR_MARKER  # "mmtx-workdir.json"
LOCK = ".lock"
EVALS = "evals.json"


class WorkdirError(RuntimeError):
    """The workdir cannot be used: not mmtx's, not writable, or in use by another run."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def write_json_atomically(path: str, value: Any) -> None:
    """Writes ``value`` as JSON to ``path`` so that readers see the old or the new file,
    never a partial one (:func:`mmtx.output_paths.atomic_output`, fsynced before the rename)."""
    with output_paths.atomic_output(path) as temporary, open(temporary, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def claim(workdir: str) -> bool:
    """Makes ``workdir`` an mmtx workdir, or checks that it is one.

    Creates it (and the marker) when it does not exist or is empty; accepts it when it has
    the marker. Returns True when this call made it a workdir (it was new or empty), False
    when it already was one. Raises :class:`WorkdirError` for a non-empty directory without
    the marker (it belongs to something else) and for one that cannot be written (checked by
    writing a file, so a read-only mount fails here rather than at the first checkpoint save).
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir} exists and is not a directory")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise WorkdirError(f"cannot create the workdir {workdir}: {error}") from error
    marker = os.path.join(workdir, MARKER)
    entries = [name for name in os.listdir(workdir) if name != LOCK]
    if MARKER not in entries and entries:
        shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise WorkdirError(
            f"{workdir} is not empty ({shown}) and was not made by mmtx (it has no {MARKER}); "
            "mmtx does not write into another project's directory. Use a new or empty "
            "--workdir. If it is an mmtx workdir made before workdirs were marked, adopt it "
            f"with `touch {marker}`."
        )
    check_writable(workdir)
    if MARKER in entries:
        return False
    write_json_atomically(
        marker,
        {
            "created": _now(),
            "host": socket.gethostname(),
            "format": 1,
        },
    )
    return True


# What a run writes before its first checkpoint: a workdir holding only these (and an empty
# checkpoints/) has nothing worth keeping.
_BEFORE_FIRST_CHECKPOINT = (MARKER, LOCK, "config.json")


def remove_if_nothing_kept(workdir: str) -> bool:
    """Removes ``workdir`` when it holds nothing but what a run writes before its first
    checkpoint (the marker, the lock, ``config.json``, an empty ``checkpoints/``): for a run
    that created the workdir and failed before saving anything. Anything else there (a
    checkpoint, an evaluation, TensorBoard events, a file of the user's) keeps it. Returns
    whether it was removed."""
    try:
        entries = os.listdir(workdir)
    except OSError:
        return False
    for name in entries:
        path = os.path.join(workdir, name)
        if name == "checkpoints" and os.path.isdir(path) and not os.listdir(path):
            continue
        if name not in _BEFORE_FIRST_CHECKPOINT or not os.path.isfile(path):
            return False
    for name in entries:
        path = os.path.join(workdir, name)
        (os.rmdir if os.path.isdir(path) else os.remove)(path)
    os.rmdir(workdir)
    return True


def check_writable(directory: str) -> None:
    """Raises :class:`WorkdirError` unless a file can be created and removed in
    ``directory`` (and in its ``checkpoints/`` when that exists)."""
    for path in (directory, os.path.join(directory, "checkpoints")):
        if not os.path.isdir(path):
            continue
        try:
            handle, probe = tempfile.mkstemp(dir=path, prefix=".write-check-")
            os.close(handle)
            os.unlink(probe)
        except OSError as error:
            raise WorkdirError(
                f"{path} is not writable ({error.strerror or error}); a run must be able to "
                "save checkpoints there. Fix its permissions or use another --workdir."
            ) from error


def _read_lock(lock_path: str) -> dict[str, Any] | None:
    """The holder record in a lock file (pid, host, started, command), or None."""
    try:
        with open(lock_path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _holder(lock_path: str) -> str:
    info = _read_lock(lock_path)
    try:
        return (
            f"pid {info['pid']} on host {info['host']} (started {info['started']}: "
            f"{info['command']})"
        )
    except (TypeError, KeyError):
        return "another process"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
    """Holds ``workdir``'s run lock for the ``with`` block; raises :class:`WorkdirError`
    naming the holder when another live process has it.

    The lock is ``flock`` on ``workdir/.lock``, released by the kernel when its holder exits
    in any way (kill -9 included), so a stale lock is taken over without asking. The file
    records the holder's pid, host, start time and command for the message. On a filesystem
    without ``flock``, the recorded pid is checked instead (same host only; a lock recorded
    by another host must be removed by hand once that run is gone).
    """
    path = os.path.join(workdir, LOCK)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WorkdirError(
                    f"{workdir} is in use by {_holder(path)}. One run per workdir: wait for "
                    "it to finish, stop it, or use another --workdir."
                ) from None
            _check_recorded_holder(workdir, path)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _now(),
            "command": " ".join(sys.argv)[:300],
        }
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(info).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


def _check_recorded_holder(workdir: str, path: str) -> None:
    """Without ``flock``: refuses when the recorded holder may still be running."""
    info = _read_lock(path)
    if info is None:
        return
    if info.get("pid") == os.getpid():
        return
    if info.get("host") != socket.gethostname() or _pid_alive(int(info.get("pid", 0))):
        raise WorkdirError(
            f"{workdir} is in use by {_holder(path)} (this filesystem has no flock, so the "
            f"lock is the record in {path}). If that run is gone, delete {path}."
        )


def read_evals(workdir: str) -> dict[int, dict[str, float]]:
    """The evaluations recorded in ``workdir/evals.json``: step -> metrics (empty if none)."""
    try:
        with open(os.path.join(workdir, EVALS)) as f:
            return {int(step): metrics for step, metrics in json.load(f).items()}
    except FileNotFoundError:
        return {}


def record_eval(workdir: str, step: int, metrics: dict[str, float]) -> None:
    """Adds (or replaces) step ``step``'s metrics in ``workdir/evals.json``, atomically."""
    evals = read_evals(workdir)
    evals[step] = {k: float(v) for k, v in metrics.items()}
    write_json_atomically(
        os.path.join(workdir, EVALS), {str(s): m for s, m in sorted(evals.items())}
    )
