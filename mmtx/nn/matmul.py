"""Dense contractions ``[..., K] @ [K, N]`` whose kernel gradient runs as a plain matmul on CPU.

The kernel gradient of ``y = x @ w`` is ``dw = x^T @ dy``: both operands are contracted over
their leading (token) dimension. XLA:CPU's matmul library (YNNPACK) takes neither operand in
that layout, so autodiff's ``dw`` goes to XLA's slower fallback dot (Eigen), after a
transposing copy of ``dy``; on the two-tower benchmark (``configs/bench_clip.py``) those
fallback dots and copies were ~30 % of a single core's step. :func:`dense_dot` computes the
same gradient with the smaller of ``x`` and ``dy`` transposed explicitly, so that the matmul
is an ordinary row-major ``[K, M] @ [M, N]`` (or ``[N, M] @ [M, K]``, then a ``[N, K]``
transpose) that the library runs at full speed. The forward pass and ``dx`` are unchanged.

Accelerators take transposed operands natively, where the explicit transpose would only add
a copy: ``weight_grad="auto"`` (the default) uses the transposed form when compiling for the
CPU (:func:`mmtx.nn.platform.target_platform`: the platform of the devices a step is compiled
for, else jax's backend) and autodiff's everywhere else. The transformer MLP
(:class:`mmtx.nn.transformer.MLP`) and the attention head projections
(:class:`mmtx.nn.attention.FactoredDense`) contract with it.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp

from mmtx.nn.platform import target_platform

#: The kernel-gradient forms :func:`dense_dot` takes (``weight_grad``).
WEIGHT_GRAD_MODES = ("auto", "xla", "transposed")

_DimensionNumbers = tuple[tuple[tuple[int, ...], tuple[int, ...]], tuple[tuple[int, ...], ...]]


def resolve_weight_grad(mode: str) -> str:
    """``"xla"`` or ``"transposed"`` for a mode of :data:`WEIGHT_GRAD_MODES`; ``"auto"`` is
    ``"transposed"`` when compiling for the CPU (:func:`mmtx.nn.platform.target_platform`, at
    trace time) and ``"xla"`` otherwise."""
    if mode not in WEIGHT_GRAD_MODES:
        raise ValueError(f"unknown weight_grad {mode!r}; choose one of {WEIGHT_GRAD_MODES}")
    if mode == "auto":
        return "transposed" if target_platform() == "cpu" else "xla"
    return mode


def _materialised_transpose(a: jax.Array) -> jax.Array:
    # The barrier keeps XLA's algebraic simplifier from folding the transpose back into the
    # dot's dimension numbers, which would restore the layout the matmul library rejects.
    return jax.lax.optimization_barrier(jnp.transpose(a))


def _contract_last(x: jax.Array, kernel: jax.Array, precision: Any) -> jax.Array:
    """``x [..., K] @ kernel [K, N]``: x's last axis with the kernel's first."""
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


def _forward(
    x: jax.Array, kernel: jax.Array, precision: Any
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The forward pass of both custom-gradient forms: the dot, with its operands saved."""
    return _contract_last(x, kernel, precision), (x, kernel)


_dense_dot_transposed = jax.custom_vjp(_contract_last, nondiff_argnums=(2,))


def _backward(
    precision: Any, residuals: tuple[jax.Array, jax.Array], grad: jax.Array
) -> tuple[jax.Array, jax.Array]:
    x, kernel = residuals
    k, n = kernel.shape
    x2, g2 = x.reshape(-1, k), grad.reshape(-1, n)
    dx = jax.lax.dot_general(g2, kernel, (((1,), (1,)), ((), ())), precision=precision)
    if k <= n:  # transpose x: [K, M] @ [M, N]
        dkernel = _contract_last(_materialised_transpose(x2), g2, precision)
    else:  # transpose dy: [N, M] @ [M, K] = [N, K], whose (small) transpose is the gradient
        dkernel_t = _contract_last(_materialised_transpose(g2), x2, precision)
        dkernel = jnp.transpose(jax.lax.optimization_barrier(dkernel_t))
    return dx.reshape(x.shape).astype(x.dtype), dkernel.astype(kernel.dtype)


_dense_dot_transposed.defvjp(_forward, _backward)


def _f32_grad_backward(
    precision: Any, residuals: tuple[jax.Array, jax.Array], grad: jax.Array
) -> tuple[jax.Array, jax.Array]:
    x, kernel = residuals
    dx = jax.lax.dot_general(
        grad, kernel, (((grad.ndim - 1,), (1,)), ((), ())), precision=precision
    )
    leading = tuple(range(x.ndim - 1))
    dkernel = jax.lax.dot_general(
        x, grad, ((leading, leading), ((), ())), precision=precision,
        preferred_element_type=jnp.float32,
    )  # fmt: skip
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


_dense_dot_f32_grad = jax.custom_vjp(_contract_last, nondiff_argnums=(2,))
_dense_dot_f32_grad.defvjp(_forward, _f32_grad_backward)


def dense_dot(
    x: jax.Array, kernel: jax.Array, *, weight_grad: str = "auto", precision: Any = None
) -> jax.Array:
    """``x [..., K] @ kernel [K, N] -> [..., N]`` (dtype of ``x`` and ``kernel``, which must
    agree), with the kernel gradient :data:`weight_grad <WEIGHT_GRAD_MODES>` selects: ``"xla"``
    one dot in the operands' own layouts, ``"transposed"`` the explicit-transpose form of the
    module docstring, ``"auto"`` the latter on CPU only. Values and gradients are the same up
    to float summation order; ``precision`` is ``jax.lax.dot_general``'s.

    With ``"xla"`` the kernel gradient ``x^T @ dy`` is a float32 dot (also for bf16 ``x``
    and ``kernel``), cast to the kernel's dtype after it: on a mesh whose batch is split, XLA
    sums the devices' partial gradients where the dot makes them, so they are summed in
    float32 (autodiff's bf16 dot summed them in bf16, at half the bytes)."""
    chex.assert_rank(kernel, 2)
    chex.assert_equal(x.shape[-1], kernel.shape[0])
    chex.assert_equal(x.dtype, kernel.dtype)
    if resolve_weight_grad(weight_grad) == "xla":
        return _dense_dot_f32_grad(x, kernel, precision)
    return _dense_dot_transposed(x, kernel, precision)


def dense_dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: _DimensionNumbers,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """A ``dot_general`` for ``flax.linen.Dense(dot_general=...)``: :func:`dense_dot` with
    ``weight_grad="auto"`` for Dense's contraction (``lhs``'s last axis with a 2-D ``rhs``'s
    first), ``jax.lax.dot_general`` for any other contraction or an explicit
    ``preferred_element_type``."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    is_dense = (
        rhs.ndim == 2
        and tuple(lhs_contract) == (lhs.ndim - 1,)
        and tuple(rhs_contract) == (0,)
        and not lhs_batch
        and not rhs_batch
        and lhs.dtype == rhs.dtype
        and preferred_element_type is None
    )
    if not is_dense:
        return jax.lax.dot_general(
            lhs,
            rhs,
            dimension_numbers,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    return dense_dot(lhs, rhs, precision=precision)
