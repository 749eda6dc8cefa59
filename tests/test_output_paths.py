"""Tests for mmtx/output_paths.py: where a command may write, and writing a file whole."""

import os

import pytest

from mmtx import output_paths
from mmtx.output_paths import OutputPathError, atomic_output, check_output_path
from mmtx.train import workdir as workdir_lib


def test_refuses_inputs_directories_workdirs_and_existing_files(tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("a cat\n")
    with pytest.raises(OutputPathError, match="one of this command's inputs"):
        check_output_path(captions, inputs=[captions], overwrite=True)
    # Through a symbolic link and a hard link too.
    (tmp_path / "link.txt").symlink_to(captions)
    os.link(captions, tmp_path / "hard.txt")
    for alias in ("link.txt", "hard.txt"):
        with pytest.raises(OutputPathError, match="inputs"):
            check_output_path(tmp_path / alias, inputs=[captions], overwrite=True)
    with pytest.raises(OutputPathError, match="is a directory"):
        check_output_path(tmp_path, overwrite=True)
    with pytest.raises(OutputPathError, match="no such folder"):
        check_output_path(tmp_path / "nope" / "x.npz")
    with pytest.raises(OutputPathError, match=r"exists; pass --overwrite"):
        check_output_path(captions)
    assert check_output_path(tmp_path / "new.npz") == str(tmp_path / "new.npz")
    assert check_output_path(tmp_path / "hard.txt", overwrite=True)  # not an input here

    # Any depth inside a workdir (a directory holding the marker), existing file or not.
    run = tmp_path / "run"
    workdir_lib.claim(str(run))
    assert output_paths.WORKDIR_MARKER == workdir_lib.MARKER
    (run / "checkpoints" / "5").mkdir(parents=True)
    for target in (run / "config.json", run / "checkpoints" / "5" / "x.npz"):
        with pytest.raises(OutputPathError, match="inside the mmtx workdir"):
            check_output_path(target, overwrite=True)
    assert output_paths.enclosing_workdir(run / "checkpoints" / "5") == str(run.resolve())
    assert output_paths.enclosing_workdir(tmp_path) is None


def test_atomic_output_writes_whole_or_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(OSError), atomic_output(target) as temporary:
        with open(temporary, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]

    with atomic_output(target) as temporary:
        assert os.path.dirname(temporary) == str(tmp_path) and not target.read_bytes() == b""
        with open(temporary, "wb") as f:
            f.write(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask  # as open() makes a file
