"""A checkpoint's own preprocessing, read from its files, as values of mmtx's config.

open_clip records its eval transform in ``open_clip_config.json``'s ``preprocess_cfg``; HF
checkpoints in ``preprocessor_config.json`` (``CLIPImageProcessor``, ``SiglipImageProcessor``,
``ASTFeatureExtractor``). Each reader here returns :class:`Facts`: config values of one
modality (``model.image.*``, ``model.audio.*``) with the file and key each came from, and a
line for anything mmtx cannot reproduce.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mmtx.checkpoints.tensors import CheckpointImportError
from mmtx.nn.kaldi_fbank import AST_MEAN, AST_STD

# PIL's resampling filter codes, as HF image processors store them ("resample": 3).
PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
INTERPOLATIONS = ("bilinear", "bicubic")  # the filters mmtx resizes with
PREPROCESSOR_CONFIG = "preprocessor_config.json"
OPEN_CLIP_CONFIG = "open_clip_config.json"


@dataclasses.dataclass
class Facts:
    """Config values an import takes from somewhere other than the tensors' shapes.

    Attributes:
      values: dotted config field (``model.image.mean``) -> value.
      sources: the same fields -> where the value came from (``preprocessor_config.json
        resample=3``, ``--num_heads``, ``default (...)``), for the import summary.
      assumed: one line per value that no file or flag gave (a documented default was used).
      differences: one line per thing of the original's preprocessing mmtx does not do.
    """

    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    assumed: list[str] = dataclasses.field(default_factory=list)
    differences: list[str] = dataclasses.field(default_factory=list)

    def set(self, field: str, value: Any, source: str) -> None:
        """Records ``field = value``, taken from ``source``."""
        self.values[field] = value
        self.sources[field] = source

    def update(self, other: Facts) -> None:
        """Adds ``other``'s values, sources and lines to these."""
        self.values.update(other.values)
        self.sources.update(other.sources)
        self.assumed.extend(other.assumed)
        self.differences.extend(other.differences)

    def overrides(self) -> dict[str, Any]:
        """The values as nested config overrides (``{"model": {"image": {...}}}``)."""
        nested: dict[str, Any] = {}
        for field, value in self.values.items():
            *groups, name = field.split(".")
            holder = nested
            for group in groups:
                holder = holder.setdefault(group, {})
            holder[name] = value
        return nested


def _triple(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def open_clip_image(preprocess_cfg: Mapping[str, Any] | None, *, image_size: int) -> Facts:
    """``open_clip_config.json``'s ``preprocess_cfg`` -> ``model.image`` values.

    open_clip's eval transform (``open_clip.transform.image_transform(is_train=False)``):
    ``resize_mode`` ``shortest`` resizes the shorter side to the image size and cuts the
    centre square, ``squash`` resizes both sides; ``interpolation`` bicubic by default.
    ``mean``/``std`` are read by the caller (they are there with or without the rest).
    """
    facts = Facts()
    cfg = dict(preprocess_cfg or {})
    where = f"{OPEN_CLIP_CONFIG} preprocess_cfg"
    interpolation = cfg.get("interpolation")
    if interpolation is None:
        facts.set("model.image.interpolation", "bicubic", f"default: open_clip's (no {where})")
    elif interpolation in INTERPOLATIONS:
        facts.set("model.image.interpolation", interpolation, f"{where}.interpolation")
    else:
        facts.set("model.image.interpolation", "bicubic", f"{where}.interpolation")
        facts.differences.append(
            f"image interpolation: open_clip's is {interpolation!r}; mmtx resizes with bicubic"
        )
    mode = cfg.get("resize_mode", "shortest")
    source = (
        f"{where}.resize_mode"
        if "resize_mode" in cfg
        else f"default: open_clip's (no {where}.resize_mode)"
    )
    if mode == "squash":
        facts.set("model.image.resize", "squash", source)
    else:
        facts.set("model.image.resize", "shorter_side", source)
        if mode != "shortest":
            facts.differences.append(
                f"image resizing: open_clip's resize_mode is {mode!r} (the longer side, then "
                "padding); mmtx resizes the shorter side and cuts the centre square"
            )
    facts.set("model.image.resize_size", 0, f"{where} (the crop is the image size, {image_size})")
    facts.set("model.image.crop_offset", "round", "torchvision's CenterCrop (open_clip's)")
    return facts


def _size_dict(size: Any, *, square: bool) -> dict[str, int]:
    if isinstance(size, int):  # old processors: one number
        return {"height": size, "width": size} if square else {"shortest_edge": size}
    return {k: int(v) for k, v in dict(size or {}).items()}


def hf_image(
    preprocessor: Mapping[str, Any] | None, *, image_size: int, family: str, square: bool
) -> Facts:
    """An HF image processor's ``preprocessor_config.json`` -> ``model.image`` values.

    ``CLIPImageProcessor``: ``size.shortest_edge`` (the shorter side's length, bicubic by
    ``resample``), then ``crop_size`` from the centre; ``SiglipImageProcessor``:
    ``size.height/width`` (squash, no crop). ``image_mean``/``image_std`` (identity when
    ``do_normalize`` is false). ``square``: how a bare-number ``size`` reads (SigLIP: a square).
    Without the file, the family's defaults are used and said in :attr:`Facts.assumed`.
    """
    if preprocessor is None:
        return _hf_image_defaults(family, square=square)
    facts = Facts()
    _hf_interpolation(facts, preprocessor)
    _hf_resize(facts, preprocessor, image_size=image_size, square=square)
    _hf_normalisation(facts, preprocessor)
    return facts


def _hf_image_defaults(family: str, *, square: bool) -> Facts:
    """An HF image family's preprocessing without its ``preprocessor_config.json``: bicubic,
    squashed (``square``) or shorter side then the centre crop; said in ``assumed``."""
    facts = Facts()
    facts.assumed.append(
        f"image preprocessing: {family}'s defaults (bicubic, "
        + ("squash to the image size" if square else "shorter side, then the centre crop")
        + f"; no {PREPROCESSOR_CONFIG} beside the weights)"
    )
    facts.set("model.image.interpolation", "bicubic", f"default (no {PREPROCESSOR_CONFIG})")
    facts.set(
        "model.image.resize",
        "squash" if square else "shorter_side",
        f"default (no {PREPROCESSOR_CONFIG})",
    )
    facts.set("model.image.resize_size", 0, f"default (no {PREPROCESSOR_CONFIG})")
    if not square:
        facts.set("model.image.crop_offset", "floor", "HF's center_crop: (H - crop) // 2")
    return facts


def _hf_interpolation(facts: Facts, preprocessor: Mapping[str, Any]) -> None:
    """``resample`` (a PIL filter code) -> ``model.image.interpolation``; one mmtx lacks is
    bicubic, and a difference."""
    code = preprocessor.get("resample", 3)
    name = PIL_FILTERS.get(int(code), f"code {code}") if isinstance(code, int) else str(code)
    facts.set(
        "model.image.interpolation",
        name if name in INTERPOLATIONS else "bicubic",
        f"{PREPROCESSOR_CONFIG} resample={code}",
    )
    if name not in INTERPOLATIONS:
        facts.differences.append(
            f"image interpolation: the checkpoint resizes with PIL's {name}; mmtx uses bicubic"
        )


def _hf_resize(
    facts: Facts, preprocessor: Mapping[str, Any], *, image_size: int, square: bool
) -> None:
    """``size`` and ``crop_size`` -> ``model.image.resize`` (shorter side, or squash),
    ``resize_size`` and ``crop_offset``; what mmtx does otherwise is a difference."""
    file = PREPROCESSOR_CONFIG
    size = _size_dict(preprocessor.get("size"), square=square)
    crop = _size_dict(preprocessor.get("crop_size"), square=True)
    do_crop = bool(preprocessor.get("do_center_crop", False)) and bool(crop)
    if not preprocessor.get("do_resize", True):
        facts.differences.append(
            f"image resizing: {file} has do_resize false (images must come at the model's "
            f"size); mmtx resizes any other size"
        )
    if "shortest_edge" in size:
        edge = size["shortest_edge"]
        facts.set("model.image.resize", "shorter_side", f"{file} size.shortest_edge")
        facts.set("model.image.crop_offset", "floor", "HF's center_crop: (H - crop) // 2")
        facts.set(
            "model.image.resize_size",
            0 if edge == image_size else edge,
            f"{file} size.shortest_edge={edge}",
        )
        if edge < image_size:
            raise CheckpointImportError(
                f"{file}: size.shortest_edge {edge} is smaller than the model's image size "
                f"{image_size}"
            )
        crop_side = (crop.get("height"), crop.get("width")) if do_crop else None
        if crop_side != (image_size, image_size):
            facts.differences.append(
                f"image crop: {file} crops {crop_side or 'nothing'}; mmtx cuts the centre "
                f"{image_size} x {image_size} the model takes"
            )
    elif "height" in size:
        facts.set("model.image.resize", "squash", f"{file} size.height/width")
        facts.set("model.image.resize_size", 0, f"{file} size (no crop)")
        if (size["height"], size.get("width")) != (image_size, image_size):
            facts.differences.append(
                f"image size: {file} resizes to {size['height']} x {size.get('width')}; the "
                f"model takes {image_size} x {image_size}, which mmtx resizes to"
            )


def _hf_normalisation(facts: Facts, preprocessor: Mapping[str, Any]) -> None:
    """``image_mean``/``image_std`` (identity when ``do_normalize`` is false) -> ``model.image``;
    a pixel scale other than 1/255 is a difference."""
    file = PREPROCESSOR_CONFIG
    if preprocessor.get("do_normalize", True):
        for ours, theirs in (("mean", "image_mean"), ("std", "image_std")):
            if theirs in preprocessor:
                facts.set(f"model.image.{ours}", _triple(preprocessor[theirs]), f"{file} {theirs}")
    else:
        facts.set("model.image.mean", (0.0, 0.0, 0.0), f"{file} do_normalize=false")
        facts.set("model.image.std", (1.0, 1.0, 1.0), f"{file} do_normalize=false")
    rescale = float(preprocessor.get("rescale_factor", 1 / 255))
    if not preprocessor.get("do_rescale", True):
        rescale = 1.0
    if abs(rescale * 255 - 1) > 1e-6:
        facts.differences.append(
            f"pixel scale: {file} scales pixels by {rescale}; mmtx takes uint8 pixels / 255"
        )


# ASTFeatureExtractor's defaults: AudioSet's statistics at 16 kHz.
AST_DEFAULTS = {"sampling_rate": 16000, "mean": AST_MEAN, "std": AST_STD}


def hf_audio(
    preprocessor: Mapping[str, Any] | None, *, num_mel_bins: int, max_length: int
) -> Facts:
    """``ASTFeatureExtractor``'s ``preprocessor_config.json`` -> ``model.audio`` values.

    ``sampling_rate`` (Kaldi frames of 25 ms every 10 ms at that rate; ``max_length`` frames
    make ``num_samples``), ``mean`` and ``std`` (features ``(fbank - mean) / (2 * std)``, so
    ``log_mel_std`` is twice ``std``; identity when ``do_normalize`` is false). Its
    ``num_mel_bins`` and ``max_length`` must agree with ``config.json``'s (passed here).
    Without the file, AudioSet's statistics at 16 kHz are assumed and said.
    """
    facts = Facts()
    file = PREPROCESSOR_CONFIG
    cfg = dict(preprocessor or {})
    if preprocessor is None:
        facts.assumed.append(
            f"audio statistics: AudioSet's (mean {AST_DEFAULTS['mean']}, std "
            f"{AST_DEFAULTS['std']}, 16 kHz), ASTFeatureExtractor's defaults (no {file} beside "
            "the weights)"
        )
    for key, theirs in (("num_mel_bins", num_mel_bins), ("max_length", max_length)):
        if key in cfg and int(cfg[key]) != theirs:
            raise CheckpointImportError(
                f"{file} says {key} = {cfg[key]}, but config.json and the weights have {theirs}"
            )

    def source(key: str) -> str:
        return f"{file} {key}" if key in cfg else f"default: ASTFeatureExtractor's (no {key})"

    rate = int(cfg.get("sampling_rate", AST_DEFAULTS["sampling_rate"]))
    window, hop = rate * 25 // 1000, rate * 10 // 1000  # Kaldi's frame_length / frame_shift
    facts.set("model.audio.sample_rate", rate, source("sampling_rate"))
    facts.set("model.audio.window_length", window, f"25 ms at {rate} Hz (Kaldi)")
    facts.set("model.audio.hop_length", hop, f"10 ms at {rate} Hz (Kaldi)")
    facts.set("model.audio.num_samples", window + (max_length - 1) * hop, f"{max_length} frames")
    facts.set("model.audio.max_frequency", rate / 2, f"half of {rate} Hz (Kaldi)")
    if cfg.get("do_normalize", True):
        mean = float(cfg.get("mean", AST_DEFAULTS["mean"]))
        std = float(cfg.get("std", AST_DEFAULTS["std"]))
        facts.set("model.audio.log_mel_mean", mean, source("mean"))
        facts.set("model.audio.log_mel_std", 2 * std, source("std") + " (x 2, as AST divides)")
    else:
        facts.set("model.audio.log_mel_mean", 0.0, f"{file} do_normalize=false")
        facts.set("model.audio.log_mel_std", 1.0, f"{file} do_normalize=false")
    return facts
