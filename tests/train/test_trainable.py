"""Tests for mmtx/train/trainable.py and the freezing in the train step: which params train,
frozen params bit-identical after steps (also with microbatches), gradients of the trainable
ones as without freezing."""

import functools
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmtx import config as config_lib
from mmtx.data.pipeline import create_dataset
from mmtx.data.tokenizer import create_tokenizer
from mmtx.models import MultiModalTransformer
from mmtx.train import mesh as mesh_lib
from mmtx.train import trainable as trainable_lib
from mmtx.train.loop import abstract_train_state, create_train_state
from mmtx.train.optimizer import create_optimizer
from mmtx.train.step import make_train_step

B = 8
REPO = pathlib.Path(__file__).resolve().parents[2]


def tiny_config(microbatches=1, **train):
    """Text + image, one block per tower: the smallest model with every kind of param."""
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.modalities = ("text", "image")
    config.model.text.max_length = 8
    config.model.image.image_size = 16
    config.train.batch_size = B
    config.train.microbatches = microbatches
    config.train.warmup_steps = 0
    config.train.learning_rate = 0.01
    config.train.weight_decay = 0.1
    config.train.update(train)
    return config_lib.validate(config)


def paths_of(config):
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    module = MultiModalTransformer.from_config(config, vocab_size=tokenizer.vocab_size)
    tx = create_optimizer(config.train)
    abstract, _ = abstract_train_state(module, tx, config, mesh_lib.create_mesh(config.mesh))
    return abstract


def flags(config, params):
    mask = trainable_lib.trainable_mask(params, config.train)
    return dict(zip(trainable_lib.param_paths(params), jax.tree.leaves(mask), strict=True))


def test_path_strings_join_keys_with_slashes():
    tree = {"a": {"b": [np.zeros(1), {"c": np.zeros(2)}]}}
    assert trainable_lib.param_paths(tree) == ["a/b/0", "a/b/1/c"]


def test_trainable_and_frozen_select_by_regex_as_big_vision():
    params = {
        "image": {"tower": {"w": 0}, "posemb": {"embedding": 0}},
        "image_head": {"kernel": 0},
        "text": {"tower": {"w": 0}},
        "logit_scale": 0,
    }

    def trained(**train):
        config = tiny_config(**train)
        return sorted(p for p, t in flags(config, params).items() if t)

    everything = ["image/posemb/embedding", "image/tower/w", "image_head/kernel", "logit_scale"]
    everything.append("text/tower/w")
    assert trained() == everything
    assert trained(frozen=("^image/",)) == ["image_head/kernel", "logit_scale", "text/tower/w"]
    assert trained(frozen=("^image/", "^image_head/")) == ["logit_scale", "text/tower/w"]
    assert trained(trainable=("^text/", "logit")) == ["logit_scale", "text/tower/w"]
    # frozen wins over trainable
    assert trained(trainable=("^image",), frozen=("posemb",)) == [
        "image/tower/w",
        "image_head/kernel",
    ]


def test_lora_freezes_the_base_and_keeps_trainable_matches():
    params = {"text": {"w": 0}, "text_head": {"kernel": 0}, "lora": {"text": {"w": {"a": 0}}}}
    config = tiny_config()
    config.train.lora.rank = 2
    assert flags(config, params) == {
        "lora/text/w/a": True,
        "text/w": False,
        "text_head/kernel": False,
    }
    config.train.trainable = ("_head/",)
    assert flags(config, params)["text_head/kernel"]


@pytest.mark.parametrize(
    "train,message",
    [
        ({"frozen": ("^imag/",)}, r"config\.train\.frozen: '\^imag/' matches no param.*image/"),
        ({"trainable": ("nothing",)}, r"config\.train\.trainable: 'nothing' matches no param"),
        ({"frozen": (".",)}, r"no param is trainable"),
    ],
)
def test_selections_that_select_nothing_fail(train, message):
    config = tiny_config(**train)
    with pytest.raises(ValueError, match=message):
        trainable_lib.trainable_mask(paths_of(config).params, config.train)


def test_split_and_combine_are_inverse():
    params = {"a": np.ones(2), "b": {"c": np.zeros(3), "d": np.full(1, 2.0)}}
    mask = {"a": True, "b": {"c": False, "d": True}}
    trainable, frozen = trainable_lib.split(params, mask)
    assert trainable["b"]["c"] is None and frozen["a"] is None
    assert jax.tree.leaves(trainable_lib.combine(trainable, frozen)) == jax.tree.leaves(params)
    assert trainable_lib.count(params, mask) == 3 and trainable_lib.count(params) == 6


def opt_state_bytes(config):
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(paths_of(config).opt_state))


def test_frozen_params_get_no_optimizer_state():
    abstract = paths_of(tiny_config())
    image = sum(
        leaf.size * 4
        for path, leaf in zip(
            trainable_lib.param_paths(abstract.params),
            jax.tree.leaves(abstract.params),
            strict=True,
        )
        if path.startswith("image/")
    )
    full = opt_state_bytes(tiny_config())
    frozen = opt_state_bytes(tiny_config(frozen=("^image/",)))
    # Adam's two moments per param: exactly two image towers' worth less.
    assert full - frozen == 2 * image


@functools.cache
def batch():
    config = tiny_config()
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    data = create_dataset(config, "train", tokenizer, batch_size=B, train=True)
    return jax.tree.map(jnp.asarray, next(iter(data)))


def train(config, steps, tx=None):
    """``steps`` train steps of ``config`` from its seed: (initial params, final state,
    metrics of each step), all on the host."""
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    module = MultiModalTransformer.from_config(config, vocab_size=tokenizer.vocab_size)
    tx = tx or create_optimizer(config.train)
    state, _ = create_train_state(module, tx, config, mesh_lib.create_mesh(config.mesh))
    # A frozen -0.0 must stay -0.0 (p + 0 would make it +0.0).
    state = state.replace(
        params={**state.params, "logit_bias": jnp.asarray(-0.0, jnp.float32)}
        if "logit_bias" in state.params
        else state.params
    )
    initial = jax.device_get(state.params)
    step = jax.jit(make_train_step(module, tx, config))
    metrics = []
    for _ in range(steps):
        state, m = step(state, batch())
        metrics.append(jax.device_get(m))
    return initial, jax.device_get(state), metrics


def by_path(params):
    return dict(zip(trainable_lib.param_paths(params), jax.tree.leaves(params), strict=True))


@pytest.mark.parametrize("microbatches", [1, 2])
def test_frozen_params_are_bit_identical_after_training(microbatches):
    config = tiny_config(microbatches, frozen=("^image/", "^logit_bias$"))
    initial, state, metrics = train(config, steps=2)
    assert all(m["nonfinite"] == 0 for m in metrics)
    before, after = by_path(initial), by_path(state.params)
    assert np.signbit(after["logit_bias"])  # -0.0 kept
    moved = 0
    for path, value in after.items():
        if path.startswith("image/") or path == "logit_bias":
            # bit for bit, despite weight decay 0.1 on kernels
            assert value.tobytes() == before[path].tobytes(), path
        else:
            moved += not np.array_equal(value, before[path])
    assert moved >= len(after) - 30  # the trainable ones moved (a few zero-gradient ones not)


def test_trainable_gradient_is_the_unfrozen_one_and_grad_norm_its_norm():
    """With SGD(1) the update is minus the gradient: the trainable params move exactly as
    without freezing, and grad_norm is the norm over the trainable params only."""
    sgd = optax.sgd(1.0)
    frozen_config = tiny_config(frozen=("^image/",))
    initial, frozen_state, frozen_metrics = train(frozen_config, 1, sgd)
    _, full_state, full_metrics = train(tiny_config(), 1, sgd)
    before, with_frozen, without = (
        by_path(initial),
        by_path(frozen_state.params),
        by_path(full_state.params),
    )
    squares = 0.0
    for path, value in with_frozen.items():
        if path.startswith("image/"):
            continue
        # An element near zero is the difference of terms of the tensor's own magnitude, so its
        # round-off is relative to that magnitude (the two runs compile different programs).
        atol = max(1e-7, 1e-6 * float(np.abs(without[path]).max()))
        np.testing.assert_allclose(value, without[path], rtol=1e-5, atol=atol, err_msg=path)
        squares += float(np.sum((before[path].astype(np.float64) - without[path]) ** 2))
    np.testing.assert_allclose(frozen_metrics[0]["grad_norm"], np.sqrt(squares), rtol=1e-4)
    assert frozen_metrics[0]["grad_norm"] < full_metrics[0]["grad_norm"]


def test_on_an_eight_device_mesh_init_from_keeps_shardings_and_frozen_params_stay_put():
    """tests/train/finetune_worker.py on 8 simulated devices, mesh (2, 2, 2), 2 microbatches."""
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "train" / "finetune_worker.py")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["loaded_equal"] and facts["loaded_shardings_kept"] and facts["fc1_sharded"]
    assert facts["moment_sharded_as_param"]  # Adam's moments sharded as their params
    assert facts["image_moments"] == 0  # none for the frozen image tower
    assert facts["finite"] and facts["frozen_identical"]
    assert facts["trainable_moved"] >= facts["trainable"] - 3
