"""Tests for mmtx.encoders.video.VideoEncoder (ViViT, joint and factorised layouts).

Shapes and dtypes are checked with ``jax.eval_shape`` (no compile) over every layout x
pooling; the numbers against references written here: the stem against the tubelet
projection plus position tables laid out time-major by hand, the factorised spatial tower
against the same tower run on one time slice alone, and the local kernel against dense
attention when its window covers every token.
"""

import functools
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict
from helpers import SHIFT_INVARIANT, random_params

from mmtx.encoders import Tower, VideoEncoder, video_num_tokens
from mmtx.nn import TubeletEmbed, sincos_1d, sincos_2d

B, FRAMES, SIZE, PATCH, TUBELET, D = 2, 4, 16, 8, 2, 32
SLICES, N = FRAMES // TUBELET, (SIZE // PATCH) ** 2  # T' = 2 slices of N = 4 patches
GEOMETRY = dict(num_frames=FRAMES, image_size=SIZE, patch_size=PATCH, tubelet_size=TUBELET)


def videos(batch=B, seed=0):
    shape = (batch, FRAMES, SIZE, SIZE, 3)
    return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def encoder(**options):
    return VideoEncoder(
        **GEOMETRY, width=D, depth=1, temporal_depth=1, num_heads=2, mlp_dim=64, **options
    )


@functools.cache
def built(**options):
    module = encoder(**options)
    return module, flax.linen.unbox(random_params(module, videos())), jax.jit(module.apply)


# ------------------------------------------------------------------ shapes, dtypes, errors


@pytest.mark.parametrize("layout", ["joint", "factorised"])
@pytest.mark.parametrize("pooling", ["cls", "mean", "map"])
def test_shapes_and_dtypes(layout, pooling):
    dtype = jnp.bfloat16  # float32 outputs are checked where the tests below run the encoder
    module = encoder(layout=layout, pooling=pooling, dtype=dtype)
    variables = jax.eval_shape(module.init, jax.random.key(0), videos())
    for leaf in jax.tree.leaves(flax.linen.unbox(variables)):
        assert leaf.dtype == jnp.float32  # params stay float32 under bf16 compute
    x, out = jax.eval_shape(module.apply, variables, videos())
    k = 1 if pooling == "cls" else 0
    length = (SLICES * N if layout == "joint" else SLICES) + k
    assert (
        module.num_tokens()
        == length
        == video_num_tokens(**GEOMETRY, pooling=pooling, layout=layout)
    )
    assert x.shape == (B, length, D) and x.dtype == dtype
    assert out["pooled"].shape == (B, D) and out["pooled"].dtype == dtype
    assert out["mask"].shape == (B, length) and out["mask"].dtype == jnp.bool_
    assert out["stem"].shape == (B, SLICES * N, D) and out["stem"].dtype == dtype
    assert out["grid"].shape == (3,)
    params = variables["params"]
    assert ("temporal" in params) == (layout == "factorised")
    if layout == "factorised":
        assert out["spatial_pooled"].shape == (B, SLICES, D)
        assert ("cls" in params["temporal"]) == ("cls" in params["tower"]) == (pooling == "cls")


def test_bf16_compute_with_f32_params_tracks_f32():
    _, params, apply = built(layout="factorised", dtype=jnp.bfloat16)
    _, f32_params, f32_apply = built(layout="factorised")
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), params, f32_params))
    x, out = apply(params, videos())
    want, _ = f32_apply(f32_params, videos())
    assert x.dtype == jnp.bfloat16 and bool(out["mask"].all())
    np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(want), atol=0.1)
    np.testing.assert_array_equal(out["grid"], [SLICES, SIZE // PATCH, SIZE // PATCH])


@pytest.mark.parametrize(
    "shape",
    [
        (B, FRAMES + 1, SIZE, SIZE, 3),  # wrong number of frames
        (B, FRAMES, SIZE, SIZE + 8, 3),  # wrong width
        (B, FRAMES, SIZE, SIZE, 1),  # wrong channels
        (B, SIZE, SIZE, 3),  # an image batch, not a video
    ],
)
def test_wrong_shape_raises_naming_expected_shape(shape):
    module = encoder()
    expected = re.escape(f"[batch, {FRAMES}, {SIZE}, {SIZE}, 3]")
    with pytest.raises(ValueError, match=expected) as info:
        jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(shape))
    assert str(shape) in str(info.value)


GEOMETRY_ERRORS = [
    (dict(tubelet_size=3), r"num_frames \(4\) must be divisible by tubelet_size \(3\)"),
    (dict(patch_size=5), r"image_size \(16\) must be divisible by patch_size \(5\)"),
]
OPTION_ERRORS = [
    (dict(layout="divided"), "unknown video layout 'divided'"),
    (dict(pooling="eot"), "unknown video pooling 'eot'"),
    (dict(position_embedding="rope"), "unknown video position_embedding 'rope'"),
]


@pytest.mark.parametrize("options,match", GEOMETRY_ERRORS + OPTION_ERRORS)
def test_bad_options_raise_before_compile(options, match):
    module = VideoEncoder(**{**GEOMETRY, **options}, width=D, depth=1, num_heads=2, mlp_dim=64)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(module.init, jax.random.key(0), videos())


@pytest.mark.parametrize("options,match", GEOMETRY_ERRORS + OPTION_ERRORS[:1])
def test_video_num_tokens_rejects_what_the_encoder_rejects(options, match):
    with pytest.raises(ValueError, match=match):
        video_num_tokens(**{**GEOMETRY, **options})


def test_video_num_tokens():
    geometry = dict(num_frames=16, image_size=224, patch_size=16, tubelet_size=2)
    assert video_num_tokens(**geometry) == 8 * 196 + 1  # ViViT-B/16x2, joint, CLS
    assert video_num_tokens(**geometry, pooling="map", layout="factorised") == 8
    assert video_num_tokens(**geometry, pooling="cls", layout="factorised") == 9


# ------------------------------------------------------------------ stem and position tables


def ref_stem(params, video, position_embedding):
    """Normalise, project every tubelet (TubeletEmbed, tested against loops in
    tests/nn/test_embed.py) and add spatial[n] + temporal[t] at token t * N + n."""
    projected, _ = TubeletEmbed(D, (TUBELET, PATCH, PATCH)).apply(
        {"params": params["patches"]}, (video - 0.5) / 0.5
    )
    if position_embedding == "learned":
        spatial = params["posemb"]["embedding"]
        temporal = params["temporal_posemb"]["embedding"]
    else:
        spatial, temporal = sincos_2d(SIZE // PATCH, SIZE // PATCH, D), sincos_1d(SLICES, D)
    table = np.zeros((SLICES * N, D))
    for t in range(SLICES):
        for n in range(N):
            table[t * N + n] = np.asarray(spatial[n]) + np.asarray(temporal[t])
    return np.asarray(projected) + table


@pytest.mark.parametrize("position_embedding", ["learned", "sincos"])
def test_stem_is_tubelets_plus_separable_position_tables(position_embedding):
    _, params, apply = built(position_embedding=position_embedding)
    p = params["params"]
    if position_embedding == "learned":
        assert p["posemb"]["embedding"].shape == (N, D)
        assert p["temporal_posemb"]["embedding"].shape == (SLICES, D)
    else:
        assert "posemb" not in p and "temporal_posemb" not in p
        assert set(p) == {"patches", "tower"}
    assert p["patches"]["projection"]["kernel"].shape == (TUBELET, PATCH, PATCH, 3, D)
    video = videos()
    _, out = apply(params, video)
    want = ref_stem(p, video, position_embedding)
    np.testing.assert_allclose(np.asarray(out["stem"]), want, atol=1e-5)


# ------------------------------------------------------------------ joint: attention kernels


def test_joint_local_attention_runs_and_equals_dense_when_the_window_covers_all():
    length = SLICES * N + 1
    _, params, dense_apply = built(layout="joint")
    video = videos()
    dense, _ = dense_apply(params, video)
    wide = dict(radius=length, num_global=1)
    _, _, wide_apply = built(layout="joint", attention="local", attention_options=FrozenDict(wide))
    x, _ = wide_apply(params, video)  # same params: the kernel has none
    assert x.shape == (B, length, D) and x.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(x), np.asarray(dense), atol=2e-5)
    narrow = dict(radius=1, num_global=1)
    _, _, narrow_apply = built(
        layout="joint", attention="local", attention_options=FrozenDict(narrow)
    )
    x_narrow, _ = narrow_apply(params, video)
    assert bool(jnp.all(jnp.isfinite(x_narrow)))
    assert np.abs(np.asarray(x_narrow) - np.asarray(dense)).max() > 1e-3


# ------------------------------------------------------------------ factorised: slices


def test_factorised_spatial_tower_sees_one_slice_at_a_time():
    _, params, apply = built(layout="factorised")
    video = videos()
    x, out = apply(params, video)
    assert x.shape == (B, SLICES + 1, D) and x.dtype == jnp.float32
    # The spatial tower on slice t alone (the stem's tokens t * N ... t * N + N - 1).
    spatial = jax.jit(Tower(depth=1, num_heads=2, mlp_dim=64).apply)
    stem = np.asarray(out["stem"]).reshape(B, SLICES, N, D)
    for t in range(SLICES):
        _, alone = spatial({"params": params["params"]["tower"]}, jnp.asarray(stem[:, t]))
        np.testing.assert_allclose(
            np.asarray(out["spatial_pooled"][:, t]), np.asarray(alone["pooled"]), atol=1e-5
        )
    # Changing the frames of slice 1 leaves slice 0's embedding alone but, through the
    # temporal tower, changes every output token; the other example is untouched.
    changed = video.at[0, TUBELET:].set(0.0)
    x2, out2 = apply(params, changed)
    np.testing.assert_array_equal(out2["spatial_pooled"][:, 0], out["spatial_pooled"][:, 0])
    assert (
        np.abs(np.asarray(out2["spatial_pooled"][0, 1] - out["spatial_pooled"][0, 1])).max() > 1e-3
    )
    assert np.abs(np.asarray(x2[0] - x[0])).max(-1).min() > 1e-4
    np.testing.assert_allclose(np.asarray(x2[1]), np.asarray(x[1]), atol=1e-6)


# ------------------------------------------------------------------ gradients


def test_factorised_gradients_are_finite_and_reach_every_param():
    # Factorised: every param the joint layout has (patches, both tables, tower) plus temporal.
    _, params, apply = built(layout="factorised")
    video = videos()
    w = np.random.default_rng(3).normal(size=(B, D)).astype(np.float32)

    @jax.jit
    def grads(p, video):
        return jax.grad(lambda p, v: jnp.sum(apply(p, v)[1]["pooled"] * w), (0, 1))(p, video)

    p_grad, video_grad = grads(params, video)
    assert bool(jnp.all(jnp.isfinite(video_grad))) and bool(jnp.any(video_grad != 0))
    names = set()
    for path, g in jax.tree_util.tree_leaves_with_path(p_grad):
        name = jax.tree_util.keystr(path)
        names.add(name)
        assert bool(jnp.all(jnp.isfinite(g))), f"non-finite gradient for {name}"
        if not any(s in name for s in SHIFT_INVARIANT):
            assert bool(jnp.any(g != 0)), f"zero gradient for {name}"
    assert any("temporal_posemb" in n for n in names) and any("['temporal']" in n for n in names)
