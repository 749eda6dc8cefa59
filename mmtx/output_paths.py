"""Where a command may write a file, and writing it whole.

Every mmtx command that writes a file the user names (``python -m mmtx.embed --out``, the
plot and report scripts) checks the path with :func:`check_output_path` before doing any
work, and writes it with :func:`atomic_output`. The rules:

- never over one of the command's own inputs (the same file, also through a link);
- never over a directory, and never into an mmtx workdir (a directory holding
  :data:`mmtx.train.workdir.MARKER`, at any depth above the file), whose ``config.json``,
  checkpoints and records a run needs;
- an existing file is replaced only when the caller passes ``overwrite=True`` (the commands'
  ``--overwrite``);
- the file appears complete or not at all: it is written to a temporary file in the same
  directory and renamed over the target, and the temporary file is removed on any error.

Standard library only, so that a command checks its arguments before importing jax.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator

# The marker file of an mmtx workdir; mmtx.train.workdir.MARKER is this name.
WORKDIR_MARKER = "mmtx-workdir.json"


class OutputPathError(ValueError):
    """An output path that a command must not write; the message is one line naming it."""


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def enclosing_workdir(path: str | os.PathLike) -> str | None:
    """The mmtx workdir that ``path`` lies in (the nearest directory above it, or the path
    itself, holding :data:`WORKDIR_MARKER`), or None."""
    directory = os.path.realpath(os.fspath(path))
    while True:
        if os.path.isfile(os.path.join(directory, WORKDIR_MARKER)):
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def check_output_path(
    path: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    flag: str | None = "--out",
) -> str:
    """Returns ``path`` as a str when a command may write a file there; raises
    :class:`OutputPathError` (one line, naming ``flag`` and the path) otherwise.

    Args:
      path: the file the command will write.
      inputs: files and directories the command reads. Writing over one of the files is
        refused, as is writing into one of the directories when it is an mmtx workdir.
      overwrite: whether an existing file (not an input, not in a workdir) may be replaced.
      flag: the option that named ``path`` (``--out=PATH`` in the message), or None when the
        command chose the name (``PATH`` alone).
    """
    path = os.fspath(path)
    named = f"{flag}={path}" if flag else path
    if not path:
        raise OutputPathError(f"{flag or 'the output path'} is empty; name the file to write")
    if os.path.isdir(path):
        raise OutputPathError(f"{named} is a directory; name a file to write in it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputPathError(f"{named}: no such folder: {directory}")
    for item in inputs:
        item = os.fspath(item)
        if os.path.exists(path) and os.path.isfile(item) and _same_file(path, item):
            raise OutputPathError(f"{named} is one of this command's inputs ({item})")
    workdir = enclosing_workdir(path)
    if workdir is not None:
        raise OutputPathError(
            f"{named} is inside the mmtx workdir {workdir}, whose files a run needs; "
            "write it somewhere else"
        )
    if os.path.lexists(path) and not overwrite:
        raise OutputPathError(f"{named} exists; pass --overwrite to replace it")
    return path


def check_report_paths(paths: Iterable[str | os.PathLike], *, overwrite: bool) -> None:
    """The check of a script that writes reports under names it chooses (``--out_dir``):
    creates their folders, then :func:`check_output_path` on each; raises ``SystemExit``
    with one ``error:`` line (exit status 1) on the first that may not be written."""
    for path in paths:
        os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
        try:
            check_output_path(path, overwrite=overwrite, flag=None)
        except OutputPathError as error:
            raise SystemExit(f"error: {error}") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` whole, through :func:`atomic_output`."""
    with atomic_output(path) as temporary, open(temporary, "w", encoding="utf-8") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path in ``path``'s directory to write; on a clean exit renames it
    to ``path`` (readers see the old file or the new one, never part of one), on any error
    (a full disk, Ctrl-C) removes it. The file gets the permissions ``open()`` would give."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(temporary, 0o666 & ~umask)
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
