"""The modality registry (mmtx.modalities): a toy fifth modality, registered here alone,
goes through the config, the model, the losses and two train steps."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mmtx import config as config_lib
from mmtx.data.tokenizer import ByteTokenizer
from mmtx.encoders import Tower, TowerOptions
from mmtx.modalities import (
    ModalitySpec,
    fusion_order,
    get_modality,
    modality_names,
    register_modality,
    unregister_modality,
)
from mmtx.models import MultiModalTransformer, dummy_batch
from mmtx.nn.options import options
from mmtx.train import mesh as mesh_lib
from mmtx.train.loop import create_train_state
from mmtx.train.step import make_train_step

B, FEATURES = 4, 6


class SensorEncoder(TowerOptions):
    """A reading of ``num_features`` floats ``[B, F]``: each value a token (a learned
    embedding scaled by it, plus a learned position), then a :class:`Tower`."""

    num_features: int
    width: int

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False):
        value = self.param("value", nn.initializers.normal(1.0), (self.width,))
        position = self.param(
            "position", nn.initializers.normal(0.02), (self.num_features, self.width)
        )
        tokens = (x[..., None] * value + position).astype(self.dtype)
        return Tower(**options(self, TowerOptions), name="tower")(tokens, None, train=train)


class SensorSpec(ModalitySpec):
    name = "sensor"
    raw_input = "sensor_inputs"
    example_key = "sensor"
    poolings = ("mean", "cls")
    description = "sensor readings"

    def default_config(self) -> ml_collections.ConfigDict:
        g = ml_collections.ConfigDict()
        g.num_features = FEATURES
        g.width, g.depth, g.num_heads, g.mlp_dim = 32, 1, 2, 64
        g.attention = "dense"
        g.pooling = "mean"
        g.position_embedding = "learned"
        g.activation = "gelu_tanh"
        g.norm_eps = 1e-6
        g.projection = "dense"
        return g

    def encoder_fields(self, group, vocab_size):
        fields = super().encoder_fields(group, vocab_size)
        fields.pop("position_embedding")
        return fields

    def num_tokens(self, group) -> int:
        return group.num_features

    def encoder_class(self):
        return SensorEncoder

    def dummy_input(self, group, batch_size):
        return {"sensor": jnp.zeros((batch_size, group.num_features), jnp.float32)}

    def from_raw(self, inputs, *, config, tokenizer, **options):
        return {"sensor": np.asarray(inputs, np.float32).reshape(-1, FEATURES)}


@pytest.fixture
def sensor():
    spec = register_modality(SensorSpec())
    yield spec
    unregister_modality("sensor")


def sensor_config():
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.modalities = ("text", "sensor")
    config.model.text.max_length = 8
    config.model.num_classes = 3
    config.fusion.type = "gated"
    config.train.batch_size = B
    config.train.warmup_steps = 0
    return config_lib.validate(config)


def sensor_batch():
    rng = np.random.default_rng(0)
    text, mask = ByteTokenizer()(["hot", "cold", "warm", "cool"], 8)
    return {
        "text": text,
        "text_mask": mask,
        "sensor": rng.normal(size=(B, FEATURES)).astype(np.float32),
        "label": np.asarray([0, 1, 2, 0], np.int32),
    }


def test_registered_modality_joins_config_and_fusion_order(sensor):
    assert modality_names()[-1] == "sensor" and get_modality("sensor") is sensor
    config = config_lib.default_config()
    assert config.model.sensor.num_features == FEATURES
    assert "sensor" in config.data.features
    assert fusion_order(("text", "sensor")) == ("text", "sensor")
    assert fusion_order(("text", "audio")) == ("text", "image", "audio")  # the legacy rows
    config = sensor_config()
    assert config_lib.tower_tokens(config, "sensor") == FEATURES  # mean pooling: no CLS
    config.model.sensor.pooling = "map"
    with pytest.raises(ValueError, match=r"config\.model\.sensor\.pooling"):
        config_lib.validate(config)


def test_registry_rejects_duplicates_and_reserved_names(sensor):
    with pytest.raises(ValueError, match="already registered"):
        register_modality(SensorSpec())
    fused = SensorSpec()
    fused.name = "fused"
    with pytest.raises(ValueError, match="reserved"):
        register_modality(fused)
    with pytest.raises(ValueError, match="unknown modality 'smell'"):
        get_modality("smell")


def test_unregistered_modality_is_unknown_to_the_config():
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    assert "sensor" not in config.model
    config.model.modalities = ("text", "sensor")
    with pytest.raises((ValueError, KeyError)):
        config_lib.validate(config)


def test_toy_modality_trains_two_steps(sensor):
    config = sensor_config()
    module = MultiModalTransformer.from_config(config, vocab_size=ByteTokenizer().vocab_size)
    assert set(dummy_batch(config, 2)) == {"text", "text_mask", "sensor"}
    tx = optax.adam(1e-2)
    mesh = mesh_lib.create_mesh(config.mesh)
    state, _ = create_train_state(module, tx, config, mesh)
    assert state.params["sensor"]["value"].shape == (32,)
    assert state.params["fusion"]["gate_logits"].shape == (2,)  # rows: text, sensor
    step = jax.jit(make_train_step(module, tx, config))
    batch = jax.tree.map(jnp.asarray, sensor_batch())
    losses = []
    for _ in range(2):
        before = state.params["sensor"]["value"]
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
        assert not np.allclose(state.params["sensor"]["value"], before)
    assert {"contrastive_text_sensor", "classification"} <= set(metrics)
    assert all(np.isfinite(losses)) and losses[1] < losses[0]
    outputs = module.apply({"params": state.params}, batch)
    assert outputs["sensor"].shape == (B, config.model.embed_dim)
    assert set(outputs["fusion_weights"]) == {"text", "sensor"}
