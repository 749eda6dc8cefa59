"""Pure preprocessing functions that turn raw text, images, video and audio into model inputs.

They take and return numpy arrays (randomness only through an explicit
``np.random.Generator``), so the same code runs in the input pipeline
(:mod:`mmtx.data.pipeline`) and in :class:`mmtx.Model`'s raw-input calls.

Images: :func:`decode_image`, :func:`image_to_float`, :func:`resize_shorter_side`,
:func:`squash`, :func:`center_crop`, :func:`random_crop`, :func:`random_resized_crop`,
:func:`random_flip`, and :func:`preprocess_image` chaining them (how an image is made
square, :data:`RESIZE_MODES`, and the resampling filter, :data:`INTERPOLATIONS`, are
choices; sizes and crop offsets follow torchvision's ``Resize`` and ``CenterCrop``), and
:func:`to_image_batch` for :class:`mmtx.Model`'s raw inputs. Video: :func:`sample_frames`,
:func:`preprocess_video` (each frame as :func:`preprocess_image` makes it, without the
random crops) and :func:`to_video_batch`. Audio: :func:`audio_to_float`, :func:`resample`,
:func:`crop_or_pad`, :func:`preprocess_audio` (the pipeline's) and
:func:`to_audio_batch_with_lengths` (raw inputs of :class:`mmtx.Model`: the waveforms and
each clip's real samples; the waveforms alone: :func:`to_audio_batch`); the log-mel
spectrogram (:func:`log_mel_spectrogram`, the same function the audio encoder calls) runs
inside the model, on the accelerator, so batches carry raw waveforms. Text:
:func:`select_text` picks one caption of several, :func:`all_texts` reads them all.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from math import gcd
from typing import Any

import numpy as np
from PIL import Image

# The choices of preprocess_image's keywords (re-exported; the config layer reads them there).
from mmtx.data.image_options import CROP_OFFSETS, INTERPOLATIONS, RESIZE_MODES
from mmtx.nn.embed import log_mel_spectrogram

__all__ = [
    "CROP_OFFSETS",
    "INTERPOLATIONS",
    "MAX_AUDIO_CHANNELS",
    "RESIZE_MODES",
    "all_texts",
    "audio_to_float",
    "center_crop",
    "crop_or_pad",
    "decode_image",
    "image_to_float",
    "log_mel_spectrogram",
    "preprocess_audio",
    "preprocess_image",
    "preprocess_video",
    "random_crop",
    "random_flip",
    "random_resized_crop",
    "resample",
    "resize_shorter_side",
    "sample_frames",
    "select_text",
    "squash",
    "to_audio_batch",
    "to_audio_batch_with_lengths",
    "to_image_batch",
    "to_video_batch",
]


# ----------------------------------------------------------------------------- text


def select_text(value: Any, rng: np.random.Generator | None = None) -> str:
    """One caption from a dataset's text feature.

    ``value`` is a ``str``, UTF-8 ``bytes`` or a sequence/array of them (several captions per
    image, as in COCO). From a sequence, ``rng`` picks one uniformly (training); without
    ``rng`` the first is taken (evaluation). Returns a ``str``.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence | np.ndarray):
        if len(value) == 0:
            raise ValueError("the text feature holds no captions")
        index = 0 if rng is None else int(rng.integers(len(value)))
        return select_text(value[index])
    raise TypeError(f"text must be str, bytes or a sequence of them; got {type(value).__name__}")


def all_texts(value: Any) -> list[str]:
    """Every caption of a dataset's text feature (a ``str``, UTF-8 ``bytes`` or a
    sequence/array of them), in order, as ``str``: what evaluation with several captions per
    image reads (:func:`select_text` picks one)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, str | bytes):
        return [select_text(value)]
    if isinstance(value, Sequence | np.ndarray):
        return [select_text(v) for v in value]
    raise TypeError(f"text must be str, bytes or a sequence of them; got {type(value).__name__}")


# ---------------------------------------------------------------------------- images


def decode_image(data: bytes, min_size: int | None = None, channels: int = 3) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) -> uint8 ``[H, W, channels]``.

    Converted as PIL's ``Image.convert("RGB")`` (``"L"`` for ``channels=1``) does: an alpha
    channel (RGBA, LA, palette transparency) is dropped, not composited, so a transparent
    pixel shows its stored colour (black in most PNGs); grey is repeated to RGB.

    With ``min_size``, a JPEG is decoded at the smallest of libjpeg's 1/1, 1/2, 1/4, 1/8
    scales whose shorter side is still >= ``min_size`` (PIL's ``draft``): a 640 x 480 photo
    for a 64 px model decodes at 160 x 120, several times faster, and the resize that follows
    has less to do. Other formats decode at full size.
    """
    with Image.open(io.BytesIO(data)) as image:
        if min_size is not None:
            width, height = image.size
            scale = min(width, height) / min_size
            if scale >= 2:
                # draft keeps both sides >= the requested size; ask for the aspect-kept size.
                image.draft(image.mode, (int(width / scale), int(height / scale)))
        array = _pil_to_array(image, channels)
    return array


def _pil_to_array(image: Image.Image, channels: int) -> np.ndarray:
    """A PIL image -> uint8 ``[H, W, channels]`` by ``convert("RGB")`` (``"L"`` for one
    channel): alpha dropped, palettes expanded, grey repeated."""
    array = np.asarray(image.convert("RGB" if channels == 3 else "L"))
    return array if array.ndim == 3 else array[..., None]


def image_to_float(image: np.ndarray) -> np.ndarray:
    """``uint8`` pixels -> float32 in ``[0, 1]`` (x / 255); float images are checked to lie in
    ``[0, 1]`` and cast to float32. Any shape."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1 / 255)
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"image dtype must be uint8 or float; got {image.dtype}")
    if not np.isfinite(image).all():
        raise ValueError("image has non-finite pixels (NaN or inf); float pixels are in [0, 1]")
    if image.size and (image.min() < -1e-3 or image.max() > 1 + 1e-3):
        raise ValueError(
            "float images must be in [0, 1]; got values in "
            f"[{image.min():.3g}, {image.max():.3g}] (pass uint8 for 0..255 pixels)"
        )
    return image.astype(np.float32)


_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def _resize(
    image: np.ndarray, height: int, width: int, interpolation: str = "bilinear"
) -> np.ndarray:
    """Resizes ``[H, W, C]`` (uint8 or float32) to ``[height, width, C]``, same dtype, with
    PIL's ``interpolation`` filter (:data:`INTERPOLATIONS`).

    PIL's filters widen their support when shrinking, so downscaling is antialiased. uint8
    RGB or grey is resized as one PIL image (PIL rounds and clips); anything else channel by
    channel in PIL's float mode ``"F"`` (uint8 then clipped to [0, 255] and truncated).
    """
    if image.shape[:2] == (height, width):
        return image
    resample = _FILTERS[interpolation]
    if image.dtype == np.uint8 and image.shape[2] in (1, 3):
        mode_image = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
        out = np.asarray(mode_image.resize((width, height), resample))
        return out.reshape(height, width, image.shape[2])
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c], np.float32), mode="F").resize(
                (width, height), resample
            )
        )
        for c in range(image.shape[2])
    ]
    out = np.stack(channels, axis=-1)
    if image.dtype == np.uint8:  # bicubic overshoots; a cast alone would wrap around
        out = np.clip(out, 0, 255)
    return out.astype(image.dtype)


def _check_resize_options(
    image_size: int, resize: str, interpolation: str, resize_size: int, crop_offset: str = "round"
) -> None:
    """Raises ``ValueError`` for a resize mode, filter, ``resize_size`` or crop offset not
    allowed."""
    if crop_offset not in CROP_OFFSETS:
        raise ValueError(f"crop_offset must be one of {CROP_OFFSETS}; got {crop_offset!r}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}; got {resize!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}")
    if resize_size and resize_size < image_size:
        raise ValueError(
            f"resize_size must be 0 (= image_size) or >= image_size {image_size}; got {resize_size}"
        )
    if resize_size and resize != "shorter_side":
        raise ValueError(
            f"resize_size applies to resize='shorter_side' only (squash resizes both sides to "
            f"image_size); got resize_size={resize_size} with resize={resize!r}"
        )


def _resize_options(
    image_size: int, resize: str, interpolation: str, resize_size: int, crop_offset: str
) -> dict[str, Any]:
    """The resize keywords of :func:`preprocess_image`, checked (:func:`_check_resize_options`)."""
    _check_resize_options(image_size, resize, interpolation, resize_size, crop_offset)
    return {
        "resize": resize,
        "interpolation": interpolation,
        "resize_size": resize_size,
        "crop_offset": crop_offset,
    }


def resize_shorter_side(
    image: np.ndarray, size: int, *, interpolation: str = "bilinear"
) -> np.ndarray:
    """Resizes ``[H, W, C]`` so that its shorter side is ``size``, keeping the aspect ratio:
    ``[size, L, C]`` or ``[L, size, C]`` with the longer side ``L = int(size * long /
    short)`` (truncated, as torchvision's ``Resize(size)`` computes it). PIL's
    ``interpolation`` filter (:data:`INTERPOLATIONS`, antialiased when shrinking); dtype kept
    (``uint8`` or float32)."""
    height, width = image.shape[:2]
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    return _resize(image, new_h, new_w, interpolation)


def squash(image: np.ndarray, size: int, *, interpolation: str = "bilinear") -> np.ndarray:
    """Resizes ``[H, W, C]`` to ``[size, size, C]``, both sides, aspect ratio not kept (the
    ``Resize((size, size))`` of open_clip's ``resize_mode='squash'`` and of HF's SigLIP
    processor). PIL's ``interpolation`` filter; dtype kept."""
    return _resize(image, size, size, interpolation)


def center_crop(image: np.ndarray, size: int, offset: str = "round") -> np.ndarray:
    """The central ``[size, size, C]`` window of ``[H, W, C]`` (``H, W >= size``).

    With ``offset="round"`` (default) the window starts at row ``int(round((H - size) / 2))``
    and column ``int(round((W - size) / 2))``, Python's ``round`` (half to even), as
    torchvision's ``CenterCrop`` places it: when ``H - size`` is odd the half offset rounds to
    the even neighbour, so the extra row is cut at the top for ``H - size = 3`` (start row 2)
    and at the bottom for ``= 5`` (start row 2 too). ``offset="floor"`` starts at ``(H -
    size) // 2``, as HF image processors' ``center_crop`` does.
    """
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f"cannot crop {size}x{size} from an image of {height}x{width}")
    if offset == "floor":
        top, left = (height - size) // 2, (width - size) // 2
    else:
        top = round((height - size) / 2.0)  # Python's round: half to even
        left = round((width - size) / 2.0)
    return image[top : top + size, left : left + size]


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly placed ``[size, size, C]`` window of ``[H, W, C]`` (``H, W >= size``)."""
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f"cannot crop {size}x{size} from an image of {height}x{width}")
    top = int(rng.integers(height - size + 1))
    left = int(rng.integers(width - size + 1))
    return image[top : top + size, left : left + size]


def random_resized_crop(
    image: np.ndarray,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """A random window of ``[H, W, C]`` covering a fraction in ``scale`` of its area with an
    aspect ratio (width / height) in ``ratio`` (log-uniform), resized to ``[size, size, C]``
    with PIL's ``interpolation`` filter (:data:`INTERPOLATIONS`): torchvision's
    ``RandomResizedCrop``, which open_clip trains with at ``scale=(0.9, 1.0)``. After 10 draws
    that do not fit, the largest centred window of the nearest allowed ratio. Dtype kept."""
    height, width = image.shape[:2]
    area = height * width
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = float(np.exp(rng.uniform(*log_ratio)))
        crop_w = round(np.sqrt(target * aspect))
        crop_h = round(np.sqrt(target / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(height - crop_h + 1))
            left = int(rng.integers(width - crop_w + 1))
            window = image[top : top + crop_h, left : left + crop_w]
            return _resize(window, size, size, interpolation)
    aspect = width / height
    if aspect < ratio[0]:
        crop_w, crop_h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        crop_h, crop_w = height, round(height * ratio[1])
    else:
        crop_w, crop_h = width, height
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return _resize(image[top : top + crop_h, left : left + crop_w], size, size, interpolation)


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirrors ``[H, W, C]`` left-right with probability 1/2."""
    return image[:, ::-1] if rng.random() < 0.5 else image


def preprocess_image(
    image: np.ndarray | bytes | Image.Image,
    image_size: int,
    *,
    channels: int = 3,
    rng: np.random.Generator | None = None,
    crop_scale: tuple[float, float] | None = None,
    resize: str = "shorter_side",
    interpolation: str = "bilinear",
    resize_size: int = 0,
    crop_offset: str = "round",
) -> np.ndarray:
    """One raw image -> float32 ``[image_size, image_size, channels]`` in ``[0, 1]``.

    ``image``: ``[H, W, C]`` or ``[H, W]`` (grey), ``uint8`` or float in ``[0, 1]``; a
    ``PIL.Image.Image``; or encoded bytes (decoded by :func:`decode_image`, at a reduced scale
    where JPEG allows). Grey is repeated to RGB. An alpha channel is dropped as PIL's
    ``convert("RGB")`` drops it (not composited onto a background): the last channel of a
    4-channel (RGBA) or 2-channel (grey + alpha) array when the model takes another number of
    channels; PIL images and bytes are converted with ``convert``.

    Made square by ``resize`` (:data:`RESIZE_MODES`), resampled with PIL's ``interpolation``
    filter (:data:`INTERPOLATIONS`; uint8 images in PIL's RGB or L mode, float ones per
    channel in mode ``"F"``):

    * ``"shorter_side"`` (default): the shorter side resized to ``resize_size`` (0, the
      default: ``image_size``; else ``>= image_size``) keeping the aspect ratio
      (:func:`resize_shorter_side`), then the centre ``image_size`` square
      (:func:`center_crop`, its odd margin placed by ``crop_offset``, :data:`CROP_OFFSETS`):
      open_clip's eval transform, and HF CLIP's with ``resize_size`` its ``shortest_edge``,
      ``image_size`` its ``crop_size`` and ``crop_offset="floor"``. With ``rng`` (training
      augmentation) the square is placed at random and mirrored with probability 1/2.
    * ``"squash"``: both sides resized to ``image_size`` (:func:`squash`), nothing cut; with
      ``rng``, mirrored with probability 1/2.

    With ``rng`` and ``crop_scale``, either mode is replaced by a :func:`random_resized_crop`
    of that area fraction of the image (any aspect ratio in [3/4, 4/3], resized with
    ``interpolation``), mirrored with probability 1/2. Normalising with the model's
    mean/std happens in :class:`mmtx.encoders.ImageEncoder`. Raises ``ValueError`` for a
    ``resize``, ``interpolation`` or ``resize_size`` not allowed (``resize_size`` applies to
    ``"shorter_side"`` only).
    """
    _check_resize_options(image_size, resize, interpolation, resize_size, crop_offset)
    shorter_side = resize_size or image_size
    if isinstance(image, bytes | np.bytes_):
        image = decode_image(bytes(image), min_size=shorter_side, channels=channels)
    elif isinstance(image, Image.Image):
        image = _pil_to_array(image, channels)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C]; got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image has zero height or width: shape {image.shape}")
    if image.shape[-1] in (2, 4) and image.shape[-1] != channels:
        image = image[..., :-1]  # RGBA -> RGB, grey + alpha -> grey, as PIL's convert does
    if image.shape[-1] == 1 and channels == 3:
        image = np.repeat(image, 3, axis=-1)
    if image.shape[-1] != channels:
        raise ValueError(f"image must have {channels} channels; got shape {image.shape}")
    if image.dtype != np.uint8:
        image = image_to_float(image)  # validates the range before resizing
    if rng is not None and crop_scale is not None:
        image = random_resized_crop(
            image, image_size, rng, tuple(crop_scale), interpolation=interpolation
        )
        return _unit_pixels(random_flip(image, rng))
    if resize == "squash":
        image = squash(image, image_size, interpolation=interpolation)
        if rng is not None:
            image = random_flip(image, rng)
        return _unit_pixels(image)
    image = resize_shorter_side(image, shorter_side, interpolation=interpolation)
    if rng is None:
        image = center_crop(image, image_size, crop_offset)
    else:
        image = random_flip(random_crop(image, image_size, rng), rng)
    return _unit_pixels(image)


def _unit_pixels(image: np.ndarray) -> np.ndarray:
    """A resized ``[H, W, C]`` image -> float32 in ``[0, 1]``: uint8 scaled by 1/255; float
    (checked by :func:`image_to_float` before resizing) clipped, since bicubic resampling
    overshoots beside sharp edges."""
    if image.dtype == np.uint8:
        return image_to_float(image)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def to_image_batch(
    images: Any,
    image_size: int,
    channels: int = 3,
    *,
    name: str = "image",
    resize: str = "shorter_side",
    interpolation: str = "bilinear",
    resize_size: int = 0,
    crop_offset: str = "round",
) -> np.ndarray:
    """Raw images -> float32 ``[B, image_size, image_size, channels]`` in ``[0, 1]``.

    ``images`` is one image ``[H, W, C]`` or ``[H, W]`` (grey), a batch ``[B, H, W, C]``,
    encoded image ``bytes`` (PNG, JPEG, ...; decoded by :func:`decode_image` as the input
    pipeline decodes a dataset's), a ``PIL.Image.Image``, or a list whose entries are each
    one image: arrays (or nested lists) of any size, bytes, PIL images, or a mix; each is
    resized to the model's size. ``uint8`` pixels are scaled by 1/255; floats must be finite
    and already in ``[0, 1]``. An alpha channel (RGBA, grey + alpha) is dropped, as PIL's
    ``convert("RGB")`` drops it. Each image goes through :func:`preprocess_image` without
    augmentation, with ``resize``, ``interpolation`` and ``resize_size`` (default: shorter
    side resized bilinearly to ``image_size``, centre crop), as evaluation batches do in the
    input pipeline. Errors name ``name`` and, in a batch, the example
    (``image_features[1]: ...``); a ``resize`` option not allowed is a ``ValueError``.
    """
    options = _resize_options(image_size, resize, interpolation, resize_size, crop_offset)
    if isinstance(images, np.ndarray) and images.dtype.kind in "OS" and images.ndim <= 1:
        images = images.item() if images.ndim == 0 else list(images)  # encoded, as TFDS gives
    if isinstance(images, bytes | np.bytes_ | Image.Image):
        examples, batched = [images], False
    elif isinstance(images, list | tuple) and (
        any(isinstance(x, bytes | np.bytes_ | np.ndarray | Image.Image) for x in images)
        or not _stacks(images)
    ):
        examples, batched = list(images), True
    else:
        array = np.asarray(images)
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim not in (3, 4):
            raise ValueError(
                f"{name} must be [H, W, C] or [B, H, W, C] (or encoded bytes); got shape "
                f"{array.shape} ({array.ndim}-D)"
            )
        batched = array.ndim == 4
        examples = list(array) if batched else [array]
    return _stack_each(
        examples,
        lambda image: preprocess_image(image, image_size, channels=channels, **options),
        name=name,
        batched=batched,
    )


def _stack_each(
    examples: list,
    process: Callable[[Any], np.ndarray],
    *,
    name: str,
    batched: bool,
) -> np.ndarray:
    """``process`` applied to each of ``examples`` (raw inputs, one an example), stacked:
    ``[len(examples), *shape]`` of the shape and dtype ``process`` returns (one per example).

    A ``ValueError``, ``TypeError`` or ``OSError`` that ``process`` raises is raised again
    naming the input, ``name``, and in a batch (``batched``) the example:
    ``"{name}[{index}]: {error}"`` (``"{name}: {error}"`` for one example), chained to the
    original; an ``OSError`` (PIL's ``UnidentifiedImageError``: bytes that are no image)
    becomes a ``ValueError``, the others keep their type. No examples is a ``ValueError``
    (``"{name} batch is empty"``).
    """
    if not examples:
        raise ValueError(f"{name} batch is empty")
    out = []
    for index, example in enumerate(examples):
        try:
            out.append(process(example))
        except (ValueError, TypeError, OSError) as error:
            where = f"{name}[{index}]" if batched else name
            kind = ValueError if isinstance(error, OSError) else type(error)
            raise kind(f"{where}: {error}") from error
    return np.stack(out)


def _stacks(images: list | tuple) -> bool:
    """Whether numpy makes one rectangular array of a list of nested lists (a list of images
    of different sizes does not: numpy's "inhomogeneous shape")."""
    try:
        return np.asarray(images).dtype != object
    except ValueError:
        return False


# ----------------------------------------------------------------------------- video


def sample_frames(num_available: int, num_frames: int) -> np.ndarray:
    """int ``[num_frames]``: the frames a clip of ``num_available`` keeps, evenly spaced over
    the whole clip (each the centre of its span); frames repeat when the clip is shorter."""
    if num_available <= 0:
        raise ValueError("the video has no frames")
    centres = (np.arange(num_frames) + 0.5) * num_available / num_frames
    return np.minimum(np.floor(centres).astype(np.int64), num_available - 1)


def preprocess_video(
    video: Any,
    num_frames: int,
    image_size: int,
    *,
    channels: int = 3,
    resize: str = "shorter_side",
    interpolation: str = "bilinear",
    resize_size: int = 0,
    crop_offset: str = "round",
) -> np.ndarray:
    """One raw clip -> float32 ``[num_frames, image_size, image_size, channels]`` in [0, 1].

    ``video``: ``[T, H, W, C]`` (or ``[T, H, W]`` grey), ``uint8`` or float in ``[0, 1]``, or a
    sequence of frames (arrays or encoded image bytes, as a TFDS ``Video`` feature stored as
    encoded frames gives). ``num_frames`` frames are kept, evenly spaced over the clip
    (:func:`sample_frames`), and each goes through :func:`preprocess_image` without
    augmentation, with ``resize``, ``interpolation`` and ``resize_size`` (default: shorter
    side resized bilinearly, centre crop), so every frame gets the same crop.
    """
    options = _resize_options(image_size, resize, interpolation, resize_size, crop_offset)
    frames = list(video) if isinstance(video, list | tuple) else None
    if frames is None:
        array = np.asarray(video)
        if array.ndim == 3:
            array = array[..., None]
        if array.ndim != 4:
            raise ValueError(f"video must be [T, H, W, C]; got shape {array.shape}")
        frames = list(array)
    keep = sample_frames(len(frames), num_frames)
    return np.stack(
        [preprocess_image(frames[i], image_size, channels=channels, **options) for i in keep]
    )


def to_video_batch(
    videos: Any,
    num_frames: int,
    image_size: int,
    channels: int = 3,
    *,
    name: str = "video",
    resize: str = "shorter_side",
    interpolation: str = "bilinear",
    resize_size: int = 0,
    crop_offset: str = "round",
) -> np.ndarray:
    """Raw clips -> float32 ``[B, num_frames, image_size, image_size, channels]`` in [0, 1].

    ``videos`` is one clip ``[T, H, W, C]``, a batch ``[B, T, H, W, C]``, or a list of clips
    (each any length and frame size). Each goes through :func:`preprocess_video` with
    ``resize``, ``interpolation`` and ``resize_size``. Errors name ``name`` and, in a batch,
    the example (``video_inputs[1]: ...``); a ``resize`` option not allowed is a
    ``ValueError``.
    """
    options = _resize_options(image_size, resize, interpolation, resize_size, crop_offset)
    if isinstance(videos, list | tuple):
        examples, batched = list(videos), True
    else:
        array = np.asarray(videos)
        if array.ndim not in (4, 5):
            raise ValueError(
                f"{name} must be [T, H, W, C] or [B, T, H, W, C]; got shape {array.shape}"
            )
        batched = array.ndim == 5
        examples = list(array) if batched else [array]
    return _stack_each(
        examples,
        lambda clip: preprocess_video(clip, num_frames, image_size, channels=channels, **options),
        name=name,
        batched=batched,
    )


# ----------------------------------------------------------------------------- audio

# The most channels a multi-channel clip may have (7.1 surround); a 2-D array whose last axis
# is at most this (and shorter than the first) is one clip [samples, channels].
MAX_AUDIO_CHANNELS = 8


def audio_to_float(audio: np.ndarray) -> np.ndarray:
    """A waveform -> float32 in about ``[-1, 1]``: integer PCM is divided by its full scale
    (``int16`` by 32768, ``int32`` by 2**31, ``uint8`` centred on 128); floats are cast."""
    audio = np.asarray(audio)
    if np.issubdtype(audio.dtype, np.floating):
        if not np.isfinite(audio).all():
            raise ValueError("audio has non-finite samples (NaN or inf)")
        return audio.astype(np.float32)
    if audio.dtype == np.uint8:
        return (audio.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(audio.dtype, np.signedinteger):
        full_scale = float(2 ** (8 * audio.dtype.itemsize - 1))
        return (audio.astype(np.float64) / full_scale).astype(np.float32)
    raise TypeError(f"audio must be PCM integers or floats; got dtype {audio.dtype}")


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling of ``[..., S]`` float audio along the last axis.

    Polyphase filtering (``scipy.signal.resample_poly``, Kaiser-windowed FIR) by the ratio
    ``to_rate / from_rate`` reduced to lowest terms. Returns float32
    ``[..., ceil(S * to_rate / from_rate)]``; the input itself when the rates are equal.
    """
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive; got {from_rate} -> {to_rate}")
    audio = np.asarray(audio, np.float32)
    if from_rate == to_rate:
        return audio
    common = gcd(int(from_rate), int(to_rate))
    up, down = int(to_rate) // common, int(from_rate) // common
    import scipy.signal  # imported here: 0.8 s that only resampling needs

    return scipy.signal.resample_poly(audio, up, down, axis=-1).astype(np.float32)


def crop_or_pad(
    audio: np.ndarray, num_samples: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``[S]`` -> ``[num_samples]``: a longer clip is cropped (from the start, or at a uniform
    random offset with ``rng``), a shorter one zero-padded at the end. Dtype kept."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be [samples]; got shape {audio.shape}")
    extra = audio.shape[0] - num_samples
    if extra > 0:
        start = 0 if rng is None else int(rng.integers(extra + 1))
        return audio[start : start + num_samples]
    return np.pad(audio, (0, -extra))


def preprocess_audio(
    audio: np.ndarray,
    num_samples: int,
    *,
    sample_rate: int,
    target_rate: int,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One raw clip -> float32 ``[num_samples]`` at ``target_rate``.

    ``audio``: ``[S]`` or ``[S, 1]`` PCM integers or floats at ``sample_rate``; stereo
    ``[S, C]`` is averaged to mono. Scaled by :func:`audio_to_float`, resampled with
    :func:`resample`, then :func:`crop_or_pad` (random crop with ``rng``).
    """
    audio = audio_to_float(audio)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise ValueError(f"audio must be [samples] or [samples, channels]; got {audio.shape}")
    return crop_or_pad(resample(audio, sample_rate, target_rate), num_samples, rng)


def to_audio_batch(
    audio: np.ndarray,
    num_samples: int,
    *,
    sample_rate: int | None = None,
    target_rate: int | None = None,
    name: str = "audio",
) -> np.ndarray:
    """Raw waveforms -> float32 ``[B, num_samples]``: cropped (keep the start) or zero-padded.

    The waveforms of :func:`to_audio_batch_with_lengths` (see there for the layouts taken).
    """
    batch, _ = to_audio_batch_with_lengths(
        audio, num_samples, sample_rate=sample_rate, target_rate=target_rate, name=name
    )
    return batch


def to_audio_batch_with_lengths(
    audio: np.ndarray,
    num_samples: int,
    *,
    sample_rate: int | None = None,
    target_rate: int | None = None,
    name: str = "audio",
) -> tuple[np.ndarray, np.ndarray]:
    """Raw waveforms -> ``(batch, lengths)``: float32 ``[B, num_samples]`` clips, cropped
    (keep the start) or zero-padded at the end, and int32 ``[B]``, each clip's real samples
    in its row (``min(its length after resampling, num_samples)``; the rest is padding).

    ``audio`` holds float samples, finite, laid out as one mono clip ``[S]``, a batch of mono
    clips ``[B, S]``, one multi-channel clip ``[S, C]`` or a batch ``[B, S, C]``; channels
    are averaged to mono. A 2-D array is ``[S, C]`` when its last axis is at most
    :data:`MAX_AUDIO_CHANNELS` and its first axis is longer (``[16000, 2]`` is one stereo
    clip), else ``[B, S]``. With both ``sample_rate`` and ``target_rate`` given, the clips are
    then resampled (:func:`resample`). Errors name ``name`` and, in a batch, the example.
    """
    audio = np.asarray(audio)
    if audio.ndim == 1:
        clips, batched = audio[None, :, None], False
    elif audio.ndim == 2:
        batched = not (0 < audio.shape[1] <= MAX_AUDIO_CHANNELS and audio.shape[0] > audio.shape[1])
        clips = audio[..., None] if batched else audio[None]
    elif audio.ndim == 3 and 0 < audio.shape[2] <= MAX_AUDIO_CHANNELS < audio.shape[1]:
        clips, batched = audio, True
    else:
        raise ValueError(
            f"{name} must be [samples] or [batch, samples] (mono), or [samples, channels] or "
            f"[batch, samples, channels] with at most {MAX_AUDIO_CHANNELS} channels (and more "
            f"samples); got shape {audio.shape} ({audio.ndim}-D)"
        )
    if clips.shape[0] == 0 or clips.shape[1] == 0:
        raise ValueError(f"{name} batch is empty: shape {audio.shape}")
    if not np.issubdtype(clips.dtype, np.floating):
        raise TypeError(f"{name} must be a float waveform; got dtype {clips.dtype}")
    finite = np.isfinite(clips).all(axis=(1, 2))
    if not finite.all():
        where = f"{name}[{int(np.argmin(finite))}]" if batched else name
        raise ValueError(f"{where} has non-finite samples (NaN or inf)")
    clips = clips.astype(np.float32)
    mono = clips[..., 0] if clips.shape[2] == 1 else clips.mean(axis=2)
    if sample_rate is not None and target_rate is not None:
        mono = resample(mono, sample_rate, target_rate)
    batch = np.stack([crop_or_pad(clip, num_samples) for clip in mono])
    # The clips of one array share a length: every row has the same number of real samples.
    lengths = np.full((batch.shape[0],), min(mono.shape[1], num_samples), np.int32)
    return batch, lengths
