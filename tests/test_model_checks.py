"""The checks a config meets where the model is resolved from it (mmtx.model_checks): a
registered fusion and an attention implementation the target platform can run. They left
mmtx.config.validate (issue 30: the config layer is data), so validation passes these
configs and building the model refuses them, before anything is traced."""

from __future__ import annotations

import jax
import pytest
from helpers import set_dotted
from helpers import tiny_config as tiny

import mmtx
from mmtx import config as config_lib
from mmtx.model_checks import attention_kernel_uses, check_runnable
from mmtx.models import MultiModalTransformer


@pytest.mark.parametrize("fusion_type", ["bogus", "my_fusion", "nothing"])
def test_unregistered_fusion_type_says_to_register_it(fusion_type):
    """A config naming a fusion that this process has not registered (its module not
    imported) validates as data; building the model says so, and how to fix it, instead of
    only listing the built-in types."""
    config = tiny()
    config.fusion.type = fusion_type
    config_lib.validate(config)
    with pytest.raises(ValueError) as info:
        MultiModalTransformer.from_config(config, vocab_size=260)
    message = str(info.value)
    assert message.startswith(f"config.fusion.type: {fusion_type!r} is not a registered fusion")
    assert f"mmtx.fusion.register_fusion({fusion_type!r}, YourModule)" in message
    assert "import the module that registers it" in message and "'concat'" in message
    assert "'none' for none" in message


@pytest.mark.parametrize("fusion_type", ["concat", "gated", "perceiver", "none"])
def test_registered_and_no_fusion_pass(fusion_type):
    config = tiny()
    config.fusion.type = fusion_type
    if fusion_type == "none":
        config.model.num_classes = 0
    check_runnable(config)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="cuDNN can run on a GPU")
def test_cudnn_attention_off_gpu_fails_with_the_reason():
    config = tiny()
    config.attention.implementation = "cudnn"
    config_lib.validate(config)  # data: a choice among the implementations
    with pytest.raises(ValueError) as error:
        check_runnable(config)
    message = str(error.value)
    assert message.startswith("config.attention.implementation: 'cudnn' in model.")
    assert "cuDNN flash attention needs a GPU backend" in message and "\n" not in message
    # And so does building a model from it, before anything compiles.
    with pytest.raises(ValueError, match="needs a GPU backend"):
        mmtx.create_model(config)
    # For a GPU target, named explicitly (what python -m mmtx.compile does), it can run.
    config.dtype = "bfloat16"
    check_runnable(config, platform="gpu")


def test_pallas_attention_is_checked_against_the_platform_named():
    config = tiny()
    config.model.modalities = ("text", "image")
    for group in (config.model.text, config.model.image, config.fusion):
        group.attention = "local"
    config.attention.implementation = "pallas"
    check_runnable(config, platform="tpu")
    with pytest.raises(ValueError, match=r"'pallas' in model.text: .*needs a TPU backend"):
        check_runnable(config, platform="cpu")


@pytest.mark.parametrize(
    "field,value,reason",
    [
        ("dtype", "float32", "compute dtype; got float32"),
        ("model.text.attention", "local", "'cudnn' in model.text: .*only the dense kernel"),
        ("fusion.cross_attention", "linear", "'cudnn' in fusion: .*only the dense kernel"),
        ("model.image.num_heads", 8, "'cudnn' in model.image: .*multiple of 8; got 4"),
    ],
)
def test_cudnn_attention_checks_dtype_kernels_and_head_dims(monkeypatch, field, value, reason):
    """A GPU is faked: the check decides before any model is built."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    config = tiny()
    config.fusion.type = "perceiver"
    config.model.text.width = config.model.image.width = config.model.audio.width = 64
    config.fusion.width = 64
    config.attention.implementation = "cudnn"
    config.dtype = "bfloat16"
    check_runnable(config)  # head dim 32, bf16, dense: cuDNN can run
    set_dotted(config, field, value)
    if field == "model.image.num_heads":
        config.model.image.width = 32
    with pytest.raises(ValueError, match=reason):
        check_runnable(config)


def test_attention_kernel_uses_lists_every_tower_and_the_fusion_kernels():
    config = tiny()
    config.model.modalities = ("text", "image")
    config.model.image.pooling = "map"
    config.model.text.attention = "linear"
    config.fusion.type = "perceiver"
    config.fusion.cross_attention = "linear"
    uses = [(name, kernels) for name, _, kernels in attention_kernel_uses(config)]
    assert uses == [
        ("model.text", ("linear",)),
        ("model.image", ("dense", "dense")),
        ("fusion", ("dense", "linear")),
    ]
    config.fusion.type = "gated"  # no attention in the fusion
    assert attention_kernel_uses(config)[-1][2] == ()
