"""Tests for mmtx/train/lora.py: adapter shapes and targets, the merge against a hand-computed
low-rank update, step 0 equal to the base model, only adapters changed by training, and
Model.from_checkpoint returning the merged model."""

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmtx import Model
from mmtx import config as config_lib
from mmtx.data.pipeline import create_dataset
from mmtx.data.tokenizer import create_tokenizer
from mmtx.models import MultiModalTransformer, dummy_batch
from mmtx.train import lora as lora_lib
from mmtx.train import mesh as mesh_lib
from mmtx.train import trainable as trainable_lib
from mmtx.train.checkpoint import Checkpointer
from mmtx.train.loop import create_train_state
from mmtx.train.optimizer import create_optimizer
from mmtx.train.step import make_eval_step, make_train_step

B = 8
D, H, M = 32, 2, 64  # the tiny variant's width, heads and MLP width


def tiny_config(rank=4, alpha=8.0, targets=("attention", "mlp"), scan_layers=True, depth=2):
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.modalities = ("text", "image")
    config.model.scan_layers = scan_layers
    config.model.text.depth = config.model.image.depth = depth
    config.model.text.max_length = 8
    config.model.image.image_size = 16
    config.train.batch_size = B
    config.train.warmup_steps = 0
    config.train.learning_rate = 0.01
    config.train.lora.rank = rank
    config.train.lora.alpha = alpha
    config.train.lora.targets = targets
    return config_lib.validate(config)


def module_of(config):
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    return MultiModalTransformer.from_config(config, vocab_size=tokenizer.vocab_size)


def abstract_params(config):
    module = module_of(config)

    def init(rng):
        params = nn.meta.unbox(module.init(rng, dummy_batch(config, 1), train=False)["params"])
        return lora_lib.add_adapters(params, config.train.lora, rng)

    return jax.eval_shape(init, jax.random.key(0))


def flat(params):
    return dict(zip(trainable_lib.param_paths(params), jax.tree.leaves(params), strict=True))


@pytest.mark.parametrize("scan_layers", [True, False], ids=["scanned", "unrolled"])
def test_adapter_shapes_and_count(scan_layers):
    rank, depth = 4, 2
    params = flat(abstract_params(tiny_config(rank, scan_layers=scan_layers, depth=depth)))
    adapters = {p: v.shape for p, v in params.items() if p.startswith("lora/")}
    block = "blocks" if scan_layers else "block_1"
    lead = (depth,) if scan_layers else ()
    kernel = f"lora/image/tower/encoder/{block}/attention"
    # query [D, H, Dh]: D x H*Dh; out [H, Dh, D]: H*Dh x D.
    assert adapters[f"{kernel}/query/kernel/a"] == (*lead, D, rank)
    assert adapters[f"{kernel}/query/kernel/b"] == (*lead, rank, D)
    assert adapters[f"{kernel}/out/kernel/a"] == (*lead, D, rank)
    assert adapters[f"{kernel}/out/kernel/b"] == (*lead, rank, D)
    mlp = f"lora/text/tower/encoder/{block}/mlp"
    assert adapters[f"{mlp}/fc1/kernel/a"] == (*lead, D, rank)
    assert adapters[f"{mlp}/fc1/kernel/b"] == (*lead, rank, M)
    # Per block: q, k, v, out (D + D) * r each, fc1 and fc2 (D + M) * r each; two towers.
    per_block = rank * (4 * (D + D) + 2 * (D + M))
    assert sum(np.prod(s) for s in adapters.values()) == 2 * depth * per_block
    assert len(adapters) == 2 * 6 * 2 * (1 if scan_layers else depth)
    assert not any("fusion" in p for p in adapters)


def test_targets_by_name_or_regex():
    def targets(*names):
        config = tiny_config(targets=names, depth=1)
        params = abstract_params(tiny_config(rank=0, depth=1))
        return lora_lib.target_paths(params, config.train.lora)

    assert targets("query") == [
        "image/tower/encoder/blocks/attention/query/kernel",
        "text/tower/encoder/blocks/attention/query/kernel",
    ]
    assert len(targets("attention")) == 8 and len(targets("mlp", "fc1")) == 4
    assert targets("^fusion/.*/fc1/kernel$") == ["fusion/encoder/blocks/mlp/fc1/kernel"]
    with pytest.raises(ValueError, match="'nothing' matches no param"):
        targets("nothing")
    with pytest.raises(ValueError, match="fc1/bias, which is not a kernel"):
        targets("image/.*/fc1/")


def test_merge_is_the_hand_computed_low_rank_update():
    """x @ merged == x @ W + alpha / r * (x @ A) @ B, per layer, for a scanned query kernel
    [L, D, H, Dh] (in = D), a scanned out kernel [L, H, Dh, D] (in = H * Dh) and an unrolled
    fc1 [D, M]."""
    rng = np.random.default_rng(0)
    L, Dh, r, scale = 2, 4, 3, 0.5
    query = "text/tower/encoder/blocks/attention/query/kernel"
    out = "text/tower/encoder/blocks/attention/out/kernel"
    fc1 = "text/tower/encoder/block_0/mlp/fc1/kernel"
    shapes = {query: (L, 8, H, Dh), out: (L, H, Dh, 8), fc1: (8, 16)}
    kernels = {p: rng.normal(size=s).astype(np.float32) for p, s in shapes.items()}
    lora = ml_collections.ConfigDict({"rank": r, "alpha": 1.0, "targets": ("query", "out", "fc1")})
    nested = {}
    for path, value in kernels.items():
        node = nested
        for key in path.split("/")[:-1]:
            node = node.setdefault(key, {})
        node["kernel"] = jnp.asarray(value)
    with_adapters = lora_lib.add_adapters(nested, lora, jax.random.key(0))
    adapters = {
        k: rng.normal(size=v.shape).astype(np.float32)
        for k, v in flat(with_adapters).items()
        if k.startswith("lora/")
    }
    params = jax.tree_util.tree_map_with_path(
        lambda p, v: adapters.get(trainable_lib.path_string(p), v), with_adapters
    )
    merged = flat(lora_lib.merge_lora(params, scale))
    assert "lora" not in lora_lib.merge_lora(params, scale)

    def check(path, w, merged_w, a, b, fan_in):
        x = rng.normal(size=(5, fan_in))
        want = x @ w.reshape(fan_in, -1) + scale * (x @ a) @ b
        np.testing.assert_allclose(x @ merged_w.reshape(fan_in, -1), want, rtol=1e-5, atol=1e-5)

    for path, fan_in in ((query, 8), (out, H * Dh)):
        for layer in range(L):
            a, b = adapters[f"lora/{path}/a"][layer], adapters[f"lora/{path}/b"][layer]
            check(path, kernels[path][layer], merged[path][layer], a, b, fan_in)
    check(fc1, kernels[fc1], merged[fc1], adapters[f"lora/{fc1}/a"], adapters[f"lora/{fc1}/b"], 8)


@functools.cache
def batch():
    config = tiny_config()
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    data = create_dataset(config, "train", tokenizer, batch_size=B, train=True)
    return jax.tree.map(jnp.asarray, next(iter(data)))


@pytest.fixture(scope="module")
def trained():
    """A LoRA run's initial and 2-step states (host copies), its module and config."""
    config = tiny_config()
    module = module_of(config)
    tx = create_optimizer(config.train)
    state, _ = create_train_state(module, tx, config, mesh_lib.create_mesh(config.mesh))
    initial = jax.device_get(state)
    step = jax.jit(make_train_step(module, tx, config))
    for _ in range(2):
        state, metrics = step(state, batch())
        assert metrics["nonfinite"] == 0
    return config, module, initial, jax.device_get(state)


def test_step_zero_is_the_base_model_exactly(trained):
    config, module, initial, _ = trained
    base = {k: v for k, v in initial.params.items() if k != "lora"}
    with_adapters = jax.jit(make_eval_step(module, config))(initial.params, batch())
    plain = jax.jit(make_eval_step(module))(base, batch())
    for key, value in plain.items():
        np.testing.assert_array_equal(with_adapters[key], value, err_msg=key)


def test_training_changes_only_the_adapters(trained):
    config, _, initial, final = trained
    before, after = flat(initial.params), flat(final.params)
    for path, value in after.items():
        if path.startswith("lora/"):  # B moves at step 1; A at step 2 (its gradient is 0 @ B)
            assert not np.array_equal(value, before[path]), path
        else:
            assert value.tobytes() == before[path].tobytes(), path
    # Adam's moments for the adapters only.
    adapters = sum(v.size for p, v in after.items() if p.startswith("lora/"))
    mask = trainable_lib.trainable_mask(final.params, config.train)
    assert trainable_lib.count(final.params, mask) == adapters
    moments = sum(x.size for x in jax.tree.leaves(final.opt_state) if x.ndim > 0)
    assert moments == 2 * adapters


def test_from_checkpoint_returns_the_merged_model_with_the_adapter_models_outputs(
    trained, tmp_path
):
    config, module, _, final = trained
    workdir = str(tmp_path)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config=config.to_dict())
    checkpointer.save(2, final, force=True)
    checkpointer.wait()
    checkpointer.close()
    model = Model.from_checkpoint(workdir)
    assert "lora" not in model.params
    want = flat(lora_lib.merge_lora(final.params, lora_lib.scale(config.train.lora)))
    for path, value in flat(model.params).items():
        np.testing.assert_array_equal(value, want[path], err_msg=path)
    query = "text/tower/encoder/blocks/attention/query/kernel"
    assert not np.array_equal(want[query], flat(final.params)[query])  # the adapters count
    merged_outputs = model.run(jax.device_get(batch()))
    adapter_outputs = jax.jit(make_eval_step(module, config))(final.params, batch())
    for key in ("text", "image", "fused"):
        np.testing.assert_allclose(
            merged_outputs[key], adapter_outputs[key], rtol=1e-5, atol=1e-6, err_msg=key
        )
