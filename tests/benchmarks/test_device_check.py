"""``benchmarks/device_check.sh`` (the one-shot GPU check) parses and, with ``DRY_RUN=1``,
prints every stage's command without running any of them. The GPU run itself needs a GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "device_check.sh"


def _dry_run(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path / "out"), "VENV": str(tmp_path / "v")}
    result = subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "v").exists()  # nothing was installed
    assert (tmp_path / "out" / "device_check.log").read_text() == result.stdout
    return result.stdout


def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(SCRIPT)], check=True)


def test_dry_run_prints_every_gpu_stage(tmp_path: Path) -> None:
    out = _dry_run(tmp_path)
    for stage in ("venv", "install", "nvidia-smi", "devices", "tests", "train_bf16"):
        assert f"=== {stage} (timeout " in out
        assert f"{stage} dry-run" in out
    assert "-r requirements-gpu.txt" in out
    assert "tests/attention tests/nn tests/train/test_step.py" in out
    assert "--config.dtype=bfloat16" in out
    for bench, config in (("bench_clip", "configs/bench_clip.py"), ("bench_base", "base.py")):
        line = next(x for x in out.splitlines() if "train_step.py" in x and config in x)
        assert "--config.dtype=bfloat16" in line, bench
    assert "device check: all stages passed" in out


@pytest.mark.parametrize("args", [(), ("--cpu",)])
def test_dry_run_modes(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = _dry_run(tmp_path, *args)
    if args:
        assert "mode=cpu" in out and "nvidia-smi" not in out and "=== bench_tiny" in out
    else:
        assert "mode=gpu" in out and "=== bench_tiny" not in out
