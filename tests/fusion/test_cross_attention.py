"""Tests for mmtx.fusion.cross_attention.CrossAttentionFusion (ViLBERT-style co-attention)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from helpers import random_params

from mmtx.encoders.tower import masked_mean
from mmtx.fusion import CrossAttentionFusion, ModalityFeatures
from mmtx.fusion.common import TokenProjection
from mmtx.nn import TransformerBlock
from mmtx.nn.transformer import layer_norm

B, WIDTH = 2, 16


def make_features(seed=0):
    rng = np.random.default_rng(seed)

    def one(length, dim, padded):
        mask = np.ones((B, length), bool)
        mask[0, length - padded :] = False
        return ModalityFeatures(
            tokens=jnp.asarray(rng.normal(size=(B, length, dim)), jnp.float32),
            mask=jnp.asarray(mask),
            pooled=jnp.zeros((B, dim)),
        )

    return {"text": one(5, 8, 2), "image": one(4, 12, 0)}


def build(depth=1):
    fusion = CrossAttentionFusion(width=WIDTH, depth=depth, num_heads=2, mlp_dim=32)
    features = make_features()
    return fusion, nn.meta.unbox(random_params(fusion, features)), features


def test_one_layer_already_exchanges_information():
    """Unlike bottleneck fusion, the text stream sees the image tokens in the first layer."""
    fusion, params, features = build(depth=1)

    def text_stream(image_tokens):
        changed = dict(features, image=features["image"]._replace(tokens=image_tokens))
        return jnp.sum(fusion.apply(params, changed)[1]["tokens"]["text"])

    assert float(jnp.abs(jax.grad(text_stream)(features["image"].tokens)).max()) > 1e-4


def test_single_modality_is_a_plain_transformer():
    """Reference: projection, self-attention block, LayerNorm, masked mean, built by hand."""
    fusion, params, features = build(depth=1)
    text = features["text"]
    fused, out = fusion.apply(params, {"text": text})
    p = params["params"]
    x = TokenProjection(WIDTH, "text").apply({"params": p["text_input"]}, text.tokens)
    x, _ = TransformerBlock(num_heads=2, mlp_dim=32).apply(
        {"params": p["text_self_0"]}, x, text.mask
    )
    x = layer_norm(jnp.float32, jnp.float32).apply({"params": p["text_norm"]}, x)
    np.testing.assert_allclose(out["tokens"]["text"], x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused, masked_mean(x, text.mask), rtol=1e-5, atol=1e-5)


def test_fused_is_the_mean_of_the_pooled_streams():
    fusion, params, features = build(depth=2)
    fused, out = fusion.apply(params, features)
    assert {m: t.shape for m, t in out["tokens"].items()} == {
        "text": (B, 5, WIDTH),
        "image": (B, 4, WIDTH),
    }
    pooled = [masked_mean(out["tokens"][m], features[m].mask) for m in ("text", "image")]
    np.testing.assert_allclose(fused, (pooled[0] + pooled[1]) / 2, rtol=1e-5, atol=1e-6)


def test_capture_weights_shows_which_tokens_a_word_attends_to():
    fusion = CrossAttentionFusion(
        width=WIDTH, depth=1, num_heads=2, mlp_dim=32, capture_weights=True
    )
    features = make_features()
    params = random_params(fusion, features)
    _, out = jax.jit(fusion.apply)(params, features)
    weights = out["attention_weights"]
    assert set(weights) == {"text_cross_0", "text_self_0", "image_cross_0", "image_self_0"}
    text_to_image = np.asarray(weights["text_cross_0"])
    assert text_to_image.shape == (B, 2, 5, 4)
    np.testing.assert_allclose(text_to_image.sum(-1), 1.0, rtol=1e-5)
    image_to_text = np.asarray(weights["image_cross_0"])
    assert image_to_text.shape == (B, 2, 4, 5)
    assert np.all(image_to_text[0, :, :, 3:] == 0.0)  # text example 0's padded tokens
