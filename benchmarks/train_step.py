"""Train-step throughput and MFU of an mmtx config, against the machine's measured matmul peak.

Usage, from the repository root::

    .venv/bin/python benchmarks/train_step.py                       # configs/bench_clip.py
    .venv/bin/python benchmarks/train_step.py --config=configs/base.py --steps=5
    .venv/bin/python benchmarks/train_step.py --config.model.text.attention=local
    .venv/bin/python benchmarks/train_step.py --attention=dense,local,linear
    .venv/bin/python benchmarks/train_step.py --suite               # bench_clip + base.py x kernels

The train step is built exactly as ``mmtx/train/loop.py`` builds it: the mesh from
``config.mesh``, the module, optimizer, sharded state and jitted step all from
``mmtx.train.build.build`` (the state initialised directly into its shardings, the step
traced under the mesh's logical-axis rules, jitted with the state's shardings and
``donate_argnums=0``). The batch is random but shaped and typed like the
dataset's (int32 token ids ``[B, T]`` with a bool mask, float32 images ``[B, H, W, C]`` in
``[0, 1]``, float32 waveforms ``[B, S]``), already on the device, so only the step is timed.

Reported, per config:

* ``step_ms``: the median of ``--steps`` timed steps after ``--warmup`` untimed ones, each
  ended by ``block_until_ready`` on the new state and the metrics; ``examples_per_sec``.
* ``flops_analytic``: the step's FLOPs counted per layer type (``analytic_flops`` from
  ``mmtx/train/flops.py``, the one counter the training loop's MFU also uses; the
  forward pass's matmuls x 3 for forward + backward) and ``flops_xla``: XLA's
  ``compiled.cost_analysis()["flops"]`` of the same step. XLA counts a ``while`` body once,
  so when ``config.model.scan_layers`` is on, an unrolled copy of the step is compiled (not
  run) for the count. XLA also counts elementwise work (softmax, LayerNorm, GELU, Adam), so it
  is a little above the matmul count.
* ``achieved_gflops``: ``flops_analytic`` (or, when a layer type has no analytic count,
  ``flops_xla``) / step time; ``peak_gflops``: the median rate of a jitted float32
  ``--peak_size``-cubed matmul measured in the same run (before the first config and after
  the last, averaged; ``peak_gflops_runs`` lists the measurements); ``mfu`` = achieved / peak.

XLA options (``--xla_options 'name=value;name=value'``) are passed to ``compile`` for every
step of the run (never globally); the ones :data:`DEFAULT_XLA_OPTIONS` sets, and why, are in
``benchmarks/README.md``. Any ``--config.<field>=<value>`` overrides a config field, as with
``mmtx.main``. Ends with one JSON line: the result dict (or ``{"results": [...]}`` for
several configs).
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from mmtx import config as config_lib
from mmtx import launch
from mmtx.models import MultiModalTransformer, dummy_batch
from mmtx.train.build import build
from mmtx.train.flops import (  # the one FLOP counter, shared with the training loop
    analytic_flops,
    matmul_peak_gflops,
)
from mmtx.train.state import TrainState

DEFAULT_CONFIG = "configs/bench_clip.py"
SUITE = (
    ("configs/bench_clip.py", "dense"),
    ("configs/base.py", "dense"),
    ("configs/base.py", "local"),
    ("configs/base.py", "linear"),
)
# XLA:CPU compile options used for every step unless --xla_options says otherwise. None yet
# (see benchmarks/README.md: the options tried and why none is on by default).
DEFAULT_XLA_OPTIONS: dict[str, str | bool] = {}
RESULT_KEYS = (
    "examples_per_sec",
    "step_ms",
    "achieved_gflops",
    "peak_gflops",
    "mfu",
    "flops_analytic",
    "flops_xla",
)


# --- config ---------------------------------------------------------------------------------


def parse_value(text: str, current: Any) -> Any:
    """Parses ``text`` as a value of ``current``'s type (bool, int, float, str or tuple)."""
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected a bool, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, tuple):
        value = ast.literal_eval(text)
        return tuple(value) if isinstance(value, list | tuple) else (value,)
    return text


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: dict[str, str]
) -> ml_collections.ConfigDict:
    """Sets dotted ``field -> text`` overrides in place (``model.text.attention -> local``)."""
    for dotted, text in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for name in parents:
            if name not in node:
                raise KeyError(f"unknown config field {dotted!r}")
            node = node[name]
        if leaf not in node:
            raise KeyError(f"unknown config field {dotted!r}")
        node[leaf] = parse_value(text, node[leaf])
    return config


def set_attention(config: ml_collections.ConfigDict, kernel: str) -> ml_collections.ConfigDict:
    """Uses attention ``kernel`` in every tower and the fusion, in place."""
    for modality in config.model.modalities:
        config.model[modality].attention = kernel
    config.fusion.attention = kernel
    return config


def load_config(
    spec: str,
    overrides: dict[str, str] | None = None,
    batch_size: int | None = None,
    attention: str | None = None,
) -> ml_collections.ConfigDict:
    """``spec`` (``path.py[:arg]`` or JSON) with overrides, a batch size and a kernel applied."""
    config = config_lib.load_config(spec)
    apply_overrides(config, overrides or {})
    if batch_size is not None:
        config.train.batch_size = batch_size
    if attention is not None:
        set_attention(config, attention)
    return config_lib.validate(config)


def xla_flops(compiled: Any) -> float:
    """``compiled.cost_analysis()["flops"]`` (a list of one dict in some jax versions)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0]
    return float(analysis["flops"])


# --- the step -------------------------------------------------------------------------------


@dataclasses.dataclass
class StepSetup:
    """A jitted train step built as the train loop builds it, with its state and a batch."""

    config: ml_collections.ConfigDict
    module: MultiModalTransformer
    mesh: Any
    jitted: Any  # jax.jit(train_step, shardings, donate_argnums=0)
    state: TrainState
    batch: dict[str, jax.Array]
    num_params: int


def random_batch(
    config: ml_collections.ConfigDict, batch_size: int, vocab_size: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """A random batch shaped like the dataset's.

    Text ids int32 ``[B, T]`` in ``[3, vocab)`` with an all-True bool mask, images float32
    ``[B, H, W, C]`` in ``[0, 1]``, audio float32 ``[B, S]`` in ``[-1, 1]``, and the int32
    ``[B]`` labels the loss reads: ``label`` (with a classifier) and one per attribute head.
    """
    rng = np.random.default_rng(seed)
    model = config.model
    batch = {k: np.asarray(v) for k, v in dummy_batch(config, batch_size).items()}
    if "text" in batch:
        batch["text"] = rng.integers(3, vocab_size, batch["text"].shape, dtype=np.int32)
    if "image" in batch:
        batch["image"] = rng.random(batch["image"].shape, dtype=np.float32)
    if "audio" in batch:
        batch["audio"] = rng.uniform(-1, 1, batch["audio"].shape).astype(np.float32)
    if model.num_classes:
        batch["label"] = rng.integers(0, model.num_classes, (batch_size,), dtype=np.int32)
    for name, classes in model.attribute_classes.items():
        batch[name] = rng.integers(0, classes, (batch_size,), dtype=np.int32)
    return batch


def build_step(config: ml_collections.ConfigDict) -> StepSetup:
    """The mesh, module, optimizer, sharded state and jitted step: ``mmtx.train.build``, as
    ``train_and_evaluate`` builds them."""
    run = build(config)
    vocab = config.model.text.vocab_size or run.tokenizer.vocab_size
    batch = random_batch(config, config.train.batch_size, vocab, seed=config.train.seed)
    batch = jax.device_put(batch, run.data_sharding)
    state = run.init_state()
    num_params = sum(int(x.size) for x in jax.tree.leaves(state.params))
    return StepSetup(config, run.module, run.mesh, run.train_step, state, batch, num_params)


def compile_step(setup: StepSetup, xla_options: dict[str, Any]) -> tuple[Any, float]:
    """Lowers and compiles the step for the setup's state and batch; returns (compiled, s)."""
    start = time.perf_counter()
    compiled = setup.jitted.lower(setup.state, setup.batch).compile(dict(xla_options))
    return compiled, time.perf_counter() - start


def unrolled_xla_flops(config: ml_collections.ConfigDict, xla_options: dict[str, Any]) -> float:
    """XLA's FLOP count of the step with ``scan_layers`` off (compiled from shapes, not run)."""
    config = copy.deepcopy(config)
    config.model.scan_layers = False
    run = build(config)
    tokens = config.model.text.vocab_size or run.tokenizer.vocab_size
    batch = random_batch(config, config.train.batch_size, tokens)
    abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
    lowered = run.train_step.lower(run.abstract_state, abstract_batch)
    return xla_flops(lowered.compile(dict(xla_options)))


class StepTimer:
    """Runs a compiled step on a setup's (donated) state; keeps the newest state."""

    def __init__(self, setup: StepSetup, compiled: Any) -> None:
        self.setup = setup
        self.compiled = compiled
        self.state = setup.state
        self.last_metrics: dict[str, Any] = {}

    def run(self, steps: int) -> list[float]:
        """``steps`` steps, each timed to ``block_until_ready``; returns seconds per step."""
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self.state, metrics = self.compiled(self.state, self.setup.batch)
            jax.block_until_ready((self.state, metrics))
            times.append(time.perf_counter() - start)
            self.last_metrics = metrics
        return times


# --- one measurement ------------------------------------------------------------------------


def describe(config: ml_collections.ConfigDict) -> str:
    """A short label: the modalities, each tower's width x depth and attention kernel."""
    towers = ", ".join(
        f"{m} {config.model[m].width}x{config.model[m].depth} {config.model[m].attention}"
        for m in config.model.modalities
    )
    return f"{'+'.join(config.model.modalities)} ({towers}; fusion {config.fusion.type})"


def measure(
    config: ml_collections.ConfigDict,
    *,
    steps: int = 10,
    warmup: int = 3,
    xla_options: dict[str, Any] | None = None,
    peak_gflops: float | None = None,
    peak_size: int = 2048,
    peak_repeats: int = 5,
    count_unrolled: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Builds, compiles, warms up and times the step of ``config``; returns the result dict.

    ``peak_gflops`` None measures the matmul peak after the timed steps (same process, same
    options). With ``count_unrolled`` and scanned layers, ``flops_xla`` comes from an unrolled
    compile of the same step (XLA counts a loop body once); ``flops_xla_compiled`` is always
    the count of the step that ran.
    """
    xla_options = dict(DEFAULT_XLA_OPTIONS if xla_options is None else xla_options)
    setup = build_step(config)
    compiled, compile_s = compile_step(setup, xla_options)
    timer = StepTimer(setup, compiled)
    timer.run(warmup)
    times = timer.run(steps)
    if peak_gflops is None:
        peak_gflops = matmul_peak_gflops(peak_size, peak_repeats)
    batch_size = config.train.batch_size
    step_s = statistics.median(times)
    flops = analytic_flops(config, batch_size)
    flops_compiled = xla_flops(compiled)
    scanned = config.model.scan_layers and count_unrolled
    flops_xla = unrolled_xla_flops(config, xla_options) if scanned else flops_compiled
    used = flops["train"] if flops["complete"] else flops_xla
    achieved = used / step_s / 1e9
    result = {
        "config": describe(config),
        "batch_size": batch_size,
        "num_params": setup.num_params,
        "scan_layers": bool(config.model.scan_layers),
        "remat": config.model.remat,
        "dtype": config.dtype,
        "examples_per_sec": round(batch_size / step_s, 3),
        "step_ms": round(step_s * 1e3, 2),
        "step_ms_all": [round(t * 1e3, 2) for t in times],
        "achieved_gflops": round(achieved, 2),
        "peak_gflops": round(peak_gflops, 2),
        "peak_gflops_runs": [round(peak_gflops, 2)],
        "mfu": round(achieved / peak_gflops, 4),
        "flops_analytic": flops["train"] if flops["complete"] else None,
        "flops_analytic_forward": {k: round(v) for k, v in flops["forward"].items()},
        "flops_xla": flops_xla,
        "flops_xla_compiled": flops_compiled,
        "flops_ratio_xla_to_analytic": round(flops_xla / flops["train"], 4),
        "mfu_flops_source": "analytic" if flops["complete"] else "xla",
        "compile_s": round(compile_s, 2),
        "final_loss": round(float(timer.last_metrics["loss"]), 5),
        "xla_options": xla_options,
        "host_malloc": launch.current_setting(),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
    }
    log(
        f"{result['config']}: {result['examples_per_sec']:.1f} ex/s, {result['step_ms']:.1f} "
        f"ms/step (batch {batch_size}); {achieved:.1f} GFLOP/s of a {peak_gflops:.1f} GFLOP/s "
        f"matmul peak: MFU {result['mfu']:.1%}; FLOPs/step analytic "
        f"{flops['train'] / 1e9:.2f} G, XLA {flops_xla / 1e9:.2f} G"
    )
    return result


# --- command line ---------------------------------------------------------------------------


def _options(text: str) -> dict[str, str | bool]:
    """``'name=value;...'`` as compile options; ``true``/``false`` (any case) become bools,
    the only spelling of a boolean XLA option that ``compile`` accepts besides ``True``."""
    pairs = [part.split("=", 1) for part in text.split(";") if part.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected 'name=value;name=value', got {text!r}")
    bools = {"true": True, "false": False}
    return {name.strip(): bools.get(value.strip().lower(), value.strip()) for name, value in pairs}


def split_config_overrides(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``--config.a.b=v`` arguments as ``{"a.b": "v"}``, and the other arguments in order."""
    overrides: dict[str, str] = {}
    rest = []
    for arg in argv:
        if arg.startswith("--config.") and "=" in arg:
            name, value = arg[len("--config.") :].split("=", 1)
            overrides[name] = value
        else:
            rest.append(arg)
    return overrides, rest


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    """Returns (args, config overrides); ``--config.a.b=v`` arguments are the overrides."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--config", default=DEFAULT_CONFIG, help="configs/x.py[:arg] or a JSON file")
    add("--batch_size", type=int, default=None, help="default: the config's train.batch_size")
    add("--steps", type=int, default=10, help="timed steps (median)")
    add("--warmup", type=int, default=3, help="untimed steps after compiling")
    add("--attention", default=None, help="comma list: one run per kernel, in every tower")
    add("--suite", action="store_true", help="bench_clip, then configs/base.py x kernels")
    add("--xla_options", type=_options, default=None, help="'name=value;...' compile options")
    add("--peak_size", type=int, default=2048, help="side of the peak-rate matmul")
    add("--peak_repeats", type=int, default=5)
    add("--no_unrolled_count", action="store_true", help="skip the unrolled FLOP count")
    overrides, rest = split_config_overrides(argv)
    args = parser.parse_args(rest)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args, overrides


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if args.suite:
        runs = [(spec, kernel) for spec, kernel in SUITE]
    elif args.attention:
        runs = [(args.config, kernel.strip()) for kernel in args.attention.split(",")]
    else:
        runs = [(args.config, None)]
    peaks = [matmul_peak_gflops(args.peak_size, args.peak_repeats)]
    peak = peaks[0]
    print(f"matmul peak ({args.peak_size}^3 float32, jitted): {peak:.1f} GFLOP/s")
    results = []
    for spec, kernel in runs:
        config = load_config(spec, overrides, args.batch_size, kernel)
        results.append(
            measure(
                config,
                steps=args.steps,
                warmup=args.warmup,
                xla_options=args.xla_options,
                peak_gflops=peak,
                count_unrolled=not args.no_unrolled_count,
            )
        )
        results[-1]["config_spec"] = spec
    # The peak again at the end: the load on a shared machine drifts; report the mean.
    peaks.append(matmul_peak_gflops(args.peak_size, args.peak_repeats))
    peak = statistics.mean(peaks)
    for result in results:
        result["peak_gflops"] = round(peak, 2)
        result["peak_gflops_runs"] = [round(p, 2) for p in peaks]
        result["mfu"] = round(result["achieved_gflops"] / peak, 4)
    payload = results[0] if len(results) == 1 else {"results": results}
    if len(results) > 1:
        print(f"{'config':<70} {'ex/s':>8} {'ms':>9} {'GFLOP/s':>8} {'MFU':>6}")
        for r in results:
            print(
                f"{r['config']:<70} {r['examples_per_sec']:8.1f} {r['step_ms']:9.1f} "
                f"{r['achieved_gflops']:8.1f} {r['mfu']:6.1%}"
            )
    print(json.dumps(payload))
    return payload


if __name__ == "__main__":
    launch.restart_with_tuned_malloc()
    main()
