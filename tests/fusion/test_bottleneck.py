"""Tests for mmtx.fusion.bottleneck.BottleneckFusion (MBT attention bottlenecks)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params

from mmtx.fusion import BottleneckFusion, ModalityFeatures

B, WIDTH = 2, 16


def make_features(seed=0):
    rng = np.random.default_rng(seed)

    def one(length, dim):
        return ModalityFeatures(
            tokens=jnp.asarray(rng.normal(size=(B, length, dim)), jnp.float32),
            mask=jnp.ones((B, length), bool),
            pooled=jnp.zeros((B, dim)),
        )

    return {"text": one(5, 8), "image": one(4, 12)}


def cross_modal_gradient(depth, fusion_layer):
    """Largest |d image CLS / d text tokens|: how much text reaches the image stream."""
    fusion = BottleneckFusion(
        width=WIDTH, depth=depth, num_heads=2, mlp_dim=32, num_bottlenecks=3,
        fusion_layer=fusion_layer,
    )  # fmt: skip
    features = make_features()
    params = random_params(fusion, features)

    def image_cls(text_tokens):
        changed = dict(features, text=features["text"]._replace(tokens=text_tokens))
        return jnp.sum(fusion.apply(params, changed)[1]["cls"]["image"])

    grad = jax.jit(jax.grad(image_cls))(features["text"].tokens)
    return float(jnp.abs(grad).max())


@pytest.mark.parametrize("depth,fusion_layer", [(1, 0), (2, 1), (4, 3)])
def test_one_fusion_layer_lets_no_information_across(depth, fusion_layer):
    # The bottleneck that enters the first fusion layer is a learned constant, so after one
    # fusion layer the image stream cannot depend on the text tokens at all.
    assert cross_modal_gradient(depth, fusion_layer) == 0.0


@pytest.mark.parametrize("depth,fusion_layer", [(2, 0), (3, 1)])
def test_information_crosses_through_the_bottleneck_one_layer_later(depth, fusion_layer):
    assert cross_modal_gradient(depth, fusion_layer) > 1e-4


def test_only_the_bottleneck_carries_text_into_the_image_stream():
    """With the bottleneck held fixed, text has no path to the image stream: the gradient
    of the image CLS w.r.t. text equals the chain rule through the bottleneck tokens."""
    fusion = BottleneckFusion(width=WIDTH, depth=2, num_heads=2, mlp_dim=32, num_bottlenecks=3)
    features = make_features()
    params = nn.meta.unbox(random_params(fusion, features))

    def run(text_tokens):
        changed = dict(features, text=features["text"]._replace(tokens=text_tokens))
        return fusion.apply(params, changed)[1]

    text = features["text"].tokens
    direct = jax.grad(lambda t: jnp.sum(run(t)["cls"]["image"]))(text)

    # Layer 0 maps text -> bottleneck after layer 0 (b1). Layer 1's image stream uses only
    # the image tokens and b1. Route the gradient explicitly through b1.
    def bottleneck_after_first_layer(t):
        one_layer = BottleneckFusion(
            width=WIDTH, depth=1, num_heads=2, mlp_dim=32, num_bottlenecks=3
        )
        sub = {
            "params": {
                k: v for k, v in params["params"].items() if not k.endswith("_1") and k != "norm"
            }
        }
        sub["params"]["norm"] = params["params"]["norm"]
        changed = dict(features, text=features["text"]._replace(tokens=t))
        return one_layer.apply(sub, changed)[1]["bottleneck"]

    b1, pullback = jax.vjp(bottleneck_after_first_layer, text)
    _, image_grad_wrt_b1 = jax.grad(
        lambda ti, b: jnp.sum(_image_layer_cls(params, features, ti, b)), argnums=(0, 1)
    )(text, b1)
    np.testing.assert_allclose(pullback(image_grad_wrt_b1)[0], direct, rtol=1e-4, atol=1e-6)
    assert np.abs(direct).max() > 1e-4


def _image_layer_cls(params, features, text_tokens, bottleneck):
    """The image CLS after layer 1 of a depth-2 fusion, given the bottleneck entering it."""
    from mmtx.fusion.common import TokenProjection
    from mmtx.nn import TransformerBlock
    from mmtx.nn.transformer import layer_norm

    del text_tokens  # the image stream has no other path to the text
    p = params["params"]
    image = features["image"]
    projected = TokenProjection(WIDTH, "image").apply({"params": p["image_input"]}, image.tokens)
    cls = jnp.broadcast_to(p["image_cls"], (B, 1, WIDTH))
    stream = jnp.concatenate([cls, projected], axis=1)
    length = stream.shape[1]
    mask = jnp.ones((B, length + bottleneck.shape[1]), bool)
    block = TransformerBlock(num_heads=2, mlp_dim=32)
    # Layer 0 fuses too (fusion_layer=0), with the learned initial bottleneck.
    initial = jnp.broadcast_to(p["bottleneck"], bottleneck.shape)
    joint, _ = block.apply({"params": p["image_0"]}, jnp.concatenate([stream, initial], 1), mask)
    joint, _ = block.apply(
        {"params": p["image_1"]}, jnp.concatenate([joint[:, :length], bottleneck], 1), mask
    )
    return layer_norm(jnp.float32, jnp.float32).apply({"params": p["norm"]}, joint[:, 0])


def test_bottleneck_output_shapes():
    fusion = BottleneckFusion(width=WIDTH, depth=2, num_heads=2, mlp_dim=32, num_bottlenecks=3)
    features = make_features()
    fused, out = fusion.apply(random_params(fusion, features), features)
    assert fused.shape == (B, WIDTH)
    assert out["bottleneck"].shape == (B, 3, WIDTH)
    assert {m: v.shape for m, v in out["cls"].items()} == {"text": (B, WIDTH), "image": (B, WIDTH)}
    # The fused output is the mean of the modalities' CLS outputs.
    np.testing.assert_allclose(fused, (out["cls"]["text"] + out["cls"]["image"]) / 2, atol=1e-6)


def test_fusion_layer_out_of_range_raises():
    fusion = BottleneckFusion(width=WIDTH, depth=2, num_heads=2, mlp_dim=32, fusion_layer=2)
    with pytest.raises(ValueError, match="fusion_layer"):
        jax.eval_shape(fusion.init, jax.random.key(0), make_features())
