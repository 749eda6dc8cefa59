"""Tests for mmtx/nn/params.py: logical_param against flax's own declaration, written out."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx.nn import logical_param

SHAPE, AXES = (3, 2, 4), ("embed", None, "kv")


class Helper(nn.Module):
    """A param declared through logical_param, used in a differentiable output."""

    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = logical_param(self, "w", nn.initializers.normal(0.5), AXES, SHAPE)
        return jnp.tanh(x[:, None, None, None] * w.astype(jnp.float32))


class Reference(nn.Module):
    """The same param as flax's ``self.param`` with ``nn.with_logical_partitioning``."""

    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param(
            "w",
            nn.with_logical_partitioning(nn.initializers.normal(0.5), AXES),
            SHAPE,
            self.param_dtype,
        )
        return jnp.tanh(x[:, None, None, None] * w.astype(jnp.float32))


@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16])
def test_logical_param_is_the_flax_declaration_it_writes_out(param_dtype):
    x = jnp.linspace(-1.0, 1.0, 5)
    key = jax.random.key(0)
    got = Helper(param_dtype).init(key, x)
    want = Reference(param_dtype).init(key, x)
    # The boxed param: the same logical axis names, the same values, shape and dtype.
    assert nn.get_partition_spec(got) == nn.get_partition_spec(want)
    assert got["params"]["w"].names == AXES
    value, reference = nn.unbox(got)["params"]["w"], nn.unbox(want)["params"]["w"]
    assert value.shape == SHAPE and value.dtype == param_dtype
    np.testing.assert_array_equal(np.asarray(value, np.float32), np.asarray(reference, np.float32))

    def loss(module: nn.Module, params: Any) -> jax.Array:
        return jnp.sum(module.apply(params, x) ** 2)

    params = nn.unbox(want)
    np.testing.assert_array_equal(
        loss(Helper(param_dtype), params), loss(Reference(param_dtype), params)
    )
    grad = jax.grad(lambda p: loss(Helper(param_dtype), p))(params)["params"]["w"]
    grad_ref = jax.grad(lambda p: loss(Reference(param_dtype), p))(params)["params"]["w"]
    np.testing.assert_array_equal(np.asarray(grad, np.float32), np.asarray(grad_ref, np.float32))
