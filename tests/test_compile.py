"""Tests for mmtx/compile.py: the real train and eval steps compiled ahead of time for a TPU
topology on this CPU host (libtpu, the ``aot`` extra), the figures it reports checked against
references computed here, the HLO parsing on hand-written HLO, the batch search, and that a
TPU program built here follows the TPU's code paths (:mod:`mmtx.nn.platform`)."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmtx import compile as compile_lib
from mmtx import config as config_lib
from mmtx.model_checks import check_runnable
from mmtx.train import mesh as mesh_lib
from mmtx.train.build import build
from mmtx.train.flops import analytic_flops

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = "configs/base.py:tiny"
TOPOLOGY = "v5e:2x2"
# JAX's CUDA plugin: `make test` installs it into .aot-gpu/, which only the GPU compiles'
# subprocesses see (a jax process that finds it on a host without CUDA prints its failed version
# check); a venv with the `aot-gpu` extra has it already.
AOT_GPU = REPO / ".aot-gpu"
CUDA_PLUGIN_PATH = (
    ""
    if importlib.util.find_spec("jax_cuda12_plugin") is not None
    else str(AOT_GPU)
    if (AOT_GPU / "jax_cuda12_plugin").is_dir()
    else None
)
needs_cuda_plugin = pytest.mark.skipif(
    CUDA_PLUGIN_PATH is None,
    reason="needs JAX's CUDA plugin (`make test` installs it; or pip install 'mmtx[aot-gpu]')",
)
needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None, reason="needs libtpu (pip install 'mmtx[aot]')"
)


# The compiled commands' model: tiny's text and image towers, which compile in about half the
# time of its three.
TWO_TOWERS = "--config.model.modalities=text,image"


def two_tower_config() -> ml_collections.ConfigDict:
    """The config ``run_compile`` compiles, built here."""
    config = config_lib.load_config(TINY)
    config.model.modalities = ("text", "image")
    return config_lib.validate(config)


def python_path(*, gpu: bool = False) -> str:
    """The subprocesses' PYTHONPATH: the repo, and with ``gpu`` the CUDA plugin's folder."""
    paths = [str(REPO), *([CUDA_PLUGIN_PATH] if gpu and CUDA_PLUGIN_PATH else [])]
    return os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])


def run_python(*args: str, gpu: bool = False) -> subprocess.CompletedProcess:
    """``python *args`` in the repo, with :func:`python_path`; its output captured."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": python_path(gpu=gpu)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def run_compile(*flags: str, gpu: bool = False) -> subprocess.CompletedProcess:
    return run_python("-m", "mmtx.compile", f"--config={TINY}", TWO_TOWERS, *flags, gpu=gpu)


def exact_bytes(text: str, label: str) -> int:
    """The exact byte count printed after ``label``: ``label 1.50 MiB (1,572,864 B)``."""
    match = re.search(rf"{label} [^(]*\(([\d,]+) B\)", text)
    assert match, f"no {label!r} in {text}"
    return int(match[1].replace(",", ""))


def step_section(text: str, name: str) -> str:
    start = text.index(f"{name} step (")
    end = text.find(" step (", start + len(name) + 1)
    return text[start : end if end > 0 else len(text)]


# --- the HLO parser, on hand-written HLO ------------------------------------------------------

# One of each collective kind: a tuple all-reduce (two f32 arrays), an async all-gather whose
# start repeats under the same channel_id in a fusion (one collective), a reduce-scatter
# (its input is the larger side), an all-to-all, a collective-permute start/done pair, and
# custom calls (a Pallas kernel twice, a cuDNN one, another); and two reduce-scatters as
# XLA:TPU writes them, an all-reduce and its slice fused into an all-reduce-scatter
# computation (each numbering its channels from 1, as the tuple all-reduce's is numbered).
HLO = """\
HloModule jit_step, is_scheduled=true

%all-reduce-scatter.1 (input_0: f32[64,8]) -> f32[16,8] {
  %input_0 = f32[64,8]{1,0:T(8,128)S(1)} parameter(0)
  %all-reduce.7 = f32[64,8]{1,0:T(8,128)} all-reduce(%input_0), channel_id=1, to_apply=%add
  %id = u32[] partition-id()
  %zero = u32[] constant(0)
  ROOT %slice = f32[16,8]{1,0} dynamic-slice(%all-reduce.7, %id, %zero), dynamic_slice_sizes={16,8}
}

%all-reduce-scatter.2.clone (input_0.1: bf16[32,8], input_1.1: bf16[32]) -> (bf16[8,8], bf16[8]) {
  %input_0.1 = bf16[32,8]{1,0} parameter(0)
  %input_1.1 = bf16[32]{0} parameter(1)
  %all-reduce.8 = (bf16[32,8]{1,0}, bf16[32]{0}) all-reduce(%input_0.1, %input_1.1), channel_id=1
  ROOT %t = (bf16[8,8]{1,0}, bf16[8]{0}) tuple(%all-reduce.8)
}

%fused (p0: bf16[16,32]) -> bf16[64,32] {
  %p0 = bf16[16,32]{1,0} parameter(0)
  ROOT %ag.clone = bf16[64,32]{1,0:T(8,128)(2,1)} all-gather(%p0), channel_id=7, dimensions={0}
}

ENTRY %main (a: f32[128,8], b: f32[8], c: bf16[16,32], d: f32[64,4], e: s32[10]) -> f32[] {
  %a = f32[128,8]{1,0} parameter(0)
  %b = f32[8]{0} parameter(1)
  %c = bf16[16,32]{1,0} parameter(2)
  %d = f32[64,4]{1,0} parameter(3)
  %e = s32[10]{0} parameter(4)
  %ar = (f32[128,8]{1,0}, f32[8]{0}) all-reduce(%a, %b), channel_id=1, to_apply=%add
  %ags = (bf16[16,32]{1,0}, bf16[64,32]{1,0}) all-gather-start(%c), channel_id=7, dimensions={0}
  %agd = bf16[64,32]{1,0} all-gather-done(%ags)
  %rs = f32[16,4]{1,0} reduce-scatter(%d), channel_id=3, dimensions={0}, to_apply=%add
  %a2a = s32[10]{0} all-to-all(%e), channel_id=4, dimensions={0}
  %cps = (f32[8]{0}, f32[8]{0}, u32[], u32[]) collective-permute-start(%b), channel_id=5
  %cpd = f32[8]{0} collective-permute-done(%cps)
  %k1 = f32[8]{0} custom-call(%b), custom_call_target="tpu_custom_call"
  %k2 = f32[8]{0} custom-call(%k1), custom_call_target="tpu_custom_call"
  %k3 = f32[8]{0} custom-call(%k2), custom_call_target="__cudnn$fmhaSoftmax"
  %k4 = f32[8]{0} custom-call(%k3), custom_call_target="AllocateBuffer"
  ROOT %r = f32[] constant(0)
}
"""


def test_collectives_of_hand_written_hlo() -> None:
    found = compile_lib.collectives(HLO)
    assert list(found) == list(compile_lib.COLLECTIVES)
    assert found["all-reduce"] == (1, 128 * 8 * 4 + 8 * 4)  # both arrays of the tuple
    assert found["all-gather"] == (1, 64 * 32 * 2)  # the gathered result, counted once
    # The unreduced inputs: the plain one's, and the all-reduce-scatter computations'.
    assert found["reduce-scatter"] == (3, 64 * 4 * 4 + 64 * 8 * 4 + (32 * 8 + 32) * 2)
    assert found["all-to-all"] == (1, 10 * 4)
    # The start's result holds its operand, its output and two u32 contexts.
    assert found["collective-permute"] == (1, 8 * 4 + 2 * 4)


def test_custom_calls_of_hand_written_hlo() -> None:
    assert compile_lib.custom_calls(HLO) == {
        "tpu_custom_call": 2,
        "__cudnn$fmhaSoftmax": 1,
        "AllocateBuffer": 1,
    }


# --- the batch search ---------------------------------------------------------------------------


@pytest.mark.parametrize("largest", [1, 2, 3, 37, 64, 100])
def test_largest_fitting_doubles_then_bisects(largest: int) -> None:
    tried = []

    def fits(n: int) -> bool:
        tried.append(n)
        return n <= largest

    assert compile_lib.largest_fitting(fits) == largest
    doublings = [n for n in tried if n & (n - 1) == 0]
    assert doublings[: int(math.log2(largest)) + 2] == [
        2**i for i in range(int(math.log2(largest)) + 2)
    ]
    assert len(tried) <= 2 * math.ceil(math.log2(largest + 1)) + 2


def test_largest_fitting_edges() -> None:
    assert compile_lib.largest_fitting(lambda n: False) == 0
    assert compile_lib.largest_fitting(lambda n: True, limit=40) == 32


def test_find_batch_stops_at_the_chip_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-chip batch search over a stand-in compile whose memory is 4e8 bytes per
    example (4 chips, microbatches 2: batches in steps of 2 per chip) finds the largest
    batch under a v5e's 16 GiB, also when the compile succeeds but the total is over."""
    config = config_lib.load_config(TINY)
    config.train.microbatches = 2
    devices = [type("Device", (), {"device_kind": "TPU v5 lite", "num_cores": 1})()] * 4
    per_example = 4 * 10**8

    def fake_compile_run(trial, devices_, *, eval_step):
        assert not eval_step and devices_ is devices
        batch = trial.train.batch_size
        memory = {"total": batch // len(devices) * per_example}
        return None, [compile_lib.StepReport("train", batch, memory, 1.0, {}, {}, 0.0)]

    monkeypatch.setattr(compile_lib, "compile_run", fake_compile_run)
    out = io.StringIO()
    best, unit = compile_lib._find_batch(config, devices, out)
    assert unit == 2
    assert best == (16 * 2**30 // per_example) // unit * unit == 42
    assert "  42 per chip: fits" in out.getvalue()
    assert "  44 per chip: does not fit (train step: " in out.getvalue()


def test_chip_table_matches_device_kinds() -> None:
    assert compile_lib.chip_of("TPU v5 lite").name == "v5e"
    assert compile_lib.chip_of("TPU v5").name == "v5p"
    assert compile_lib.chip_of("TPU v6 lite").name == "v6e"
    assert compile_lib.chip_of("TPU v4").name == "v4"
    assert compile_lib.chip_of("NVIDIA H100 80GB HBM3").name == "h100"
    assert compile_lib.chip_of("cpu") is None
    for chip in compile_lib.CHIPS:
        assert chip.source.startswith(("cloud.google.com/tpu/docs/", "NVIDIA "))


# --- the command, compiling for v5e:2x2 ---------------------------------------------------------


def padded_reference(shape, itemsize, major_to_minor, tile):
    """An array of ``shape`` transposed into ``major_to_minor`` order and zero-padded up to
    whole ``tile``s on its minor dimensions (numpy), in bytes."""
    array = np.zeros(shape, np.uint8).transpose(major_to_minor)
    pads = [(0, 0)] * array.ndim
    for offset, size in enumerate(reversed(tile), start=1):
        if offset <= array.ndim:
            pads[-offset] = (0, -array.shape[-offset] % size)
    return np.pad(array, pads).size * itemsize


@pytest.mark.parametrize(
    "shape,itemsize,major_to_minor,tile",
    [
        ((24, 4, 16, 64), 4, (0, 1, 2, 3), (8, 128)),  # Dh = 64 in 128 lanes: 2x
        ((24, 4096, 4), 4, (0, 2, 1), (4, 128)),  # a 4-wide shard laid out minor-first
        ((3, 3, 2, 1024), 2, (0, 1, 2, 3), (2, 128)),
        ((9,), 4, (0,), (8, 128)),  # fewer dimensions than the tile
        ((5, 7), 4, (1, 0), (8, 128)),
    ],
)
def test_tiled_bytes_pads_the_minor_dimensions_to_whole_tiles(
    shape, itemsize, major_to_minor, tile
) -> None:
    layout = types.SimpleNamespace(major_to_minor=major_to_minor, tiling=(tile,))
    expected = padded_reference(shape, itemsize, major_to_minor, tile)
    assert compile_lib.tiled_bytes(shape, itemsize, layout) == expected
    untiled = types.SimpleNamespace(major_to_minor=major_to_minor, tiling=())
    assert compile_lib.tiled_bytes(shape, itemsize, untiled) == math.prod(shape) * itemsize
    assert compile_lib.tiled_bytes(shape, itemsize, None) == math.prod(shape) * itemsize


def test_largest_excess_names_the_params_held_beyond_their_share() -> None:
    mesh = jax.sharding.AbstractMesh((4,), ("fsdp",))
    shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    params = {
        "split": jax.ShapeDtypeStruct((64, 128), jnp.float32),
        "replicated": jax.ShapeDtypeStruct((64, 128), jnp.float32),
        "small": jax.ShapeDtypeStruct((8,), jnp.float32),
    }
    shardings = {"split": shard, "replicated": whole, "small": whole}
    excess = compile_lib.largest_excess(params, shardings, count=2)
    assert [row[0] for row in excess] == ["replicated", "small"]
    assert excess[0][1:] == ((64, 128), "P()", 64 * 128 * 4)


@pytest.mark.parametrize(
    "xla,shown,note",
    [
        (None, "analytic", "(none from XLA:GPU without a GPU)"),
        (0.1, "analytic", "each loop's body counted once"),  # a scanned model
        (1.5, "xla", "by XLA's cost analysis"),  # unrolled: elementwise work and the optimizer
    ],
)
def test_flops_line_takes_the_larger_count(xla, shown, note) -> None:
    config = two_tower_config()
    analytic = analytic_flops(config, 64)["train"] / 4
    flops = None if xla is None else xla * analytic
    report = compile_lib.StepReport("train", 64, {}, flops, {}, {}, 0.0)
    text = compile_lib.flops_text(report, config, 4, 197e12)
    expected = analytic if shown == "analytic" else flops
    assert text.startswith(f"{expected:.4g} per step") and note in text
    assert f"; {expected / 197e12 * 1e3:.4g} ms at the 197 TFLOP/s bf16 peak" in text


@pytest.fixture(scope="module")
def planned() -> subprocess.CompletedProcess:
    return run_compile(f"--topology={TOPOLOGY}")


@needs_libtpu
def test_the_command_reports_the_compiled_steps(planned) -> None:
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert planned.stderr == ""  # libtpu's warnings about this host are not shown
    text = planned.stdout
    assert text.startswith(f"{TOPOLOGY}: 4 x TPU v5 lite (tpu); mesh {{'data': 4, 'fsdp': 1, ")
    assert "compute bfloat16, params float32" in text  # dtype auto: the TPU's, not the host's

    # The state, against shapes computed here (the params do not depend on the platform).
    config = two_tower_config()
    run = build(config, mesh_lib.create_mesh(config.mesh, jax.devices()[:1]))
    params = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(run.abstract_state.params))
    optimizer = sum(
        x.size * x.dtype.itemsize for x in jax.tree.leaves(run.abstract_state.opt_state)
    )
    # The tiny mesh is data-parallel (fsdp 1): every device holds all of it.
    assert exact_bytes(text, "state: params") == params
    assert exact_bytes(text, "optimizer") == optimizer
    assert exact_bytes(text, "ema") == 0
    assert exact_bytes(text, "x the fully sharded") == (params + optimizer) // 4
    assert "= 4.00 x the fully sharded" in text
    # In the TPU's (8, 128) tiles the 32-wide tiny params take more, never less.
    tiled = exact_bytes(text, "in the compiled layouts [^:]*:")
    assert params + optimizer < tiled < 16 * (params + optimizer)
    assert exact_bytes(text, "HBM per device:") == 16 * 2**30

    train = step_section(text, "train")
    assert "(global batch 64, 16 per device;" in train
    argument = exact_bytes(train, "argument")
    # The arguments hold the state and a device's quarter of the batch (TPU tiles pad them).
    batch = sum(
        np.prod((64, *v.shape[1:])) * v.dtype.itemsize
        for v in compile_lib.example_spec(run).values()
    )
    assert params + optimizer + batch // 4 <= argument <= 2 * (params + optimizer + batch)
    # The state is donated: its buffers are reused by the output.
    assert exact_bytes(train, "alias") >= params + optimizer
    temp, code = exact_bytes(train, "temp"), exact_bytes(train, "code")
    total = argument + exact_bytes(train, "output") - exact_bytes(train, "alias") + temp + code
    assert exact_bytes(train, "total") == total
    assert f"of 16.00 GiB HBM ({100 * total / 2**34:.1f}%): fits" in train

    # XLA's FLOPs per device: about the analytic count's quarter (here 1% under it), plus
    # what that leaves out (elementwise work, the optimizer, remat's recomputed forward).
    flops = float(re.search(r"flops: ([\d.e+]+) per step", train)[1])
    analytic = analytic_flops(config, 64)["train"] / 4
    assert 0.9 * analytic <= flops <= 2.5 * analytic
    milliseconds = float(re.search(r"; ([\d.e+-]+) ms at the 197 TFLOP/s", train)[1])
    assert milliseconds == pytest.approx(flops / 197e12 * 1e3, rel=1e-3)

    # Data parallelism: the gradients are all-reduced (bf16 or f32), nothing is resharded.
    reduced = re.search(r"all-reduce (\d+) \(([\d.]+) (KiB|MiB)\)", train)
    size = float(reduced[2]) * {"KiB": 2**10, "MiB": 2**20}[reduced[3]]
    assert int(reduced[1]) >= 1 and params / 2 * 0.9 <= size <= 1.1 * params
    assert "reduce-scatter 0 (0 B)" in train and "collective-permute 0 (0 B)" in train
    assert "kernels: Pallas (tpu_custom_call) 0, cuDNN 0" in train

    evaluation = step_section(text, "eval")
    assert "(global batch 256, 64 per device;" in evaluation
    assert exact_bytes(evaluation, "alias") == 0  # nothing donated
    assert "all-reduce 0 (0 B)" in evaluation  # a forward pass reduces no gradients
    assert ": fits" in evaluation


@needs_libtpu
def test_a_batch_that_does_not_fit_exits_1_with_xla_message() -> None:
    failed = run_compile(f"--topology={TOPOLOGY}", "--config.train.batch_size=65536")
    assert failed.returncode == 1, failed.stderr[-3000:]
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith("error: train step: RESOURCE_EXHAUSTED")
    assert "exceeds available HBM" in lines[0]
    assert "eval step" not in failed.stdout  # stopped at the first step that does not fit


@needs_libtpu
def test_a_bad_topology_or_mesh_exits_2() -> None:
    code = compile_lib.main(["mmtx.compile", f"--config={TINY}", "--topology=v9z:2x2"])
    assert code == 2
    code = compile_lib.main(
        ["mmtx.compile", f"--config={TINY}", f"--topology={TOPOLOGY}", "--config.mesh.fsdp=3"]
    )
    assert code == 2


@needs_libtpu
def test_a_batch_that_does_not_divide_over_the_chips_points_at_per_chip_batch() -> None:
    base = ["mmtx.compile", f"--config={TINY}", f"--topology={TOPOLOGY}"]
    err = io.StringIO()
    code = compile_lib.main([*base, "--config.train.batch_size=6"], io.StringIO(), err)
    assert code == 2
    assert err.getvalue() == (
        "error: config.train.batch_size=6 must be divisible by the 4 data-parallel devices "
        "(mesh data x fsdp) x train.microbatches=1; --per_chip_batch=N sets both batches to "
        "N x the 4 chips\n"
    )


@needs_libtpu
def test_per_chip_batch_sets_both_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--per_chip_batch=16`` on 4 chips compiles global batches of 64 (a stand-in compile
    records them); with ``--config.train.batch_size`` or under 1 it is a usage error."""
    seen = {}

    def stand_in(config, devices, *, eval_step=True):
        seen.update(train=config.train.batch_size, eval=config.eval.batch_size)
        raise compile_lib.CompileError("stand-in: nothing compiled")

    monkeypatch.setattr(compile_lib, "compile_run", stand_in)
    base = ["mmtx.compile", f"--config={TINY}", f"--topology={TOPOLOGY}"]
    assert compile_lib.main([*base, "--per_chip_batch=16"], io.StringIO(), io.StringIO()) == 1
    assert seen == {"train": 64, "eval": 64}
    for bad in (["--per_chip_batch=0"], ["--per_chip_batch=4", "--config.train.batch_size=8"]):
        err = io.StringIO()
        assert compile_lib.main([*base, *bad], io.StringIO(), err) == 2
        assert err.getvalue().startswith("error: --per_chip_batch")


# --- a TPU program built on this host takes the TPU's code paths -------------------------------


@needs_libtpu
def test_tpu_lowering_has_the_scanned_accumulation_and_pallas_kernels() -> None:
    """Lowered (not compiled) for v5e:2x2 from this CPU host: microbatches in a loop (auto
    unrolls them on CPU only), the local kernel as Pallas splash kernels
    (``implementation = pallas``, refused on a CPU backend), bf16 compute for ``auto`` and
    autodiff's kernel gradients (the CPU's transposed form has optimization barriers)."""
    devices = compile_lib.topology_devices(TOPOLOGY)
    config = config_lib.load_config(TINY)
    config.model.modalities = ("text", "image")
    for modality in config.model.modalities:
        config.model[modality].attention = "local"
    config.fusion.attention = "local"
    config.attention.implementation = "pallas"
    config.train.microbatches = 2
    config = config_lib.validate(config)
    check_runnable(config, platform="tpu")
    with pytest.raises(ValueError, match="needs a TPU backend"):
        check_runnable(config)  # this host is a CPU

    def lowered(config) -> str:
        run = build(config, mesh_lib.create_mesh(config.mesh, devices))
        assert jnp.dtype(run.module.dtype) == jnp.bfloat16
        batch = compile_lib._rows(compile_lib.example_spec(run), config.train.batch_size)
        return run.train_step.lower(run.abstract_state, batch).as_text()

    scanned = lowered(config)
    assert scanned.count("tpu_custom_call") > 0
    assert "optimization_barrier" not in scanned
    config.train.accumulation_unroll = 8  # the CPU's choice, made explicit
    unrolled = lowered(config)
    # The microbatches' backward passes: one loop body, or a copy per microbatch (each with
    # its own scans over the layers).
    assert scanned.count("stablehlo.while") < unrolled.count("stablehlo.while")


# --- a GPU topology: JAX's CUDA plugin and the H100 spec file ------------------------------------


@needs_cuda_plugin
def test_the_command_compiles_for_two_h100s() -> None:
    done = run_compile("--topology=h100:2", "--config.eval.batch_size=64", gpu=True)
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout
    assert "h100:2: 2 x NVIDIA H100 80GB HBM3 (gpu); mesh {'data': 2, 'fsdp': 1, " in text
    assert exact_bytes(text, "HBM per device:") == 80 * 10**9
    assert "= 2.00 x the fully sharded" in text
    train = step_section(text, "train")
    analytic = analytic_flops(two_tower_config(), 64)["train"] / 2
    assert f"flops: {analytic:.4g} per step by mmtx.train.flops.analytic_flops (none" in train
    assert exact_bytes(train, "total") < 80 * 10**9 and ": fits" in train
    # The image stem's convolutions are cuDNN's on a GPU.
    assert int(re.search(r"cuDNN (\d+)", train)[1]) > 0
    assert "all-reduce 0 " not in train


# --- the GPU spec files (mmtx/gpu_specs/) against the CHIPS and PEAK_FLOPS tables ----------------


def gpu_spec_fields(key: str) -> dict[str, str]:
    """``{field: value}`` of the scalar fields of ``GPU_SPECS[key]``'s text proto, nested ones
    included (``core_count``, ``device_memory_size``, ``device_description_str`` unquoted ...);
    comments are dropped."""
    path = REPO / "mmtx" / "gpu_specs" / compile_lib.GPU_SPECS[key]
    fields = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"\s*(\w+):\s*(\S.*?)\s*", line.split("#", 1)[0])
        if match:
            fields[match[1]] = match[2].strip('"')
    return fields


def test_gpu_spec_files_match_the_chip_and_peak_tables() -> None:
    from mmtx.train.flops import table_peak_flops

    chips = {chip.name: chip for chip in compile_lib.CHIPS}
    assert {"h100", "h200", "a100"} <= set(compile_lib.GPU_SPECS)
    for key in compile_lib.GPU_SPECS:
        fields = gpu_spec_fields(key)
        kind = fields["device_description_str"]
        assert key in chips, key
        assert compile_lib.chip_of(kind) is chips[key], (key, kind)
        assert int(fields["device_memory_size"]) == chips[key].hbm_bytes, key
        assert table_peak_flops(kind) is not None, (key, kind)
        assert fields["platform_name"] == "CUDA"
    # The narrower device kinds: a GH200 is not an H200, a 40 GB A100 not an 80 GB one.
    assert compile_lib.chip_of("NVIDIA H200 NVL").name == "h200"
    assert compile_lib.chip_of("NVIDIA GH200 480GB") is None
    assert compile_lib.chip_of("NVIDIA A100 80GB PCIe").name == "a100"
    assert compile_lib.chip_of("NVIDIA A100-SXM4-40GB") is None


@needs_cuda_plugin
def test_gpu_spec_files_parse_to_devices_of_their_chip() -> None:
    # XLA parses each file (a GpuTargetConfigProto) into the plugin's compile-only devices, whose
    # device_kind is the file's device_description_str. In a subprocess that sees the plugin.
    listing = (
        "import json\n"
        "from mmtx import compile as c\n"
        "found = {}\n"
        "for key in c.GPU_SPECS:\n"
        "    devices = c.gpu_topology_devices(f'{key}:2')\n"
        "    kind = devices[0].device_kind\n"
        "    found[key] = [len(devices), devices[0].platform, kind, c.chip_of(kind).name]\n"
        "print(json.dumps(found))\n"
    )
    done = run_python("-c", listing, gpu=True)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(found) == set(compile_lib.GPU_SPECS)
    for key, (count, platform, kind, chip) in found.items():
        assert (count, platform) == (2, "gpu")
        assert kind == gpu_spec_fields(key)["device_description_str"]
        assert chip == key, (key, kind)
