"""Tests for :mod:`mmtx.nn.matmul`: values and both gradients of each kernel-gradient form
against an einsum reference differentiated by JAX, in float32 and bfloat16, and the form each
mode puts in the program."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx.nn import matmul
from mmtx.nn.matmul import dense_dot, dense_dot_general, resolve_weight_grad

HIGHEST = jax.lax.Precision.HIGHEST


def _normal(shape: tuple[int, ...], seed: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _reference(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jnp.einsum("...k,kn->...n", x, kernel, precision=HIGHEST)


def _loss(fn, x: jax.Array, kernel: jax.Array, target: jax.Array) -> jax.Array:
    # A non-linear loss so that dy differs per element (a plain sum would make it all ones).
    return jnp.sum(jnp.sin(fn(x, kernel)) * target)


@pytest.mark.parametrize("weight_grad", ["xla", "transposed"])
@pytest.mark.parametrize(
    ("x_shape", "n"),
    [((2, 5, 8), 16), ((2, 5, 16), 8), ((3, 4, 8), 8), ((8,), 4), ((7, 6), 12)],
    ids=["k<n", "k>n", "k=n", "vector", "2d"],
)
def test_values_and_gradients_match_the_reference(
    weight_grad: str, x_shape: tuple[int, ...], n: int
) -> None:
    x = _normal(x_shape, 0)
    kernel = _normal((x_shape[-1], n), 1)
    target = _normal((*x_shape[:-1], n), 2)

    def ours(a, b):
        return dense_dot(a, b, weight_grad=weight_grad, precision=HIGHEST)

    y = jax.jit(ours)(x, kernel)
    assert y.shape == (*x_shape[:-1], n) and y.dtype == jnp.float32
    np.testing.assert_allclose(y, _reference(x, kernel), rtol=1e-6, atol=1e-6)
    grads = jax.jit(jax.grad(lambda a, b: _loss(ours, a, b, target), argnums=(0, 1)))(x, kernel)
    expected = jax.grad(lambda a, b: _loss(_reference, a, b, target), argnums=(0, 1))(x, kernel)
    for got, want in zip(grads, expected, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bfloat16_keeps_its_dtype_and_tracks_float32() -> None:
    x, kernel, target = _normal((4, 6, 8), 3), _normal((8, 16), 4), _normal((4, 6, 16), 5)
    low = (x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))

    def ours(a, b):
        return dense_dot(a, b, weight_grad="transposed")

    assert jax.jit(ours)(*low).dtype == jnp.bfloat16
    dx, dk = jax.grad(lambda a, b: _loss(ours, a, b, target).astype(jnp.float32), (0, 1))(*low)
    assert dx.dtype == dk.dtype == jnp.bfloat16
    want_dx, want_dk = jax.grad(lambda a, b: _loss(_reference, a, b, target), (0, 1))(x, kernel)
    np.testing.assert_allclose(dx.astype(jnp.float32), want_dx, rtol=0.05, atol=0.1)
    np.testing.assert_allclose(dk.astype(jnp.float32), want_dk, rtol=0.05, atol=0.1)


def _gradient_primitives(weight_grad: str, k: int, n: int) -> list[str]:
    x, kernel = _normal((2, 3, k), 6), _normal((k, n), 7)
    jaxpr = jax.make_jaxpr(
        jax.grad(lambda a, b: jnp.sum(dense_dot(a, b, weight_grad=weight_grad) ** 2), (0, 1))
    )(x, kernel)
    names: list[str] = []

    def walk(j) -> None:
        for eqn in j.eqns:
            names.append(eqn.primitive.name)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    return names


@pytest.mark.parametrize(("k", "n", "barriers"), [(4, 8, 1), (8, 4, 2)])
def test_transposed_mode_materialises_the_smaller_operand(k: int, n: int, barriers: int) -> None:
    """The transposed form puts the transpose (and, when dy is the smaller operand, the
    result's transpose) behind optimization barriers; autodiff's has none."""
    assert _gradient_primitives("transposed", k, n).count("optimization_barrier") == barriers
    assert "optimization_barrier" not in _gradient_primitives("xla", k, n)


def test_auto_is_transposed_on_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert jax.default_backend() == "cpu"
    assert resolve_weight_grad("auto") == "transposed"
    monkeypatch.setattr(matmul.jax, "default_backend", lambda: "gpu")
    assert resolve_weight_grad("auto") == "xla"
    assert resolve_weight_grad("transposed") == "transposed"
    with pytest.raises(ValueError, match="unknown weight_grad 'fast'"):
        resolve_weight_grad("fast")


def test_flax_dense_with_dense_dot_general_matches_plain_dense() -> None:
    x, target = _normal((2, 5, 8), 8), _normal((2, 5, 16), 9)
    plain = nn.Dense(16, precision=HIGHEST)
    ours = nn.Dense(16, precision=HIGHEST, dot_general=dense_dot_general)
    params = plain.init(jax.random.key(0), x)

    def loss(module, p):
        return jnp.sum(jnp.sin(module.apply(p, x)) * target)

    np.testing.assert_allclose(ours.apply(params, x), plain.apply(params, x), rtol=1e-6)
    got = jax.jit(jax.grad(lambda p: loss(ours, p)))(params)
    want = jax.grad(lambda p: loss(plain, p))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)


def test_dense_dot_general_passes_other_contractions_to_xla() -> None:
    lhs, rhs = _normal((3, 4, 5), 10), _normal((3, 5, 6), 11)
    numbers = (((2,), (1,)), ((0,), (0,)))  # batched: not Dense's contraction
    np.testing.assert_array_equal(
        dense_dot_general(lhs, rhs, numbers), jax.lax.dot_general(lhs, rhs, numbers)
    )


def test_xla_mode_sums_a_bf16_kernel_gradient_in_float32() -> None:
    """The kernel gradient of bf16 operands is one float32 dot (where a split batch's
    partial sums are added across devices), rounded to bf16 once at the end."""
    x = _normal((4, 64, 32), 11).astype(jnp.bfloat16)
    kernel = _normal((32, 16), 12).astype(jnp.bfloat16)
    dy = _normal((4, 64, 16), 13).astype(jnp.bfloat16)

    def kernel_grad(a, b, g):
        return jax.vjp(lambda u, v: dense_dot(u, v, weight_grad="xla"), a, b)[1](g)

    dx, dkernel = kernel_grad(x, kernel, dy)
    assert dx.dtype == dkernel.dtype == jnp.bfloat16
    reference = np.einsum("btk,btn->kn", np.float64(x), np.float64(dy))
    np.testing.assert_allclose(np.float64(dkernel), reference, rtol=2**-8, atol=1e-6)
    dots = [
        eqn.params["preferred_element_type"]
        for eqn in jax.make_jaxpr(kernel_grad)(x, kernel, dy).jaxpr.eqns
        if eqn.primitive.name == "dot_general"
    ]
    assert jnp.float32 in dots
