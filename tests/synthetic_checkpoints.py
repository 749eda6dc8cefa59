"""Random checkpoints with a family's tensor names and shapes, made in numpy (for the
importer's error paths; tests/checkpoints/fixtures holds the peer-made ones)."""

from __future__ import annotations

import numpy as np


def open_clip_state_dict(
    width: int = 64,
    layers: int = 1,
    vocab: int = 300,
    context: int = 12,
    patch: int = 8,
    grid: int = 4,
    embed: int = 32,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """An OpenAI-style CLIP state dict (open_clip's names), random float32 values."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}

    def tensor(name: str, *shape: int) -> None:
        state[name] = rng.normal(0.0, 0.1, shape).astype(np.float32)

    tensor("token_embedding.weight", vocab, width)
    tensor("positional_embedding", context, width)
    tensor("text_projection", width, embed)
    tensor("ln_final.weight", width)
    tensor("ln_final.bias", width)
    state["logit_scale"] = np.asarray(np.log(100.0), np.float32)
    for tower in ("", "visual."):
        for i in range(layers):
            p = f"{tower}transformer.resblocks.{i}."
            for norm in ("ln_1", "ln_2"):
                tensor(f"{p}{norm}.weight", width)
                tensor(f"{p}{norm}.bias", width)
            tensor(f"{p}attn.in_proj_weight", 3 * width, width)
            tensor(f"{p}attn.in_proj_bias", 3 * width)
            tensor(f"{p}attn.out_proj.weight", width, width)
            tensor(f"{p}attn.out_proj.bias", width)
            tensor(f"{p}mlp.c_fc.weight", 4 * width, width)
            tensor(f"{p}mlp.c_fc.bias", 4 * width)
            tensor(f"{p}mlp.c_proj.weight", width, 4 * width)
            tensor(f"{p}mlp.c_proj.bias", width)
    tensor("visual.conv1.weight", width, 3, patch, patch)
    tensor("visual.class_embedding", width)
    tensor("visual.positional_embedding", grid * grid + 1, width)
    tensor("visual.proj", width, embed)
    for norm in ("ln_pre", "ln_post"):
        tensor(f"visual.{norm}.weight", width)
        tensor(f"visual.{norm}.bias", width)
    return state
