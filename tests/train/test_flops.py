"""Tests for mmtx/train/flops.py: the one FLOP counter, the device peak table, and MFU."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import load_script

from mmtx import config as config_lib
from mmtx.train import flops as flops_lib
from mmtx.train import metrics as metrics_lib

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "kind, peak",
    [
        ("TPU v4", 275e12),
        ("TPU v5 lite", 197e12),
        ("TPU v5e", 197e12),
        ("TPU v5", 459e12),
        ("TPU v5p", 459e12),
        ("TPU v6 lite", 918e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100-PCIE-40GB", 312e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
    ],
)
def test_table_peak_per_device_kind(kind, peak):
    assert flops_lib.table_peak_flops(kind) == peak
    assert flops_lib.device_peak_flops(0.0, kind) == (peak, f"{kind} bf16 dense peak (table)")


def test_cpu_peak_is_measured_once_unless_configured(monkeypatch):
    assert flops_lib.table_peak_flops("cpu") is None
    assert flops_lib.device_peak_flops(5e11, "cpu") == (5e11, "config.train.peak_flops")
    assert flops_lib.device_peak_flops(7e12, "TPU v4")[0] == 7e12  # the config wins
    calls = []

    def fake(size, repeats):
        calls.append(size)
        return 100.0

    monkeypatch.setattr(flops_lib, "matmul_peak_gflops", fake)
    monkeypatch.setattr(flops_lib, "_MEASURED", {})
    for _ in range(2):
        peak, source = flops_lib.device_peak_flops(0.0, "cpu", measure_size=64)
        assert peak == pytest.approx(100e9 / flops_lib.jax.local_device_count())
        assert "measured 64^3 float32 matmul" in source
    assert calls == [64]


def test_a_real_matmul_peak_is_positive():
    assert flops_lib.matmul_peak_gflops(128, repeats=2) > 0


def test_throughput_and_the_progress_line(monkeypatch):
    perf = flops_lib.throughput(2.0, 3e12, 2, 1e12)
    assert perf == pytest.approx({"tflops_per_device": 3.0, "mfu": 3.0})
    clock = iter([0.0, 4.0, 10.0, 11.0])
    monkeypatch.setattr(metrics_lib.time, "perf_counter", lambda: next(clock, 11.0))
    progress = metrics_lib.Progress(100, 0, flops_per_step=6e11, device_count=2, peak_flops=1e12)
    line = progress.line(8, {"loss": 1.5})  # 2 steps/s x 0.6 TFLOP / 2 devices
    assert line.endswith("| loss=1.5 | 0.6 TFLOP/s/device MFU 0.60"), line
    assert progress.perf == pytest.approx({"tflops_per_device": 0.6, "mfu": 0.6})
    plain = metrics_lib.Progress(100, 0)  # no count: the line as before
    assert "TFLOP" not in plain.line(1, {"loss": 1.0}) and plain.perf == {}


def test_the_benchmark_uses_the_library_counter():
    script = load_script(ROOT / "benchmarks" / "train_step.py", "train_step_benchmark")
    assert script.analytic_flops is flops_lib.analytic_flops
    assert script.matmul_peak_gflops is flops_lib.matmul_peak_gflops


def test_the_analytic_count_of_the_tiny_config():
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    one, eight = (flops_lib.analytic_flops(config, batch)["forward"] for batch in (1, 8))
    count = flops_lib.analytic_flops(config, 8)
    assert count["train"] == 3 * count["forward_total"] > 0 and count["complete"]
    for name, value in one.items():  # per example x batch, but the logits grow as B^2
        expected = value * 64 if name == "contrastive_logits" else value * 8
        assert eight[name] == pytest.approx(expected)
