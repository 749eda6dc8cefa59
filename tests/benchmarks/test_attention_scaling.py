"""Smoke test of ``benchmarks/attention_scaling.py``: a tiny sweep writes its report and plot.

The script is not part of the ``mmtx`` package, so it is loaded from its file path.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "attention_scaling.py"
KERNELS = ("dense", "local", "linear_elu")  # linear_favor: same path, slower to compile


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script(SCRIPT, "attention_scaling_benchmark")


def test_tiny_sweep_writes_report_plot_and_json(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--lengths=32,64",
        "--max_dense_length=32",
        f"--kernels={','.join(KERNELS)}",
        "--radius=8",
        "--repeats=1",
        f"--out_dir={tmp_path}",
    ]
    returned = script.main(argv)

    report = (tmp_path / "attention_scaling.md").read_text()
    assert (tmp_path / "attention_scaling.png").stat().st_size > 0
    assert "| T |" in report and "jax " in report and "--lengths=32,64" in report
    assert "| 64 | — | — |" in report  # dense is skipped above --max_dense_length

    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload == json.loads(json.dumps(returned))
    assert payload["memory_source"] in ("compiled", "device")
    results = payload["results"]
    assert set(results) == set(KERNELS)
    for kernel in KERNELS:
        expected = 1 if kernel == "dense" else 2
        assert results[kernel]["T"] == [32, 64]
        for key in ("time_ms", "memory_mib"):
            numbers = [x for x in results[kernel][key] if x is not None]
            assert len(numbers) == expected and all(x > 0 for x in numbers), (kernel, key)

    targets = payload["targets"]
    assert targets["speedup_vs_dense"]["T"] == 32
    assert targets["growth"]["T_from"] == 32 and targets["growth"]["T_to"] == 64
    for kernel in KERNELS[1:]:
        assert isinstance(targets["speedup_vs_dense"][kernel]["pass"], bool)
        assert targets["growth"][kernel]["value"] > 0


def test_growth_lengths_fall_back_to_the_measured_range(script: ModuleType) -> None:
    assert script.growth_lengths([512, 4096, 16384], [4096, 16384]) == (4096, 16384)
    assert script.growth_lengths([64, 128, 256], [4096, 16384]) == (64, 256)
