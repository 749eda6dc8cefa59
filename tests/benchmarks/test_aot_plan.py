"""Smoke test of ``benchmarks/aot_plan.py``: the docs table's rows from a stand-in compile
(the real one takes minutes): the straight-line batch estimate, the state, and the markdown.

The script is not part of the ``mmtx`` package, so it is loaded from its file path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from helpers import load_script

from mmtx import compile as compile_lib
from mmtx.train import mesh as mesh_lib
from mmtx.train.build import build

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "aot_plan.py"
GIB = 2**30


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script(SCRIPT, "aot_plan_benchmark")


def test_fitting_batch_is_the_line_through_two_compiles(script: ModuleType) -> None:
    # 2 GiB fixed + 1 GiB per example: 14 examples reach 16 GiB; multiples of 4.
    totals = {4: 6 * GIB, 8: 10 * GIB}
    assert script.fitting_batch(totals, 16 * GIB) == 12
    assert script.fitting_batch(totals, 18 * GIB) == 16
    assert script.fitting_batch({4: 17 * GIB, 8: 21 * GIB}, 16 * GIB) == 0
    assert script.fitting_batch({4: GIB, 8: GIB}, 16 * GIB) == 8  # no growth: the larger


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs libtpu")
def test_a_row_from_a_stand_in_compile(script: ModuleType) -> None:
    """The real run on v5e:2x2's devices, built but not compiled: a stand-in report whose
    total grows 1 GiB per example per chip from 2 GiB and whose FLOPs are 1e12 per example."""

    def stand_in(config, devices, *, eval_step):
        assert not eval_step
        run = build(config, mesh_lib.create_mesh(config.mesh, devices))
        per_chip = config.train.batch_size // len(devices)
        memory = {"argument": 0, "output": 0, "alias": 0, "temp": 0, "code": 0}
        memory["total"] = 2 * GIB + per_chip * GIB
        report = compile_lib.StepReport(
            "train", config.train.batch_size, memory, per_chip * 1e12, {}, {}, 1.0
        )
        return run, [report]

    row = script.plan_row("configs/base.py:tiny", "v5e:2x2", (4, 8), compile_run=stand_in)
    assert row["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}  # fully sharded
    assert row["totals"] == {4: 6 * GIB, 8: 10 * GIB}
    # 16 GiB of a v5e: 14 examples, rounded down to a multiple of 4.
    assert row["hbm"] == 16 * GIB and row["fitting_batch"] == 12
    assert row["step_ms_at_peak"] == pytest.approx(12e12 / 197e12 * 1e3)
    assert row["state"]["per_device"] <= 1.01 * row["state"]["ideal"]
    table = script.markdown([row])
    assert "| tiny | v5e:2x2 (4 x TPU v5 lite, 16.0 GiB) |" in table
    assert "4: 6.00 GiB, 8: 10.00 GiB | 12 | 61 ms |" in table
