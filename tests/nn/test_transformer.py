"""Tests for :mod:`mmtx.nn.transformer`: ``MLP``, ``TransformerBlock`` and ``Encoder``.

A pre-LN reference (LayerNorm, multi-head attention, tanh-GELU MLP, residuals) is written
out here with plain ``jnp`` from the module's params; the modules must match it in value and
gradient, scanned and unrolled encoders must agree, and remat must not change any number.
"""

from __future__ import annotations

import functools
import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx.nn import ACTIVATIONS, MLP, CrossAttentionBlock, Encoder, MAPHead, TransformerBlock
from mmtx.nn.transformer import quick_gelu

# These programs are tiny: a quick compile matters more than fast code.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

B, T, D, H, MLP_DIM, DEPTH = 2, 6, 8, 2, 16, 2
HIGHEST = jax.lax.Precision.HIGHEST
REMATS = ["none", "full", "dots", "dots_no_batch"]


def _normal(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> jnp.ndarray:
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _padding_mask() -> np.ndarray:
    mask = np.ones((B, T), bool)
    mask[0, -2:] = False
    mask[1, -1:] = False
    return mask


def _params(module: nn.Module, *args, seed: int = 100, **kwargs) -> dict:
    """Random params of the module's shapes (``eval_shape`` of init: nothing is compiled)."""
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *args, **kwargs)["params"])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), s.dtype), shapes)


# ----------------------------------------------------------------------------- reference


def ref_layer_norm(p: dict, x: jnp.ndarray, eps: float = 1e-6) -> jnp.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]


def ref_gelu(x: jnp.ndarray) -> jnp.ndarray:
    return 0.5 * x * (1.0 + jnp.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def ref_mlp(p: dict, x: jnp.ndarray) -> jnp.ndarray:
    h = ref_gelu(jnp.dot(x, p["fc1"]["kernel"], precision=HIGHEST) + p["fc1"]["bias"])
    return jnp.dot(h, p["fc2"]["kernel"], precision=HIGHEST) + p["fc2"]["bias"]


def ref_attention(
    p: dict, x: jnp.ndarray, mask, context=None, return_weights: bool = False
) -> jnp.ndarray:
    context = x if context is None else context

    def project(name: str, inputs):
        kernel, bias = p[name]["kernel"], p[name]["bias"]
        return jnp.einsum("btd,dhk->bthk", inputs, kernel, precision=HIGHEST) + bias

    q, k, v = project("query", x), project("key", context), project("value", context)
    logits = jnp.einsum("bthk,bshk->bhts", q, k, precision=HIGHEST) / np.sqrt(q.shape[-1])
    visible = jnp.ones(logits.shape, bool) if mask is None else mask[:, None, None, :]
    e = jnp.where(
        visible, jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True))), 0
    )
    weights = e / e.sum(-1, keepdims=True)
    if return_weights:
        return weights
    y = jnp.einsum("bhts,bshk->bthk", weights, v, precision=HIGHEST)
    return jnp.einsum("bthk,hko->bto", y, p["out"]["kernel"], precision=HIGHEST) + p["out"]["bias"]


def ref_block(p: dict, x: jnp.ndarray, mask) -> jnp.ndarray:
    x = x + ref_attention(p["attention"], ref_layer_norm(p["norm1"], x), mask)
    return x + ref_mlp(p["mlp"], ref_layer_norm(p["norm2"], x))


def ref_encoder(scanned_params: dict, x: jnp.ndarray, mask) -> jnp.ndarray:
    """Reference encoder from the params of ``Encoder(scan=True)``."""
    for i in range(DEPTH):
        x = ref_block(jax.tree.map(lambda a, i=i: a[i], scanned_params["blocks"]), x, mask)
    return ref_layer_norm(scanned_params["norm"], x)


def unrolled_params(scanned_params: dict) -> dict:
    """The params of ``Encoder(scan=False)`` as per-layer slices of the scanned ones."""
    params = {
        f"block_{i}": jax.tree.map(lambda a, i=i: a[i], scanned_params["blocks"])
        for i in range(DEPTH)
    }
    return {**params, "norm": scanned_params["norm"]}


# ----------------------------------------------------------------------------- helpers


def _assert_trees_close(got, want, atol: float, rtol: float = 1e-6) -> None:
    got_leaves = jax.tree_util.tree_leaves_with_path(got)
    want_leaves = jax.tree.leaves(want)
    assert len(got_leaves) == len(want_leaves)
    for (path, g), w in zip(got_leaves, want_leaves, strict=True):
        np.testing.assert_allclose(
            np.asarray(g), np.asarray(w), atol=atol, rtol=rtol, err_msg=jax.tree_util.keystr(path)
        )


def _nonzero_grads(grads, skip: str = "'key']['bias']") -> None:
    """Every gradient is non-trivial, except the key bias (softmax is shift invariant)."""
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        name = jax.tree_util.keystr(path)
        if skip not in name:
            assert np.abs(np.asarray(g)).max() > 1e-5, name


@functools.lru_cache
def _encoder_fn(scan: bool, remat: str = "none"):
    """Jitted ``(params, x, mask, cotangent) -> (out, grads wrt (params, x))``, one per config."""
    module = Encoder(depth=DEPTH, num_heads=H, mlp_dim=MLP_DIM, scan=scan, remat=remat)

    @jit
    def run(params, x, mask, cotangent):
        def loss(params, x):
            y, _ = module.apply({"params": params}, x, mask)
            return jnp.sum(y * cotangent), y

        grads, y = jax.grad(loss, (0, 1), has_aux=True)(params, x)
        return y, grads

    return module, run


@jit
def _reference_fn(params, x, mask, cotangent):
    def loss(params, x):
        y = ref_encoder(params, x, mask)
        return jnp.sum(y * cotangent), y

    grads, y = jax.grad(loss, (0, 1), has_aux=True)(params, x)
    return y, grads


def _encoder_inputs():
    x = _normal((B, T, D), seed=0)
    module, _ = _encoder_fn(True)
    return x, _padding_mask(), _normal((B, T, D), seed=1), _params(module, x, _padding_mask())


# ----------------------------------------------------------------------------- tests


def test_mlp_matches_reference() -> None:
    module = MLP(hidden_dim=MLP_DIM)
    x = _normal((B, T, D), seed=0)
    params = _params(module, x)
    assert jax.tree.map(jnp.shape, params) == {
        "fc1": {"kernel": (D, MLP_DIM), "bias": (MLP_DIM,)},
        "fc2": {"kernel": (MLP_DIM, D), "bias": (D,)},
    }
    cot = _normal((B, T, D), seed=1)

    @jit
    def run(params, x):
        lib = lambda p, x: jnp.sum(module.apply({"params": p}, x) * cot)
        ref = lambda p, x: jnp.sum(ref_mlp(p, x) * cot)
        return (
            module.apply({"params": params}, x),
            ref_mlp(params, x),
            jax.grad(lib, (0, 1))(params, x),
            jax.grad(ref, (0, 1))(params, x),
        )

    out, ref, grads, ref_grads = run(params, x)
    assert out.shape == (B, T, D) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)
    _nonzero_grads(ref_grads)
    _assert_trees_close(grads, ref_grads, atol=1e-5)


def test_block_matches_reference() -> None:
    """Values here; the gradients through blocks are checked on the whole encoder below."""
    module = TransformerBlock(num_heads=H, mlp_dim=MLP_DIM)
    x, mask = _normal((B, T, D), seed=0), _padding_mask()
    params = _params(module, x, mask)
    (out, carry), ref = jit(
        lambda p, x: (module.apply({"params": p}, x, mask), ref_block(p, x, mask))
    )(params, x)
    assert carry == {} and out.shape == (B, T, D)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)
    no_mask = jit(lambda p, x: ref_block(p, x, None))(params, x)
    assert np.abs(np.asarray(no_mask) - np.asarray(ref)).max() > 1e-3  # the mask matters


def test_encoder_scan_and_unrolled_match_reference() -> None:
    x, mask, cot, params = _encoder_inputs()
    leaf_shapes = {a.shape[0] for a in jax.tree.leaves(params["blocks"])}
    assert leaf_shapes == {DEPTH}  # every scanned param is stacked on a leading layers axis
    ref, (ref_param_grads, ref_x_grad) = _reference_fn(params, x, mask, cot)
    _nonzero_grads(ref_param_grads)

    _, scanned = _encoder_fn(True)
    out, (param_grads, x_grad) = scanned(params, x, mask, cot)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)
    _assert_trees_close(param_grads, ref_param_grads, atol=2e-5)
    np.testing.assert_allclose(np.asarray(x_grad), np.asarray(ref_x_grad), atol=2e-5)

    _, unrolled = _encoder_fn(False)
    out_u, (param_grads_u, x_grad_u) = unrolled(unrolled_params(params), x, mask, cot)
    np.testing.assert_allclose(np.asarray(out_u), np.asarray(out), atol=1e-6)
    _assert_trees_close(param_grads_u, unrolled_params(param_grads), atol=1e-6)
    np.testing.assert_allclose(np.asarray(x_grad_u), np.asarray(x_grad), atol=1e-6)


def test_unrolled_param_structure_is_slices_of_scanned() -> None:
    x, mask = _normal((B, T, D), seed=0), _padding_mask()
    module, _ = _encoder_fn(False)
    shapes = jax.tree.map(jnp.shape, _params(module, x, mask))
    _, _, _, scanned = _encoder_inputs()
    assert shapes == jax.tree.map(jnp.shape, unrolled_params(scanned))


@pytest.mark.parametrize("remat", REMATS[1:])
def test_remat_policies_do_not_change_values_or_gradients(remat: str) -> None:
    x, mask, cot, params = _encoder_inputs()
    out, grads = _encoder_fn(True, "none")[1](params, x, mask, cot)
    out_r, grads_r = _encoder_fn(True, remat)[1](params, x, mask, cot)
    np.testing.assert_allclose(np.asarray(out_r), np.asarray(out), atol=1e-6, rtol=1e-6)
    _assert_trees_close(grads_r, grads, atol=1e-6)


def test_unknown_remat_policy_raises() -> None:
    bad = Encoder(depth=DEPTH, num_heads=H, mlp_dim=MLP_DIM, remat="everything")
    with pytest.raises(ValueError, match="everything"):
        jax.eval_shape(bad.init, jax.random.key(0), jnp.zeros((B, T, D)))


def test_padding_tokens_do_not_influence_real_tokens() -> None:
    x, mask, cot, params = _encoder_inputs()
    _, run = _encoder_fn(True)
    out, _ = run(params, x, mask, cot)
    perturbed = jnp.where(mask[..., None], x, x + _normal(x.shape, seed=5, scale=10.0))
    out_p, _ = run(params, perturbed, mask, cot)
    out, out_p = np.asarray(out), np.asarray(out_p)
    np.testing.assert_allclose(out_p[mask], out[mask], atol=1e-6, rtol=0)
    assert np.abs(out_p[~mask] - out[~mask]).max() > 1e-2  # padded outputs did change
    # Without the mask the same perturbation leaks into the real tokens.
    out_nomask, _ = run(params, x, np.ones_like(mask), cot)
    out_p_nomask, _ = run(params, perturbed, np.ones_like(mask), cot)
    assert np.abs(np.asarray(out_nomask)[mask] - np.asarray(out_p_nomask)[mask]).max() > 1e-3


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtypes(dtype) -> None:
    """Params stay float32; activations and outputs are in the compute dtype."""
    module = Encoder(depth=DEPTH, num_heads=H, mlp_dim=MLP_DIM, dtype=dtype)
    x, mask, _, _ = _encoder_inputs()
    variables = jax.eval_shape(module.init, jax.random.key(0), x, mask)
    assert {p.dtype for p in jax.tree.leaves(nn.unbox(variables))} == {jnp.dtype(jnp.float32)}
    out, aux = jax.eval_shape(module.apply, variables, x, mask)
    assert out.shape == aux["pre_norm"].shape == (B, T, D)
    assert out.dtype == aux["pre_norm"].dtype == dtype


def test_bfloat16_close_to_float32() -> None:
    x, mask, cot, params = _encoder_inputs()
    module = Encoder(depth=DEPTH, num_heads=H, mlp_dim=MLP_DIM, dtype=jnp.bfloat16)
    out = jit(lambda p, x: module.apply({"params": p}, x, mask)[0])(params, x)
    assert out.dtype == jnp.bfloat16
    ref, _ = _encoder_fn(True)[1](params, x, mask, cot)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref), atol=2e-2, rtol=2e-2)


def test_dropout_only_in_training() -> None:
    x, mask, cot, params = _encoder_inputs()
    module = Encoder(depth=DEPTH, num_heads=H, mlp_dim=MLP_DIM, dropout_rate=0.5)

    @jit
    def run(key):
        apply = functools.partial(module.apply, {"params": params}, x, mask, rngs={"dropout": key})
        return apply(train=False)[0], apply(train=True)[0]

    eval_out, train_a = (np.asarray(y) for y in run(jax.random.key(1)))
    eval_out_b, train_b = (np.asarray(y) for y in run(jax.random.key(2)))
    no_dropout, _ = _encoder_fn(True)[1](params, x, mask, cot)
    np.testing.assert_allclose(eval_out, np.asarray(no_dropout), atol=1e-6)
    np.testing.assert_array_equal(eval_out_b, eval_out)
    assert np.abs(train_a - eval_out).max() > 1e-2
    assert np.abs(train_a - train_b).max() > 1e-2
    np.testing.assert_array_equal(np.asarray(run(jax.random.key(1))[1]), train_a)
    # Evaluation needs no rng at all; training does.
    jax.eval_shape(lambda x: module.apply({"params": params}, x, mask, train=False), x)
    with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
        jax.eval_shape(lambda x: module.apply({"params": params}, x, mask, train=True), x)


@functools.lru_cache
def _captured_fn(scan: bool, remat: str = "none", attention: str = "dense", options=()):
    """Jitted ``(params, x, mask, cotangent) -> (y, out, grads wrt (params, x))`` of an Encoder
    with ``capture_weights=True``."""
    module = Encoder(
        depth=DEPTH,
        num_heads=H,
        mlp_dim=MLP_DIM,
        scan=scan,
        remat=remat,
        attention=attention,
        attention_options=flax.core.FrozenDict(options),
        capture_weights=True,
    )

    @jit
    def run(params, x, mask, cotangent):
        def loss(params, x):
            y, out = module.apply({"params": params}, x, mask)
            return jnp.sum(y * cotangent), (y, out)

        grads, (y, out) = jax.grad(loss, (0, 1), has_aux=True)(params, x)
        return y, out, grads

    return run


@pytest.mark.parametrize("remat", ["none", "full"])
def test_capture_weights_stacked_over_layers_scan_and_unrolled(remat: str) -> None:
    """``out["attention_weights"]`` ``[DEPTH, B, H, T, T]``: each layer's reference softmax,
    the same scanned or unrolled, and capture changes neither the output nor a gradient."""
    x, mask, cot, params = _encoder_inputs()
    y, out, grads = _captured_fn(True, remat)(params, x, mask, cot)
    w = np.asarray(out["attention_weights"])
    assert set(out) == {"attention_weights", "pre_norm"}
    assert w.shape == (DEPTH, B, H, T, T) and w.dtype == np.float32
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
    assert np.all(w[np.broadcast_to(~mask[None, :, None, None, :], w.shape)] == 0.0)
    assert np.abs(w[0] - w[1]).max() > 1e-3  # two different layers

    # Each layer's weights are the reference softmax of that layer's input.
    h = x
    for i in range(DEPTH):
        p = jax.tree.map(lambda a, i=i: a[i], params["blocks"])
        want = ref_attention(p["attention"], ref_layer_norm(p["norm1"], h), mask, None, True)
        np.testing.assert_allclose(w[i], np.asarray(want), atol=1e-5, err_msg=f"layer {i}")
        h = ref_block(p, h, mask)

    # Capture does not change the output or the gradients.
    plain_y, (plain_param_grads, plain_x_grad) = _encoder_fn(True, remat)[1](params, x, mask, cot)
    np.testing.assert_allclose(np.asarray(y), np.asarray(plain_y), atol=1e-6)
    _assert_trees_close(grads, (plain_param_grads, plain_x_grad), atol=1e-5)

    # Unrolled: the same structure and values.
    y_u, out_u, grads_u = _captured_fn(False, remat)(unrolled_params(params), x, mask, cot)
    assert jax.tree.structure(out_u) == jax.tree.structure(out)
    _assert_trees_close(out_u, out, atol=1e-6)
    np.testing.assert_allclose(np.asarray(y_u), np.asarray(y), atol=1e-6)
    np.testing.assert_allclose(np.asarray(grads_u[1]), np.asarray(grads[1]), atol=1e-5)


def test_capture_weights_local_kernel_stacks_its_band() -> None:
    from mmtx.attention import LocalWeights, local_weights_to_dense

    x, mask, _, params = _encoder_inputs()
    options = (("radius", 1), ("num_global", 1))
    cot = jnp.zeros((B, T, D))
    _, out, _ = _captured_fn(True, "none", "local", options)(params, x, mask, cot)
    _, out_u, _ = _captured_fn(False, "none", "local", options)(
        unrolled_params(params), x, mask, cot
    )
    weights = out["attention_weights"]
    assert isinstance(weights, LocalWeights) and isinstance(
        out_u["attention_weights"], LocalWeights
    )
    assert weights.band.shape[:4] == (DEPTH, B, H, T)
    assert weights.global_rows.shape == (DEPTH, B, H, 1, T)
    _assert_trees_close(out_u, out, atol=1e-6)
    dense = np.asarray(local_weights_to_dense(weights))  # [DEPTH, B, H, T, T]
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    outside = ~((np.abs(i - j) <= 1) | (i < 1) | (j < 1))
    assert np.all(dense[..., outside] == 0.0)
    np.testing.assert_allclose(dense.sum(-1), 1.0, atol=1e-6)


def ref_cross_block(p: dict, x: jnp.ndarray, context: jnp.ndarray, mask) -> jnp.ndarray:
    attention = ref_attention(
        p["cross_attention"]["attention"],
        ref_layer_norm(p["norm1"], x),
        mask,
        context=ref_layer_norm(p["context_norm"], context),
    )
    x = x + jnp.where(mask.any(-1)[:, None, None], attention, 0.0)
    return x + ref_mlp(p["mlp"], ref_layer_norm(p["norm2"], x))


def test_cross_attention_block_matches_reference() -> None:
    module = CrossAttentionBlock(num_heads=H, mlp_dim=MLP_DIM)
    x, context = _normal((B, T, D), seed=0), _normal((B, T + 3, 2 * D), seed=1)
    mask = np.ones((B, T + 3), bool)
    mask[0, -4:] = False
    params = _params(module, x, context, mask)
    cot = _normal((B, T, D), seed=2)

    @jit
    def run(params, x, context):
        lib = lambda p, x, c: jnp.sum(module.apply({"params": p}, x, c, mask)[0] * cot)
        ref = lambda p, x, c: jnp.sum(ref_cross_block(p, x, c, mask) * cot)
        return (
            module.apply({"params": params}, x, context, mask)[0],
            ref_cross_block(params, x, context, mask),
            jax.grad(lib, (0, 1, 2))(params, x, context),
            jax.grad(ref, (0, 1, 2))(params, x, context),
        )

    out, ref, grads, ref_grads = run(params, x, context)
    assert out.shape == (B, T, D) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)
    _nonzero_grads(ref_grads)
    _assert_trees_close(grads, ref_grads, atol=2e-5)


# ------------------------------------------------------------------ architecture options


def test_activations_match_their_formulas() -> None:
    x = jnp.linspace(-6.0, 6.0, 101, dtype=jnp.float32)
    xs = np.linspace(-6.0, 6.0, 101)
    exact = 0.5 * xs * (1.0 + np.vectorize(math.erf)(xs / np.sqrt(2.0)))
    np.testing.assert_allclose(ACTIVATIONS["gelu"](x), exact, atol=1e-6)
    np.testing.assert_allclose(ACTIVATIONS["gelu_tanh"](x), ref_gelu(x), atol=1e-6)
    np.testing.assert_allclose(
        ACTIVATIONS["quick_gelu"](x), xs / (1.0 + np.exp(-1.702 * xs)), atol=1e-6
    )
    assert ACTIVATIONS["quick_gelu"] is quick_gelu
    # The three differ (by up to ~0.02), so a wrong mapping cannot pass unseen.
    assert np.abs(np.asarray(ACTIVATIONS["gelu"](x)) - np.asarray(quick_gelu(x))).max() > 1e-2
    assert np.abs(np.asarray(ACTIVATIONS["gelu"](x) - ACTIVATIONS["gelu_tanh"](x))).max() > 1e-4


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mlp_activation_matches_reference(activation: str) -> None:
    module = MLP(hidden_dim=MLP_DIM, activation=activation)
    x = _normal((B, T, D), seed=0)
    params = _params(module, x)
    reference = {
        "gelu_tanh": ref_gelu,
        "gelu": lambda h: 0.5 * h * (1.0 + jax.scipy.special.erf(h / np.sqrt(2.0))),
        "quick_gelu": lambda h: h * jax.nn.sigmoid(1.702 * h),
    }[activation]

    def ref(p, x):
        h = reference(jnp.dot(x, p["fc1"]["kernel"], precision=HIGHEST) + p["fc1"]["bias"])
        return jnp.dot(h, p["fc2"]["kernel"], precision=HIGHEST) + p["fc2"]["bias"]

    out, want = jit(lambda p, x: (module.apply({"params": p}, x), ref(p, x)))(params, x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), atol=1e-5)


def test_unknown_activation_raises() -> None:
    with pytest.raises(ValueError, match="activation 'relu'"):
        jax.eval_shape(MLP(MLP_DIM, activation="relu").init, jax.random.key(0), jnp.ones((1, D)))


def test_norm_eps_reaches_every_layer_norm() -> None:
    """With a huge epsilon every LayerNorm's output shrinks by sqrt(var + eps): the encoder
    equals the reference whose LayerNorms all use that epsilon, and not the default one."""
    eps = 0.5
    x, mask, _, params = _encoder_inputs()
    module = Encoder(depth=DEPTH, num_heads=H, mlp_dim=MLP_DIM, norm_eps=eps)

    def ref(p, x, eps):
        for i in range(DEPTH):
            q = jax.tree.map(lambda a, i=i: a[i], p["blocks"])
            x = x + ref_attention(q["attention"], ref_layer_norm(q["norm1"], x, eps), mask)
            x = x + ref_mlp(q["mlp"], ref_layer_norm(q["norm2"], x, eps))
        return ref_layer_norm(p["norm"], x, eps)

    got, want, default = jit(
        lambda p, x: (module.apply({"params": p}, x, mask)[0], ref(p, x, eps), ref(p, x, 1e-6))
    )(params, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    assert np.abs(np.asarray(got) - np.asarray(default)).max() > 1e-2


def test_encoder_without_final_norm_has_no_norm_param() -> None:
    x, mask, _, params = _encoder_inputs()
    module = Encoder(depth=DEPTH, num_heads=H, mlp_dim=MLP_DIM, final_norm=False)
    shapes = jax.eval_shape(module.init, jax.random.key(0), x, mask)["params"]
    assert set(shapes) == {"blocks"}
    blocks = {"blocks": params["blocks"]}
    y, out = jit(lambda p, x: module.apply({"params": p}, x, mask))(blocks, x)
    want = x
    for i in range(DEPTH):
        want = ref_block(jax.tree.map(lambda a, i=i: a[i], params["blocks"]), want, mask)
    np.testing.assert_allclose(np.asarray(y), np.asarray(want), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out["pre_norm"]), np.asarray(y))


@pytest.mark.parametrize("scan", [True, False])
def test_causal_encoder_later_tokens_do_not_change_earlier_outputs(scan: bool) -> None:
    module = Encoder(depth=DEPTH, num_heads=H, mlp_dim=MLP_DIM, causal=True, scan=scan)
    x = _normal((B, T, D), seed=0)
    params = _params(module, x)
    apply = jit(lambda p, x: module.apply({"params": p}, x)[0])
    y = apply(params, x)
    for t in range(T):
        changed = apply(params, x.at[:, t].add(_normal((B, D), seed=10 + t)))
        np.testing.assert_allclose(np.asarray(changed[:, :t]), np.asarray(y[:, :t]), atol=1e-6)
        assert np.abs(np.asarray(changed[:, t:]) - np.asarray(y[:, t:])).max() > 1e-3
    # The same params without causal: the first token sees the last.
    bidirectional = Encoder(depth=DEPTH, num_heads=H, mlp_dim=MLP_DIM, scan=scan)
    y_bi = jit(lambda p, x: bidirectional.apply({"params": p}, x)[0])(params, x)
    assert np.abs(np.asarray(y_bi[:, 0]) - np.asarray(y[:, 0])).max() > 1e-3


def test_causal_block_matches_reference_with_a_causal_mask() -> None:
    module = TransformerBlock(num_heads=H, mlp_dim=MLP_DIM, causal=True)
    x, mask = _normal((B, T, D), seed=0), _padding_mask()
    params = _params(module, x, mask)
    causal_and_padding = jnp.tril(jnp.ones((T, T), bool))[None, None] & mask[:, None, None, :]

    def ref(p, x):
        y = ref_layer_norm(p["norm1"], x)
        a = p["attention"]
        q, k, v = (
            jnp.einsum("btd,dhk->bthk", y, a[n]["kernel"], precision=HIGHEST) + a[n]["bias"]
            for n in ("query", "key", "value")
        )
        logits = jnp.einsum("bthk,bshk->bhts", q, k, precision=HIGHEST) / np.sqrt(q.shape[-1])
        w = jax.nn.softmax(jnp.where(causal_and_padding, logits, -1e30), axis=-1)
        o = jnp.einsum("bhts,bshk->bthk", w, v, precision=HIGHEST)
        x = x + jnp.einsum("bthk,hko->bto", o, a["out"]["kernel"], precision=HIGHEST)
        x = x + a["out"]["bias"]
        return x + ref_mlp(p["mlp"], ref_layer_norm(p["norm2"], x))

    out, want = jit(lambda p, x: (module.apply({"params": p}, x, mask)[0], ref(p, x)))(params, x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), atol=1e-5)


def ref_map_head(p: dict, x: jnp.ndarray, mask=None, eps: float = 1e-6) -> jnp.ndarray:
    probe = jnp.broadcast_to(p["probe"], (x.shape[0], 1, x.shape[2]))
    y = ref_attention(p["attention"], probe, mask, context=x)
    y = y + ref_mlp(p["mlp"], ref_layer_norm(p["norm"], y, eps))
    return y[:, 0]


def test_map_head_matches_reference_in_value_and_gradient() -> None:
    module = MAPHead(num_heads=H, mlp_dim=MLP_DIM)
    x, mask = _normal((B, T, D), seed=0), _padding_mask()
    params = _params(module, x, mask)
    projection = {"kernel": (D, H, D // H), "bias": (H, D // H)}
    assert jax.tree.map(jnp.shape, params) == {
        "probe": (1, 1, D),
        "attention": {
            **{name: projection for name in ("query", "key", "value")},
            "out": {"kernel": (H, D // H, D), "bias": (D,)},
        },
        "norm": {"scale": (D,), "bias": (D,)},
        "mlp": {"fc1": {"kernel": (D, MLP_DIM), "bias": (MLP_DIM,)},
                "fc2": {"kernel": (MLP_DIM, D), "bias": (D,)}},
    }  # fmt: skip
    cot = _normal((B, D), seed=1)

    @jit
    def run(params, x):
        lib = lambda p, x: module.apply({"params": p}, x, mask)[0]
        ref = lambda p, x: ref_map_head(p, x, mask)
        return (
            lib(params, x),
            ref(params, x),
            jax.grad(lambda p, x: jnp.sum(lib(p, x) * cot), (0, 1))(params, x),
            jax.grad(lambda p, x: jnp.sum(ref(p, x) * cot), (0, 1))(params, x),
        )

    out, want, grads, ref_grads = run(params, x)
    assert out.shape == (B, D)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), atol=1e-5)
    _nonzero_grads(ref_grads)
    _assert_trees_close(grads, ref_grads, atol=1e-5)
    # Padded tokens are not attended to.
    noisy = jnp.where(mask[..., None], x, 100.0)
    np.testing.assert_allclose(
        np.asarray(jit(lambda p, x: module.apply({"params": p}, x, mask)[0])(params, noisy)),
        np.asarray(out),
        atol=1e-5,
    )
