"""Tests for mmtx/checkpoints/layout.py's torch-encoder helpers: each is the composition the
families wrote out before (count_layers / encoder_params of torch_blocks and layer_norm)."""

from __future__ import annotations

import numpy as np

from mmtx.checkpoints import layout
from mmtx.checkpoints.tensors import Missing, TensorSource

WIDTH, HEADS, MLP, DEPTH = 4, 2, 8, 3
NAMES = {
    "norm1": "ln_1",
    "norm2": "ln_2",
    "query": "attn.q",
    "key": "attn.k",
    "value": "attn.v",
    "out": "attn.o",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
}
SHAPES = {
    "ln_1.weight": (WIDTH,),
    "ln_1.bias": (WIDTH,),
    "ln_2.weight": (WIDTH,),
    "ln_2.bias": (WIDTH,),
    **{f"attn.{p}.weight": (WIDTH, WIDTH) for p in "qkvo"},
    **{f"attn.{p}.bias": (WIDTH,) for p in "qkvo"},
    "mlp.fc1.weight": (MLP, WIDTH),
    "mlp.fc1.bias": (MLP,),
    "mlp.fc2.weight": (WIDTH, MLP),
    "mlp.fc2.bias": (WIDTH,),
}


def fake_source(depth: int = DEPTH) -> TensorSource:
    """A tiny torch encoder's state dict: ``depth`` blocks under ``enc.layer.``, norm ``enc.ln``."""
    rng = np.random.default_rng(0)
    tensors = {
        f"enc.layer.{i}.{name}": rng.normal(size=shape).astype(np.float32)
        for i in range(depth)
        for name, shape in SHAPES.items()
    }
    tensors["enc.ln.weight"] = rng.normal(size=(WIDTH,)).astype(np.float32)
    tensors["enc.ln.bias"] = rng.normal(size=(WIDTH,)).astype(np.float32)
    return TensorSource(tensors, family="fake")


def assert_trees_equal(got, want):
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want)
        for key in want:
            assert_trees_equal(got[key], want[key])
    else:
        assert type(got) is type(want)
        if isinstance(want, Missing):
            assert got.name == want.name
        else:
            np.testing.assert_array_equal(got, want)


def test_torch_depth_counts_the_blocks_by_their_first_norm():
    source = fake_source()
    assert layout.torch_depth(source, "enc.layer.", NAMES) == DEPTH
    assert layout.torch_depth(source, "enc.layer.", NAMES) == layout.count_layers(
        source, "enc.layer.{}.ln_1.weight"
    )
    assert layout.torch_depth(source, "other.layer.", NAMES) == 0
    del source.tensors["enc.layer.1.ln_1.weight"]  # the count stops at the first gap in norm1
    assert layout.torch_depth(source, "enc.layer.", NAMES) == 1


def test_torch_encoder_is_encoder_params_of_torch_blocks_and_the_final_norm():
    got = layout.torch_encoder(fake_source(), "enc.layer.", DEPTH, NAMES, HEADS, "enc.ln")
    source = fake_source()
    want = layout.encoder_params(
        layout.torch_blocks(source, "enc.layer.", DEPTH, NAMES, HEADS),
        layout.layer_norm(source, "enc.ln"),
    )
    assert_trees_equal(got, want)
    assert got["blocks"]["attention"]["query"]["kernel"].shape == (DEPTH, WIDTH, HEADS, 2)
    assert got["norm"]["scale"].shape == (WIDTH,)


def test_torch_encoder_leaves_a_missing_tensor_missing():
    source = fake_source()
    del source.tensors["enc.ln.bias"]
    got = layout.torch_encoder(source, "enc.layer.", DEPTH, NAMES, HEADS, "enc.ln")
    assert isinstance(got["norm"]["bias"], Missing)
    assert source.missing == ["enc.ln.bias"]
