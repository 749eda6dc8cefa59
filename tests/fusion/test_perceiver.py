"""Tests for mmtx.fusion.perceiver.PerceiverFusion (latent array cross-attends to tokens)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx.fusion import ConcatFusion, ModalityFeatures, PerceiverFusion

B, WIDTH, LATENTS = 2, 16, 4


def make_features(audio_length, seed=0):
    rng = np.random.default_rng(seed)

    def one(length, dim):
        return ModalityFeatures(
            tokens=jnp.asarray(rng.normal(size=(B, length, dim)), jnp.float32),
            mask=jnp.ones((B, length), bool),
            pooled=jnp.zeros((B, dim)),
        )

    return {"text": one(5, 8), "audio": one(audio_length, 8)}


def forward_flops(fusion, audio_length):
    """XLA's FLOP count of one forward pass (HLO cost analysis, before compiling)."""
    params = jax.eval_shape(fusion.init, jax.random.key(0), make_features(audio_length))
    lowered = jax.jit(fusion.apply).lower(params, make_features(audio_length))
    return lowered.cost_analysis()["flops"]


@pytest.mark.parametrize("num_latents", [2, 8])
def test_cost_grows_linearly_with_an_added_modalitys_length(num_latents):
    perceiver = PerceiverFusion(
        width=WIDTH, depth=2, num_heads=2, mlp_dim=32, num_latents=num_latents
    )
    lengths = (16, 32, 48, 64)
    flops = np.array([forward_flops(perceiver, n) for n in lengths])
    per_token = np.diff(flops)
    # Equal steps in length add equal cost: no term grows faster than the token count.
    np.testing.assert_allclose(per_token, per_token[0], rtol=1e-6)
    # The per-token cost is the projection plus the cross-attention (proportional to the
    # latent count), not the latent self-attention.
    assert per_token[0] > 0


def test_joint_attention_by_contrast_is_quadratic():
    concat = ConcatFusion(width=WIDTH, depth=2, num_heads=2, mlp_dim=32)
    flops = np.array([forward_flops(concat, n) for n in (16, 32, 48, 64)])
    assert np.diff(flops, 2).min() > 0


def test_latent_cost_does_not_depend_on_the_tokens():
    """More latents cost the same extra whatever the token count (latents x tokens aside)."""

    def flops(latents, length):
        fusion = PerceiverFusion(width=WIDTH, depth=1, num_heads=2, mlp_dim=32, num_latents=latents)
        return forward_flops(fusion, length)

    extra_short = flops(8, 16) - flops(4, 16)
    extra_long = flops(8, 64) - flops(4, 64)
    # The difference between the two is only the cross-attention's latents x tokens terms,
    # which are linear in the added tokens.
    extra_longer = flops(8, 112) - flops(4, 112)
    np.testing.assert_allclose(extra_longer - extra_long, extra_long - extra_short, rtol=1e-6)


def test_latents_and_fused_output():
    fusion = PerceiverFusion(width=WIDTH, depth=1, num_heads=2, mlp_dim=32, num_latents=LATENTS)
    features = make_features(7)
    params = fusion.init(jax.random.key(0), features)
    fused, out = fusion.apply(params, features)
    assert out["latents"].shape == (B, LATENTS, WIDTH)
    np.testing.assert_allclose(fused, out["latents"].mean(axis=1), atol=1e-6)
    # The params do not depend on token counts: one set runs any length.
    longer, _ = fusion.apply(params, make_features(20))
    assert longer.shape == (B, WIDTH)


def test_local_kernel_is_rejected_for_cross_attention():
    fusion = PerceiverFusion(width=WIDTH, depth=1, num_heads=2, mlp_dim=32, cross_attention="local")
    with pytest.raises(ValueError, match="cross-modal attention supports"):
        jax.eval_shape(fusion.init, jax.random.key(0), make_features(4))


def test_linear_cross_attention_runs_and_ignores_padding():
    fusion = PerceiverFusion(
        width=WIDTH, depth=1, num_heads=2, mlp_dim=32, cross_attention="linear"
    )
    features = make_features(6)
    audio = features["audio"]
    mask = audio.mask.at[0, -2:].set(False)
    features["audio"] = audio._replace(mask=mask)
    params = fusion.init(jax.random.key(0), features)
    fused, _ = fusion.apply(params, features)
    noisy = audio._replace(mask=mask, tokens=audio.tokens.at[0, -2:].set(100.0))
    np.testing.assert_allclose(
        fusion.apply(params, dict(features, audio=noisy))[0], fused, rtol=1e-6, atol=1e-6
    )
