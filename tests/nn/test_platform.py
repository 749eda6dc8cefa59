"""Tests for mmtx/nn/platform.py: the platform a step is compiled for picks every code path
that differs by platform, and outside a compile for other devices it is jax's backend."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx import config as config_lib
from mmtx.model_checks import check_runnable
from mmtx.models import resolve_dtype
from mmtx.nn import platform as platform_lib
from mmtx.nn.attention import resolve_implementation
from mmtx.nn.matmul import resolve_weight_grad
from mmtx.train.step import CPU_UNROLL, unroll_limit


def fake_devices(*platforms: str) -> list[types.SimpleNamespace]:
    return [types.SimpleNamespace(platform=p) for p in platforms]


def test_outside_a_compile_the_platform_is_jax_backend() -> None:
    assert platform_lib.target_platform() == jax.default_backend() == "cpu"
    with platform_lib.compiling_for(None):
        assert platform_lib.target_platform() == "cpu"


def test_compiling_for_nests_and_restores() -> None:
    with platform_lib.compiling_for("tpu"):
        assert platform_lib.target_platform() == "tpu"
        with platform_lib.compiling_for("cuda"):
            assert platform_lib.target_platform() == "gpu"
        assert platform_lib.target_platform() == "tpu"
    assert platform_lib.target_platform() == "cpu"
    with pytest.raises(ValueError, match="unknown platform 'metal'"):
        with platform_lib.compiling_for("metal"):
            pass


def test_devices_and_mesh_platform() -> None:
    assert platform_lib.devices_platform(fake_devices("tpu", "tpu")) == "tpu"
    assert platform_lib.devices_platform(fake_devices("cuda")) == "gpu"
    with pytest.raises(ValueError, match=r"one platform; got \['cpu', 'tpu'\]"):
        platform_lib.devices_platform(fake_devices("tpu", "cpu"))
    with pytest.raises(ValueError, match="got none"):
        platform_lib.devices_platform([])
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1), ("data",))
    assert platform_lib.mesh_platform(mesh) == "cpu"


@pytest.mark.parametrize(
    ("platform", "weight_grad", "dtype", "unroll", "local"),
    [
        ("cpu", "transposed", jnp.float32, CPU_UNROLL, None),
        ("tpu", "xla", jnp.bfloat16, 0, "pallas"),
        ("gpu", "xla", jnp.bfloat16, 0, None),
    ],
)
def test_every_platform_choice_follows_the_platform_compiled_for(
    platform, weight_grad, dtype, unroll, local
) -> None:
    config = config_lib.default_config()
    with platform_lib.compiling_for(platform):
        assert resolve_weight_grad("auto") == weight_grad
        assert resolve_dtype("auto") == dtype
        assert unroll_limit(config) == unroll
        assert resolve_implementation("auto", kernel="local", dtype=dtype, head_dim=64) == local
        # On a GPU, auto takes cuDNN for the dense kernel in bf16.
        expected = "cudnn" if platform == "gpu" else None
        got = resolve_implementation("auto", kernel="dense", dtype=dtype, head_dim=64)
        assert got == expected
    # Explicit arguments win over the context.
    assert resolve_dtype("auto", platform) == dtype
    assert unroll_limit(config, platform) == unroll
    assert resolve_dtype("bfloat16", "cpu") == jnp.bfloat16


def test_the_model_check_takes_pallas_against_the_platform_given() -> None:
    config = config_lib.load_config("configs/base.py:tiny")
    for modality in config.model.modalities:
        config.model[modality].attention = "local"
    config.fusion.attention = "local"
    config.attention.implementation = "pallas"
    with pytest.raises(ValueError, match="needs a TPU backend; jax's backend is 'cpu'"):
        check_runnable(config)
    check_runnable(config, platform="tpu")
