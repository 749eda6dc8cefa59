"""Tests for mmtx/losses.py against plain numpy loop references and jax.grad of jnp rewrites."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmtx import losses

B, D = 5, 7

# Jitted entry points: one compile per function is much cheaper than eager op-by-op dispatch.
softmax_loss = jax.jit(losses.softmax_contrastive_loss)
sigmoid_loss = jax.jit(losses.sigmoid_contrastive_loss)
softmax_grads = jax.jit(jax.grad(losses.softmax_contrastive_loss, argnums=(0, 1, 2)))
sigmoid_grads = jax.jit(jax.grad(losses.sigmoid_contrastive_loss, argnums=(0, 1, 2, 3)))
classification = jax.jit(losses.classification_loss)
_total_loss = jax.jit(losses.total_loss, static_argnums=2)


def total_loss(outputs, batch, config):
    return _total_loss(outputs, batch, ml_collections.FrozenConfigDict(config))


def embeddings(seed: int, batch: int = B, dim: int = D) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, dim)).astype(np.float32)


def np_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``cos[i, j]`` by explicit loops, float64."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            out[i, j] = sum(a[i, k] * b[j, k] for k in range(a.shape[1])) / (
                math.sqrt(sum(x * x for x in a[i])) * math.sqrt(sum(x * x for x in b[j]))
            )
    return out


def np_log_softmax_ce(row: np.ndarray, target: int) -> float:
    m = max(row)
    return -(row[target] - m - math.log(sum(math.exp(x - m) for x in row)))


def np_softmax_loss(a, b, logit_scale: float) -> float:
    t = math.exp(min(logit_scale, math.log(100.0)))
    logits = t * np_cosines(a, b)
    n = len(a)
    rows = sum(np_log_softmax_ce(logits[i, :], i) for i in range(n)) / n
    cols = sum(np_log_softmax_ce(logits[:, j], j) for j in range(n)) / n
    return 0.5 * (rows + cols)


def np_sigmoid_loss(a, b, logit_scale: float, logit_bias: float) -> float:
    t = math.exp(min(logit_scale, math.log(100.0)))
    cos = np_cosines(a, b)
    n = len(a)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            x = z * (t * cos[i, j] + logit_bias)
            total += -math.log(1.0 / (1.0 + math.exp(-x)))
    return total / n


@jax.jit
def jnp_softmax_loss(a, b, logit_scale):
    """An independent jnp rewrite, for reference gradients."""
    a = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
    b = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
    logits = jnp.exp(jnp.minimum(logit_scale, jnp.log(100.0))) * jnp.einsum("id,jd->ij", a, b)
    diag = jnp.diagonal(logits)
    rows = jax.scipy.special.logsumexp(logits, axis=1) - diag
    cols = jax.scipy.special.logsumexp(logits, axis=0) - diag
    return 0.5 * (jnp.mean(rows) + jnp.mean(cols))


@jax.jit
def jnp_sigmoid_loss(a, b, logit_scale, logit_bias):
    a = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
    b = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
    logits = jnp.exp(jnp.minimum(logit_scale, jnp.log(100.0))) * jnp.einsum("id,jd->ij", a, b)
    logits = logits + logit_bias
    z = jnp.where(jnp.eye(a.shape[0], dtype=bool), 1.0, -1.0)
    return jnp.sum(jnp.log1p(jnp.exp(-z * logits))) / a.shape[0]


# ---------------------------------------------------------------------------- l2_normalize


def test_l2_normalize_unit_rows_and_direction():
    x = embeddings(0, 4, 6) * np.array([[1.0], [10.0], [0.01], [3.0]], np.float32)
    y = np.asarray(losses.l2_normalize(jnp.asarray(x)))
    assert y.dtype == np.float32
    for i in range(len(x)):
        norm = math.sqrt(sum(float(v) ** 2 for v in x[i]))
        np.testing.assert_allclose(y[i], x[i] / norm, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), 1.0, rtol=1e-5)


def test_l2_normalize_bfloat16_input_is_float32_and_zero_row_is_finite():
    x = jnp.asarray([[3.0, 4.0], [0.0, 0.0]], jnp.bfloat16)
    y = losses.l2_normalize(x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)


def test_l2_normalize_gradient_matches_reference():
    x = jnp.asarray(embeddings(1, 3, 4))
    w = jnp.asarray(embeddings(2, 3, 4))
    got = jax.jit(jax.grad(lambda v: jnp.sum(losses.l2_normalize(v) * w)))(x)
    unit = lambda v: v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    want = jax.jit(jax.grad(lambda v: jnp.sum(unit(v) * w)))(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- softmax (CLIP)


@pytest.mark.parametrize("logit_scale", [0.0, 1.3, math.log(100.0), 7.0])
def test_softmax_contrastive_loss_matches_numpy_loops(logit_scale):
    a, b = embeddings(0), embeddings(1)
    got = softmax_loss(jnp.asarray(a), jnp.asarray(b), jnp.float32(logit_scale))
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), np_softmax_loss(a, b, logit_scale), rtol=2e-5)


def test_softmax_contrastive_loss_clips_logit_scale_at_log_100():
    a, b = jnp.asarray(embeddings(3)), jnp.asarray(embeddings(4))
    at_clip = softmax_loss(a, b, jnp.float32(math.log(100.0)))
    above = softmax_loss(a, b, jnp.float32(10.0))
    below = softmax_loss(a, b, jnp.float32(math.log(50.0)))
    np.testing.assert_allclose(float(above), float(at_clip), rtol=1e-6)
    assert abs(float(below) - float(at_clip)) > 1e-3
    assert losses.MAX_LOGIT_SCALE == pytest.approx(math.log(100.0))
    # No gradient flows into a clipped scale.
    g = softmax_grads(a, b, jnp.float32(10.0))[2]
    assert float(g) == 0.0


def test_softmax_contrastive_loss_is_symmetric_and_low_for_matching_pairs():
    a, b = jnp.asarray(embeddings(5)), jnp.asarray(embeddings(6))
    scale = jnp.float32(2.0)
    np.testing.assert_allclose(
        softmax_loss(a, b, scale),
        softmax_loss(b, a, scale),
        rtol=1e-6,
    )
    matched = softmax_loss(a, a, jnp.float32(math.log(100.0)))
    assert float(matched) < 1e-3


@pytest.mark.parametrize("logit_scale", [0.5, 3.0])
def test_softmax_contrastive_loss_gradients(logit_scale):
    a, b = jnp.asarray(embeddings(7)), jnp.asarray(embeddings(8))
    s = jnp.float32(logit_scale)
    got = softmax_grads(a, b, s)
    want = jax.jit(jax.grad(jnp_softmax_loss, argnums=(0, 1, 2)))(a, b, s)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    # And the scale gradient against a central finite difference of the numpy reference.
    a64, b64, h = np.asarray(a), np.asarray(b), 1e-4
    fd = np_softmax_loss(a64, b64, logit_scale + h) - np_softmax_loss(a64, b64, logit_scale - h)
    np.testing.assert_allclose(float(got[2]), fd / (2 * h), rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------------------- sigmoid (SigLIP)


@pytest.mark.parametrize(("logit_scale", "logit_bias"), [(0.0, 0.0), (2.3, -10.0), (6.0, 1.5)])
def test_sigmoid_contrastive_loss_matches_numpy_loops(logit_scale, logit_bias):
    a, b = embeddings(10), embeddings(11)
    got = sigmoid_loss(
        jnp.asarray(a), jnp.asarray(b), jnp.float32(logit_scale), jnp.float32(logit_bias)
    )
    assert got.dtype == jnp.float32 and got.shape == ()
    want = np_sigmoid_loss(a, b, logit_scale, logit_bias)
    np.testing.assert_allclose(float(got), want, rtol=2e-5)


def test_sigmoid_contrastive_loss_gradients():
    a, b = jnp.asarray(embeddings(12)), jnp.asarray(embeddings(13))
    s, bias = jnp.float32(2.0), jnp.float32(-3.0)
    got = sigmoid_grads(a, b, s, bias)
    want = jax.jit(jax.grad(jnp_sigmoid_loss, argnums=(0, 1, 2, 3)))(a, b, s, bias)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    a64, b64, h = np.asarray(a), np.asarray(b), 1e-4
    fd_bias = np_sigmoid_loss(a64, b64, 2.0, -3.0 + h) - np_sigmoid_loss(a64, b64, 2.0, -3.0 - h)
    np.testing.assert_allclose(float(got[3]), fd_bias / (2 * h), rtol=1e-3)


# ---------------------------------------------------------------------------- classification


def test_classification_loss_hand_computed():
    logits = np.array(
        [[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 3.0, 0.5, 0.0]], np.float32
    )
    labels = np.array([0, 2, 2], np.int32)
    ce = []
    for row, label in zip(logits, labels, strict=True):
        ce.append(-(row[label] - math.log(sum(math.exp(x) for x in row))))
    # row 1: uniform over 4 -> log 4 exactly.
    assert ce[1] == pytest.approx(math.log(4.0))
    loss, accuracy = classification(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(float(loss), sum(ce) / 3, rtol=1e-6)
    # argmax: 0 (right), 0 (ties go to the first index; label 2 -> wrong), 1 (wrong).
    assert float(accuracy) == pytest.approx(1 / 3)


def test_classification_loss_gradient_is_softmax_minus_onehot():
    logits = jnp.asarray(embeddings(20, 3, 4))
    labels = jnp.asarray([3, 0, 1])
    grad = jax.jit(jax.grad(lambda x: losses.classification_loss(x, labels)[0]))(logits)
    x = np.asarray(logits, np.float64)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(3), np.asarray(labels)] -= 1.0
    np.testing.assert_allclose(grad, p / 3, rtol=1e-5, atol=1e-7)


def test_classification_loss_rejects_bad_shapes():
    with pytest.raises(AssertionError):
        losses.classification_loss(jnp.zeros((3, 4)), jnp.zeros((2,), jnp.int32))


# ---------------------------------------------------------------------------- total_loss


def loss_config(contrastive="softmax", contrastive_weight=1.0, classification_weight=1.0):
    return ml_collections.ConfigDict(
        {
            "contrastive": contrastive,
            "contrastive_weight": contrastive_weight,
            "classification_weight": classification_weight,
        }
    )


def model_outputs(modalities, with_logits=True):
    out = {m: jnp.asarray(embeddings(30 + i)) for i, m in enumerate(modalities)}
    out["logit_scale"] = jnp.float32(1.5)
    out["logit_bias"] = jnp.float32(-2.0)
    if with_logits:
        out["logits"] = jnp.asarray(embeddings(40, B, 4))
    return out


LABELS = {"label": jnp.asarray([0, 1, 2, 3, 1], jnp.int32)}


@pytest.mark.parametrize("contrastive", ["softmax", "sigmoid"])
def test_total_loss_one_term_per_modality_pair(contrastive):
    outputs = model_outputs(("text", "image", "audio"))
    loss, metrics = total_loss(outputs, LABELS, loss_config(contrastive, 0.7, 0.3))
    pairs = [("text", "image"), ("text", "audio"), ("image", "audio")]
    assert {k for k in metrics if k.startswith("contrastive_")} == {
        f"contrastive_{a}_{b}" for a, b in pairs
    }
    expected = 0.0
    for a, b in pairs:
        x, y = np.asarray(outputs[a]), np.asarray(outputs[b])
        term = (
            np_softmax_loss(x, y, 1.5)
            if contrastive == "softmax"
            else np_sigmoid_loss(x, y, 1.5, -2.0)
        )
        np.testing.assert_allclose(float(metrics[f"contrastive_{a}_{b}"]), term, rtol=2e-5)
        expected += 0.7 * term
    ce, acc = classification(outputs["logits"], LABELS["label"])
    expected += 0.3 * float(ce)
    np.testing.assert_allclose(float(metrics["classification"]), float(ce), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["accuracy"]), float(acc))
    np.testing.assert_allclose(float(loss), expected, rtol=2e-5)
    assert float(metrics["loss"]) == float(loss)


def test_total_loss_two_modalities_one_term_one_modality_none():
    _, two = total_loss(model_outputs(("image", "audio")), LABELS, loss_config())
    assert [k for k in two if k.startswith("contrastive_")] == ["contrastive_image_audio"]
    loss, one = total_loss(model_outputs(("text",)), LABELS, loss_config())
    assert not [k for k in one if k.startswith("contrastive_")]
    np.testing.assert_allclose(float(loss), float(one["classification"]), rtol=1e-6)


def test_total_loss_zero_weights_remove_terms():
    outputs = model_outputs(("text", "image"))
    loss, metrics = total_loss(outputs, LABELS, loss_config(contrastive_weight=0.0))
    assert set(metrics) == {"classification", "accuracy", "loss"}
    np.testing.assert_allclose(float(loss), float(metrics["classification"]), rtol=1e-6)

    loss, metrics = total_loss(outputs, LABELS, loss_config(classification_weight=0.0))
    assert set(metrics) == {"contrastive_text_image", "loss"}
    np.testing.assert_allclose(float(loss), float(metrics["contrastive_text_image"]), rtol=1e-6)

    loss, metrics = total_loss(outputs, LABELS, loss_config(contrastive="none"))
    assert set(metrics) == {"classification", "accuracy", "loss"}


def test_total_loss_classification_needs_logits_and_labels():
    cfg = loss_config()
    _, no_labels = total_loss(model_outputs(("text", "image")), {}, cfg)
    _, no_logits = total_loss(model_outputs(("text", "image"), with_logits=False), LABELS, cfg)
    for metrics in (no_labels, no_logits):
        assert "classification" not in metrics and "accuracy" not in metrics
        np.testing.assert_allclose(
            float(metrics["loss"]), float(metrics["contrastive_text_image"]), rtol=1e-6
        )
    loss, nothing = total_loss(model_outputs(("audio",), with_logits=False), LABELS, cfg)
    assert set(nothing) == {"loss"} and float(loss) == 0.0


def test_total_loss_unknown_contrastive_raises():
    with pytest.raises(ValueError, match="contrastive"):
        total_loss(model_outputs(("text", "image")), LABELS, loss_config("cosine"))


def test_total_loss_gradient_is_weighted_sum_of_term_gradients():
    outputs = model_outputs(("text", "image"))
    cfg = loss_config("softmax", 0.5, 2.0)

    def total(text):
        return total_loss({**outputs, "text": text}, LABELS, cfg)[0]

    got = jax.jit(jax.grad(total))(outputs["text"])
    want = 0.5 * jax.jit(jax.grad(jnp_softmax_loss))(outputs["text"], outputs["image"], 1.5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_total_loss_adds_one_term_per_labelled_attribute_head():
    outputs = model_outputs(("text",), with_logits=False)
    shape_logits = jnp.asarray(embeddings(50, B, 3))
    position_logits = jnp.asarray(embeddings(51, B, 4))
    outputs["attribute_logits"] = {"text/shape": shape_logits, "text/position": position_logits}
    batch = {"shape": jnp.asarray([0, 1, 2, 0, 1], jnp.int32)}  # no position label
    config = loss_config(contrastive="none")
    config.attribute_weight = 0.5
    loss, metrics = total_loss(outputs, batch, config)
    rows, targets = np.asarray(shape_logits, np.float64), np.asarray(batch["shape"])
    expected_term = np.mean([np_log_softmax_ce(r, t) for r, t in zip(rows, targets, strict=True)])
    np.testing.assert_allclose(metrics["attribute_text_shape"], expected_term, rtol=1e-5)
    assert "attribute_text_position" not in metrics
    np.testing.assert_allclose(loss, 0.5 * expected_term, rtol=1e-5)
    config.attribute_weight = 0.0
    loss, metrics = total_loss(outputs, batch, config)
    assert float(loss) == 0.0 and "attribute_text_shape" not in metrics


def test_logit_scale_gradient_at_the_cap_is_the_uncapped_gradient():
    """At logit_scale == log 100 (imported CLIP checkpoints) the gradient is open_clip's:
    that of exp(logit_scale), not half of it (a jnp.minimum splits the tie)."""
    a, b = jnp.asarray(embeddings(0, 5, 8)), jnp.asarray(embeddings(1, 5, 8))
    cap = jnp.float32(math.log(100.0))

    def uncapped(s):
        a_n = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
        b_n = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
        logits = jnp.exp(s) * a_n @ b_n.T
        diag = jnp.diagonal(logits)
        rows = jax.scipy.special.logsumexp(logits, axis=1) - diag
        cols = jax.scipy.special.logsumexp(logits, axis=0) - diag
        return 0.5 * (jnp.mean(rows) + jnp.mean(cols))

    got = jax.grad(lambda s: losses.softmax_contrastive_loss(a, b, s))(cap)
    np.testing.assert_allclose(got, jax.grad(uncapped)(cap), rtol=1e-5)
    # Above the cap the value is capped.
    above = losses.softmax_contrastive_loss(a, b, cap + 1.0)
    np.testing.assert_allclose(above, uncapped(cap), rtol=1e-6)
    assert float(losses.capped_logit_scale(cap + 1.0)) == np.float32(cap)


# --- per-example absence ------------------------------------------------------------------

VALID = np.asarray([True, False, True, True, False])


def _embeddings(seed=0, n=5, d=4):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(n, d)), jnp.float32) for _ in range(2))


def test_masked_softmax_loss_is_the_loss_of_the_valid_examples_alone():
    a, b = _embeddings()
    scale = jnp.asarray(2.0)

    def masked(a, b):
        return losses.masked_softmax_contrastive_loss(a, b, scale, jnp.asarray(VALID))

    def subset(a, b):
        return losses.softmax_contrastive_loss(a[VALID], b[VALID], scale)

    np.testing.assert_allclose(masked(a, b), subset(a, b), rtol=1e-6)
    grads = jax.grad(masked, (0, 1))(a, b), jax.grad(subset, (0, 1))(a, b)
    for got, want in zip(*grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(got[~VALID], 0.0)  # absent rows get no gradient
    everyone = jnp.ones(5, bool)
    np.testing.assert_allclose(
        losses.masked_softmax_contrastive_loss(a, b, scale, everyone),
        losses.softmax_contrastive_loss(a, b, scale),
        rtol=1e-6,
    )
    assert float(losses.masked_softmax_contrastive_loss(a, b, scale, jnp.zeros(5, bool))) == 0.0


def test_masked_sigmoid_loss_is_the_loss_of_the_valid_examples_alone():
    a, b = _embeddings(1)
    scale, bias = jnp.asarray(2.0), jnp.asarray(-1.0)

    def masked(a, b):
        return losses.masked_sigmoid_contrastive_loss(a, b, scale, bias, jnp.asarray(VALID))

    def subset(a, b):
        return losses.sigmoid_contrastive_loss(a[VALID], b[VALID], scale, bias)

    np.testing.assert_allclose(masked(a, b), subset(a, b), rtol=1e-6)
    grads = jax.grad(masked, (0, 1))(a, b), jax.grad(subset, (0, 1))(a, b)
    for got, want in zip(*grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_total_loss_skips_pairs_and_heads_where_an_input_is_absent():
    text, image = _embeddings(2)
    audio, _ = _embeddings(3)
    labels = jnp.asarray([0, 1, 2, 1, 0])
    attribute = jnp.asarray(np.random.default_rng(4).normal(size=(5, 3)), jnp.float32)
    outputs = {
        "text": text,
        "image": image,
        "audio": audio,
        "logit_scale": jnp.asarray(1.5),
        "logit_bias": jnp.asarray(0.0),
        "attribute_logits": {"audio/shape": attribute},
    }
    config = ml_collections.ConfigDict(
        dict(
            contrastive="softmax",
            contrastive_weight=1.0,
            classification_weight=0.0,
            attribute_weight=1.0,
        )
    )
    batch = {"present/audio": jnp.asarray(VALID), "shape": labels}
    _, metrics = losses.total_loss(outputs, batch, config)
    scale = outputs["logit_scale"]
    np.testing.assert_allclose(
        metrics["contrastive_text_audio"],
        losses.softmax_contrastive_loss(text[VALID], audio[VALID], scale),
        rtol=1e-6,
    )
    np.testing.assert_allclose(  # text and image are everywhere: the plain loss
        metrics["contrastive_text_image"], losses.softmax_contrastive_loss(text, image, scale)
    )
    want, _ = losses.classification_loss(attribute[VALID], labels[VALID])
    np.testing.assert_allclose(metrics["attribute_audio_shape"], want, rtol=1e-6)
