"""Writes the checkpoint-import reference fixtures of tests/checkpoints/fixtures/ (issue 17).

For each checkpoint family mmtx imports, a tiny randomly initialised model is built with the
peer library itself (open_clip, HF transformers, timm), every parameter is perturbed so that no
tensor is trivially zero or one, the weights are saved in the family's own file format, and the
peer's embeddings on fixed inputs are saved next to them. The test suite then compares mmtx's
imported model with those numbers without needing torch.

Run with the peer environment (benchmarks/peers/setup_peers.sh), from anywhere:
    benchmarks/peers/.venv-peers/bin/python benchmarks/peers/make_import_fixtures.py
Everything runs on the CPU in float32 with fixed seeds and one thread; a rerun rewrites every
file byte for byte (the .npz files are written with fixed zip timestamps).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import safetensors
import safetensors.torch
import timm
import torch
import transformers
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.convert import load_big_vision_weights
from open_clip.model import CLIP, CustomTextCLIP, resize_pos_embed
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    ASTModel,
    CLIPConfig,
    CLIPModel,
    SiglipConfig,
    SiglipModel,
)
from transformers.core_model_loading import revert_weight_conversion

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "checkpoints" / "fixtures"

# Tiny shapes shared by the image/text families (different widths per tower and a separate
# embedding width catch transposed or swapped tensors).
BATCH = 3
IMAGE_SIZE = 32  # 4 x 4 grid of 8 x 8 patches
PATCH = 8
RESAMPLED_IMAGE_SIZE = 48  # 6 x 6 grid, for the resampled position embedding case
VISION = dict(width=64, heads=2, layers=2, mlp=128)  # head width 32
TEXT = dict(width=32, heads=2, layers=2, mlp=128, vocab=500, context=16)  # head width 16
EMBED_DIM = 48  # CLIP families' projection width
NOISE = 0.05  # std of the noise added to every parameter

# AST (audio) tiny shapes.
AST = dict(width=64, heads=2, layers=2, mlp=128, mel=32, frames=64, patch=16, stride=10)
SAMPLE_RATE = 16000
# Kaldi framing (25 ms window, 10 ms hop, no centre padding): frames = 1 + (S - 400) // 160.
AST_SAMPLES = 400 + (AST["frames"] - 1) * 160


def versions() -> dict[str, str]:
    """The peer libraries' versions, recorded in every info.json."""
    return {
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez's format (uncompressed zip of .npy files) with fixed timestamps, so reruns match."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(
                    f, np.asarray(arrays[name], order="C"), allow_pickle=False
                )


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")


def fresh_dir(name: str, root: Path = OUT) -> Path:
    """An empty ``root/name`` (removed first when it exists)."""
    d = root / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int) -> None:
    """Adds N(0, NOISE^2) to every parameter (LayerNorm scales, biases, class token, ...)."""
    g = torch.Generator().manual_seed(seed)
    for _, p in sorted(model.named_parameters()):
        p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32) * NOISE)


def saved_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict under the names a saved file has them.

    transformers 5 renames some published names on load (AST: encoder.layer.N.attention.attention
    .query -> layers.N.attention.q_proj) and save_pretrained writes the published names back.
    """
    state = dict(model.state_dict())
    if isinstance(model, transformers.PreTrainedModel):
        state = revert_weight_conversion(model, state)
    return state


def check_saved(model: torch.nn.Module, path: Path) -> None:
    """The saved file holds exactly the model's state dict (published names, shapes, values)."""
    saved = safetensors.torch.load_file(str(path))
    state = saved_state(model)
    assert sorted(saved) == sorted(state), set(saved) ^ set(state)
    for k, v in state.items():
        assert torch.equal(saved[k], v), k


def to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy()


def max_abs(*arrays: np.ndarray) -> float:
    return float(max(np.abs(a).max() for a in arrays))


def shapes_of(state: dict[str, Any]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state.items()}


def images(rng: np.random.Generator, size: int) -> np.ndarray:
    """[B, size, size, 3] float32 pixels in [0, 1]: a smooth colour gradient plus noise."""
    ys, xs = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    base = np.stack([ys, xs, 0.5 * (ys + xs)], axis=-1)[None]
    img = 0.6 * base + 0.4 * rng.random((BATCH, size, size, 3))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def normalise_nchw(image: np.ndarray, mean, std) -> torch.Tensor:
    """NHWC [0, 1] pixels -> NCHW (x - mean) / std, float32."""
    x = torch.from_numpy(image).permute(0, 3, 1, 2)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def clip_text(rng: np.random.Generator) -> np.ndarray:
    """OpenAI-CLIP-style ids [B, T] int32: sot = V-2, body in [1, V-3], eot = V-1, then 0 padding.

    Rows hold 4, 10 and T-2 body tokens: the last row fills the whole context (eot at T-1).
    """
    v, t = TEXT["vocab"], TEXT["context"]
    ids = np.zeros((BATCH, t), np.int32)
    for row, n in enumerate([4, 10, t - 2]):
        ids[row, 0] = v - 2
        ids[row, 1 : 1 + n] = rng.integers(1, v - 2, size=n)
        ids[row, 1 + n] = v - 1
    return ids


def siglip_text(rng: np.random.Generator, pad_id: int = 1) -> np.ndarray:
    """SigLIP-style ids [B, T] int32: body in [2, V-1], eos, then padded with pad_id (= eos = 1).

    Rows hold 5, 11 and T-1 body tokens; the last row fills the whole context, ending in eos
    (big_vision's 'sticky' eos). There is no bos token.
    """
    v, t = TEXT["vocab"], TEXT["context"]
    ids = np.full((BATCH, t), pad_id, np.int32)
    for row, n in enumerate([5, 11, t - 1]):
        ids[row, :n] = rng.integers(2, v, size=n)
        ids[row, n] = 1
    return ids


# --------------------------------------------------------------------------------------------
# open_clip CLIP (OpenAI-style state dict)
# --------------------------------------------------------------------------------------------


def open_clip_cfgs(image_size: int) -> tuple[dict, dict]:
    vision_cfg = dict(
        image_size=image_size,
        patch_size=PATCH,
        width=VISION["width"],
        layers=VISION["layers"],
        head_width=VISION["width"] // VISION["heads"],
        mlp_ratio=VISION["mlp"] / VISION["width"],
    )
    text_cfg = dict(
        context_length=TEXT["context"],
        vocab_size=TEXT["vocab"],
        width=TEXT["width"],
        heads=TEXT["heads"],
        layers=TEXT["layers"],
        mlp_ratio=TEXT["mlp"] / TEXT["width"],
    )
    return vision_cfg, text_cfg


@torch.no_grad()
def make_open_clip() -> None:
    d = fresh_dir("open_clip")
    torch.manual_seed(1)
    vision_cfg, text_cfg = open_clip_cfgs(IMAGE_SIZE)
    model = CLIP(EMBED_DIM, vision_cfg, text_cfg, quick_gelu=True).eval()
    perturb(model, seed=101)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    check_saved(model, d / "model.safetensors")

    rng = np.random.default_rng(1001)
    text = clip_text(rng)
    image = images(rng, IMAGE_SIZE)
    pixels = normalise_nchw(image, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    text_embeds = to_np(model.encode_text(torch.from_numpy(text).long(), normalize=False))
    image_embeds = to_np(model.encode_image(pixels, normalize=False))

    # Resampled position embedding: the same weights at 48 x 48 (grid 4x4 -> 6x6).
    vision48, _ = open_clip_cfgs(RESAMPLED_IMAGE_SIZE)
    model48 = CLIP(EMBED_DIM, vision48, text_cfg, quick_gelu=True).eval()
    state48 = dict(state)
    resize_pos_embed(state48, model48, interpolation="bilinear", antialias=False)
    model48.load_state_dict(state48)
    image48 = images(rng, RESAMPLED_IMAGE_SIZE)
    pixels48 = normalise_nchw(image48, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    image48_embeds = to_np(model48.encode_image(pixels48, normalize=False))
    # The same call with open_clip's default antialias=True, to record that it makes no
    # difference when upsampling (only the interpolation kernel differs, not its support).
    state48_aa = dict(state)
    resize_pos_embed(state48_aa, model48, interpolation="bilinear", antialias=True)
    aa_diff = float(
        (state48_aa["visual.positional_embedding"] - state48["visual.positional_embedding"])
        .abs()
        .max()
    )

    write_npz(
        d / "reference.npz",
        {
            "text": text,
            "image": image,
            "text_embeds": text_embeds,
            "image_embeds": image_embeds,
            "logit_scale": np.asarray(to_np(model.logit_scale), np.float32).reshape(()),
            "image_resampled": image48,
            "image_resampled_embeds": image48_embeds,
            "resampled_positional_embedding": to_np(state48["visual.positional_embedding"]),
        },
    )
    write_json(
        d / "info.json",
        {
            "family": "open_clip",
            "versions": versions(),
            "peer": {
                "model": "open_clip.model.CLIP(embed_dim, vision_cfg, text_cfg, quick_gelu=True)",
                "embed_dim": EMBED_DIM,
                "vision_cfg": vision_cfg,
                "text_cfg": text_cfg,
                "vision_heads": VISION["heads"],
                "text_heads": TEXT["heads"],
                "head_width_note": (
                    "open_clip's OpenAI loader (build_model_from_openai_state_dict) derives heads"
                    " as width // 64; this tiny model has vision head width 32 (64 / 2 heads) and"
                    " text head width 16 (32 / 2 heads), so the importer must be told the heads"
                    " (or head width) for this fixture: heads are not in the state dict."
                ),
                "activation": "quick_gelu (x * sigmoid(1.702 x)) in both towers",
                "layer_norm_eps": 1e-5,
                "text_pooling": "argmax of the token ids (eot = highest id), after ln_final",
                "text_attention": "causal mask only; no padding mask (padding after eot is"
                " attended to by nothing before eot, so it cannot change the pooled token)",
                "image_pooling": "class token (position 0) after ln_post",
                "image_normalisation": {
                    "mean": list(OPENAI_DATASET_MEAN),
                    "std": list(OPENAI_DATASET_STD),
                    "formula": "(image - mean) / std per RGB channel, NHWC -> NCHW",
                },
                "init": "torch.manual_seed(1), open_clip init, then + N(0, 0.05^2) on every"
                " parameter (generator seed 101, sorted parameter names)",
                "resampled": {
                    "call": "open_clip.model.resize_pos_embed(state_dict, model48,"
                    " interpolation='bilinear', antialias=False)",
                    "signature_3.3.0": "resize_pos_embed(state_dict, model, interpolation="
                    "'bicubic', antialias=True); here called with interpolation='bilinear',"
                    " antialias=False",
                    "what": "class-token row kept; the 4x4 grid of rows reshaped [1, D, 4, 4],"
                    " F.interpolate(size=(6, 6), mode='bilinear', align_corners=False),"
                    " back to 36 rows (row-major y, x)",
                    "max_abs_diff_vs_antialias_true": aa_diff,
                    "image_size": RESAMPLED_IMAGE_SIZE,
                    "grid": [6, 6],
                },
            },
            "files": {
                "model.safetensors": "safetensors.torch.save_file(model.state_dict()): OpenAI"
                " state-dict names (visual.conv1.weight, visual.class_embedding,"
                " transformer.resblocks.0.attn.in_proj_weight, ...), float32",
            },
            "arrays": {
                "text": "int32 [B, T]: sot=V-2 ... eot=V-1 then 0 padding; row 2 fills T",
                "image": "float32 [B, 32, 32, 3] NHWC pixels in [0, 1] (before normalisation)",
                "text_embeds": "float32 [B, E]: model.encode_text(text, normalize=False)",
                "image_embeds": "float32 [B, E]: model.encode_image(normalised image,"
                " normalize=False)",
                "logit_scale": "float32 []: the logit_scale parameter (log of the scale)",
                "image_resampled": "float32 [B, 48, 48, 3] NHWC pixels in [0, 1]",
                "image_resampled_embeds": "float32 [B, E]: the 48 x 48 model's encode_image",
                "resampled_positional_embedding": "float32 [1 + 36, D]: the table it used",
            },
            "shapes": {"B": BATCH, "T": TEXT["context"], "V": TEXT["vocab"], "E": EMBED_DIM},
            "max_abs": {
                "text_embeds": max_abs(text_embeds),
                "image_embeds": max_abs(image_embeds),
                "image_resampled_embeds": max_abs(image48_embeds),
            },
        },
    )


# --------------------------------------------------------------------------------------------
# HF CLIPModel
# --------------------------------------------------------------------------------------------


def hf_clip_config() -> CLIPConfig:
    v = TEXT["vocab"]
    return CLIPConfig(
        text_config=dict(
            vocab_size=v,
            hidden_size=TEXT["width"],
            intermediate_size=TEXT["mlp"],
            num_hidden_layers=TEXT["layers"],
            num_attention_heads=TEXT["heads"],
            max_position_embeddings=TEXT["context"],
            hidden_act="quick_gelu",
            projection_dim=EMBED_DIM,
            bos_token_id=v - 2,
            eos_token_id=v - 1,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=VISION["width"],
            intermediate_size=VISION["mlp"],
            num_hidden_layers=VISION["layers"],
            num_attention_heads=VISION["heads"],
            image_size=IMAGE_SIZE,
            patch_size=PATCH,
            hidden_act="quick_gelu",
            projection_dim=EMBED_DIM,
        ),
        projection_dim=EMBED_DIM,
    )


@torch.no_grad()
def make_hf_clip() -> None:
    d = fresh_dir("hf_clip")
    torch.manual_seed(2)
    config = hf_clip_config()
    model = CLIPModel(config).eval()
    perturb(model, seed=102)
    model.save_pretrained(d)
    check_saved(model, d / "model.safetensors")

    rng = np.random.default_rng(1002)
    input_ids = clip_text(rng)
    eot = input_ids.argmax(axis=1)
    attention_mask = (np.arange(TEXT["context"])[None] <= eot[:, None]).astype(np.int32)
    image = images(rng, IMAGE_SIZE)
    pixels = normalise_nchw(image, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    text_out = model.get_text_features(
        input_ids=torch.from_numpy(input_ids).long(),
        attention_mask=torch.from_numpy(attention_mask).long(),
    )
    image_out = model.get_image_features(pixel_values=pixels)
    text_embeds = to_np(text_out.pooler_output)
    image_embeds = to_np(image_out.pooler_output)
    # Without the attention mask: must be the same (causal mask, pooled at eot).
    reloaded = CLIPModel.from_pretrained(d).eval()
    assert np.array_equal(
        to_np(reloaded.get_image_features(pixel_values=pixels).pooler_output), image_embeds
    )
    no_mask = to_np(
        model.get_text_features(input_ids=torch.from_numpy(input_ids).long()).pooler_output
    )

    write_npz(
        d / "reference.npz",
        {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "image": image,
            "text_embeds": text_embeds,
            "image_embeds": image_embeds,
            "logit_scale": np.asarray(to_np(model.logit_scale), np.float32).reshape(()),
        },
    )
    write_json(
        d / "info.json",
        {
            "family": "hf_clip",
            "versions": versions(),
            "peer": {
                "model": "transformers.CLIPModel(CLIPConfig(...)); save_pretrained(dir)"
                " (transformers 5 always writes safetensors: model.safetensors + config.json)",
                "config": config.to_dict(),
                "attn_implementation": model.config._attn_implementation,
                "activation": "quick_gelu in both towers",
                "layer_norm_eps": 1e-5,
                "text_pooling": "eos_token_id = V-1 != 2, so HF pools at the first position"
                " where input_ids == eos_token_id (the same as argmax here: eot is the highest"
                " id), after final_layer_norm; then text_projection (no bias)",
                "text_attention": "causal mask + the given attention_mask (1 up to and"
                " including eot)",
                "max_abs_diff_without_attention_mask": float(np.abs(no_mask - text_embeds).max()),
                "image_pooling": "class token (position 0), then post_layernorm, then"
                " visual_projection (no bias); pre_layrnorm before the blocks",
                "image_normalisation": {
                    "mean": list(OPENAI_DATASET_MEAN),
                    "std": list(OPENAI_DATASET_STD),
                    "formula": "(image - mean) / std, done by this script (not a processor)",
                },
                "init": "torch.manual_seed(2), HF init, then + N(0, 0.05^2) on every parameter"
                " (generator seed 102)",
            },
            "files": {
                "model.safetensors": "CLIPModel state dict (text_model.*, vision_model.*,"
                " text_projection.weight, visual_projection.weight, logit_scale), float32",
                "config.json": "CLIPConfig as saved by save_pretrained",
            },
            "arrays": {
                "input_ids": "int32 [B, T]: sot=V-2 ... eot=V-1 then 0 padding; row 2 fills T",
                "attention_mask": "int32 [B, T]: 1 up to and including eot",
                "image": "float32 [B, 32, 32, 3] NHWC pixels in [0, 1] (before normalisation)",
                "text_embeds": "float32 [B, E]: get_text_features(input_ids, attention_mask)"
                ".pooler_output",
                "image_embeds": "float32 [B, E]: get_image_features(normalised).pooler_output",
                "logit_scale": "float32 []: the logit_scale parameter (log of the scale)",
            },
            "shapes": {"B": BATCH, "T": TEXT["context"], "V": TEXT["vocab"], "E": EMBED_DIM},
            "max_abs": {
                "text_embeds": max_abs(text_embeds),
                "image_embeds": max_abs(image_embeds),
            },
        },
    )


# --------------------------------------------------------------------------------------------
# HF SiglipModel
# --------------------------------------------------------------------------------------------


def hf_siglip_config() -> SiglipConfig:
    return SiglipConfig(
        text_config=dict(
            vocab_size=TEXT["vocab"],
            hidden_size=TEXT["width"],
            intermediate_size=TEXT["mlp"],
            num_hidden_layers=TEXT["layers"],
            num_attention_heads=TEXT["heads"],
            max_position_embeddings=TEXT["context"],
            projection_size=VISION["width"],
            pad_token_id=1,
            eos_token_id=1,
            bos_token_id=None,
        ),
        vision_config=dict(
            hidden_size=VISION["width"],
            intermediate_size=VISION["mlp"],
            num_hidden_layers=VISION["layers"],
            num_attention_heads=VISION["heads"],
            image_size=IMAGE_SIZE,
            patch_size=PATCH,
        ),
    )


@torch.no_grad()
def make_hf_siglip() -> None:
    d = fresh_dir("hf_siglip")
    torch.manual_seed(3)
    config = hf_siglip_config()
    model = SiglipModel(config).eval()
    perturb(model, seed=103)
    model.save_pretrained(d)
    check_saved(model, d / "model.safetensors")

    rng = np.random.default_rng(1003)
    input_ids = siglip_text(rng)
    image = images(rng, IMAGE_SIZE)
    pixels = normalise_nchw(image, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    text_embeds = to_np(
        model.get_text_features(input_ids=torch.from_numpy(input_ids).long()).pooler_output
    )
    image_embeds = to_np(model.get_image_features(pixel_values=pixels).pooler_output)
    reloaded = SiglipModel.from_pretrained(d).eval()
    assert np.array_equal(
        to_np(reloaded.get_image_features(pixel_values=pixels).pooler_output), image_embeds
    )

    write_npz(
        d / "reference.npz",
        {
            "input_ids": input_ids,
            "image": image,
            "text_embeds": text_embeds,
            "image_embeds": image_embeds,
            "logit_scale": np.asarray(to_np(model.logit_scale), np.float32).reshape(()),
            "logit_bias": np.asarray(to_np(model.logit_bias), np.float32).reshape(()),
        },
    )
    write_json(
        d / "info.json",
        {
            "family": "hf_siglip",
            "versions": versions(),
            "peer": {
                "model": "transformers.SiglipModel(SiglipConfig(...)); save_pretrained(dir)",
                "config": config.to_dict(),
                "attn_implementation": model.config._attn_implementation,
                "activation": "gelu_pytorch_tanh (tanh-approximate GELU) in both towers and"
                " the MAP head",
                "layer_norm_eps": 1e-6,
                "text_pooling": "last position (index T-1) after final_layer_norm, whatever the"
                " padding; then head (Linear with bias, text width -> projection_size)",
                "text_attention": "no mask at all (none is given, as SigLIP): the padding"
                " tokens (id 1) are attended to and the pooled position is a pad/eos token",
                "image_pooling": "MAP head (vision_model.head: probe, nn.MultiheadAttention"
                " with packed in_proj, layernorm, mlp) over post_layernorm'd tokens; no class"
                " token, no image projection (image embedding width = vision width)",
                "image_normalisation": {
                    "mean": [0.5, 0.5, 0.5],
                    "std": [0.5, 0.5, 0.5],
                    "formula": "(image - 0.5) / 0.5, i.e. [0, 1] -> [-1, 1]",
                },
                "init": "torch.manual_seed(3), HF init, then + N(0, 0.05^2) on every parameter"
                " (generator seed 103)",
            },
            "files": {
                "model.safetensors": "SiglipModel state dict (text_model.*, vision_model.*"
                " incl. vision_model.head.*, logit_scale [1], logit_bias [1]), float32",
                "config.json": "SiglipConfig as saved by save_pretrained",
            },
            "arrays": {
                "input_ids": "int32 [B, T]: tokens in [2, V), eos 1, padded with 1 to T; row 2"
                " fills T and ends in eos",
                "image": "float32 [B, 32, 32, 3] NHWC pixels in [0, 1] (before normalisation)",
                "text_embeds": "float32 [B, E]: get_text_features(input_ids).pooler_output",
                "image_embeds": "float32 [B, E]: get_image_features(normalised).pooler_output",
                "logit_scale": "float32 []: the logit_scale parameter (log of the scale)",
                "logit_bias": "float32 []: the logit_bias parameter",
            },
            "shapes": {"B": BATCH, "T": TEXT["context"], "V": TEXT["vocab"], "E": VISION["width"]},
            "max_abs": {
                "text_embeds": max_abs(text_embeds),
                "image_embeds": max_abs(image_embeds),
            },
        },
    )


# --------------------------------------------------------------------------------------------
# big_vision SigLIP .npz, loaded by open_clip's load_big_vision_weights
# --------------------------------------------------------------------------------------------


def big_vision_shapes(
    *,
    width: int,
    heads: int,
    layers: int,
    mlp: int,
    patch: int,
    image_size: int,
    txt_width: int,
    txt_heads: int,
    txt_layers: int,
    txt_mlp: int,
    vocab: int,
    context: int,
    embed_dim: int,
    prefix: str = "params/",
) -> dict[str, tuple[int, ...]]:
    """big_vision SigLIP two-tower parameter names -> shapes, as its released .npz files have them.

    Unscanned blocks (encoderblock_{i}); no image head (the MAP head output is the embedding);
    the text tower has a head with bias; t and b have shape [1].
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def block(p: str, d: int, h: int, f: int) -> None:
        for ln in ("LayerNorm_0", "LayerNorm_1"):
            shapes[f"{p}{ln}/scale"] = (d,)
            shapes[f"{p}{ln}/bias"] = (d,)
        attention(f"{p}MultiHeadDotProductAttention_0/", d, h)
        mlp_block(f"{p}MlpBlock_0/", d, f)

    def attention(p: str, d: int, h: int) -> None:
        for n in ("query", "key", "value"):
            shapes[f"{p}{n}/kernel"] = (d, h, d // h)
            shapes[f"{p}{n}/bias"] = (h, d // h)
        shapes[f"{p}out/kernel"] = (h, d // h, d)
        shapes[f"{p}out/bias"] = (d,)

    def mlp_block(p: str, d: int, f: int) -> None:
        shapes[f"{p}Dense_0/kernel"] = (d, f)
        shapes[f"{p}Dense_0/bias"] = (f,)
        shapes[f"{p}Dense_1/kernel"] = (f, d)
        shapes[f"{p}Dense_1/bias"] = (d,)

    img = f"{prefix}img/"
    grid = image_size // patch
    shapes[f"{img}embedding/kernel"] = (patch, patch, 3, width)
    shapes[f"{img}embedding/bias"] = (width,)
    shapes[f"{img}pos_embedding"] = (1, grid * grid, width)
    for i in range(layers):
        block(f"{img}Transformer/encoderblock_{i}/", width, heads, mlp)
    shapes[f"{img}Transformer/encoder_norm/scale"] = (width,)
    shapes[f"{img}Transformer/encoder_norm/bias"] = (width,)
    shapes[f"{img}MAPHead_0/probe"] = (1, 1, width)
    attention(f"{img}MAPHead_0/MultiHeadDotProductAttention_0/", width, heads)
    shapes[f"{img}MAPHead_0/LayerNorm_0/scale"] = (width,)
    shapes[f"{img}MAPHead_0/LayerNorm_0/bias"] = (width,)
    mlp_block(f"{img}MAPHead_0/MlpBlock_0/", width, mlp)

    txt = f"{prefix}txt/"
    shapes[f"{txt}Embed_0/embedding"] = (vocab, txt_width)
    shapes[f"{txt}pos_embedding"] = (1, context, txt_width)
    for i in range(txt_layers):
        block(f"{txt}Encoder_0/encoderblock_{i}/", txt_width, txt_heads, txt_mlp)
    shapes[f"{txt}Encoder_0/encoder_norm/scale"] = (txt_width,)
    shapes[f"{txt}Encoder_0/encoder_norm/bias"] = (txt_width,)
    shapes[f"{txt}head/kernel"] = (txt_width, embed_dim)
    shapes[f"{txt}head/bias"] = (embed_dim,)
    shapes[f"{prefix}t"] = (1,)
    shapes[f"{prefix}b"] = (1,)
    return shapes


TINY_BIG_VISION = dict(
    width=VISION["width"],
    heads=VISION["heads"],
    layers=VISION["layers"],
    mlp=VISION["mlp"],
    patch=PATCH,
    image_size=IMAGE_SIZE,
    txt_width=TEXT["width"],
    txt_heads=TEXT["heads"],
    txt_layers=TEXT["layers"],
    txt_mlp=TEXT["mlp"],
    vocab=TEXT["vocab"],
    context=TEXT["context"],
    embed_dim=VISION["width"],
)


def random_big_vision(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Random float32 values: LayerNorm scales near 1, small biases, kernels ~ 1/sqrt(fan_in)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "scale":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif leaf == "kernel":
            fan_in = math.prod(shape[:-1]) if "/out/" not in name else shape[0] * shape[1]
            if "/out/" not in name and len(shape) == 3:  # query/key/value [D, H, Dh]
                fan_in = shape[0]
            a = rng.standard_normal(shape) / math.sqrt(fan_in)
        elif name.endswith("/t"):
            a = np.full(shape, math.log(10.0)) + 0.05 * rng.standard_normal(shape)
        elif name.endswith("/b"):
            a = np.full(shape, -10.0) + 0.05 * rng.standard_normal(shape)
        elif leaf in ("embedding", "pos_embedding", "probe"):
            a = 0.5 * rng.standard_normal(shape)
        else:  # biases
            a = 0.05 * rng.standard_normal(shape)
        out[name] = a.astype(np.float32)
    return out


def tiny_open_clip_siglip() -> CustomTextCLIP:
    """open_clip's ViT-B-16-SigLIP recipe (CustomTextCLIP, timm 'vit_base_patch16_siglip_224'
    trunk with timm_pool='map', timm_proj='none'; text tower with no_causal_mask, proj_bias,
    pool_type='last', LayerNorm eps 1e-6), at tiny sizes.

    open_clip's TimmModel passes no size arguments to timm, so the tiny trunk is made by the same
    timm.create_model call TimmModel makes (num_classes=0, global_pool='map') plus size overrides,
    and put in place of the base-size trunk.
    """
    text_cfg = dict(
        context_length=TEXT["context"],
        vocab_size=TEXT["vocab"],
        width=TEXT["width"],
        heads=TEXT["heads"],
        layers=TEXT["layers"],
        mlp_ratio=TEXT["mlp"] / TEXT["width"],
        no_causal_mask=True,
        proj_bias=True,
        pool_type="last",
        norm_kwargs={"eps": 1e-6},
    )
    vision_cfg = dict(
        image_size=IMAGE_SIZE,
        timm_model_name="vit_base_patch16_siglip_224",
        timm_model_pretrained=False,
        timm_pool="map",
        timm_proj="none",
    )
    model = CustomTextCLIP(
        embed_dim=VISION["width"], vision_cfg=vision_cfg, text_cfg=text_cfg, init_logit_bias=-10
    )
    model.visual.trunk = timm.create_model("vit_base_patch16_siglip_224", **TIMM_TRUNK_KWARGS)
    return model.eval()


TIMM_TRUNK_KWARGS = dict(
    pretrained=False,
    num_classes=0,
    global_pool="map",
    img_size=IMAGE_SIZE,
    patch_size=PATCH,
    embed_dim=VISION["width"],
    depth=VISION["layers"],
    num_heads=VISION["heads"],
    mlp_ratio=VISION["mlp"] / VISION["width"],
)


def gelu_to_tanh(model: torch.nn.Module) -> int:
    """Replaces every exact-erf nn.GELU module with the tanh approximation; returns the count."""
    count = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.GELU):
                setattr(module, child_name, torch.nn.GELU(approximate="tanh"))
                count += 1
    return count


@torch.no_grad()
def make_big_vision_siglip() -> None:
    d = fresh_dir("big_vision_siglip")
    shapes = big_vision_shapes(**TINY_BIG_VISION)
    weights = random_big_vision(shapes, seed=104)
    write_npz(d / "siglip.npz", weights)

    torch.manual_seed(4)
    model = tiny_open_clip_siglip()
    # NaN everywhere first: after the loader no parameter may keep a value it did not write.
    for p in model.parameters():
        p.fill_(float("nan"))
    load_big_vision_weights(model, str(d / "siglip.npz"))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    loaded = sum(p.numel() for p in model.parameters())
    expected = sum(math.prod(s) for s in shapes.values())
    assert loaded == expected, (loaded, expected)

    rng = np.random.default_rng(1004)
    text = siglip_text(rng)
    image = images(rng, IMAGE_SIZE)
    pixels = normalise_nchw(image, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    text_t = torch.from_numpy(text).long()
    text_embeds = to_np(model.encode_text(text_t, normalize=False))
    image_embeds = to_np(model.encode_image(pixels, normalize=False))
    n_gelu = gelu_to_tanh(model)
    text_tanh = to_np(model.encode_text(text_t, normalize=False))
    image_tanh = to_np(model.encode_image(pixels, normalize=False))

    write_npz(
        d / "reference.npz",
        {
            "text": text,
            "image": image,
            "text_embeds": text_embeds,
            "image_embeds": image_embeds,
            "text_embeds_gelu_tanh": text_tanh,
            "image_embeds_gelu_tanh": image_tanh,
            "t": weights["params/t"].reshape(()),
            "b": weights["params/b"].reshape(()),
        },
    )
    write_json(
        d / "info.json",
        {
            "family": "big_vision_siglip",
            "versions": versions(),
            "npz": {
                "names": "big_vision's SigLIP two-tower names as in its released .npz files"
                " (the 'params/' prefix, unscanned Transformer/encoderblock_{i}); open_clip's"
                " loader also accepts no prefix and scanned 'encoderblock/' with a leading"
                " [depth] axis, which this fixture does not exercise",
                "shapes": {k: list(v) for k, v in shapes.items()},
                "values": "numpy default_rng(104): LayerNorm scales 1 + N(0, 0.1^2), kernels"
                " N(0, 1/fan_in), embeddings/pos_embedding/probe N(0, 0.5^2), biases"
                " N(0, 0.05^2), t = log(10) + noise, b = -10 + noise; float32",
                "layout": {
                    "embedding/kernel": "[p, p, 3, D] (HWIO)",
                    "query|key|value/kernel": "[D, H, Dh]",
                    "query|key|value/bias": "[H, Dh]",
                    "out/kernel": "[H, Dh, D]",
                    "Dense_*/kernel": "[in, out]",
                    "pos_embedding": "[1, N, D] (img: N = grid^2, no class token; txt: N = T)",
                    "MAPHead_0/probe": "[1, 1, D]",
                    "t, b": "[1]",
                },
            },
            "peer": {
                "model": "open_clip.model.CustomTextCLIP(embed_dim=64, vision_cfg, text_cfg,"
                " init_logit_bias=-10) as open_clip's ViT-B-16-SigLIP config builds it, with"
                " model.visual.trunk replaced by timm.create_model('vit_base_patch16_siglip_224',"
                " **timm_trunk_kwargs) (open_clip's TimmModel passes timm no sizes)",
                "timm_trunk_kwargs": TIMM_TRUNK_KWARGS,
                "loader": "open_clip.convert.load_big_vision_weights(model, 'siglip.npz')",
                "text_pooling": "open_clip TextTransformer pool_type='last': x[:, -1] (position"
                " T-1, whatever the padding) after ln_final, then text_projection Linear with"
                " bias (txt/head)",
                "text_padding": "ids padded with 1 (= eos, big_vision's pad_value=1 /"
                " eos='sticky' as in its SigLIP demo); no padding mask and no causal mask",
                "image_pooling": "timm AttentionPoolLatent (MAPHead_0) over the encoder_norm'd"
                " tokens; no class token; no image projection (embedding = MAP output)",
                "image_normalisation": {"mean": [0.5] * 3, "std": [0.5] * 3},
                "layer_norm_eps": 1e-6,
                "activation": {
                    "text_embeds/image_embeds": "open_clip + timm as shipped: exact (erf) GELU"
                    " everywhere (timm VisionTransformer act_layer defaults to nn.GELU; open_clip"
                    " text tower nn.GELU)",
                    "*_gelu_tanh": f"the same model after replacing all {n_gelu} nn.GELU modules"
                    " (both towers' blocks and the MAP head MLP) by nn.GELU(approximate='tanh'):"
                    " what big_vision itself computes (flax nn.gelu defaults to approximate=True;"
                    " HF SigLIP uses gelu_pytorch_tanh)",
                },
            },
            "arrays": {
                "text": "int32 [B, T]: tokens in [2, V), eos 1, padded with 1; row 2 fills T",
                "image": "float32 [B, 32, 32, 3] NHWC pixels in [0, 1] (before normalisation)",
                "text_embeds": "float32 [B, E]: encode_text(text, normalize=False), erf GELU",
                "image_embeds": "float32 [B, E]: encode_image(normalised, normalize=False),"
                " erf GELU",
                "text_embeds_gelu_tanh": "float32 [B, E]: as text_embeds, tanh GELU",
                "image_embeds_gelu_tanh": "float32 [B, E]: as image_embeds, tanh GELU",
                "t": "float32 []: params/t[0] (log of the logit scale)",
                "b": "float32 []: params/b[0] (logit bias)",
            },
            "shapes": {"B": BATCH, "T": TEXT["context"], "V": TEXT["vocab"], "E": VISION["width"]},
            "max_abs": {
                "text_embeds": max_abs(text_embeds),
                "image_embeds": max_abs(image_embeds),
                "text_embeds_gelu_tanh": max_abs(text_tanh),
                "image_embeds_gelu_tanh": max_abs(image_tanh),
            },
            "max_abs_diff_erf_vs_tanh": {
                "text": float(np.abs(text_embeds - text_tanh).max()),
                "image": float(np.abs(image_embeds - image_tanh).max()),
            },
        },
    )


# --------------------------------------------------------------------------------------------
# HF ASTModel
# --------------------------------------------------------------------------------------------


def hf_ast_config() -> ASTConfig:
    return ASTConfig(
        hidden_size=AST["width"],
        num_hidden_layers=AST["layers"],
        num_attention_heads=AST["heads"],
        intermediate_size=AST["mlp"],
        patch_size=AST["patch"],
        frequency_stride=AST["stride"],
        time_stride=AST["stride"],
        max_length=AST["frames"],
        num_mel_bins=AST["mel"],
    )


def waveforms(rng: np.random.Generator) -> np.ndarray:
    """[B, S] float32 at 16 kHz: a few tones with a rising pitch, plus noise, amplitude < 1."""
    t = np.arange(AST_SAMPLES) / SAMPLE_RATE
    rows = []
    for row in range(BATCH):
        f0 = 220.0 * (row + 1)
        tone = 0.3 * np.sin(2 * np.pi * (f0 * t + 400.0 * t**2))
        tone += 0.1 * np.sin(2 * np.pi * 3.1 * f0 * t)
        rows.append(tone + 0.05 * rng.standard_normal(AST_SAMPLES))
    return np.stack(rows).astype(np.float32)


@torch.no_grad()
def make_hf_ast() -> None:
    d = fresh_dir("hf_ast")
    torch.manual_seed(5)
    config = hf_ast_config()
    model = ASTModel(config).eval()
    perturb(model, seed=105)
    model.save_pretrained(d)
    check_saved(model, d / "model.safetensors")

    rng = np.random.default_rng(1005)
    waveform = waveforms(rng)
    extractor = ASTFeatureExtractor(num_mel_bins=AST["mel"], max_length=AST["frames"])
    features = extractor(list(waveform), sampling_rate=SAMPLE_RATE, return_tensors="np")[
        "input_values"
    ].astype(np.float32)
    raw = np.stack(
        [extractor._extract_fbank_features(w, max_length=AST["frames"]) for w in waveform]
    ).astype(np.float32)
    # The number of frames the waveform makes on its own (no padding, no truncation).
    long = extractor._extract_fbank_features(waveform[0], max_length=4 * AST["frames"])
    n_frames = int(np.any(long != 0, axis=1).sum())
    assert n_frames == AST["frames"], n_frames
    from transformers.utils import is_speech_available

    out = model(input_values=torch.from_numpy(features))
    audio_embeds = to_np(out.pooler_output)
    last_hidden_state = to_np(out.last_hidden_state)
    reloaded = ASTModel.from_pretrained(d).eval()
    assert np.array_equal(
        to_np(reloaded(input_values=torch.from_numpy(features)).pooler_output), audio_embeds
    )
    grid = (
        (AST["mel"] - AST["patch"]) // AST["stride"] + 1,
        (AST["frames"] - AST["patch"]) // AST["stride"] + 1,
    )

    write_npz(
        d / "reference.npz",
        {
            "waveform": waveform,
            "fbank": raw,
            "features": features,
            "audio_embeds": audio_embeds,
            "last_hidden_state": last_hidden_state,
        },
    )
    write_json(
        d / "info.json",
        {
            "family": "hf_ast",
            "versions": versions(),
            "peer": {
                "model": "transformers.ASTModel(ASTConfig(...)); save_pretrained(dir)",
                "config": config.to_dict(),
                "attn_implementation": model.config._attn_implementation,
                "activation": "gelu (exact erf)",
                "layer_norm_eps": 1e-12,
                "feature_extractor": {
                    "call": "ASTFeatureExtractor(num_mel_bins=32, max_length=64)(list(waveform),"
                    " sampling_rate=16000, return_tensors='np')['input_values']",
                    "backend": "torchaudio kaldi fbank"
                    if is_speech_available()
                    else "numpy"
                    " (transformers.audio_utils.spectrogram; torchaudio is not installed):"
                    " 400-sample periodic=False hann window, hop 160, fft 512, power 2,"
                    " preemphasis 0.97, DC offset removed, kaldi mel scale 20 Hz-8 kHz,"
                    " natural log with floor 1.1920929e-07; waveform NOT scaled by 2^15",
                    "normalisation": "(fbank - mean) / (2 * std), mean=-4.2677393,"
                    " std=4.5689974 (AudioSet)",
                    "frames": f"1 + (S - 400) // 160 = {n_frames} = max_length: no padding",
                },
                "patches": {
                    "conv": "input [B, T, F] -> [B, 1, F, T]; Conv2d(1, D, kernel (16, 16),"
                    " stride (frequency_stride, time_stride)); weight [D, 1, 16 (freq),"
                    " 16 (time)]",
                    "grid_freq_time": list(grid),
                    "order": "flatten(2) of [B, D, F_grid, T_grid]: frequency-major, patch"
                    " index = f * T_grid + t",
                    "tokens": "[cls, distillation, patches...] + position_embeddings [1, 2 + N, D]",
                },
                "pooling": "pooler_output = (h[:, 0] + h[:, 1]) / 2 after the final layernorm;"
                " no projection",
                "init": "torch.manual_seed(5), HF init, then + N(0, 0.05^2) on every parameter"
                " (generator seed 105)",
            },
            "files": {
                "model.safetensors": "ASTModel state dict (embeddings.*, encoder.layer.*,"
                " layernorm.*), float32; a published ASTForAudioClassification checkpoint has"
                " these under 'audio_spectrogram_transformer.' plus classifier.*",
                "config.json": "ASTConfig as saved by save_pretrained",
            },
            "arrays": {
                "waveform": f"float32 [B, S={AST_SAMPLES}] at 16 kHz",
                "fbank": "float32 [B, 64, 32]: log-mel before normalisation"
                " (_extract_fbank_features)",
                "features": "float32 [B, 64, 32]: the extractor's input_values (normalised),"
                " the model's input",
                "audio_embeds": "float32 [B, D]: ASTModel(features).pooler_output",
                "last_hidden_state": "float32 [B, 2 + N, D]: after the final layernorm",
            },
            "shapes": {"B": BATCH, "S": AST_SAMPLES, "N": grid[0] * grid[1], "D": AST["width"]},
            "max_abs": {
                "audio_embeds": max_abs(audio_embeds),
                "last_hidden_state": max_abs(last_hidden_state),
            },
        },
    )


# --------------------------------------------------------------------------------------------
# Full-size architectures: names and shapes only
# --------------------------------------------------------------------------------------------


def meta_state_shapes(build) -> dict[str, list[int]]:
    """Names (as a saved file has them) and shapes of a model built on the meta device."""
    with torch.device("meta"):
        model = build()
    return shapes_of(saved_state(model))


def hf_clip_b32_config() -> CLIPConfig:
    # openai/clip-vit-base-patch32's config.json, from known values (no hub access): the
    # library defaults, plus its text token ids (bos 0, eos 2, pad 1: the legacy ids that make
    # HF pool at argmax(input_ids)).
    return CLIPConfig(
        text_config=dict(bos_token_id=0, eos_token_id=2, pad_token_id=1),
        vision_config=dict(patch_size=32, image_size=224),
        projection_dim=512,
    )


def make_architectures() -> None:
    archs: dict[str, Any] = {"versions": versions()}
    for name in ("ViT-B-32", "ViT-B-16"):
        cfg = open_clip.get_model_config(name)
        archs[f"open_clip/{name}"] = {
            "source": f"open_clip.model.CLIP(**open_clip.get_model_config('{name}')) on the meta"
            " device: the OpenAI state-dict names (OpenAI's own .pt also holds the ints"
            " input_resolution, context_length, vocab_size, which open_clip drops)",
            "config": cfg,
            "params": meta_state_shapes(lambda cfg=cfg: CLIP(**cfg)),
        }
    clip_cfg = hf_clip_b32_config()
    archs["hf_clip/clip-vit-base-patch32"] = {
        "source": "transformers.CLIPModel(config) on the meta device; config rebuilt from known"
        " values of openai/clip-vit-base-patch32 (not downloaded)",
        "config": clip_cfg.to_dict(),
        "params": meta_state_shapes(lambda: CLIPModel(clip_cfg)),
    }
    siglip_cfg = SiglipConfig()
    archs["hf_siglip/siglip-base-patch16-224"] = {
        "source": "transformers.SiglipModel(SiglipConfig()) on the meta device: the library"
        " defaults are google/siglip-base-patch16-224 (vocab 32000, 64 tokens, 224 px, patch 16;"
        " not downloaded)",
        "config": siglip_cfg.to_dict(),
        "params": meta_state_shapes(lambda: SiglipModel(siglip_cfg)),
    }
    bv = dict(
        width=768,
        heads=12,
        layers=12,
        mlp=3072,
        patch=16,
        image_size=224,
        txt_width=768,
        txt_heads=12,
        txt_layers=12,
        txt_mlp=3072,
        vocab=32000,
        context=64,
        embed_dim=768,
    )
    archs["big_vision_siglip/siglip-b16-224"] = {
        "source": "big_vision SigLIP B/16 224 (webli_en_b16_224_63724782.npz layout): names as"
        " open_clip's load_big_vision_weights and HF's convert_siglip_to_hf read them",
        "config": bv,
        "params": {k: list(v) for k, v in big_vision_shapes(**bv).items()},
    }
    ast_cfg = ASTConfig()
    archs["hf_ast/ast-base"] = {
        "source": "transformers.ASTModel(ASTConfig()) on the meta device: the library defaults"
        " are MIT/ast-finetuned-audioset-10-10-0.4593's encoder (128 mel, 1024 frames, patch 16,"
        " strides 10; not downloaded)",
        "config": ast_cfg.to_dict(),
        "params": meta_state_shapes(lambda: ASTModel(ast_cfg)),
    }
    ast_cls_cfg = ASTConfig(num_labels=527)
    archs["hf_ast/ast-finetuned-audioset-10-10-0.4593"] = {
        "source": "transformers.ASTForAudioClassification(ASTConfig(num_labels=527)) on the meta"
        " device: the published checkpoint's layout (encoder under"
        " 'audio_spectrogram_transformer.', classifier.layernorm, classifier.dense)",
        "config": ast_cls_cfg.to_dict(),
        "params": meta_state_shapes(lambda: ASTForAudioClassification(ast_cls_cfg)),
    }
    write_json(OUT / "architectures.json", archs)


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    OUT.mkdir(parents=True, exist_ok=True)
    only = set(sys.argv[1:])
    steps = {
        "open_clip": make_open_clip,
        "hf_clip": make_hf_clip,
        "hf_siglip": make_hf_siglip,
        "big_vision_siglip": make_big_vision_siglip,
        "hf_ast": make_hf_ast,
        "architectures": make_architectures,
    }
    for name, step in steps.items():
        if not only or name in only:
            step()
            print("wrote", name)


if __name__ == "__main__":
    main()
