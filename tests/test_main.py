"""Tests for mmtx/main.py: the command line trains, applies --config.x.y overrides, resumes."""

import json
import os
import pathlib
import subprocess
import sys

import jax

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_main(workdir, *overrides):
    command = [
        sys.executable, "-m", "mmtx.main", "--config=configs/base.py:tiny",
        f"--workdir={workdir}", "--config.train.batch_size=8", "--config.eval.batch_size=8",
        "--config.data.eval_size=8", "--config.model.text.max_length=32",
        "--config.train.log_every=1", *overrides,
    ]  # fmt: skip
    # The subprocesses share the test session's persistent compilation cache (conftest.py),
    # so the rerun does not compile again.
    env = dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_command_line_trains_with_overrides_and_resumes(tmp_path):
    result = run_main(tmp_path, "--config.train.steps=2", "--config.fusion.type=gated")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 2/2" in result.stdout and "final:" in result.stdout
    with open(os.path.join(tmp_path, "config.json")) as f:
        saved = json.load(f)
    assert saved["train"]["steps"] == 2 and saved["fusion"]["type"] == "gated"
    with open(os.path.join(tmp_path, "summary.json")) as f:
        assert json.load(f)["step"] == 2

    again = run_main(tmp_path, "--config.train.steps=3", "--config.fusion.type=gated")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from checkpoint at step 2" in again.stdout
    assert "step 3/3" in again.stdout

    # Another optimizer structure: one clean error line, exit 1, the checkpoints untouched.
    changed = run_main(
        tmp_path,
        "--config.train.steps=4",
        "--config.fusion.type=gated",
        "--config.train.grad_clip=0",
    )
    assert changed.returncode == 1, changed.stderr[-3000:]
    assert "error: the checkpoint was made by a different optimizer config" in changed.stderr
    assert "train.grad_clip: 1.0 -> 0.0" in changed.stderr and "Traceback" not in changed.stderr
    assert sorted(os.listdir(os.path.join(tmp_path, "checkpoints"))) == ["2", "3"]


def test_bad_override_is_a_clear_error(tmp_path):
    result = run_main(tmp_path, "--config.train.stpes=2")
    assert result.returncode != 0
    assert "stpes" in result.stderr
