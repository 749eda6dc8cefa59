"""Writes tests/checkpoints/fixtures/hub/: tiny checkpoints laid out as a model hub holds them,
with the peer's embeddings of *raw* inputs (issue 29).

Each family directory holds only the files its hub repository has (weights, configs,
preprocessing config, tokenizer), so the importer's detection and config reading run on them
as on a download. Next to each directory, ``<family>.npz`` holds the raw inputs (strings,
uint8 images of several sizes and aspect ratios, waveforms) and the peer's embeddings of them,
made with the peer's *own* preprocessing:

- open_clip: ``open_clip.transform.image_transform(..., is_train=False)`` (torchvision on PIL:
  bicubic resize of the shorter side, centre crop) and open_clip's ``SimpleTokenizer``. The
  model has 32-wide vision heads, 16-wide text heads and exact GELU (``quick_gelu: false``):
  open_clip's defaults for LAION models, and nothing a state dict records.
- HF CLIP: ``CLIPImageProcessorPil`` (PIL bicubic, shortest edge 36, centre crop 32: resize and
  crop differ) and the fast tokenizer of ``tokenizer.json``. transformers 5's default
  ``CLIPImageProcessor`` is a torchvision backend; its embeddings are stored too
  (``image_embeds_torchvision``) with their distance from the PIL ones in the info file.
- HF SigLIP: ``SiglipImageProcessorPil`` (squash to 32 x 32, bicubic, no crop) and
  ``SiglipTokenizer(spiece.model)``; the default torchvision backend's embeddings as for CLIP.
- HF AST: ``ASTFeatureExtractor`` with Speech Commands' statistics (mean -6.845978,
  std 5.5654526), not AudioSet's, in ``preprocessor_config.json``.

Run with the peer environment (benchmarks/peers/setup_peers.sh):
    benchmarks/peers/.venv-peers/bin/python benchmarks/peers/make_hub_fixtures.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_import_fixtures import (
    AST,
    AST_SAMPLES,
    EMBED_DIM,
    IMAGE_SIZE,
    SAMPLE_RATE,
    TEXT,
    check_saved,
    fresh_dir,
    hf_ast_config,
    hf_clip_config,
    hf_siglip_config,
    open_clip_cfgs,
    perturb,
    to_np,
    versions,
    waveforms,
    write_json,
    write_npz,
)
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transform import image_transform
from transformers import (
    ASTFeatureExtractor,
    ASTModel,
    CLIPImageProcessor,
    CLIPImageProcessorPil,
    CLIPModel,
    PreTrainedTokenizerFast,
    SiglipImageProcessor,
    SiglipImageProcessorPil,
    SiglipModel,
    SiglipTokenizer,
)

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "checkpoints" / "fixtures" / "hub"
TOKENIZERS = REPO / "tests" / "data" / "fixtures" / "tokenizers"
CLIP_VOCAB = 2514  # clip_bpe_2000.txt.gz: 512 bytes + 2000 merges + start, end
SIGLIP_VOCAB = 200  # siglip_tiny.model
TEXTS = ["a photo of a cat", "Two dogs playing in the snow.", "a red car"]
# (height, width) of the raw images: model-sized, landscape, portrait, smaller than the model
# (upsampled), and one whose centre-crop offset is x.5 after the resize (round != floor).
IMAGE_SHAPES = [(32, 32), (37, 45), (60, 29), (24, 20), (32, 35)]
SPEECH_COMMANDS_MEAN, SPEECH_COMMANDS_STD = -6.845978, 5.5654526
SHORT_SAMPLES = (6000, 8555)  # clips shorter than AST_SAMPLES (10480): 36 and 52 frames


def raw_images(seed: int) -> list[np.ndarray]:
    """uint8 [H, W, 3] images of IMAGE_SHAPES: smooth gradients plus noise."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in IMAGE_SHAPES:
        ys, xs = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
        base = np.stack([ys, xs, 0.5 * (ys + xs)], axis=-1)
        img = np.clip(0.6 * base + 0.4 * rng.random((h, w, 3)), 0, 1)
        out.append(np.round(img * 255).astype(np.uint8))
    return out


def image_features(model: torch.nn.Module, pixels: torch.Tensor) -> np.ndarray:
    """An HF two-tower model's unit-norm image embeddings of processed ``pixels``."""
    out = model.get_image_features(pixel_values=pixels)
    out = getattr(out, "pooler_output", out)
    return to_np(out / out.norm(dim=-1, keepdim=True))


def image_arrays(images: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {f"image_{i}": image for i, image in enumerate(images)}


@torch.no_grad()
def make_open_clip() -> dict:
    d = fresh_dir("open_clip", OUT)
    torch.manual_seed(11)
    vision_cfg, text_cfg = open_clip_cfgs(IMAGE_SIZE)
    text_cfg["vocab_size"] = CLIP_VOCAB
    model_cfg = {
        "embed_dim": EMBED_DIM,
        "quick_gelu": False,
        "vision_cfg": vision_cfg,
        "text_cfg": text_cfg,
    }
    model = CLIP(EMBED_DIM, vision_cfg, text_cfg, quick_gelu=False).eval()
    perturb(model, seed=111)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    import safetensors.torch

    safetensors.torch.save_file(state, str(d / "open_clip_model.safetensors"))
    check_saved(model, d / "open_clip_model.safetensors")
    preprocess_cfg = {
        "mean": list(OPENAI_DATASET_MEAN),
        "std": list(OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    write_json(
        d / "open_clip_config.json", {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    )
    # open_clip's hub uploads carry the HF CLIP tokenizer files; tokenizer.json is one.
    shutil.copyfile(TOKENIZERS / "clip_tokenizer.json", d / "tokenizer.json")

    tokenizer = SimpleTokenizer(bpe_path=str(TOKENIZERS / "clip_bpe_2000.txt.gz"))
    ids = tokenizer(TEXTS, context_length=TEXT["context"])
    transform = image_transform(
        IMAGE_SIZE,
        is_train=False,
        mean=OPENAI_DATASET_MEAN,
        std=OPENAI_DATASET_STD,
        interpolation="bicubic",
        resize_mode="shortest",
    )
    images = raw_images(11)
    pixels = torch.stack([transform(Image.fromarray(image)) for image in images])
    arrays = {
        **image_arrays(images),
        "text_ids": ids.numpy().astype(np.int32),
        "text_embeds": to_np(model.encode_text(ids, normalize=True)),
        "image_embeds": to_np(model.encode_image(pixels, normalize=True)),
    }
    write_npz(OUT / "open_clip.npz", arrays)
    return {
        "files": sorted(p.name for p in d.iterdir()),
        "model": "open_clip.model.CLIP(embed_dim, vision_cfg, text_cfg, quick_gelu=False)",
        "model_cfg": model_cfg,
        "preprocess": "open_clip.transform.image_transform(32, is_train=False, bicubic, "
        "resize_mode='shortest') on PIL.Image.fromarray(image_i)",
        "tokenizer": "open_clip.tokenizer.SimpleTokenizer(clip_bpe_2000.txt.gz)(texts, 16); "
        "tokenizer.json in the directory is transformers' CLIPTokenizer of the same merges",
        "embeds": "encode_text / encode_image with normalize=True",
    }


@torch.no_grad()
def make_hf_clip() -> dict:
    d = fresh_dir("hf_clip", OUT)
    torch.manual_seed(12)
    config = hf_clip_config()
    config.text_config.vocab_size = CLIP_VOCAB
    config.text_config.bos_token_id = CLIP_VOCAB - 2
    config.text_config.eos_token_id = CLIP_VOCAB - 1
    model = CLIPModel(config).eval()
    perturb(model, seed=112)
    model.save_pretrained(d)
    check_saved(model, d / "model.safetensors")
    sizes = {"size": {"shortest_edge": 36}, "crop_size": {"height": 32, "width": 32}}
    CLIPImageProcessor(**sizes).save_pretrained(d)
    shutil.copyfile(TOKENIZERS / "clip_tokenizer.json", d / "tokenizer.json")

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    text = tokenizer(
        TEXTS,
        padding="max_length",
        truncation=True,
        max_length=TEXT["context"],
        return_tensors="pt",
    )
    images = raw_images(12)
    pil = CLIPImageProcessorPil(**sizes)(
        images=[Image.fromarray(i) for i in images], return_tensors="pt"
    )
    fast = CLIPImageProcessor(**sizes)(
        images=[Image.fromarray(i) for i in images], return_tensors="pt"
    )

    text_out = model.get_text_features(**text)
    text_out = getattr(text_out, "pooler_output", text_out)
    image_embeds = image_features(model, pil["pixel_values"])
    torchvision_embeds = image_features(model, fast["pixel_values"])
    arrays = {
        **image_arrays(images),
        "text_ids": text["input_ids"].numpy().astype(np.int32),
        "text_embeds": to_np(text_out / text_out.norm(dim=-1, keepdim=True)),
        "image_embeds": image_embeds,
        "image_embeds_torchvision": torchvision_embeds,
    }
    write_npz(OUT / "hf_clip.npz", arrays)
    return {
        "files": sorted(p.name for p in d.iterdir()),
        "preprocess": f"CLIPImageProcessorPil(**{sizes}) (PIL bicubic, then centre crop)",
        "torchvision_vs_pil_max_abs": float(np.abs(torchvision_embeds - image_embeds).max()),
        "tokenizer": "PreTrainedTokenizerFast(tokenizer.json), padding max_length 16",
        "embeds": "get_text_features / get_image_features, L2-normalised",
    }


@torch.no_grad()
def make_hf_siglip() -> dict:
    d = fresh_dir("hf_siglip", OUT)
    torch.manual_seed(13)
    config = hf_siglip_config()
    config.text_config.vocab_size = SIGLIP_VOCAB
    model = SiglipModel(config).eval()
    perturb(model, seed=113)
    model.save_pretrained(d)
    check_saved(model, d / "model.safetensors")
    sizes = {"size": {"height": 32, "width": 32}}
    SiglipImageProcessor(**sizes).save_pretrained(d)
    tokenizer = SiglipTokenizer(
        str(TOKENIZERS / "siglip_tiny.model"), model_input_names=["input_ids"]
    )
    tokenizer.save_pretrained(d)

    text = tokenizer(
        TEXTS,
        padding="max_length",
        truncation=True,
        max_length=TEXT["context"],
        return_tensors="pt",
    )
    images = raw_images(13)
    pil = SiglipImageProcessorPil(**sizes)(
        images=[Image.fromarray(i) for i in images], return_tensors="pt"
    )
    fast = SiglipImageProcessor(**sizes)(
        images=[Image.fromarray(i) for i in images], return_tensors="pt"
    )

    text_out = model.get_text_features(input_ids=text["input_ids"])
    text_out = getattr(text_out, "pooler_output", text_out)
    image_embeds = image_features(model, pil["pixel_values"])
    torchvision_embeds = image_features(model, fast["pixel_values"])
    arrays = {
        **image_arrays(images),
        "text_ids": text["input_ids"].numpy().astype(np.int32),
        "text_embeds": to_np(text_out / text_out.norm(dim=-1, keepdim=True)),
        "image_embeds": image_embeds,
        "image_embeds_torchvision": torchvision_embeds,
    }
    write_npz(OUT / "hf_siglip.npz", arrays)
    return {
        "files": sorted(p.name for p in d.iterdir()),
        "preprocess": f"SiglipImageProcessorPil(**{sizes}) (PIL bicubic squash, no crop)",
        "torchvision_vs_pil_max_abs": float(np.abs(torchvision_embeds - image_embeds).max()),
        "tokenizer": "SiglipTokenizer(spiece.model), padding max_length 16, no attention mask",
        "embeds": "get_text_features / get_image_features, L2-normalised",
    }


@torch.no_grad()
def make_hf_ast() -> dict:
    d = fresh_dir("hf_ast", OUT)
    torch.manual_seed(14)
    model = ASTModel(hf_ast_config()).eval()
    perturb(model, seed=114)
    model.save_pretrained(d)
    check_saved(model, d / "model.safetensors")
    extractor = ASTFeatureExtractor(
        num_mel_bins=AST["mel"],
        max_length=AST["frames"],
        mean=SPEECH_COMMANDS_MEAN,
        std=SPEECH_COMMANDS_STD,
    )
    extractor.save_pretrained(d)
    waveform = waveforms(np.random.default_rng(1014))
    features = extractor(list(waveform), sampling_rate=SAMPLE_RATE, return_tensors="pt")
    out = model(input_values=features["input_values"]).pooler_output
    # Clips shorter than the model's 64 frames: the extractor pads the *filterbank* with 0.0
    # (before normalising), frame by frame, so the padding is not a silent waveform's log-mel.
    short = [waveform[0, : SHORT_SAMPLES[0]], waveform[1, : SHORT_SAMPLES[1]]]
    short_features = extractor(short, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    short_out = model(input_values=short_features["input_values"]).pooler_output
    write_npz(
        OUT / "hf_ast.npz",
        {
            "waveform": waveform,
            "audio_embeds": to_np(out / out.norm(dim=-1, keepdim=True)),
            **{f"short_waveform_{i}": clip for i, clip in enumerate(short)},
            "short_audio_embeds": to_np(short_out / short_out.norm(dim=-1, keepdim=True)),
        },
    )
    return {
        "files": sorted(p.name for p in d.iterdir()),
        "preprocess": "ASTFeatureExtractor(num_mel_bins=32, max_length=64, mean=-6.845978, "
        f"std=5.5654526) on waveforms of exactly {AST_SAMPLES} samples (64 frames); "
        f"short_waveform_i: the first {SHORT_SAMPLES} samples of rows 0 and 1, whose "
        "filterbanks the extractor pads with 0.0 to 64 frames (short_audio_embeds)",
        "embeds": "ASTModel pooler_output, L2-normalised",
    }


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    info = {
        "versions": versions(),
        "texts": TEXTS,
        "image_shapes": IMAGE_SHAPES,
        "arrays": "image_i: uint8 [H, W, 3] raw images (image_shapes[i]); text_ids: the "
        "peer tokenizer's ids [B, 16]; *_embeds: float32 [B, E], L2-normalised",
        "open_clip": make_open_clip(),
        "hf_clip": make_hf_clip(),
        "hf_siglip": make_hf_siglip(),
        "hf_ast": make_hf_ast(),
    }
    write_json(OUT / "info.json", info)


if __name__ == "__main__":
    main()
