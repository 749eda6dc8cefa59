"""Tests for experiments/plot_training.py: a run's curves as a PNG, never over an existing
file without --overwrite, never inside a workdir."""

import os
import subprocess
import sys
from pathlib import Path

from mmtx.train import workdir as workdir_lib
from mmtx.train.metrics import MetricWriter

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "plot_training.py"


def run(cwd, *args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_plots_a_run_and_never_clobbers(tmp_path):
    run_dir = tmp_path / "run"
    workdir_lib.claim(str(run_dir))
    writer = MetricWriter(str(run_dir))
    for step in (1, 2, 3):
        writer.write_scalars(step, {"train/loss": 3.0 / step, "eval/accuracy": 0.2 * step})
    writer.close()

    done = run(tmp_path, f"--workdir={run_dir}")  # the default --out: ./training.png
    assert done.returncode == 0, done.stderr
    png = tmp_path / "training.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    made = png.stat().st_mtime_ns

    again = run(tmp_path, f"--workdir={run_dir}")
    assert again.returncode == 1
    assert (
        again.stderr.strip() == "error: --out=training.png exists; pass --overwrite to replace it"
    )
    assert png.stat().st_mtime_ns == made
    assert run(tmp_path, f"--workdir={run_dir}", "--overwrite").returncode == 0

    inside = run(tmp_path, f"--workdir={run_dir}", f"--out={run_dir / 'curves.png'}")
    assert inside.returncode == 1 and "inside the mmtx workdir" in inside.stderr
    assert sorted(os.listdir(tmp_path)) == ["run", "training.png"]
