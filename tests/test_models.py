"""Tests for mmtx.models: MultiModalTransformer, create_model and the raw-input Model."""

import dataclasses
import functools
import importlib.util
import itertools
import json
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx import Model, MultiModalTransformer, create_model
from mmtx import config as config_lib
from mmtx.data.tokenizer import ByteTokenizer
from mmtx.inference import l2_normalize
from mmtx.models import NonFiniteOutputError, dummy_batch, init_params

REPO = pathlib.Path(__file__).resolve().parents[1]
MODALITIES = ("text", "image", "audio")
SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(MODALITIES, r)]
FUSION_TYPES = config_lib.FUSION_TYPES
B, EMBED, CLASSES, MAX_LEN, SIZE, SAMPLES = 2, 32, 5, 8, 16, 1600
SNIPPET = """
from mmtx import create_model
model = create_model("configs/base_text_image_model.json")
outputs = model(text_inputs="A person riding a horse", image_features=image)  # image: HxWx3 array
"""


def small_config(fusion="concat", modalities=MODALITIES):
    """The tiny variant, with inputs small enough to compile fast."""
    c = config_lib.apply_variant(config_lib.default_config(), "tiny")
    c.model.modalities = tuple(modalities)
    c.fusion.type = fusion
    c.model.num_classes = CLASSES
    c.model.text.max_length = MAX_LEN
    c.model.image.image_size, c.model.image.patch_size = SIZE, 8
    c.model.audio.num_samples, c.model.audio.num_mel_bins = SAMPLES, 16
    c.model.audio.patch_size = (4, 8)
    c.dtype = "float32"
    return c


@functools.cache
def built(fusion):
    """(module, params): the module from a config, params filled from numpy with the shapes
    of its init (eval_shape: traced, not compiled; the real init runs in the snippet tests)."""
    config = config_lib.load_config(small_config(fusion))
    module = MultiModalTransformer.from_config(config, vocab_size=ByteTokenizer().vocab_size)
    shapes = jax.eval_shape(module.init, jax.random.key(0), dummy_batch(config, 1))
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: jnp.asarray(0.1 * rng.normal(size=s.shape), s.dtype),
        nn.meta.unbox(shapes["params"]),
    )
    return module, params


def make_batch(modalities, batch=B):
    """The same examples for a modality whichever others are present."""
    out = {}
    if "text" in modalities:
        texts = ["a red circle", "cats", "the horse", "music"][:batch]  # row 1 is padded
        out["text"], out["text_mask"] = ByteTokenizer()(texts, MAX_LEN)
    if "image" in modalities:
        rng = np.random.default_rng(1)
        out["image"] = rng.uniform(size=(batch, SIZE, SIZE, 3)).astype(np.float32)
    if "audio" in modalities:
        rng = np.random.default_rng(2)
        out["audio"] = rng.normal(size=(batch, SAMPLES)).astype(np.float32)
    return out


NO_MASK = "text without text_mask"


@functools.cache
def outputs_by_subset(fusion):
    """The model's outputs on every subset of its modalities (plus text without a mask).

    One jit over all the subsets: XLA shares the identical encoder computations, which halves
    the compile time of the parametrized tests below.
    """
    module, params = built(fusion)
    batches = {"+".join(modalities): make_batch(modalities) for modalities in SUBSETS}
    batches[NO_MASK] = {"text": make_batch(("text",))["text"]}
    run = jax.jit(lambda p, bs: {k: module.apply({"params": p}, b) for k, b in bs.items()})
    return run(params, batches)


@pytest.mark.parametrize("fusion", ["concat", "gated"])
@pytest.mark.parametrize("modalities", SUBSETS, ids="+".join)
def test_outputs_for_every_subset(fusion, modalities):
    outputs = outputs_by_subset(fusion)
    out = outputs["+".join(modalities)]
    expected = {*modalities, "fused", "logits", "logit_scale", "logit_bias"}
    if fusion == "gated":
        expected.add("fusion_weights")
    assert set(out) == expected
    for key in (*modalities, "fused"):
        assert out[key].shape == (B, EMBED) and out[key].dtype == jnp.float32, key
        assert bool(jnp.all(jnp.isfinite(out[key]))), key
    assert out["logits"].shape == (B, CLASSES) and out["logits"].dtype == jnp.float32
    assert out["logit_scale"].shape == out["logit_bias"].shape == ()
    if fusion == "gated":
        weights = out["fusion_weights"]
        assert set(weights) == set(modalities)
        np.testing.assert_allclose(sum(float(w) for w in weights.values()), 1.0, rtol=1e-6)
    # Encoders are independent: each modality's embedding is the same as in the full run.
    full = outputs["+".join(MODALITIES)]
    for m in modalities:
        np.testing.assert_allclose(out[m], full[m], rtol=1e-5, atol=1e-5)
    if len(modalities) < len(MODALITIES):
        assert np.abs(out["fused"] - full["fused"]).max() > 1e-4


@pytest.mark.parametrize("fusion", [f for f in FUSION_TYPES if f not in ("concat", "gated")])
@pytest.mark.parametrize("modalities", [MODALITIES, ("text",), ("image", "audio")], ids="+".join)
def test_every_fusion_type_is_wired_from_the_config(fusion, modalities):
    """Shapes only (traced, not compiled): the values are tested in tests/fusion."""
    module, params = built(fusion)
    out = jax.eval_shape(
        lambda p, b: module.apply({"params": p}, b), params, make_batch(modalities)
    )
    assert set(out) == {*modalities, "fused", "logits", "logit_scale", "logit_bias"}
    assert out["fused"].shape == (B, EMBED) and out["fused"].dtype == jnp.float32


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_default_text_mask_is_nonzero_ids(fusion):
    outputs = outputs_by_subset(fusion)
    for key in ("text", "fused"):
        np.testing.assert_allclose(
            outputs[NO_MASK][key], outputs["text"][key], rtol=1e-5, atol=1e-5
        )


def test_module_rejects_bad_batches():
    module, params = built("concat")

    def run(batch):
        return jax.eval_shape(lambda p: module.apply({"params": p}, batch), params)

    with pytest.raises(ValueError, match="none of the model's modalities"):
        run({"label": np.zeros((B,), np.int32)})
    with pytest.raises(ValueError, match="disagree on batch size"):
        run({**make_batch(("text",), 2), **make_batch(("audio",), 3)})
    with pytest.raises(ValueError, match="text_mask shape"):
        run({"text": np.ones((B, MAX_LEN), np.int32), "text_mask": np.ones((B, 3), bool)})
    with pytest.raises(ValueError, match="empty"):
        run({"image": np.zeros((0, SIZE, SIZE, 3), np.float32)})
    images = np.zeros((B, SIZE, SIZE, 3), np.float32)
    images[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=re.escape("image[1] has non-finite values")):
        run({"image": images})


class ByteTokenizerPastTheTable(ByteTokenizer):
    """Ids 1000 and up: past any embedding table the tiny model has."""

    @property
    def vocab_size(self):
        return 2000

    def encode(self, text):
        return [1000 + b for b in text.encode()]


def test_model_call_checks_token_ids_before_jit(monkeypatch):
    """Model.__call__ jits the module, whose own check skips traced ids: it checks first."""
    import mmtx.inference

    model = create_model(small_config("concat"), params=built("concat")[1])
    model = dataclasses.replace(model, tokenizer=ByteTokenizerPastTheTable())

    def not_reached(*args):
        raise AssertionError("the jitted apply ran on out-of-vocabulary ids")

    monkeypatch.setattr(mmtx.inference, "_jitted_apply", not_reached)
    with pytest.raises(ValueError, match=re.escape("text token ids must be in [0, 259)")):
        model(text_inputs="a red circle")


def test_raw_multichannel_audio_and_encoded_images():
    """Stereo clips give the embeddings of their channel average; PNG bytes (alone or mixed
    with arrays in a list) give those of the decoded pixels. One compile: same shapes."""
    import io

    from PIL import Image

    model = create_model(small_config("concat"), params=built("concat")[1])
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (B, SIZE, SIZE, 3), dtype=np.uint8)
    pngs = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    stereo = rng.uniform(-1, 1, (B, SAMPLES, 2)).astype(np.float32)  # [batch, samples, channels]
    out = model(image_features=[pngs[0], pixels[1]], audio_inputs=stereo)
    reference = model(image_features=pixels, audio_inputs=(stereo[..., 0] + stereo[..., 1]) / 2)
    np.testing.assert_allclose(out["image"], reference["image"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["audio"], reference["audio"], rtol=1e-5, atol=1e-6)
    batch = model.preprocess(audio_inputs=stereo)["audio"]
    np.testing.assert_allclose(batch, stereo.mean(axis=2), rtol=1e-6, atol=1e-7)
    # One clip [samples, channels] (the layout sound files load as) and a mono batch [B, S].
    one = model.preprocess(audio_inputs=stereo[0], audio_sample_rate=16000)["audio"]
    np.testing.assert_allclose(one, stereo[:1].mean(axis=2), rtol=1e-6, atol=1e-7)
    assert model.preprocess(audio_inputs=stereo[..., 0])["audio"].shape == (B, SAMPLES)
    single = model.preprocess(image_features=pngs[1])["image"]
    np.testing.assert_array_equal(single, model.preprocess(image_features=pixels[1])["image"])


@pytest.mark.parametrize(
    "inputs,error,message",
    [
        ({"text_inputs": {"a red circle": 1}}, TypeError, "text_inputs must be a str or a list"),
        ({"text_inputs": b"a red circle"}, TypeError, "text_inputs is bytes; decode it"),
        ({"text_inputs": np.array(["a", "b"])}, None, None),  # numpy str arrays are fine
        ({"audio_inputs": np.zeros(SAMPLES), "audio_sample_rate": "16k"}, TypeError, "got str"),
        ({"audio_inputs": np.zeros(SAMPLES), "audio_sample_rate": -8000}, ValueError, "-8000"),
        ({"image_features": np.zeros((SIZE, 0, 3), np.uint8)}, ValueError, "zero height"),
    ],
)
def test_raw_inputs_are_checked_before_any_compile(inputs, error, message):
    model = create_model(small_config("concat"), params=built("concat")[1])
    if error is None:
        batch = model.preprocess(**inputs)
        assert batch["text"].shape == (2, MAX_LEN)
        return
    with pytest.raises(error, match=re.escape(message)):
        model.preprocess(**inputs)


def test_create_model_from_configdict():
    config = small_config("concat")
    # params=... skips the init compile; init_params is traced (eval_shape) for its shapes.
    model = create_model(config, params=built("concat")[1])
    assert isinstance(model, Model) and isinstance(model.module, MultiModalTransformer)
    assert model.config is not config  # create_model works on a validated copy
    assert set(model.module.encoders) == set(MODALITIES) and model.module.fusion_type == "concat"
    params = jax.eval_shape(lambda k: init_params(model.module, model.config, k), jax.random.key(0))
    assert jax.tree.structure(params) == jax.tree.structure(model.params)
    top = set(params)
    assert {"text", "image", "audio", "fusion", "fused_head", "classifier"} <= top
    assert {"text_head", "image_head", "audio_head", "logit_scale", "logit_bias"} <= top
    embedding = params["text"]["token_embed"]["embedding"]["embedding"]
    assert embedding.shape == (ByteTokenizer().vocab_size, 32)
    # Callable on raw inputs of every modality.
    rng = np.random.default_rng(1)
    out = model(
        text_inputs=["a red circle", "a blue square"],
        image_features=rng.integers(0, 256, (B, SIZE, SIZE, 3), dtype=np.uint8),
        audio_inputs=rng.normal(size=(B, 3000)),  # cropped to num_samples
    )
    assert all(isinstance(v, np.ndarray) for v in out.values())
    assert out["fused"].shape == (B, EMBED) and out["logits"].shape == (B, CLASSES)
    assert out["audio"].shape == (B, EMBED)


def test_create_model_from_py_path_with_arg():
    # params={} skips the init compile; init_params is then traced (not compiled) for shapes.
    model = create_model(f"{REPO / 'configs' / 'base.py'}:tiny", params={})
    assert isinstance(model, Model) and model.params == {}
    assert model.config.variant == "tiny"
    assert set(model.module.encoders) == set(MODALITIES)
    tiny = config_lib.VARIANTS["tiny"]
    assert model.module.encoders["image"]["width"] == tiny["tower"]["width"]
    assert model.module.embed_dim == tiny["embed_dim"]
    params = jax.eval_shape(lambda k: init_params(model.module, model.config, k), jax.random.key(0))
    # configs/base.py gives the image tower a convolutional stem.
    assert params["image"]["stem"]["projection"]["kernel"].shape[-1] == tiny["tower"]["width"]
    assert params["fused_head"]["kernel"].shape == (tiny["fusion"]["width"], tiny["embed_dim"])
    assert params["text"]["token_embed"]["embedding"]["embedding"].shape == (
        ByteTokenizer().vocab_size,
        tiny["tower"]["width"],
    )


def test_create_model_from_small_json(tmp_path):
    path = tmp_path / "text_only.json"
    path.write_text(json.dumps({
        "model": {
            "modalities": ["text"], "embed_dim": 16, "num_classes": 0,
            "text": {"max_length": 8, "width": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32},
        },
        "fusion": {"type": "gated", "width": 16},
        "dtype": "float32",
    }))  # fmt: skip
    model = create_model(str(path))
    out = model(text_inputs=["hi there", "a much longer caption that gets truncated"])
    assert set(out) == {"text", "fused", "fusion_weights", "logit_scale", "logit_bias"}
    assert out["text"].shape == out["fused"].shape == (2, 16)
    np.testing.assert_allclose(out["fusion_weights"]["text"], 1.0)
    with pytest.raises(ValueError, match="no encoder"):
        model(text_inputs="hi", image_features=np.zeros((64, 64, 3), np.uint8))


@pytest.mark.parametrize(
    "overrides,error,field",
    [
        ({"model": {"text": {"widht": 64}}}, KeyError, "'model.text.widht'"),
        ({"fusoin": {"type": "gated"}}, KeyError, "'fusoin'"),
        ({"model": {"text": {"width": 30}}}, ValueError, "config.model.text.width:"),
        ({"model": {"image": {"image_size": 60}}}, ValueError, "config.model.image.image_size:"),
    ],
)
def test_create_model_bad_json_names_the_field(tmp_path, overrides, error, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(overrides))
    with pytest.raises(error, match=re.escape(field)):
        create_model(str(path))


@pytest.fixture(scope="module")
def snippet():
    """Runs the README snippet exactly as written (relative path from the repo root)."""
    import os

    image = np.random.default_rng(0).uniform(size=(64, 64, 3))
    namespace = {"image": image}
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        exec(SNIPPET, namespace)
    finally:
        os.chdir(cwd)
    return namespace


def test_seed_snippet_works_as_written(snippet):
    outputs = snippet["outputs"]
    assert set(outputs) == {"text", "image", "fused", "logit_scale", "logit_bias"}
    for key in ("text", "image", "fused"):
        assert outputs[key].shape == (1, 128) and outputs[key].dtype == np.float32
        assert np.all(np.isfinite(outputs[key]))
    model = snippet["model"]
    assert isinstance(model, Model)
    for leaf in jax.tree.leaves(model.params):  # a real init: unboxed float32 arrays
        assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32
    assert set(model.params) >= {"text", "image", "fusion", "fused_head", "logit_scale"}
    assert "audio" not in model.params and "classifier" not in model.params
    # CLIP's initial temperature, 0.07 (config.model.temperature_init).
    np.testing.assert_allclose(model.params["logit_scale"], -np.log(0.07), rtol=1e-6)


def test_snippet_model_on_batches(snippet):
    model = snippet["model"]
    texts = ["A person riding a horse", "a red circle", "two cats"]
    rng = np.random.default_rng(0)
    images_u8 = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    out_u8 = model(text_inputs=texts, image_features=images_u8)
    for key in ("text", "image", "fused"):
        assert out_u8[key].shape == (3, 128)
    out_float = model(text_inputs=texts, image_features=images_u8.astype(np.float32) / 255)
    np.testing.assert_allclose(out_float["image"], out_u8["image"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_float["text"], out_u8["text"], rtol=1e-6, atol=1e-6)
    other_size = rng.integers(0, 256, (3, 48, 80, 3), dtype=np.uint8)  # resized to 64x64
    out_resized = model(text_inputs=texts, image_features=other_size)
    assert out_resized["image"].shape == (3, 128)
    assert np.all(np.isfinite(out_resized["image"]))
    assert not np.allclose(out_resized["image"], out_u8["image"])


def test_snippet_model_rejects_bad_inputs(snippet):
    model = snippet["model"]
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="no encoder"):
        model(audio_inputs=np.zeros(16000, np.float32))
    with pytest.raises(ValueError, match="no encoder"):
        model(text_inputs="hi", audio_inputs=np.zeros(16000, np.float32))
    with pytest.raises(ValueError, match="disagree on batch size"):
        model(text_inputs=["a", "b"], image_features=np.stack([image] * 3))
    with pytest.raises(ValueError, match="empty"):
        model(text_inputs="", image_features=image)
    with pytest.raises(ValueError, match=re.escape("text_inputs[1]")):
        model(text_inputs=["ok", ""])
    with pytest.raises(ValueError, match="empty list"):
        model(text_inputs=[])
    with pytest.raises(ValueError, match="at least one"):
        model()
    with pytest.raises(ValueError, match=re.escape("[0, 1]")):
        model(image_features=np.full((64, 64, 3), 2.0))


@functools.cache
def built_with_modality_dropout(rate):
    config = small_config("concat")
    config.model.modality_dropout = rate
    module = MultiModalTransformer.from_config(
        config_lib.load_config(config), vocab_size=ByteTokenizer().vocab_size
    )
    return module, built("concat")[1]


def test_modality_dropout_is_off_at_eval():
    module, params = built_with_modality_dropout(0.9)
    batch = make_batch(MODALITIES)
    plain_module, _ = built("concat")
    dropped = module.apply({"params": params}, batch, train=False)
    reference = plain_module.apply({"params": params}, batch, train=False)
    np.testing.assert_array_equal(dropped["fused"], reference["fused"])


def test_modality_dropout_in_training_drops_modalities_but_not_embeddings():
    module, params = built_with_modality_dropout(0.9)
    batch = make_batch(MODALITIES)
    plain_module, _ = built("concat")
    reference = plain_module.apply({"params": params}, batch, train=False)
    fused = [
        module.apply({"params": params}, batch, train=True, rngs={"dropout": jax.random.key(s)})
        for s in range(4)
    ]
    # Per-modality embeddings never see modality dropout; the fusion does.
    for out in fused:
        np.testing.assert_allclose(out["text"], reference["text"], rtol=1e-5, atol=1e-6)
    assert any(np.abs(out["fused"] - reference["fused"]).max() > 1e-4 for out in fused)
    # Each example's fused output is the model's output on some non-empty subset of its
    # modalities, the same subset for every row of that example's inputs.
    by_subset = outputs_by_subset("concat")
    subsets = ["+".join(m) for m in SUBSETS]
    seen = set()
    for out in fused:
        for row in range(B):
            matches = [
                name
                for name in subsets
                if np.allclose(out["fused"][row], by_subset[name]["fused"][row], atol=1e-5)
            ]
            assert matches, f"row {row} matches no subset of modalities"
            seen.update(matches)
    assert any("+" not in name for name in seen)  # at rate 0.9, single modalities occur


def test_modality_dropout_rate_is_validated():
    config = small_config()
    config.model.modality_dropout = 1.0
    with pytest.raises(ValueError, match=r"model\.modality_dropout"):
        config_lib.validate(config)


def test_attribute_heads_predict_from_each_modality_embedding():
    config = small_config("concat")
    config.model.attribute_classes = {"shape": 3, "position": 4}
    config.model.attribute_modalities = {"text": ("shape", "position"), "audio": ("shape",)}
    model = create_model(config_lib.load_config(config))
    outputs = model.apply(make_batch(("text", "audio")))
    shapes = {k: v.shape for k, v in outputs["attribute_logits"].items()}
    assert shapes == {"text/shape": (B, 3), "text/position": (B, 4), "audio/shape": (B, 3)}
    head = model.params["text_position_head"]
    expected = outputs["text"] @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(outputs["attribute_logits"]["text/position"], expected, rtol=1e-5)


def test_attribute_modalities_must_name_known_attributes():
    config = small_config("concat")
    config.model.attribute_modalities = {"text": ("colour",)}
    with pytest.raises(ValueError, match=r"model\.attribute_modalities\.text"):
        config_lib.validate(config)


def test_model_trains_with_local_and_linear_kernels():
    config = small_config("concat")
    config.model.text.attention = "local"
    config.model.audio.attention = "linear"
    config.fusion.attention = "local"
    config.attention.local.radius = 2
    config.attention.local.num_global = 0  # the CLS token sees only its neighbours
    config = config_lib.load_config(config)
    module = MultiModalTransformer.from_config(config, vocab_size=ByteTokenizer().vocab_size)
    _, params = built("concat")  # same param shapes: kernels add no params
    batch = make_batch(MODALITIES)

    def loss(p):
        out = module.apply({"params": p}, batch)
        return jnp.sum(out["fused"] ** 2) + jnp.sum(out["text"] ** 2)

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # The local kernel changes what the text CLS token sees, so its embedding differs.
    dense_module, _ = built("concat")
    dense = dense_module.apply({"params": params}, batch)
    local = module.apply({"params": params}, batch)
    assert np.abs(local["text"] - dense["text"]).max() > 1e-3


def test_raw_inputs_take_the_input_pipelines_eval_path():
    """Model.preprocess and the pipeline's eval preprocessing are the same functions."""
    from mmtx.data.pipeline import make_preprocess

    model = create_model(f"{REPO / 'configs' / 'base.py'}:tiny", params={})
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (45, 80, 3), dtype=np.uint8)
    audio = rng.uniform(-1, 1, 5000).astype(np.float32)
    batch = model.preprocess("a red circle", image, audio, audio_sample_rate=8000)
    example = {"caption": "a red circle", "image": image, "audio": audio}
    reference = make_preprocess(model.config, model.tokenizer, sample_rate=8000)(example)
    for key in ("text", "text_mask", "image", "audio"):
        np.testing.assert_array_equal(batch[key][0], reference[key])
    assert batch["image"].shape[1:3] == (64, 64)  # centre crop of the 64 x 114 resize


SAVE_ON_EIGHT_DEVICES = """
import json, os, sys
from mmtx import config as config_lib
from mmtx.data.tokenizer import create_tokenizer
from mmtx.models import MultiModalTransformer
from mmtx.train import mesh as mesh_lib
from mmtx.train.checkpoint import Checkpointer
from mmtx.train.loop import create_train_state
from mmtx.train.optimizer import create_optimizer

workdir = sys.argv[1]
config = config_lib.apply_variant(config_lib.default_config(), "tiny")
config.mesh.data, config.mesh.fsdp = 2, 4
config = config_lib.validate(config)
mesh = mesh_lib.create_mesh(config.mesh)
tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
module = MultiModalTransformer.from_config(config, vocab_size=tokenizer.vocab_size)
state, _ = create_train_state(module, create_optimizer(config.train), config, mesh)
kernel = state.params["text"]["tower"]["encoder"]["blocks"]["mlp"]["fc1"]["kernel"]
assert len({s.device for s in kernel.addressable_shards}) == 8, kernel.sharding
checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config=config.to_dict())
checkpointer.save(7, state, force=True)
checkpointer.wait()
checkpointer.close()
"""


def test_from_checkpoint_of_a_run_on_eight_devices_in_a_one_device_process(tmp_path):
    """Trained on a pod (data 2 x fsdp 4), used on a laptop: this used to fail with orbax's
    "Topology mismatch", each step reported unreadable."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    result = subprocess.run(
        [sys.executable, "-c", SAVE_ON_EIGHT_DEVICES, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert jax.device_count() == 1
    model = Model.from_checkpoint(tmp_path)
    assert model.step == 7 and model.config.mesh.fsdp == 4
    kernel = model.params["text"]["tower"]["encoder"]["blocks"]["mlp"]["fc1"]["kernel"]
    assert kernel.sharding.num_devices == 1
    assert model(text_inputs=["a red circle"])["text"].shape == (1, 32)


def test_normalize_returns_unit_embeddings_and_leaves_the_rest():
    """Embeddings come un-normalised (norms far from 1); normalize=True divides each by its
    L2 norm and leaves logits and the scalars alone."""
    model = create_model(small_config("concat"), params=built("concat")[1])
    rng = np.random.default_rng(0)
    inputs = dict(
        text_inputs=["a red circle", "cats"],
        image_features=rng.integers(0, 256, (B, SIZE, SIZE, 3), dtype=np.uint8),
        audio_inputs=rng.uniform(-1, 1, (B, SAMPLES)).astype(np.float32),
    )
    raw = model(**inputs)
    unit = model(**inputs, normalize=True)
    assert set(unit) == set(raw)
    for key in ("text", "image", "audio", "fused"):
        norms = np.linalg.norm(raw[key], axis=-1)
        assert np.all(np.abs(norms - 1) > 0.1), (key, norms)
        assert unit[key].shape == (B, EMBED) and unit[key].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(unit[key], axis=-1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(unit[key], raw[key] / norms[:, None], rtol=1e-6, atol=1e-7)
    for key in ("logits", "logit_scale", "logit_bias"):
        np.testing.assert_array_equal(unit[key], raw[key])


class MeanOfPooledFusion(nn.Module):
    """A custom fusion as a user would write one: a projection of the pooled features' mean."""

    width: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features, *, train=False):
        pooled = jnp.mean(jnp.stack([f.pooled for f in features.values()]), axis=0)
        dense = nn.Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype)
        return dense(pooled), {}


def test_from_checkpoint_of_a_custom_fusion_says_to_register_it_first(tmp_path, monkeypatch):
    """A run trained with a registered custom fusion, loaded in a process that has not
    imported the module registering it: the error says to register it; once registered, it
    loads."""
    from mmtx.fusion import FUSION_MODULES, register_fusion
    from mmtx.train.checkpoint import Checkpointer

    monkeypatch.setitem(FUSION_MODULES, "mean_of_pooled", MeanOfPooledFusion)
    config = config_lib.load_config(small_config("mean_of_pooled", modalities=("text",)))
    module = MultiModalTransformer.from_config(config, vocab_size=ByteTokenizer().vocab_size)
    shapes = jax.eval_shape(module.init, jax.random.key(0), dummy_batch(config, 1))
    params = jax.tree.map(lambda s: jnp.full(s.shape, 0.5, s.dtype), nn.meta.unbox(shapes))
    params = params["params"]
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"), config=config.to_dict())
    checkpointer.save(3, {"params": params}, force=True)
    checkpointer.wait()
    checkpointer.close()

    monkeypatch.delitem(FUSION_MODULES, "mean_of_pooled")  # a fresh process: not imported
    with pytest.raises(ValueError) as info:
        Model.from_checkpoint(tmp_path)
    message = str(info.value)
    assert "config.fusion.type: 'mean_of_pooled' is not a registered fusion" in message
    assert "register_fusion('mean_of_pooled', YourModule) before" in message

    register_fusion("mean_of_pooled", MeanOfPooledFusion)  # monkeypatch removes it after
    model = Model.from_checkpoint(tmp_path)
    assert model.step == 3 and model.module.fusion_type == "mean_of_pooled"
    jax.tree.map(np.testing.assert_array_equal, model.params, params)


# ------------------------------------------------------------------ architecture options

# The param tree (path, shape in the tiny variant, shape in the default "small" one) of the
# default config, recorded before the architecture options of issue 17 were added: every
# option's default must keep it exactly (existing checkpoints load unchanged).
DEFAULT_PARAM_TREE = """
audio/patches/projection/bias                     32           128
audio/patches/projection/kernel                   16x16x1x32   16x16x1x128
audio/tower/cls                                   1x1x32       1x1x128
audio/tower/encoder/blocks/attention/key/bias     1x2x16       2x4x32
audio/tower/encoder/blocks/attention/key/kernel   1x32x2x16    2x128x4x32
audio/tower/encoder/blocks/attention/out/bias     1x32         2x128
audio/tower/encoder/blocks/attention/out/kernel   1x2x16x32    2x4x32x128
audio/tower/encoder/blocks/attention/query/bias   1x2x16       2x4x32
audio/tower/encoder/blocks/attention/query/kernel 1x32x2x16    2x128x4x32
audio/tower/encoder/blocks/attention/value/bias   1x2x16       2x4x32
audio/tower/encoder/blocks/attention/value/kernel 1x32x2x16    2x128x4x32
audio/tower/encoder/blocks/mlp/fc1/bias           1x64         2x256
audio/tower/encoder/blocks/mlp/fc1/kernel         1x32x64      2x128x256
audio/tower/encoder/blocks/mlp/fc2/bias           1x32         2x128
audio/tower/encoder/blocks/mlp/fc2/kernel         1x64x32      2x256x128
audio/tower/encoder/blocks/norm1/bias             1x32         2x128
audio/tower/encoder/blocks/norm1/scale            1x32         2x128
audio/tower/encoder/blocks/norm2/bias             1x32         2x128
audio/tower/encoder/blocks/norm2/scale            1x32         2x128
audio/tower/encoder/norm/bias                     32           128
audio/tower/encoder/norm/scale                    32           128
audio_head/bias                                   32           128
audio_head/kernel                                 32x32        128x128
classifier/bias                                   64           64
classifier/kernel                                 32x64        128x64
fused_head/bias                                   32           128
fused_head/kernel                                 32x32        128x128
fused_norm/bias                                   32           128
fused_norm/scale                                  32           128
fusion/audio_projection/bias                      32           128
fusion/audio_projection/kernel                    32x32        128x128
fusion/cls                                        1x1x32       1x1x128
fusion/encoder/blocks/attention/key/bias          1x2x16       1x4x32
fusion/encoder/blocks/attention/key/kernel        1x32x2x16    1x128x4x32
fusion/encoder/blocks/attention/out/bias          1x32         1x128
fusion/encoder/blocks/attention/out/kernel        1x2x16x32    1x4x32x128
fusion/encoder/blocks/attention/query/bias        1x2x16       1x4x32
fusion/encoder/blocks/attention/query/kernel      1x32x2x16    1x128x4x32
fusion/encoder/blocks/attention/value/bias        1x2x16       1x4x32
fusion/encoder/blocks/attention/value/kernel      1x32x2x16    1x128x4x32
fusion/encoder/blocks/mlp/fc1/bias                1x64         1x256
fusion/encoder/blocks/mlp/fc1/kernel              1x32x64      1x128x256
fusion/encoder/blocks/mlp/fc2/bias                1x32         1x128
fusion/encoder/blocks/mlp/fc2/kernel              1x64x32      1x256x128
fusion/encoder/blocks/norm1/bias                  1x32         1x128
fusion/encoder/blocks/norm1/scale                 1x32         1x128
fusion/encoder/blocks/norm2/bias                  1x32         1x128
fusion/encoder/blocks/norm2/scale                 1x32         1x128
fusion/encoder/norm/bias                          32           128
fusion/encoder/norm/scale                         32           128
fusion/image_projection/bias                      32           128
fusion/image_projection/kernel                    32x32        128x128
fusion/modality_embedding                         3x32         3x128
fusion/text_projection/bias                       32           128
fusion/text_projection/kernel                     32x32        128x128
image/patches/projection/bias                     32           128
image/patches/projection/kernel                   8x8x3x32     8x8x3x128
image/posemb/embedding                            64x32        64x128
image/tower/cls                                   1x1x32       1x1x128
image/tower/encoder/blocks/attention/key/bias     1x2x16       2x4x32
image/tower/encoder/blocks/attention/key/kernel   1x32x2x16    2x128x4x32
image/tower/encoder/blocks/attention/out/bias     1x32         2x128
image/tower/encoder/blocks/attention/out/kernel   1x2x16x32    2x4x32x128
image/tower/encoder/blocks/attention/query/bias   1x2x16       2x4x32
image/tower/encoder/blocks/attention/query/kernel 1x32x2x16    2x128x4x32
image/tower/encoder/blocks/attention/value/bias   1x2x16       2x4x32
image/tower/encoder/blocks/attention/value/kernel 1x32x2x16    2x128x4x32
image/tower/encoder/blocks/mlp/fc1/bias           1x64         2x256
image/tower/encoder/blocks/mlp/fc1/kernel         1x32x64      2x128x256
image/tower/encoder/blocks/mlp/fc2/bias           1x32         2x128
image/tower/encoder/blocks/mlp/fc2/kernel         1x64x32      2x256x128
image/tower/encoder/blocks/norm1/bias             1x32         2x128
image/tower/encoder/blocks/norm1/scale            1x32         2x128
image/tower/encoder/blocks/norm2/bias             1x32         2x128
image/tower/encoder/blocks/norm2/scale            1x32         2x128
image/tower/encoder/norm/bias                     32           128
image/tower/encoder/norm/scale                    32           128
image_head/bias                                   32           128
image_head/kernel                                 32x32        128x128
logit_bias                                        ()           ()
logit_scale                                       ()           ()
text/posemb/embedding                             64x32        64x128
text/token_embed/embedding/embedding              259x32       259x128
text/tower/cls                                    1x1x32       1x1x128
text/tower/encoder/blocks/attention/key/bias      1x2x16       2x4x32
text/tower/encoder/blocks/attention/key/kernel    1x32x2x16    2x128x4x32
text/tower/encoder/blocks/attention/out/bias      1x32         2x128
text/tower/encoder/blocks/attention/out/kernel    1x2x16x32    2x4x32x128
text/tower/encoder/blocks/attention/query/bias    1x2x16       2x4x32
text/tower/encoder/blocks/attention/query/kernel  1x32x2x16    2x128x4x32
text/tower/encoder/blocks/attention/value/bias    1x2x16       2x4x32
text/tower/encoder/blocks/attention/value/kernel  1x32x2x16    2x128x4x32
text/tower/encoder/blocks/mlp/fc1/bias            1x64         2x256
text/tower/encoder/blocks/mlp/fc1/kernel          1x32x64      2x128x256
text/tower/encoder/blocks/mlp/fc2/bias            1x32         2x128
text/tower/encoder/blocks/mlp/fc2/kernel          1x64x32      2x256x128
text/tower/encoder/blocks/norm1/bias              1x32         2x128
text/tower/encoder/blocks/norm1/scale             1x32         2x128
text/tower/encoder/blocks/norm2/bias              1x32         2x128
text/tower/encoder/blocks/norm2/scale             1x32         2x128
text/tower/encoder/norm/bias                      32           128
text/tower/encoder/norm/scale                     32           128
text_head/bias                                    32           128
text_head/kernel                                  32x32        128x128
"""


def param_tree(config, vocab_size=259):
    """``{path: shape}`` of the params of ``config``'s model (traced, nothing compiled)."""
    module = MultiModalTransformer.from_config(config_lib.validate(config), vocab_size)
    shapes = jax.eval_shape(module.init, jax.random.key(0), dummy_batch(config, 1))
    flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(shapes["params"]))[0]
    return {"/".join(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def test_default_config_param_tree_is_unchanged():
    def shape(text):
        return () if text == "()" else tuple(int(n) for n in text.split("x"))

    rows = [line.split() for line in DEFAULT_PARAM_TREE.strip().splitlines()]
    tiny = config_lib.apply_variant(config_lib.default_config(), "tiny")
    assert param_tree(tiny) == {path: shape(t) for path, t, _ in rows}
    assert param_tree(config_lib.default_config()) == {path: shape(s) for path, _, s in rows}


def options_config(**tower_options):
    """small_config with ``tower_options`` set on every tower and no fusion."""
    config = small_config()
    config.fusion.type = "none"
    config.model.num_classes = 0
    for modality in MODALITIES:
        config.model[modality].update(tower_options)
    return config


def test_fusion_none_has_no_fusion_params_and_no_fused_output():
    config = options_config()
    tree = param_tree(config)
    assert not any(p.startswith(("fusion/", "fused_", "classifier/")) for p in tree)
    assert {p.split("/")[0] for p in tree} == {
        *MODALITIES, "text_head", "image_head", "audio_head", "logit_scale", "logit_bias"
    }  # fmt: skip
    module = MultiModalTransformer.from_config(config, ByteTokenizer().vocab_size)
    _, params = built("concat")  # the encoders' and heads' params are the same
    params = {k: v for k, v in params.items() if k in {p.split("/")[0] for p in tree}}
    batch = make_batch(MODALITIES)
    out = jax.jit(lambda p: module.apply({"params": p}, batch))(params)
    assert set(out) == {*MODALITIES, "logit_scale", "logit_bias"}
    # The towers' embeddings are those of the fused model with the same params.
    full = outputs_by_subset("concat")["+".join(MODALITIES)]
    for m in MODALITIES:
        np.testing.assert_allclose(out[m], full[m], rtol=1e-5, atol=1e-5)
    # The contrastive loss works without a fused embedding, gradients included.
    from mmtx import losses

    def loss(p):
        return losses.total_loss(module.apply({"params": p}, batch), batch, config.loss)[0]

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value) and value > 0
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert np.abs(grads["text_head"]["kernel"]).max() > 0


def test_fusion_none_trains_a_step_with_microbatches():
    import optax

    from mmtx.train import mesh as mesh_lib
    from mmtx.train.loop import create_train_state
    from mmtx.train.step import make_train_step

    config = options_config()
    config.train.batch_size, config.train.microbatches = 4, 2
    config = config_lib.validate(config)
    module = MultiModalTransformer.from_config(config, ByteTokenizer().vocab_size)
    tx = optax.sgd(0.1)
    state, _ = create_train_state(module, tx, config, mesh_lib.create_mesh(config.mesh))
    batch = jax.tree.map(jnp.asarray, make_batch(MODALITIES, batch=4))
    new_state, metrics = jax.jit(make_train_step(module, tx, config))(state, batch)
    metrics = jax.device_get(metrics)
    assert np.isfinite(metrics["loss"]) and metrics["nonfinite"] == 0
    assert "contrastive_text_image" in metrics
    before, after = state.params["image_head"]["kernel"], new_state.params["image_head"]["kernel"]
    assert np.abs(np.asarray(after) - np.asarray(before)).max() > 0


@pytest.mark.parametrize("projection", ["no_bias", "none"])
def test_projection_options(projection):
    config = options_config(projection=projection)
    config.model.embed_dim = config.model.text.width  # 32 = 32: projection none needs it
    tree = param_tree(config)
    for m in MODALITIES:
        if projection == "no_bias":
            assert tree[f"{m}_head/kernel"] == (32, EMBED) and f"{m}_head/bias" not in tree
        else:
            assert not any(p.startswith(f"{m}_head") for p in tree)
    module = MultiModalTransformer.from_config(config, ByteTokenizer().vocab_size)
    _, params = built("concat")
    params = {k: v for k, v in params.items() if k in {p.split("/")[0] for p in tree}}
    if projection == "no_bias":
        params = {
            k: ({"kernel": v["kernel"]} if k.endswith("_head") else v) for k, v in params.items()
        }
    batch = make_batch(MODALITIES)
    out, inter = jax.jit(lambda p: module.apply({"params": p}, batch, capture_intermediates=True))(
        params
    )
    for m in MODALITIES:
        pooled = inter["intermediates"][m]["tower"]["__call__"][0][1]["pooled"]
        want = pooled if projection == "none" else pooled @ params[f"{m}_head"]["kernel"]
        np.testing.assert_allclose(out[m], want, rtol=1e-5, atol=1e-6)
        assert out[m].dtype == jnp.float32


def test_projection_none_needs_width_equal_to_embed_dim():
    config = options_config(projection="none")
    config.model.embed_dim = 16
    with pytest.raises(ValueError, match=r"^config\.model\.text\.projection: .*embed_dim \(16\)"):
        config_lib.validate(config)


def test_every_new_option_builds_and_runs_end_to_end():
    """CLIP-like text (causal, eot, quick_gelu, pre/final norms), SigLIP-like image (map,
    no patch bias, learned table with class rows), AST-like audio (overlapping patches,
    cls_distill), no projection bias, no fusion: the model runs and every output is finite."""
    config = options_config(activation="quick_gelu", norm_eps=1e-5, projection="no_bias")
    config.model.text.update(pooling="eot", causal=True, pre_norm=False)
    config.model.image.update(pooling="map", patch_bias=False, pre_norm=True)
    config.model.audio.update(
        pooling="cls_distill", patch_stride=(2, 4), class_token_posemb=True,
        position_embedding="learned", final_norm=False,
    )  # fmt: skip
    config = config_lib.validate(config)
    tree = param_tree(config)
    grid = config_lib.audio_patch_grid(config.model.audio)
    assert tree["audio/posemb/embedding"] == (2 + grid[0] * grid[1], 32)
    assert config_lib.tower_tokens(config, "audio") == 2 + grid[0] * grid[1]
    assert "audio/tower/encoder/norm/scale" not in tree and "image/tower/pre_norm/scale" in tree
    model = create_model(config, seed=0)
    out = model(
        text_inputs=["a red circle", "cats"],
        image_features=make_batch(("image",))["image"],
        audio_inputs=make_batch(("audio",))["audio"],
    )
    assert set(out) == {*MODALITIES, "logit_scale", "logit_bias"}
    for m in MODALITIES:
        assert out[m].shape == (B, EMBED) and np.all(np.isfinite(out[m]))


def _implementations(config):
    """{module path: implementation} of every MultiHeadAttention the model builds (traced)."""
    from mmtx.nn import MultiHeadAttention

    module = MultiModalTransformer.from_config(
        config_lib.load_config(config), vocab_size=ByteTokenizer().vocab_size
    )
    seen = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, MultiHeadAttention) and context.method_name == "__call__":
            seen["/".join(context.module.scope.path)] = context.module.implementation
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(module.init, jax.random.key(0), dummy_batch(config, 1))
    return seen


@pytest.mark.parametrize("fusion", FUSION_TYPES)
def test_attention_implementation_reaches_every_attention_layer(fusion):
    """config.attention.implementation reaches each tower's blocks, the MAP head and every
    fusion's self- and cross-attention."""
    config = small_config(fusion)
    config.model.image.pooling = "map"
    if fusion == "none":
        config.model.num_classes = 0
    config.attention.implementation = "xla"
    seen = _implementations(config)
    assert seen and set(seen.values()) == {"xla"}, seen
    for modality in MODALITIES:
        assert f"{modality}/tower/encoder/blocks/attention" in seen, sorted(seen)
    assert "image/tower/map_head/attention" in seen, sorted(seen)
    fusion_paths = [p for p in seen if p.startswith("fusion")]
    if fusion in ("gated", "none"):
        assert not fusion_paths
    else:
        assert fusion_paths, sorted(seen)
    if fusion in ("cross_attention", "perceiver"):
        assert any("cross" in p for p in fusion_paths), fusion_paths


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="auto picks cuDNN on a GPU")
def test_attention_implementation_auto_equals_xla_bit_for_bit_off_gpu():
    _, params = built("concat")
    batch = make_batch(MODALITIES)
    outputs = {}
    for implementation in ("xla", "auto"):
        config = small_config("concat")
        config.attention.implementation = implementation
        module = MultiModalTransformer.from_config(
            config_lib.load_config(config), vocab_size=ByteTokenizer().vocab_size
        )
        outputs[implementation] = jax.jit(module.apply)({"params": params}, batch)
    for key in (*MODALITIES, "fused", "logits"):
        np.testing.assert_array_equal(outputs["auto"][key], outputs["xla"][key], err_msg=key)


# --- per-example absence (present/<modality>) ---------------------------------------------


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_an_absent_input_equals_the_modality_not_being_there(fusion):
    module, params = built(fusion)
    full = make_batch(MODALITIES, batch=3)
    flagged = dict(full, **{"present/audio": np.asarray([True, False, True])})
    run = jax.jit(lambda b: module.apply({"params": params}, b))
    with_flags = run(flagged)
    without_audio = run(make_batch(("text", "image"), batch=3))
    everything = run(full)
    # Example 1 is fused as if it had no audio; examples 0 and 2 as if every input were there.
    np.testing.assert_allclose(with_flags["fused"][1], without_audio["fused"][1], atol=1e-5)
    np.testing.assert_allclose(with_flags["fused"][::2], everything["fused"][::2], atol=1e-5)
    assert np.abs(with_flags["fused"][1] - everything["fused"][1]).max() > 1e-4
    np.testing.assert_array_equal(with_flags["audio"][1], 0.0)
    np.testing.assert_allclose(with_flags["audio"][::2], everything["audio"][::2], atol=1e-6)


def test_presence_flags_are_checked():
    module, params = built("concat")
    batch = make_batch(("text", "image"))
    with pytest.raises(ValueError, match=re.escape("present/image must be bool [2]")):
        module.apply({"params": params}, dict(batch, **{"present/image": np.ones(3, bool)}))
    with pytest.raises(ValueError, match="present/audio but no audio input"):
        module.apply({"params": params}, dict(batch, **{"present/audio": np.ones(2, bool)}))
    nobody = {"present/text": np.asarray([True, False]), "present/image": np.asarray([True, False])}
    with pytest.raises(ValueError, match="example 1 has no modality present"):
        module.apply({"params": params}, dict(batch, **nobody))
    # A NaN in an absent example's filler is not checked (it is never used) ...
    spoiled = dict(batch, image=batch["image"].copy())
    spoiled["image"][1] = np.nan
    module.apply({"params": params}, dict(spoiled, **{"present/image": np.asarray([True, False])}))
    # ... in a present one it is.
    with pytest.raises(ValueError, match=re.escape("image[1] has non-finite values")):
        module.apply({"params": params}, spoiled)


def test_model_takes_none_for_an_absent_input():
    module, params = built("gated")
    config = config_lib.load_config(small_config("gated"))
    model = Model(module=module, params=params, config=config, tokenizer=ByteTokenizer())
    rng = np.random.default_rng(0)
    images = [rng.uniform(size=(SIZE, SIZE, 3)).astype(np.float32) for _ in range(2)]
    batch = model.preprocess(text_inputs=["a red circle", None], image_features=images)
    np.testing.assert_array_equal(batch["present/text"], [True, False])
    assert "present/image" not in batch and batch["text"].shape == (2, MAX_LEN)
    out = model(text_inputs=["a red circle", None], image_features=images)
    alone = model(image_features=images[1:])
    np.testing.assert_allclose(out["fused"][1], alone["fused"][0], atol=1e-5)
    np.testing.assert_array_equal(out["text"][1], 0.0)
    assert out["fusion_weights"].keys() == {"text", "image"}
    # A list of only None drops the modality; a count mismatch is an error.
    assert "text" not in model(text_inputs=[None, None], image_features=images)
    with pytest.raises(ValueError, match="disagree on batch size"):
        model.preprocess(text_inputs=["a", "b", "c"], image_features=images)


# --- tasks: per-task fusion weights -------------------------------------------------------


def test_tasks_have_their_own_fusion_weights_and_heads():
    config = small_config("concat")
    config.model.attribute_classes = {"shape": 4, "colour": 3}
    config.model.tasks = {"shape": "shape", "colour": "colour"}
    config = config_lib.load_config(config)
    module = MultiModalTransformer.from_config(config, vocab_size=ByteTokenizer().vocab_size)
    shapes = jax.eval_shape(module.init, jax.random.key(0), dummy_batch(config, 1))["params"]
    for task in ("shape", "colour"):
        assert nn.meta.unbox(shapes[f"task_{task}_fusion"])["gate_logits"].shape == (3,)
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), s.dtype), nn.meta.unbox(shapes)
    )
    batch = dict(make_batch(MODALITIES), shape=np.asarray([1, 3]), colour=np.asarray([0, 2]))
    outputs = module.apply({"params": params}, batch)
    assert outputs["task_logits"]["shape/shape"].shape == (B, 4)
    assert outputs["task_logits"]["colour/colour"].shape == (B, 3)
    weights = outputs["task_fusion_weights"]
    for task in ("shape", "colour"):
        assert weights[task].keys() == set(MODALITIES)
        np.testing.assert_allclose(sum(weights[task].values()), 1.0, rtol=1e-6)
    # Each task's weights are the softmax of its own gate logits.
    logits = np.asarray(params["task_colour_fusion"]["gate_logits"])
    expected = np.exp(logits) / np.exp(logits).sum()
    got = [weights["colour"][m] for m in MODALITIES]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    config.model.tasks = {"pitch": "pitch"}
    with pytest.raises(ValueError, match=re.escape("config.model.tasks.pitch")):
        config_lib.validate(config)


# --- checkpoints of models made before the modality registry load unchanged ---------------

PARAM_TREES = REPO / "tests" / "fixtures" / "param_trees_0_1.json"


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_param_trees_match_those_before_the_registry(fusion):
    """The param tree (paths and shapes) of configs/base.py:tiny with the two fusions that
    hold per-modality tables, over text, image and audio and over text and image, as commit
    d161cc0 (before mmtx.modalities) made it: checkpoints written then restore into today's
    models. (The other fusions' trees were checked equal too, once, by hand.)"""
    expected = json.loads(PARAM_TREES.read_text())
    for modalities in (("text", "image", "audio"), ("text", "image")):
        config = config_lib.load_config(f"{REPO / 'configs' / 'base.py'}:tiny")
        config.fusion.type, config.model.modalities = fusion, modalities
        config = config_lib.validate(config)
        module = MultiModalTransformer.from_config(config, vocab_size=259)
        shapes = jax.eval_shape(module.init, jax.random.key(0), dummy_batch(config, 1))
        flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(shapes["params"]))[0]
        got = {jax.tree_util.keystr(path): list(leaf.shape) for path, leaf in flat}
        assert got == expected[f"{fusion}/{'+'.join(modalities)}"]


TINY_OUTPUTS = REPO / "tests" / "fixtures" / "tiny_outputs.npz"


def _tiny_outputs_module():
    spec = importlib.util.spec_from_file_location(
        "tiny_outputs", REPO / "tests" / "fixtures" / "tiny_outputs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "fusion", ["concat", "gated", "cross_attention", "bottleneck", "perceiver"]
)
def test_tiny_outputs_and_gradients_are_bit_identical_to_those_before_the_redesign(fusion):
    """configs/base.py:tiny's eval outputs with each fusion, their sum of squares and the
    sha256 of its gradient with respect to the params equal, byte for byte, what commit
    dc664e8 (before issue 30's redesign: one declaration per tower option, the split
    converters and loop) computed: tests/fixtures/tiny_outputs.npz, written by
    tests/fixtures/tiny_outputs.py there."""
    expected = np.load(TINY_OUTPUTS)
    got = _tiny_outputs_module().tiny_outputs(fusion)
    keys = sorted(key for key in expected.files if key.startswith(f"{fusion}/"))
    assert sorted(got) == keys
    for key in keys:
        assert got[key].dtype == expected[key].dtype, key
        assert got[key].shape == expected[key].shape, key
        assert got[key].tobytes() == expected[key].tobytes(), key


def test_finite_in_finite_out():
    """Inputs beyond ±max_abs_input are refused naming the example (they used to give NaN
    embeddings); inputs at the bound embed finitely; an embedding that still comes out
    non-finite is an error naming its cause, never a result."""
    module, params = built("concat")
    config = config_lib.load_config(small_config("concat"))
    model = Model(module=module, params=params, config=config, tokenizer=ByteTokenizer())
    with pytest.raises(ValueError, match=re.escape("audio[0] has values up to 1e+30")):
        model(audio_inputs=np.full(SAMPLES, 1e30, np.float32))
    loud = np.stack([np.zeros(SAMPLES), np.full(SAMPLES, -2e4)]).astype(np.float32)
    with pytest.raises(ValueError, match=re.escape("audio[1] has values up to 2e+04")):
        model(audio_inputs=loud)
    with pytest.raises(ValueError, match=re.escape("image[0] has values up to 1e+05")):
        model.run({"image": np.full((1, SIZE, SIZE, 3), 1e5, np.float32)})
    at_bound = model(
        audio_inputs=np.full(SAMPLES, 1e4, np.float32), image_features=np.ones((SIZE, SIZE, 3))
    )
    assert all(np.isfinite(at_bound[key]).all() for key in ("audio", "image", "fused"))
    assert model.run({"image": np.full((1, SIZE, SIZE, 3), 1e4, np.float32)})["image"].all()

    inputs = {"text_inputs": ["a red circle", "a blue square"]}
    poisoned = jax.tree.map(np.array, params)
    poisoned["text_head"]["kernel"][0, 0] = np.nan
    model_nan = Model(module=module, params=poisoned, config=config, tokenizer=ByteTokenizer())
    with pytest.raises(NonFiniteOutputError, match=r"the text embedding of example\(s\) \[0, 1\] "
                       r"is NaN or inf: the params hold NaN or inf \(1 arrays, first "
                       r"\['text_head'\]\['kernel'\]\)"):  # fmt: skip
        model_nan(**inputs)
    huge = jax.tree.map(np.array, params)
    # Finite, but a layer norm's variance of such tokens overflows float32.
    huge["text"]["token_embed"]["embedding"]["embedding"][:] = np.float32(3e38)
    model_huge = Model(module=module, params=huge, config=config, tokenizer=ByteTokenizer())
    with pytest.raises(NonFiniteOutputError, match="float32 computation overflowed"):
        model_huge(**inputs)


def test_encode_one_modality_at_a_time_with_any_batch_size():
    """CLIP-style calls: texts and images embedded separately, two texts and one image; each
    equals the joint call's embedding of the same example."""
    model = create_model(small_config("concat"), params=built("concat")[1])
    rng = np.random.default_rng(1)
    texts = ["a red circle", "cats"]
    images = rng.integers(0, 256, (B, SIZE, SIZE, 3), dtype=np.uint8)
    clips = rng.uniform(-1, 1, (B, SAMPLES)).astype(np.float32)
    joint = model(text_inputs=texts, image_features=images, audio_inputs=clips)
    text = model.encode_text(texts)
    assert text.shape == (2, EMBED) and text.dtype == np.float32
    np.testing.assert_allclose(text, joint["text"], rtol=1e-5, atol=1e-6)
    one_image = model.encode_image(images[:1], normalize=True)
    assert one_image.shape == (1, EMBED)
    np.testing.assert_allclose(one_image, l2_normalize(joint["image"][:1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.encode_audio(clips), joint["audio"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.encode("text", texts), text)
    with pytest.raises(ValueError, match="inputs disagree on batch size"):
        model(text_inputs=texts, image_features=images[:1])
    with pytest.raises(ValueError, match="this model has no 'video' encoder"):
        model.encode_video(np.zeros((1, 2, SIZE, SIZE, 3), np.uint8))
