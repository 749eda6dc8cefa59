"""Tests for :mod:`mmtx.attention.splash_local` (Pallas interpret mode on CPU) and the
``pallas`` attention implementation (resolution, config validation, a Tower end to end).

The splash kernel is compared with :func:`mmtx.attention.local_attention` (itself tested
against a dense reference in test_local.py) on values and on the gradients w.r.t. ``q``, ``k``
and ``v``; rows with no visible key are checked against the mean of ``v`` written out here.
Interpret mode is slow, so the lengths stay at most 2-3 blocks of 128.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict

import mmtx.attention.splash_local as splash_local_module
import mmtx.nn.attention as attention_module
from mmtx import config as config_lib
from mmtx.attention.local import local_attention
from mmtx.attention.splash_local import PALLAS_INTERPRET_ENV, splash_local_attention
from mmtx.encoders.tower import Tower
from mmtx.model_checks import check_runnable
from mmtx.nn import MultiHeadAttention, pallas_unsupported_reason, resolve_implementation

# Tiny programs: a quick compile matters more than fast code.
jit = functools.partial(
    jax.jit,
    compiler_options={
        "xla_backend_optimization_level": 0,
        "xla_llvm_disable_expensive_passes": True,
    },
)

REPO = pathlib.Path(__file__).resolve().parents[2]
B, H, D = 2, 2, 8
CPU_ONLY = pytest.mark.skipif(jax.default_backend() == "tpu", reason="checks the off-TPU path")


def _normal(shape: tuple[int, ...], seed: int) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _padding_mask(t: int) -> np.ndarray:
    """Batch 0 loses its last 40 keys (rows there see no key when radius < 20 and no global
    token is real), batch 1 its first key and key t//2."""
    mask = np.ones((B, t), bool)
    mask[0, t - 40 :] = False
    mask[1, 0] = False
    mask[1, t // 2] = False
    return mask


def _value_and_grads(fn, q, k, v, proj):
    """Output and d(sum(out * proj))/d(q, k, v)."""

    def loss(q, k, v):
        out = fn(q, k, v)
        return jnp.sum(out.astype(jnp.float32) * proj), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    return out, grads


@pytest.mark.parametrize(
    ("t", "radius", "num_global", "causal", "use_mask", "block_size"),
    [
        (130, 8, 0, False, True, 128),  # padded 130 -> 256; fully masked rows in batch 0
        (130, 3, 2, True, True, 128),  # global tokens, causal, padded
        (384, 5, 1, False, False, 128),  # 3 whole blocks, far-off-band tiles skipped, no mask
        (20, 2, 20, False, True, None),  # default block (128); all global; batch 0 all masked
    ],
)
def test_matches_local_attention(t, radius, num_global, causal, use_mask, block_size) -> None:
    q, k, v = (_normal((B, t, H, D), seed=t + i) for i in range(3))
    proj = _normal((B, t, H, D), seed=7)
    mask = jnp.asarray(_padding_mask(t)) if use_mask else None
    options = dict(radius=radius, num_global=num_global, causal=causal)

    @jit
    def both(q, k, v, proj, mask):
        splash = functools.partial(
            splash_local_attention, **options, mask=mask, interpret=True, block_size=block_size
        )
        ref = functools.partial(local_attention, **options, mask=mask)
        return _value_and_grads(splash, q, k, v, proj), _value_and_grads(ref, q, k, v, proj)

    (out, grads), (ref_out, ref_grads) = both(q, k, v, proj, mask)
    assert out.shape == (B, t, H, D) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    for name, g, rg in zip("qkv", grads, ref_grads, strict=True):
        assert np.all(np.isfinite(g)), f"grad wrt {name}"
        np.testing.assert_allclose(g, rg, rtol=1e-4, atol=1e-5, err_msg=f"grad wrt {name}")

    if use_mask and num_global == 0 and not causal:
        # Rows of batch 0 whose band lies in its padded tail see no key: the mean of v.
        empty = np.arange(t) >= t - 40 + radius
        assert empty.any()
        mean_v = np.mean(np.asarray(v[0]), axis=0)
        np.testing.assert_allclose(out[0, empty], np.broadcast_to(mean_v, (empty.sum(), H, D)),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
        np.testing.assert_array_equal(grads[0][0, empty], 0.0)  # no gradient to their queries


def test_bfloat16_close_to_local_attention() -> None:
    t = 130
    q, k, v = (_normal((B, t, H, D), seed=i).astype(jnp.bfloat16) for i in range(3))
    mask = jnp.asarray(_padding_mask(t))
    options = dict(radius=4, num_global=1, mask=mask)

    @jit
    def both(q, k, v):
        out = splash_local_attention(q, k, v, **options, interpret=True)
        return out, local_attention(q, k, v, **options)

    out, ref = both(q, k, v)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(np.float32), ref.astype(np.float32), atol=3e-2)


@pytest.mark.parametrize(("t", "block"), [(1, 128), (130, 256), (600, 128), (1000, 512)])
def test_default_block_pads_no_more_than_128_token_tiles(t: int, block: int) -> None:
    assert splash_local_module._default_block_size(t) == block


def test_rejects_bad_arguments() -> None:
    q = jnp.zeros((B, 16, H, D))
    with pytest.raises(ValueError, match="block_size must be a positive multiple of 128"):
        splash_local_attention(q, q, q, radius=2, interpret=True, block_size=100)
    with pytest.raises(ValueError, match="num_global must be an int in"):
        splash_local_attention(q, q, q, radius=2, num_global=17, interpret=True)
    with pytest.raises(ValueError, match="mask must be a key-padding mask"):
        splash_local_attention(q, q, q, radius=2, mask=jnp.ones((B, 15), bool), interpret=True)


# --- implementation "pallas": resolution and config validation --------------------------------


@CPU_ONLY
def test_resolve_pallas_off_tpu(monkeypatch, caplog) -> None:
    monkeypatch.delenv(PALLAS_INTERPRET_ENV, raising=False)
    kw = dict(dtype=jnp.float32, head_dim=8)
    with pytest.raises(ValueError, match=r"'pallas' cannot run: .*needs a TPU backend"):
        resolve_implementation("pallas", kernel="local", **kw)
    with pytest.raises(ValueError, match=r"'pallas' cannot run: .*only the local kernel"):
        resolve_implementation("pallas", kernel="dense", **kw)
    attention_module._log_local_fallback.cache_clear()
    with caplog.at_level(logging.INFO, logger="mmtx.nn.attention"):
        for _ in range(3):  # auto stays XLA off TPU, with one line per reason
            assert resolve_implementation("auto", kernel="local", **kw) is None
    lines = [r.getMessage() for r in caplog.records if r.name == "mmtx.nn.attention"]
    assert len(lines) == 1 and "using XLA, not Pallas" in lines[0], lines
    # The interpret switch lets an explicit 'pallas' run here, but 'auto' stays XLA.
    monkeypatch.setenv(PALLAS_INTERPRET_ENV, "1")
    assert resolve_implementation("pallas", kernel="local", **kw) == "pallas"
    assert resolve_implementation("auto", kernel="local", **kw) is None
    with pytest.raises(ValueError, match="only the local kernel"):
        resolve_implementation("pallas", kernel="linear", **kw)


def test_resolve_auto_picks_pallas_for_the_local_kernel_on_tpu(monkeypatch) -> None:
    """A TPU is faked: the choice is made before any kernel runs."""
    monkeypatch.delenv(PALLAS_INTERPRET_ENV, raising=False)
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    kw = dict(dtype=jnp.bfloat16, head_dim=64)
    assert resolve_implementation("auto", kernel="local", **kw) == "pallas"
    assert resolve_implementation("pallas", kernel="local", **kw) == "pallas"
    assert resolve_implementation("auto", kernel="dense", **kw) is None
    assert resolve_implementation("auto", kernel="linear", **kw) is None
    assert pallas_unsupported_reason(kernel="local") is None


def _local_config() -> config_lib.ml_collections.ConfigDict:
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    for modality in config.model.modalities:
        config.model[modality].attention = "local"
    config.fusion.attention = "local"
    config.attention.implementation = "pallas"
    return config


@CPU_ONLY
def test_config_pallas_off_tpu_fails_the_model_check_with_the_reason(monkeypatch) -> None:
    monkeypatch.delenv(PALLAS_INTERPRET_ENV, raising=False)
    config = config_lib.validate(_local_config())  # data: whether it can run is the model's
    with pytest.raises(ValueError) as error:
        check_runnable(config)
    message = str(error.value)
    assert message.startswith("config.attention.implementation: 'pallas' in model.")
    assert "needs a TPU backend; jax's backend is 'cpu'" in message and "\n" not in message
    monkeypatch.setenv(PALLAS_INTERPRET_ENV, "1")
    check_runnable(config)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("model.text.attention", "dense", "'pallas' in model.text: .*only the local kernel"),
        ("fusion.attention", "linear", "'pallas' in fusion: .*only the local kernel; got 'linear'"),
        ("model.image.pooling", "map", "'pallas' in model.image: .*got 'dense'"),  # MAP head
    ],
)
def test_config_pallas_with_another_kernel_fails_the_model_check(monkeypatch, field, value, reason):
    monkeypatch.setenv(PALLAS_INTERPRET_ENV, "1")
    config = _local_config()
    check_runnable(config_lib.validate(config))
    *groups, leaf = field.split(".")
    node = config
    for group in groups:
        node = node[group]
    node[leaf] = value
    with pytest.raises(ValueError, match=reason):
        check_runnable(config_lib.validate(config))


@CPU_ONLY
def test_config_auto_with_the_local_kernel_stays_xla_off_tpu(monkeypatch) -> None:
    monkeypatch.setenv(PALLAS_INTERPRET_ENV, "1")  # even with the interpret switch
    config = _local_config()
    config.attention.implementation = "auto"
    config_lib.validate(config)
    module = MultiHeadAttention(
        num_heads=H, kernel="local", kernel_options=FrozenDict(radius=2, num_global=1)
    )
    x = _normal((B, 12, 16), 0)
    params = jax.eval_shape(module.init, jax.random.key(0), x)
    params = jax.tree.map(lambda p: _normal(p.shape, 1), params)

    @jit
    def run(params, x):
        return tuple(module.clone(implementation=i).apply(params, x)[0] for i in ("auto", "xla"))

    auto, xla = run(params, x)
    np.testing.assert_array_equal(np.asarray(auto), np.asarray(xla))


# --- end to end: a Tower with the local kernel -------------------------------------------------


def test_tower_with_pallas_equals_xla(monkeypatch) -> None:
    monkeypatch.setenv(PALLAS_INTERPRET_ENV, "1")
    t, width = 30, 16
    x = _normal((B, t, width), 1)
    mask = jnp.asarray(np.arange(t)[None, :] < np.array([[t], [12]]))

    def tower(implementation: str) -> Tower:
        return Tower(
            depth=1,
            num_heads=H,
            mlp_dim=32,
            pooling="cls",
            attention="local",
            attention_options=FrozenDict(radius=4, num_global=1),
            attention_implementation=implementation,
        )

    params = tower("xla").init(jax.random.key(0), x, mask)

    @jit
    def run(params, x, mask):
        return tuple(tower(i).apply(params, x, mask)[0] for i in ("pallas", "xla"))

    pallas_out, xla_out = run(params, x, mask)
    np.testing.assert_allclose(pallas_out, xla_out, rtol=1e-5, atol=1e-5)


# --- on a device mesh: the kernel runs per shard (shard_map) -----------------------------------

_MESH_WORKER = """
import json
import flax.linen as nn
import jax, jax.numpy as jnp, ml_collections, numpy as np
from flax.core import FrozenDict
from mmtx.nn import MultiHeadAttention
from mmtx.train import mesh as mesh_lib

mesh = mesh_lib.create_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=1, tensor=2)))
module = MultiHeadAttention(
    num_heads=2, kernel="local", kernel_options=FrozenDict(radius=3, num_global=1)
)
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(4, 40, 16)), jnp.float32)
mask = jnp.asarray(np.arange(40)[None] < np.array([[40], [30], [40], [5]]))
params = module.init(jax.random.key(0), x)
result = {}
for implementation in ("pallas", "xla"):
    def loss(params, x, mask, implementation=implementation):
        y = module.clone(implementation=implementation).apply(params, x, mask=mask)[0]
        return jnp.sum(y * jnp.cos(y)), y
    fn = jax.jit(
        mesh_lib.with_sharding_rules(jax.value_and_grad(loss, has_aux=True), mesh),
        compiler_options={"xla_backend_optimization_level": 0},
    )
    args = jax.device_put((params, x, mask), mesh_lib.batch_sharding(mesh))
    result[implementation] = fn(*args)
    if implementation == "pallas":
        text = fn.lower(*args).as_text()
(_, y), grads = result["pallas"]
(_, y_ref), grads_ref = result["xla"]
pairs = list(zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref), strict=True))
grad_error = max(float(jnp.max(jnp.abs(a - b))) for a, b in pairs) / max(
    float(jnp.max(jnp.abs(b))) for _, b in pairs
)  # relative to the largest gradient (the key bias's is zero in exact arithmetic)
print(json.dumps(dict(
    value_error=float(jnp.max(jnp.abs(y - y_ref))), relative_grad_error=grad_error,
    manual="manual" in text,
)))
"""


def test_pallas_on_a_mesh_runs_per_shard_and_equals_xla() -> None:
    """4 simulated CPU devices, mesh data=2 x tensor=2: batch and heads split over shard_map."""
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
        **{PALLAS_INTERPRET_ENV: "1"},
    )
    result = subprocess.run(
        [sys.executable, "-c", _MESH_WORKER], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    assert numbers["manual"], "no shard_map (manual sharding) in the lowered step"
    assert numbers["value_error"] < 1e-5 and numbers["relative_grad_error"] < 1e-5, numbers
