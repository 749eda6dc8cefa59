"""Smoke test of ``benchmarks/accumulation_memory.py``: a tiny sweep writes its report and
plot, and two microbatches need less step memory than one.

The script is not part of the ``mmtx`` package, so it is loaded from its file path.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accumulation_memory.py"
_TINY = {"width": 32, "depth": 1, "num_heads": 2, "mlp_dim": 64}
# Tiny text + image model (a contrastive pair, so the output cache is exercised): compiles
# in about a third of the time of configs/base.py:tiny with its three towers.
TINY_CONFIG = {
    "model": {
        "modalities": ["text", "image"],
        "embed_dim": 32,
        "num_classes": 8,
        "text": {"max_length": 16, **_TINY},
        "image": {"image_size": 32, "patch_size": 8, **_TINY},
    },
    "fusion": _TINY,
}


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script(SCRIPT, "accumulation_memory_benchmark")


def test_tiny_sweep_writes_report_plot_and_json(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    argv = [
        f"--config={config}",
        "--batch_size=8",
        "--microbatches=1,2",
        "--repeats=1",
        f"--out_dir={tmp_path}",
    ]
    returned = script.main(argv)

    report = (tmp_path / "accumulation_memory.md").read_text()
    assert (tmp_path / "accumulation_memory.png").stat().st_size > 0
    assert "| k | microbatch |" in report and "jax " in report and "--batch_size=8" in report
    assert "text+image" in report

    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload == json.loads(json.dumps(returned))
    assert payload["config"]["batch_size"] == 8 and payload["config"]["num_params"] > 0
    one, two = payload["results"]
    assert (one["microbatches"], one["microbatch_size"]) == (1, 8)
    assert (two["microbatches"], two["microbatch_size"]) == (2, 4)
    for row in (one, two):
        assert row["temp_mib"] > 0 and row["total_mib"] > row["temp_mib"]
        assert row["step_ms"] > 0 and not row["note"]
    assert two["temp_mib"] < one["temp_mib"]
    assert two["total_mib"] < one["total_mib"]
    assert one["temp_ratio_vs_k1"] == 1.0 and two["temp_ratio_vs_k1"] < 1.0
    assert payload["memory_falls_with_k"] is True


def test_memory_falls_with_k_needs_strictly_decreasing_temp(script: ModuleType) -> None:
    def sweep(*temps: float) -> list:
        return [
            script.Measurement(microbatches=2**i, microbatch_size=8 // 2**i, temp_mib=t)
            for i, t in enumerate(temps)
        ]

    assert script.memory_falls_with_k(sweep(10.0, 6.0, 4.0))
    assert not script.memory_falls_with_k(sweep(10.0, 6.0, 6.0))
    assert not script.memory_falls_with_k(sweep(10.0))
