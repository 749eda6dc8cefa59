"""Evaluation metrics, TensorBoard writing and reading, and the progress line."""

from __future__ import annotations

import glob
import os
import struct
import time
from collections.abc import Mapping

# Recall@k of cosine-similarity retrieval, ties by lower gallery index (kept here by name).
from mmtx.evaluate.retrieval import retrieval_recall  # noqa: F401
from mmtx.train.flops import throughput


class MetricWriter:
    """Scalars to TensorBoard event files in ``logdir`` (via tensorboardX)."""

    def __init__(self, logdir: str, enabled: bool = True):
        self._writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(logdir=logdir, flush_secs=10)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Writes each ``name: value`` at ``step``."""
        if self._writer is None:
            return
        for name, value in scalars.items():
            self._writer.add_scalar(name, float(value), global_step=step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """Reads every scalar from the event files in ``logdir``: ``{tag: [(step, value), ...]}``.

    Parses the TFRecord framing (length, CRC, payload, CRC) directly, so reading needs
    neither TensorFlow nor TensorBoard.
    """
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            payload = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    for values in scalars.values():
        values.sort()
    return scalars


class Progress:
    """A one-line progress report with steps/s and ETA, measured over the last interval.

    With ``flops_per_step`` (the analytic count of :func:`mmtx.train.flops.analytic_flops`)
    and ``peak_flops`` (per device), the line ends with the interval's achieved TFLOP/s per
    device and MFU, which :attr:`perf` also holds (``tflops_per_device``, ``mfu``) after each
    :meth:`line`.
    """

    def __init__(
        self,
        total_steps: int,
        start_step: int,
        flops_per_step: float = 0.0,
        device_count: int = 1,
        peak_flops: float = 0.0,
    ):
        self.total_steps = total_steps
        self.flops_per_step = flops_per_step
        self.device_count = device_count
        self.peak_flops = peak_flops
        self.perf: dict[str, float] = {}
        self._last_step = start_step
        self._last_time = time.perf_counter()

    def line(self, step: int, scalars: Mapping[str, float]) -> str:
        """The report at ``step``; resets the interval."""
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        eta = (self.total_steps - step) / max(rate, 1e-9)
        shown = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
        text = (
            f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.0f}%) "
            f"{rate:.2f} steps/s ETA {format_seconds(eta)} | {shown}"
        )
        if self.flops_per_step > 0:
            self.perf = throughput(rate, self.flops_per_step, self.device_count, self.peak_flops)
            text += f" | {self.perf['tflops_per_device']:.3g} TFLOP/s/device"
            if self.peak_flops > 0:
                text += f" MFU {self.perf['mfu']:.2f}"
        return text


def format_seconds(seconds: float) -> str:
    """``125.0 -> "2m05s"``."""
    seconds = round(seconds)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"
