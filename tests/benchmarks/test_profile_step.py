"""Tests for ``benchmarks/profile_step.py``: the part each op_name of the bench step falls in,
the op-name map read from compiled HLO, and that a real profiler trace's op events are the
instructions of that HLO (the link the per-part table rests on)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from helpers import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "profile_step.py"
_BLOCK = "jit(train_step)/jvp(MultiModalTransformer)/text/tower/encoder/block_1"
_BACK = "jit(train_step)/transpose(jvp(MultiModalTransformer))/image/tower/encoder/block_0"
_MODEL = "jit(train_step)/jvp(MultiModalTransformer)"


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPT, "profile_step")


@pytest.mark.parametrize(
    ("op_name", "expected"),
    [
        (f"{_BLOCK}/mlp/fc1/...k,kn->...n/dot_general", ("matmuls", "forward")),
        (f"{_BACK}/mlp/fc2/transpose", ("matmuls", "backward")),
        (f"{_BLOCK}/attention/key/...k,kn->...n/dot_general", ("matmuls", "forward")),
        (f"{_BACK}/attention/vmap(BNTS,BSNH->BTNH)/dot_general", ("attention_core", "backward")),
        (f"{_BLOCK}/attention/vmap()/exp", ("attention_core", "forward")),
        (f"{_BACK}/norm2/add_any", ("layernorm", "backward")),
        (f"{_BLOCK}/mlp/tanh", ("activation", "forward")),
        (f"{_MODEL}/image/tower/stem/conv", ("embedding", "forward")),
        (f"{_MODEL}/MultiModalTransformer._projection/head/dot", ("heads_and_loss", "forward")),
        ("jit(train_step)/clip_by_global_norm/mul", ("optimizer", "forward")),
        ("jit(train_step)/transpose(jvp(contrastive_loss))/exp", ("heads_and_loss", "backward")),
        (None, ("other", "forward")),
        ("", ("other", "forward")),
    ],
)
def test_part_of_the_bench_steps_op_names(script, op_name, expected) -> None:
    assert script.part_of(op_name) == expected


def test_trace_events_are_the_compiled_modules_instructions(script, tmp_path: Path) -> None:
    @jax.jit
    def step(x: jax.Array, w: jax.Array) -> jax.Array:
        return jnp.tanh(x @ w) @ w.T + 1.0

    x, w = jnp.ones((64, 32)), jnp.ones((32, 48)) / 32
    compiled = step.lower(x, w).compile()
    op_names = script.op_names_from_hlo(compiled.as_text())
    compiled(x, w).block_until_ready()
    jax.profiler.start_trace(str(tmp_path), create_perfetto_trace=True)
    for _ in range(2):
        compiled(x, w).block_until_ready()
    jax.profiler.stop_trace()
    (trace,) = tmp_path.glob("**/*.trace.json.gz")
    durations = script.op_durations(trace, 2, op_names)
    assert durations and all(ms >= 0 for ms in durations.values())
    # The module's computation shows up in the trace under its instructions' names.
    assert any("dot" in name or "fusion" in name for name in durations), durations
    assert all(op_names[name].startswith("jit(step)") for name in durations if op_names[name])
    table = script.by_part(durations, op_names)
    assert set(table) == set(script.PARTS)
    total = sum(row["forward"] + row["backward"] for row in table.values())
    assert total == pytest.approx(sum(durations.values()))
    assert script.format_table(table)[-1].split()[-1] == f"{total:.1f}"


def test_a_fusion_without_metadata_takes_its_roots_op_name(script) -> None:
    hlo = """\
HloModule m

%fused_computation (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  %a = f32[4]{0} add(%p, %p), metadata={op_name="jit(f)/first"}
  ROOT %t = f32[4]{0} tanh(%a), metadata={op_name="jit(f)/root"}
}

ENTRY %main (x: f32[4]) -> f32[4] {
  %x = f32[4]{0} parameter(0)
  ROOT %tanh_fusion = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused_computation
}
"""
    names = script.op_names_from_hlo(hlo)
    assert names["tanh_fusion"] == "jit(f)/root"
    assert names["a"] == "jit(f)/first"
    assert names["x"] == ""


def test_pin_to_cores_restricts_the_process(script) -> None:
    code = (
        "import os, sys; sys.path.insert(0, 'benchmarks'); import profile_step; "
        "print(profile_step.pin_to_cores(1), sorted(os.sched_getaffinity(0)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")[0]
    chosen, affinity = out.split("] ")
    assert chosen + "]" == affinity and len(eval(affinity)) == 1
