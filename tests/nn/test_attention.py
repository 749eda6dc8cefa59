"""Tests for :class:`mmtx.nn.attention.MultiHeadAttention`.

The reference recomputes the layer by hand from the module's params: einsum projections into
heads, an explicit softmax over the visible keys, and the output projection.
"""

from __future__ import annotations

import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx.nn import MultiHeadAttention, cudnn_unsupported_reason, resolve_implementation
from mmtx.nn import attention as attention_module
from mmtx.schemas import tower_options

# These programs are tiny: a quick compile matters more than fast code.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

B, T, S, D, DC, H = 2, 5, 6, 8, 12, 2
HIGHEST = jax.lax.Precision.HIGHEST


def _normal(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> jnp.ndarray:
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _padding_mask(s: int) -> np.ndarray:
    mask = np.ones((B, s), bool)
    mask[0, -2:] = False
    mask[1, -1:] = False
    return mask


def _params(module: nn.Module, *args, **kwargs) -> dict:
    """Random params of the module's shapes (``eval_shape`` of init: nothing is compiled).

    Random rather than initialised values, so that the biases are not zero.
    """
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *args, **kwargs)["params"])
    rng = np.random.default_rng(100)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), s.dtype), shapes)


def ref_mha(params: dict, x, context=None, mask=None, causal: bool = False) -> jnp.ndarray:
    """Multi-head attention by hand from the params."""
    context = x if context is None else context

    def project(name: str, inputs):
        p = params[name]
        return jnp.einsum("bld,dhk->blhk", inputs, p["kernel"], precision=HIGHEST) + p["bias"]

    q, k, v = project("query", x), project("key", context), project("value", context)
    logits = jnp.einsum("bthk,bshk->bhts", q, k, precision=HIGHEST) / np.sqrt(q.shape[-1])
    t, s = q.shape[1], k.shape[1]
    visible = jnp.ones((x.shape[0], 1, t, s), bool)
    if mask is not None:
        visible = visible & jnp.asarray(mask)[:, None, None, :]
    if causal:
        visible = visible & jnp.tril(jnp.ones((t, s), bool))
    e = jnp.where(
        visible, jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True))), 0
    )
    weights = e / e.sum(-1, keepdims=True)
    y = jnp.einsum("bhts,bshk->bthk", weights, v, precision=HIGHEST)
    out = params["out"]
    return jnp.einsum("bthk,hko->bto", y, out["kernel"], precision=HIGHEST) + out["bias"]


def _compare(module: MultiHeadAttention, x, context=None, mask=None) -> jnp.ndarray:
    """Values and gradients (wrt the inputs and every param) against :func:`ref_mha`."""
    params = _params(module, x, context, mask=mask)
    cotangent = _normal((x.shape[0], x.shape[1], module.out_features or x.shape[-1]), seed=7)

    @jit
    def evaluate(params, x, context):
        def loss(fn, params, x, context):
            y = fn(params, x, context)
            return jnp.sum(y * cotangent), y

        def library(params, x, context):
            return module.apply({"params": params}, x, context, mask=mask)[0]

        def reference(params, x, context):
            return ref_mha(params, x, context, mask=mask, causal=module.causal)

        argnums = (0, 1) if context is None else (0, 1, 2)
        got = jax.grad(functools.partial(loss, library), argnums, has_aux=True)
        want = jax.grad(functools.partial(loss, reference), argnums, has_aux=True)
        return got(params, x, context), want(params, x, context)

    (grads, out), (ref_grads, ref_out) = evaluate(params, x, context)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), atol=1e-5)
    flat_got = jax.tree_util.tree_leaves_with_path(grads)
    flat_want = jax.tree.leaves(ref_grads)
    assert len(flat_got) == len(flat_want)
    for (path, g), w in zip(flat_got, flat_want, strict=True):
        name = jax.tree_util.keystr(path)
        # The key bias shifts every logit of a query equally, so its gradient is exactly zero.
        if "'key']['bias']" not in name:
            assert np.abs(np.asarray(w)).max() > 1e-4, name
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=2e-5, err_msg=name)
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_reference(causal: bool) -> None:
    x = _normal((B, T, D), seed=0)
    out = _compare(
        MultiHeadAttention(num_heads=H, causal=causal), x, mask=_padding_mask(T) if causal else None
    )
    assert out.shape == (B, T, D) and out.dtype == jnp.float32


def test_cross_attention_matches_reference() -> None:
    """Context of another length and width; output width set by ``out_features``."""
    x, context = _normal((B, T, D), seed=0), _normal((B, S, DC), seed=1)
    out = _compare(MultiHeadAttention(num_heads=H, out_features=4), x, context, _padding_mask(S))
    assert out.shape == (B, T, 4)


def test_param_shapes() -> None:
    module = MultiHeadAttention(num_heads=H)
    x, context = _normal((B, T, D), seed=0), _normal((B, S, DC), seed=1)
    shapes = jax.eval_shape(module.init, jax.random.key(0), x, context)["params"]
    shapes = jax.tree.map(lambda s: s.shape, nn.unbox(shapes))
    assert shapes == {
        "query": {"kernel": (D, H, D // H), "bias": (H, D // H)},
        "key": {"kernel": (DC, H, D // H), "bias": (H, D // H)},
        "value": {"kernel": (DC, H, D // H), "bias": (H, D // H)},
        "out": {"kernel": (H, D // H, D), "bias": (D,)},
    }


def test_masked_context_tokens_do_not_change_the_output() -> None:
    module = MultiHeadAttention(num_heads=H)
    x, context = _normal((B, T, D), seed=0), _normal((B, S, DC), seed=1)
    mask = _padding_mask(S)
    params = _params(module, x, context, mask=mask)
    apply = jit(lambda context: module.apply({"params": params}, x, context, mask=mask)[0])
    out = np.asarray(apply(context))

    noise = _normal(context.shape, seed=2, scale=100.0)
    masked_perturbed = jnp.where(mask[:, :, None], context, context + noise)
    np.testing.assert_array_equal(np.asarray(apply(masked_perturbed)), out)

    visible_perturbed = context.at[0, 0].add(1.0)  # token 0 of example 0 is visible
    changed = np.asarray(apply(visible_perturbed))
    assert np.abs(changed[0] - out[0]).max() > 1e-3
    np.testing.assert_array_equal(changed[1], out[1])  # other examples are independent


def test_capture_weights() -> None:
    """The dense weights come back in ``out``: the reference softmax, applied to the output."""
    module = MultiHeadAttention(num_heads=H, capture_weights=True)
    x, context = _normal((B, T, D), seed=0), _normal((B, S, DC), seed=1)
    mask = _padding_mask(S)
    params = _params(module, x, context, mask=mask)
    plain = MultiHeadAttention(num_heads=H)
    cotangent = _normal((B, T, D), seed=7)

    @jit
    def run(params, x):
        def loss(module, params, x):
            y, out = module.apply({"params": params}, x, context, mask=mask)
            return jnp.sum(y * cotangent), (y, out)

        (_, (y, out)), grads = jax.value_and_grad(
            functools.partial(loss, module), (0, 1), has_aux=True
        )(params, x)
        (_, (y_plain, out_plain)), grads_plain = jax.value_and_grad(
            functools.partial(loss, plain), (0, 1), has_aux=True
        )(params, x)
        return y, out, grads, y_plain, out_plain, grads_plain

    y, out, grads, y_plain, out_plain, grads_plain = run(params, x)
    assert out_plain == {}  # without capture_weights nothing comes back
    assert set(out) == {"attention_weights"}
    weights = np.asarray(out["attention_weights"])
    assert weights.shape == (B, H, T, S) and weights.dtype == np.float32
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    assert np.all(weights[np.broadcast_to(~mask[:, None, None, :], weights.shape)] == 0.0)

    # The reference softmax from the params.
    def project(name: str, inputs):
        p = params[name]
        return jnp.einsum("bld,dhk->blhk", inputs, p["kernel"], precision=HIGHEST) + p["bias"]

    q, k = project("query", x), project("key", context)
    logits = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(D // H)
    logits = np.where(mask[:, None, None, :], logits, -np.inf)
    ref = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(weights, ref / ref.sum(-1, keepdims=True), atol=1e-6)

    # They are the weights the layer applied: recombining v with them gives the output.
    p = params
    v = np.einsum("bsd,dhk->bshk", context, p["value"]["kernel"]) + np.asarray(p["value"]["bias"])
    heads = np.einsum("bhts,bshk->bthk", weights, v)
    recombined = np.einsum("bthk,hko->bto", heads, p["out"]["kernel"]) + np.asarray(
        p["out"]["bias"]
    )
    np.testing.assert_allclose(recombined, np.asarray(y), atol=1e-5)

    # Capture does not change the output or its gradients (beyond float round-off).
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_plain), atol=1e-6)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_plain), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5)


def test_capture_weights_local_kernel_returns_its_band() -> None:
    """The local kernel's band, scattered, is the dense softmax under the band mask."""
    from flax.core import FrozenDict

    from mmtx.attention import LocalWeights, local_block_size, local_weights_to_dense

    t, radius, num_global = 21, 2, 1
    x = _normal((B, t, D), seed=5)
    padding = np.ones((B, t), bool)
    padding[0, -3:] = False
    options = FrozenDict(radius=radius, num_global=num_global)
    local = MultiHeadAttention(
        num_heads=H, kernel="local", kernel_options=options, capture_weights=True
    )
    dense = MultiHeadAttention(num_heads=H, capture_weights=True)
    params = _params(dense, x)
    full_mask = padding[:, None, None, :] & _band_mask(t, radius, num_global)[None, None]
    (y, out), (ref_y, ref_out) = jit(
        lambda p: (
            local.apply({"params": p}, x, mask=padding),
            dense.apply({"params": p}, x, mask=full_mask),
        )
    )(params)
    weights = out["attention_weights"]
    assert isinstance(weights, LocalWeights)
    window = 3 * local_block_size(t, radius)
    assert weights.band.shape == (B, H, t, window + num_global)
    assert weights.global_rows.shape == (B, H, num_global, t)
    np.testing.assert_allclose(
        np.asarray(local_weights_to_dense(weights)), ref_out["attention_weights"], atol=1e-6
    )
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)


def test_capture_weights_linear_kernel_raises() -> None:
    module = MultiHeadAttention(num_heads=H, kernel="linear", capture_weights=True)
    with pytest.raises(ValueError, match="linear attention forms no attention map"):
        module.init(jax.random.key(0), jnp.zeros((B, T, D)))


def test_bfloat16_compute_float32_params() -> None:
    module = MultiHeadAttention(num_heads=H, dtype=jnp.bfloat16)
    x = _normal((B, T, D), seed=0)
    params = _params(module, x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    out = jit(lambda p, x: module.apply({"params": p}, x)[0])(params, x)
    assert out.dtype == jnp.bfloat16
    ref = jit(ref_mha)(params, x)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref), atol=5e-2, rtol=5e-2)


def test_unknown_kernel_raises() -> None:
    module = MultiHeadAttention(num_heads=H, kernel="no_such_kernel")
    with pytest.raises(ValueError, match="no_such_kernel"):
        module.init(jax.random.key(0), jnp.zeros((B, T, D)))


def test_width_not_divisible_by_heads_raises() -> None:
    module = MultiHeadAttention(num_heads=3)
    with pytest.raises(ValueError, match="divisible"):
        module.init(jax.random.key(0), jnp.zeros((B, T, D)))


def _band_mask(t: int, radius: int, num_global: int) -> np.ndarray:
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    return (np.abs(i - j) <= radius) | (i < num_global) | (j < num_global)


@pytest.mark.parametrize("radius,num_global", [(1, 0), (2, 1)])
def test_local_kernel_equals_dense_under_the_band_mask(radius: int, num_global: int) -> None:
    from flax.core import FrozenDict

    x = _normal((B, 9, D), seed=5)
    padding = np.ones((B, 9), bool)
    padding[0, -3:] = False
    options = FrozenDict(radius=radius, num_global=num_global)
    local = MultiHeadAttention(num_heads=H, kernel="local", kernel_options=options)
    dense = MultiHeadAttention(num_heads=H)
    params = _params(dense, x)
    full_mask = padding[:, None, None, :] & _band_mask(9, radius, num_global)[None, None]
    out = jit(lambda p: local.apply({"params": p}, x, mask=padding)[0])(params)
    ref = jit(lambda p: dense.apply({"params": p}, x, mask=full_mask)[0])(params)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_linear_kernel_applies_linear_attention_to_the_projections() -> None:
    from mmtx.attention import linear_attention

    x = _normal((B, T, D), seed=6)
    module = MultiHeadAttention(num_heads=H, kernel="linear")
    params = _params(module, x)
    out = jit(lambda p: module.apply({"params": p}, x)[0])(params)

    def project(name: str):
        p = params[name]
        return jnp.einsum("bld,dhk->blhk", x, p["kernel"], precision=HIGHEST) + p["bias"]

    heads = linear_attention(project("query"), project("key"), project("value"))
    ref = jnp.einsum("blhk,hkd->bld", heads, params["out"]["kernel"], precision=HIGHEST)
    np.testing.assert_allclose(out, ref + params["out"]["bias"], rtol=1e-4, atol=1e-5)


def test_local_kernel_rejects_cross_attention() -> None:
    module = MultiHeadAttention(num_heads=H, kernel="local")
    with pytest.raises(ValueError, match="self-attention"):
        module.init(jax.random.key(0), jnp.zeros((B, T, D)), jnp.zeros((B, S, D)))


def _ref_cross_modal(params: dict, x, context, mask) -> jnp.ndarray:
    """CrossModalAttention by hand: attention over the context, zero where none is visible."""
    has_context = jnp.asarray(mask).any(-1)
    # Rows with no context attend anywhere (then get zeroed) so that no 0/0 reaches the grads.
    safe_mask = jnp.asarray(mask) | ~has_context[:, None]
    y = ref_mha(params["attention"], x, context, mask=safe_mask)
    return jnp.where(has_context[:, None, None], y, 0.0)


@pytest.mark.parametrize("kernel", ["dense", "linear"])
def test_cross_modal_attention_matches_reference(kernel: str) -> None:
    from mmtx.attention import linear_attention
    from mmtx.nn import CrossModalAttention

    x, context = _normal((B, T, D), seed=0), _normal((B, S, DC), seed=1)
    mask = _padding_mask(S)
    mask[1] = False  # example 1 has no context at all (its other modality is missing)
    module = CrossModalAttention(num_heads=H, kernel=kernel)
    params = _params(module, x, context, mask)
    cotangent = _normal((B, T, D), seed=7)

    def reference(params, x, context):
        if kernel == "dense":
            return _ref_cross_modal(params, x, context, mask)
        p = params["attention"]

        def project(name: str, inputs):
            w = p[name]
            return jnp.einsum("bld,dhk->blhk", inputs, w["kernel"], precision=HIGHEST) + w["bias"]

        heads = linear_attention(
            project("query", x), project("key", context), project("value", context), mask=mask
        )
        y = jnp.einsum("blhk,hkd->bld", heads, p["out"]["kernel"], precision=HIGHEST)
        return jnp.where(mask.any(-1)[:, None, None], y + p["out"]["bias"], 0.0)

    def library(params, x, context):
        return module.apply({"params": params}, x, context, mask)[0]

    @jit
    def values_and_grads(params, x, context):
        results = []
        for fn in (library, reference):
            out, pullback = jax.vjp(fn, params, x, context)
            results.append((out, pullback(cotangent)))
        return results

    (out, grads), (ref_out, ref_grads) = values_and_grads(params, x, context)
    assert out.shape == (B, T, D) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(out[1]) == 0.0)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=2e-5)
    # No context, no gradient into the queries of that example.
    assert np.all(np.asarray(grads[1][1]) == 0.0)


def test_cross_modal_attention_validates_its_inputs() -> None:
    from mmtx.nn import CrossModalAttention

    x, context = jnp.zeros((B, T, D)), jnp.zeros((B, S, DC))
    with pytest.raises(ValueError, match="cross-modal attention supports"):
        CrossModalAttention(num_heads=H, kernel="local").init(jax.random.key(0), x, context)
    with pytest.raises(AssertionError):
        CrossModalAttention(num_heads=H).init(jax.random.key(0), x, jnp.zeros((B + 1, S, DC)))
    with pytest.raises(AssertionError):
        CrossModalAttention(num_heads=H).init(
            jax.random.key(0), x, context, jnp.ones((B, S + 1), bool)
        )


# --- implementation: auto | xla | cudnn (config.attention.implementation) ---------------------


def _mha_outputs(implementation):
    module = MultiHeadAttention(num_heads=H, implementation=implementation)
    x = _normal((B, T, D), 0)
    params = module.init(jax.random.key(0), x)
    return jit(module.apply)(params, x, mask=jnp.asarray(_padding_mask(T)))[0]


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="auto picks cuDNN on a GPU")
def test_auto_and_xla_equal_the_default_bit_for_bit_off_gpu() -> None:
    default = np.asarray(_mha_outputs(None))
    np.testing.assert_array_equal(np.asarray(_mha_outputs("xla")), default)
    np.testing.assert_array_equal(np.asarray(_mha_outputs("auto")), default)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="cuDNN can run on a GPU")
def test_explicit_cudnn_off_gpu_fails_at_trace_time_with_the_reason() -> None:
    module = MultiHeadAttention(num_heads=H, implementation="cudnn")
    x = _normal((B, T, D), 0)
    with pytest.raises(ValueError, match=r"'cudnn' cannot run: .*needs a GPU backend"):
        jax.eval_shape(module.init, jax.random.key(0), x)


def test_unknown_implementation_raises() -> None:
    module = MultiHeadAttention(num_heads=H, implementation="flash")
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
        jax.eval_shape(module.init, jax.random.key(0), _normal((B, T, D), 0))


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        ({"backend": "cpu"}, "needs a GPU backend; jax's backend is 'cpu'"),
        ({"backend": "tpu", "dtype": jnp.bfloat16}, "needs a GPU backend"),
        ({"backend": "gpu", "kernel": "local"}, "runs only the dense kernel; got 'local'"),
        ({"backend": "gpu", "dtype": jnp.float32}, "bfloat16/float16 compute dtype; got float32"),
        ({"backend": "gpu", "dtype": jnp.bfloat16, "head_dim": 12}, "a multiple of 8; got 12"),
        ({"backend": "gpu", "dtype": jnp.bfloat16, "head_dim": 512}, "got 512"),
        ({"backend": "gpu", "dtype": jnp.float16, "head_dim": 64}, None),
        ({"backend": "gpu", "dtype": jnp.bfloat16, "head_dim": 128}, None),
        ({"backend": "gpu", "lengths": (5, 6), "masked": True}, "even query and key lengths"),
        ({"backend": "gpu", "lengths": (5, 6), "masked": False}, None),
        ({"backend": "gpu", "lengths": (4, 6), "masked": True}, None),
    ],
)
def test_cudnn_unsupported_reason(kwargs, reason) -> None:
    got = cudnn_unsupported_reason(**kwargs)
    if reason is None:
        assert got is None
    else:
        assert reason in got


def test_resolve_implementation_off_gpu(monkeypatch) -> None:
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    kw = dict(kernel="dense", dtype=jnp.bfloat16, head_dim=64)
    assert resolve_implementation(None, **kw) is None
    assert resolve_implementation("auto", **kw) is None
    assert resolve_implementation("xla", **kw) == "xla"
    with pytest.raises(ValueError, match="needs a GPU backend"):
        resolve_implementation("cudnn", **kw)


def test_resolve_implementation_on_gpu_picks_cudnn_or_logs_one_fallback(
    monkeypatch, caplog
) -> None:
    """A GPU is faked: the choice is made before any kernel runs."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    kw = dict(kernel="dense", head_dim=64)
    assert resolve_implementation("auto", dtype=jnp.bfloat16, **kw) == "cudnn"
    assert resolve_implementation("cudnn", dtype=jnp.float16, **kw) == "cudnn"
    assert resolve_implementation("auto", kernel="linear", dtype=jnp.bfloat16, head_dim=64) is None
    attention_module._log_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger="mmtx.nn.attention"):
        for _ in range(3):  # one line per reason, not per layer
            assert resolve_implementation("auto", dtype=jnp.float32, **kw) == "xla"
    lines = [r.getMessage() for r in caplog.records if r.name == "mmtx.nn.attention"]
    assert len(lines) == 1 and "using XLA, not cuDNN" in lines[0] and "float32" in lines[0]
    with pytest.raises(ValueError, match=r"'cudnn' cannot run: .*compute dtype; got float32"):
        resolve_implementation("cudnn", dtype=jnp.float32, **kw)
    with pytest.raises(ValueError, match=r"'cudnn' cannot run: .*only the dense kernel"):
        resolve_implementation("cudnn", kernel="local", dtype=jnp.bfloat16, head_dim=64)


@pytest.mark.parametrize(
    "out_shape,in_dims,axes,in_shape",
    [
        ((H, 3), 1, ("embed", "heads", "kv"), (D,)),  # into heads
        ((D,), 2, ("heads", "kv", "embed"), (H, 3)),  # out of them
    ],
)
def test_factored_dense_is_an_einsum_over_its_kernel(out_shape, in_dims, axes, in_shape) -> None:
    """FactoredDense against the plain contraction: kernel [*in, *out] summed over the input's
    last in_dims axes, plus the bias; the same for its gradients; Xavier fans over the groups."""
    module = attention_module.FactoredDense(out_shape, axes)
    x = _normal((B, T, *in_shape), seed=0)
    boxed = module.init(jax.random.key(0), x)
    assert nn.get_partition_spec(boxed)["params"] == {
        "kernel": jax.sharding.PartitionSpec(*axes),
        "bias": jax.sharding.PartitionSpec(*axes[in_dims:]),
    }
    kernel = boxed["params"]["kernel"].value
    fan_in, fan_out = np.prod(in_shape), np.prod(out_shape)
    assert kernel.shape == (*in_shape, *out_shape)
    assert np.abs(kernel).max() <= np.sqrt(6.0 / (fan_in + fan_out))
    params = {"params": {"kernel": _normal(kernel.shape, 1), "bias": _normal(out_shape, 2)}}
    letters = "ijkl"[: len(in_shape) + len(out_shape)]
    spec = f"bt{letters[:in_dims]},{letters}->bt{letters[in_dims:]}"

    def reference(p, x):
        return jnp.einsum(spec, x, p["params"]["kernel"], precision=HIGHEST) + p["params"]["bias"]

    got = module.apply(params, x)
    np.testing.assert_allclose(got, reference(params, x), rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda p, x: jnp.sum(jnp.sin(module.apply(p, x))), argnums=(0, 1))
    want = jax.grad(lambda p, x: jnp.sum(jnp.sin(reference(p, x))), argnums=(0, 1))
    got_grads, want_grads = grads(params, x), want(params, x)
    for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_the_kernels_are_the_names_the_config_declares() -> None:
    """One kernel function per name of the towers' ``attention`` choices, in that order; the
    cross-attention kernels and implementations are the config's own tuples."""
    assert tuple(attention_module.ATTENTION_KERNELS) == tower_options.KERNELS
    assert set(attention_module.CROSS_ATTENTION_KERNELS) <= set(tower_options.KERNELS)
    assert attention_module.IMPLEMENTATIONS is tower_options.IMPLEMENTATIONS
