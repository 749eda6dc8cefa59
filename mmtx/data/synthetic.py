"""A procedural text/image/audio/video dataset: no download, no disk, deterministic, numpy only.

Every example is one scene: an object with a shape, a colour, a size and a coarse position
(and, with video, a motion), rendered three ways (four with video):

* ``image``: float32 ``[H, W, 3]`` in ``[0, 1]``. The object drawn (anti-aliased) on a noisy
  grey gradient background with a few small, dim grey distractor dots.
* ``caption``: an ASCII English sentence (< 64 bytes) naming all four attributes, drawn from
  several templates and unambiguous synonyms (see :data:`SHAPE_SYNONYMS` etc.).
* ``audio``: float32 ``[S]`` waveform in ``[-1, 1]``. Pitch encodes the colour
  (:data:`COLOUR_FREQUENCIES`), the number of beeps encodes the shape (:data:`SHAPE_BEEPS`),
  loudness encodes the size (:data:`SIZE_AMPLITUDES`). Position is not audible.
* ``video`` (only with ``SyntheticSource(video_frames=F)``): float32 ``[F, V, V, 3]`` in
  ``[0, 1]``, the same object on the same kind of background moving in one of four directions
  (:data:`MOTIONS`, attribute ``motion``). Then the caption also names the motion and every
  beep of the audio glides in pitch (:data:`MOTION_GLIDES`: rising for up, falling for down,
  rise-fall for right, fall-rise for left); the image is unchanged.

Which attributes each rendering expresses: image and text all of ``shape``, ``colour``,
``size``, ``position`` (text also ``motion``); audio ``shape``, ``colour``, ``size`` (and
``motion``); video ``shape``, ``colour``, ``size``, ``motion``, and ``position`` across the
motion only (along it the path spans half the frame; the position just shifts it).

:class:`SyntheticSource` is a random-access source (``__len__``/``__getitem__``), so grain can
shuffle and shard it; example ``i`` depends only on ``(seed, split, i)``.
"""

from __future__ import annotations

import functools
import math
import operator
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "star",
    "cross",
    "hexagon",
    "ring",
)
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "white")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "centre",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
# Video only: the direction the object moves in (``MOTION_DIRECTIONS``). Named without the
# words "left"/"right" so that no caption phrase of a motion contains a position synonym.
MOTIONS: tuple[str, ...] = (
    "moving leftwards",
    "moving rightwards",
    "moving upwards",
    "moving downwards",
)
NUM_SHAPES = len(SHAPES)
NUM_COLOURS = len(COLOURS)
NUM_SIZES = len(SIZES)
NUM_POSITIONS = len(POSITIONS)
NUM_MOTIONS = len(MOTIONS)
# The attributes of an example: ``motion`` only when the source makes video
# (:attr:`SyntheticSource.attributes` is the one that applies).
ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "size", "position")
VIDEO_ATTRIBUTES: tuple[str, ...] = (*ATTRIBUTES, "motion")
# The name of each value of each attribute.
ATTRIBUTE_VALUES: Mapping[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "size": SIZES,
    "position": POSITIONS,
    "motion": MOTIONS,
}
NUM_CLASSES = NUM_SHAPES * NUM_COLOURS
# Human-readable name of each label ``shape * NUM_COLOURS + colour``: "red circle", "green
# circle", ..., "white ring" (the names zero-shot classification writes into its prompts).
CLASS_NAMES: tuple[str, ...] = tuple(f"{colour} {shape}" for shape in SHAPES for colour in COLOURS)

# Synonym tables, indexed by attribute value. Every string maps to exactly one value; a synonym
# may be a prefix of a longer synonym of another value ("near the top" / "near the top left"),
# so parse captions longest match first.
SHAPE_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("circle", "disk", "disc"),
    ("square", "box"),
    ("triangle", "wedge"),
    ("diamond", "rhombus", "lozenge"),
    ("star", "pentagram"),
    ("cross", "plus sign", "plus"),
    ("hexagon", "hex"),
    ("ring", "annulus", "donut", "hoop"),
)
COLOUR_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("red", "crimson", "scarlet"),
    ("green", "emerald", "jade"),
    ("blue", "cobalt", "sapphire"),
    ("yellow", "golden", "lemon"),
    ("purple", "violet", "amethyst"),
    ("orange", "amber", "tangerine"),
    ("cyan", "teal", "turquoise", "aqua"),
    ("white", "snowy", "ivory"),
)
SIZE_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("small", "tiny", "little"),
    ("large", "big", "huge"),
)
# Locative phrases, used inside sentences.
POSITION_PHRASES: tuple[tuple[str, ...], ...] = (
    ("in the top left", "in the upper left", "near the top left"),
    ("at the top", "near the top", "in the upper middle"),
    ("in the top right", "in the upper right", "near the top right"),
    ("on the left", "on the left side", "in the middle left"),
    ("in the centre", "in the center", "in the middle"),
    ("on the right", "on the right side", "in the middle right"),
    ("in the bottom left", "in the lower left", "near the bottom left"),
    ("at the bottom", "near the bottom", "in the lower middle"),
    ("in the bottom right", "in the lower right", "near the bottom right"),
)
# Bare labels, used by the terse templates ("top-left: tiny scarlet disk").
POSITION_LABELS: tuple[tuple[str, ...], ...] = (
    ("top left", "top-left", "upper left"),
    ("top", "top centre", "upper middle"),
    ("top right", "top-right", "upper right"),
    ("left", "left side", "middle left"),
    ("centre", "center", "dead centre"),
    ("right", "right side", "middle right"),
    ("bottom left", "bottom-left", "lower left"),
    ("bottom", "bottom centre", "lower middle"),
    ("bottom right", "bottom-right", "lower right"),
)
MOTION_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("moving leftwards", "heading leftwards", "sliding leftwards"),
    ("moving rightwards", "heading rightwards", "sliding rightwards"),
    ("moving upwards", "rising", "going up", "climbing"),
    ("moving downwards", "sinking", "going down", "falling"),
)
# Every way a caption may name each position (phrases and labels).
POSITION_SYNONYMS: tuple[tuple[str, ...], ...] = tuple(
    tuple(dict.fromkeys(p + q)) for p, q in zip(POSITION_PHRASES, POSITION_LABELS, strict=True)
)

# Fields: size, colour, shape, where (a phrase), Where (capitalised phrase), label.
TEMPLATES: tuple[str, ...] = (
    "a {size} {colour} {shape} {where}",
    "There is a {size} {colour} {shape} {where}.",
    "{label}: {size} {colour} {shape}",
    "{Where}, a {size} {colour} {shape}.",
    "One {colour} {shape}, {size}, {where}.",
    "The picture shows a {size} {colour} {shape} {where}.",
    "{size} {shape}, colour {colour}, {label}",
    "A {size} {colour} {shape} appears {where}.",
)
# With video: the same fields plus motion (a phrase from MOTION_SYNONYMS). VIDEO_TEMPLATES[0],
# the fallback, fits MAX_CAPTION_BYTES with the longest synonyms.
VIDEO_TEMPLATES: tuple[str, ...] = (
    "a {size} {colour} {shape}, {label}, {motion}",
    "A {size} {colour} {shape} {where}, {motion}.",
    "{label}: {size} {colour} {shape}, {motion}",
    "{Where}, a {size} {colour} {shape} is {motion}.",
    "One {colour} {shape}, {size}, {where}, {motion}.",
    "A {size} {colour} {shape} {motion} {where}.",
    "{size} {shape}, colour {colour}, {label}, {motion}",
    "The clip shows a {size} {colour} {shape} {motion} {where}.",
)
MAX_CAPTION_BYTES = 63

COLOUR_RGB: tuple[tuple[float, float, float], ...] = (
    (0.92, 0.10, 0.10),  # red
    (0.12, 0.80, 0.15),  # green
    (0.10, 0.30, 1.00),  # blue
    (0.95, 0.90, 0.10),  # yellow
    (0.65, 0.10, 0.80),  # purple
    (1.00, 0.55, 0.05),  # orange
    (0.10, 0.90, 0.90),  # cyan
    (0.95, 0.95, 0.95),  # white
)
# Log-spaced 200..2000 Hz: neighbours differ by a factor 10**(1/7) ~ 1.39.
COLOUR_FREQUENCIES: tuple[float, ...] = tuple(200.0 * 10.0 ** (k / 7.0) for k in range(8))
SHAPE_BEEPS: tuple[int, ...] = tuple(range(1, NUM_SHAPES + 1))
SIZE_AMPLITUDES: tuple[float, ...] = (0.2, 0.6)
# Video only: the pitch contour of every beep states the motion. Each glide is between
# (1 - GLIDE_DEPTH) and (1 + GLIDE_DEPTH) times the colour's pitch and averages to it, so the
# colour stays the spectral peak (neighbouring pitches differ by a factor 1.39).
MOTION_GLIDES: tuple[str, ...] = ("fall-rise", "rise-fall", "rise", "fall")
GLIDE_DEPTH = 0.1
# Object radius as a fraction of the image side, (low, high) per size.
SIZE_RADII: tuple[tuple[float, float], ...] = ((0.08, 0.10), (0.16, 0.19))
# Centres of the 3x3 position grid as a fraction of the image side.
GRID_CENTRES: tuple[float, ...] = (0.2, 0.5, 0.8)
# Video: the unit step (dx, dy) of each motion in pixel axes (x right, y down).
MOTION_DIRECTIONS: tuple[tuple[int, int], ...] = ((-1, 0), (1, 0), (0, -1), (0, 1))
# The object's path over a clip: this fraction of the frame side, first to last frame (less
# only where a large object at a small size would not fit otherwise).
VIDEO_TRAVEL = 0.5

SPLITS: Mapping[str, int] = {"train": 0, "eval": 1}
DEFAULT_SIZES: Mapping[str, int] = {"train": 1_000_000, "eval": 2_000}
# Eval indices live in [EVAL_OFFSET, 2 * EVAL_OFFSET), train indices in [0, EVAL_OFFSET).
EVAL_OFFSET = 2**40

IMAGE_NOISE = 0.05
AUDIO_NOISE = 0.02
_JITTER_POS = 0.05  # centre jitter, fraction of the image side
_JITTER_RGB = 0.06
_JITTER_FREQ = 0.02
_JITTER_AMP = 0.1
_MAX_DISTRACTORS = 4
_NUM_UNIFORMS = 24 + 4 * _MAX_DISTRACTORS
_BEEP_WINDOW = 0.85  # fraction of the clip that holds the beeps
_BEEP_DUTY = 0.55
_RAMP_SECONDS = 0.004  # beep fade in/out, avoids clicks
# Every shape lies within 1.3 radii of its centre (the triangle's circumradius); the anti-aliased
# edge adds half a pixel. A clip keeps the object's centre this far from the frame's edges.
_VIDEO_EXTENT = 1.3
_VIDEO_EDGE_PIXELS = 1.0
# Child stream of an example's key for every random number that video adds.
_VIDEO_STREAM = 1

# 256 quantiles of N(0, 1): a table lookup on random bytes is ~5x faster than
# Generator.standard_normal and is Gaussian enough for pixel and audio noise.
_NORMAL_TABLE = np.asarray(
    [statistics.NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)], dtype=np.float32
)


@functools.lru_cache(maxsize=8)
def _pixel_grid(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``[S]`` float32, and a ``[-0.5, 0.5]`` ramp ``[S]`` float32."""
    centres = np.arange(image_size, dtype=np.float32) + 0.5
    return centres, centres / image_size - 0.5


@functools.lru_cache(maxsize=8)
def _time_grid(num_samples: int, sample_rate: int) -> np.ndarray:
    """Sample times in seconds, float32 ``[num_samples]``."""
    return np.arange(num_samples, dtype=np.float32) / np.float32(sample_rate)


_pixel_grid(64)  # the default size, precomputed at import
_time_grid(16000, 16000)


def _normal_noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Approximately Gaussian noise, float32 ``shape``, standard deviation ~``scale``."""
    idx = np.frombuffer(rng.bytes(math.prod(shape)), dtype=np.uint8).reshape(shape)
    noise = _NORMAL_TABLE.take(idx)
    noise *= np.float32(scale)
    return noise


def _shape_sdf(shape: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) to ``SHAPES[shape]`` of unit radius.

    ``x``, ``y``: float32 arrays (broadcastable) in object units, ``y`` pointing up. Exact for
    circle, ring and star, a half-plane/box bound elsewhere; good enough for anti-aliasing.
    """
    name = SHAPES[shape]
    if name == "circle":
        return np.sqrt(x * x + y * y) - 1.0
    if name == "ring":
        return np.abs(np.sqrt(x * x + y * y) - 0.85) - 0.25
    if name == "square":
        return np.maximum(np.abs(x), np.abs(y)) - 0.85
    if name == "diamond":
        return (np.abs(x) + np.abs(y) - 1.2) * np.float32(np.sqrt(0.5))
    if name == "triangle":
        # Equilateral, pointing up, circumradius 1.3 (apothem 0.65).
        c, s = np.float32(np.cos(np.pi / 6)), np.float32(0.5)
        return np.maximum(np.maximum(-y, c * x + s * y), -c * x + s * y) - 0.65
    if name == "hexagon":
        c, s = np.float32(0.5), np.float32(np.cos(np.pi / 6))
        ax = np.abs(x)
        return np.maximum(np.maximum(ax, c * ax + s * np.abs(y)), c * ax - s * np.abs(y)) - 0.91
    if name == "cross":
        ax, ay = np.abs(x), np.abs(y)
        arm1 = np.maximum(ax - 1.1, ay - 0.38)
        arm2 = np.maximum(ax - 0.38, ay - 1.1)
        return np.minimum(arm1, arm2)
    if name == "star":
        return _star_sdf(x, y, radius=1.25, inner=0.45)
    raise ValueError(f"unknown shape {shape}")


def _star_sdf(x: np.ndarray, y: np.ndarray, radius: float, inner: float) -> np.ndarray:
    """Exact signed distance to a 5-pointed star (Inigo Quilez's sdStar5), point up."""
    k1x, k1y = 0.809016994375, -0.587785252292
    px, py = np.abs(x), y
    d = np.maximum(k1x * px + k1y * py, 0.0)
    px, py = px - 2.0 * d * k1x, py - 2.0 * d * k1y
    d = np.maximum(-k1x * px + k1y * py, 0.0)
    px, py = px + 2.0 * d * k1x, py - 2.0 * d * k1y
    px, py = np.abs(px), py - radius
    bax, bay = inner * -k1y, inner * k1x - 1.0
    h = np.clip((px * bax + py * bay) / (bax * bax + bay * bay), 0.0, radius)
    dist = np.sqrt((px - bax * h) ** 2 + (py - bay * h) ** 2)
    return dist * np.sign(py * bax - px * bay)


def _background(u: Sequence[float], image_size: int) -> np.ndarray:
    """The scene without its object: a grey gradient, dim distractor dots, a slight tint.

    Args:
      u: ``_NUM_UNIFORMS`` floats in ``[0, 1)`` (slots 13..19 and 24.. used).
      image_size: ``S``.

    Returns:
      float32 ``[S, S, 3]``, not yet clipped or noisy.
    """
    n = image_size
    coords, ramp = _pixel_grid(n)
    # Background: grey level plus a linear gradient, then a slight per-channel tint.
    level, gx, gy = 0.05 + 0.2 * u[13], 0.16 * (u[17] - 0.5), 0.16 * (u[18] - 0.5)
    grey = (ramp * np.float32(gx))[None, :] + (ramp * np.float32(gy) + np.float32(level))[:, None]

    # Distractors: 1..4 dim grey dots of radius <= 2 px; the object's radius is >= 0.08 * S.
    for k in range(1 + int(u[19] * _MAX_DISTRACTORS)):
        dx, dy, dr, dv = u[24 + 4 * k : 28 + 4 * k]
        cx, cy = dx * n, dy * n
        x0, y0 = max(0, int(cx) - 2), max(0, int(cy) - 2)
        px = coords[x0 : int(cx) + 3] - np.float32(cx)
        py = coords[y0 : int(cy) + 3] - np.float32(cy)
        alpha = np.sqrt(px[None, :] ** 2 + py[:, None] ** 2)
        alpha = np.clip(np.float32(1.3 + 0.7 * dr) - alpha, 0.0, 1.0)
        grey[y0 : y0 + len(py), x0 : x0 + len(px)] += np.float32(0.06 + 0.06 * dv) * alpha
    # Per-channel writes: broadcasting over a trailing axis of 3 is several times slower.
    image = np.empty((n, n, 3), dtype=np.float32)
    for c in range(3):
        np.add(grey, np.float32(0.04 * u[14 + c] - 0.02), out=image[:, :, c])
    return image


def _radius(size: int, u: Sequence[float], image_size: int) -> float:
    """The object's radius in pixels (``u[8]`` picks it within ``SIZE_RADII[size]``)."""
    lo, hi = SIZE_RADII[size]
    return image_size * (lo + (hi - lo) * u[8])


def _draw_object(
    frames: np.ndarray,
    shape: int,
    colour: int,
    radius: float,
    u: Sequence[float],
    xs: np.ndarray,
    ys: np.ndarray,
) -> None:
    """Alpha-blends the object into every frame, in place, at frame ``f``'s centre.

    Args:
      frames: float32 ``[F, S, S, 3]``, written in place.
      shape, colour: attribute indices.
      radius: the object's radius in pixels.
      u: ``_NUM_UNIFORMS`` floats in ``[0, 1)`` (slots 9..12 used: rotation, colour jitter).
      xs, ys: float64 ``[F]``, the object's centre in each frame, in pixels (``y`` down).
    """
    n = frames.shape[1]
    coords, _ = _pixel_grid(n)
    # The signed distance on one patch that holds the object in every frame.
    extent = 1.35 * radius + 1.5
    x0, x1 = max(0, int(xs.min() - extent)), min(n, math.ceil(xs.max() + extent))
    y0, y1 = max(0, int(ys.min() - extent)), min(n, math.ceil(ys.max() + extent))
    # Small rotation only (+-10 deg): a 45 degree turn would make a square a diamond.
    angle = math.radians(20.0 * (u[9] - 0.5))
    cos, sin = np.float32(math.cos(angle) / radius), np.float32(math.sin(angle) / radius)
    px = coords[None, None, x0:x1] - xs.astype(np.float32)[:, None, None]  # [F, 1, w]
    py = ys.astype(np.float32)[:, None, None] - coords[None, y0:y1, None]  # [F, h, 1], y up
    sdf = _shape_sdf(shape, cos * px - sin * py, sin * px + cos * py)
    alpha = np.clip(np.float32(0.5) - sdf * np.float32(radius), 0.0, 1.0)
    for c in range(3):
        value = min(max(COLOUR_RGB[colour][c] + _JITTER_RGB * (2 * u[10 + c] - 1), 0.0), 1.0)
        patch = frames[:, y0:y1, x0:x1, c]
        patch += alpha * (np.float32(value) - patch)


def _render_image(
    shape: int,
    colour: int,
    size: int,
    position: int,
    u: Sequence[float],
    rng: np.random.Generator,
    image_size: int = 64,
) -> np.ndarray:
    """Draws one scene.

    Args:
      shape, colour, size, position: attribute indices into SHAPES, COLOURS, SIZES, POSITIONS.
      u: ``_NUM_UNIFORMS`` floats in ``[0, 1)`` for the jitter (slots 6..19 and 24.. used).
      rng: source of the pixel noise.
      image_size: ``S``.

    Returns:
      float32 ``[S, S, 3]`` in ``[0, 1]``.
    """
    n = image_size
    image = _background(u, n)
    radius = _radius(size, u, n)
    row, col = divmod(position, 3)
    margin = 1.1 * radius
    cx = n * (GRID_CENTRES[col] + _JITTER_POS * (2 * u[6] - 1))
    cy = n * (GRID_CENTRES[row] + _JITTER_POS * (2 * u[7] - 1))
    cx, cy = min(max(cx, margin), n - margin), min(max(cy, margin), n - margin)
    _draw_object(image[None], shape, colour, radius, u, np.array([cx]), np.array([cy]))
    image += _normal_noise(rng, image.shape, IMAGE_NOISE)
    return np.clip(image, 0.0, 1.0, out=image)


def _video_path(
    size: int, position: int, motion: int, u: Sequence[float], video_size: int, frames: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """The object's radius and its centre in each frame of a clip.

    Across the motion the centre is the image's (the position's row or column, same jitter),
    kept ``_VIDEO_EXTENT`` radii plus ``_VIDEO_EDGE_PIXELS`` from the edges. Along the motion
    the object moves ``VIDEO_TRAVEL * S`` pixels at constant speed on a path inside the same
    margins; the position's column (row, for vertical motion) places that path at the low,
    middle or high end of the room left, so a "left" object moving rightwards starts at the
    left, one moving leftwards ends there.

    Returns:
      ``(radius, xs, ys)``: pixels, float; float64 ``[F]`` and ``[F]`` (``y`` down).
    """
    n = video_size
    radius = _radius(size, u, n)
    margin = _VIDEO_EXTENT * radius + _VIDEO_EDGE_PIXELS
    room = n - 2 * margin
    travel = min(VIDEO_TRAVEL * n, room)
    row, col = divmod(position, 3)
    dx, dy = MOTION_DIRECTIONS[motion]
    step = np.linspace(0.0, travel, frames)
    centres = []
    for cell, jitter, direction in ((col, u[6], dx), (row, u[7], dy)):
        centre = GRID_CENTRES[cell] + _JITTER_POS * (2 * jitter - 1)
        if direction == 0:
            centres.append(np.full(frames, min(max(n * centre, margin), n - margin)))
            continue
        # 0 at the first grid centre, 1 at the last.
        where = (centre - GRID_CENTRES[0]) / (GRID_CENTRES[-1] - GRID_CENTRES[0])
        low = margin + min(max(where, 0.0), 1.0) * (room - travel)
        centres.append(low + step if direction > 0 else low + travel - step)
    return radius, centres[0], centres[1]


def _render_video(
    shape: int,
    colour: int,
    size: int,
    position: int,
    motion: int,
    u: Sequence[float],
    rng: np.random.Generator,
    frames: int,
    video_size: int,
) -> np.ndarray:
    """Draws the scene as a clip: the image's background (static) and object, moving.

    Args:
      shape, colour, size, position, motion: attribute indices (MOTIONS for ``motion``).
      u: the ``_NUM_UNIFORMS`` floats that the image uses, so both show the same scene.
      rng: source of the pixel noise, fresh in every frame.
      frames: ``F``.
      video_size: ``S``.

    Returns:
      float32 ``[F, S, S, 3]`` in ``[0, 1]``.
    """
    video = np.empty((frames, video_size, video_size, 3), dtype=np.float32)
    video[...] = _background(u, video_size)
    radius, xs, ys = _video_path(size, position, motion, u, video_size, frames)
    _draw_object(video, shape, colour, radius, u, xs, ys)
    video += _normal_noise(rng, video.shape, IMAGE_NOISE)
    return np.clip(video, 0.0, 1.0, out=video)


@functools.lru_cache(maxsize=8)
def _fade(length: int) -> np.ndarray:
    """Linear fade-in ramp, float32 ``[length]`` in ``(0, 1]``."""
    return np.arange(1, length + 1, dtype=np.float32) / np.float32(length)


@functools.lru_cache(maxsize=64)
def _glide_integral(motion: int, length: int) -> np.ndarray:
    """``int_0^t c`` for the beep's pitch contour ``c`` of ``MOTION_GLIDES[motion]``.

    ``c`` goes between -1 and 1 with mean 0 over the beep, so the integral is 0 at both ends.
    Returns float64 ``[length]`` at ``t = j / length``, ``j = 0 .. length - 1`` (read-only:
    it is cached).
    """
    t = np.arange(length, dtype=np.float64) / length
    name = MOTION_GLIDES[motion]
    # rise-fall: c = 1 - 4|t - 1/2|, whose integral is -(s - 2s^2) before the middle and
    # s - 2s^2 after it, with s = min(t, 1 - t); fall-rise is its negative.
    s = np.minimum(t, 1.0 - t)
    hump = np.where(t <= 0.5, -1.0, 1.0) * (s - 2.0 * s * s)
    integrals = {
        "rise": t * t - t,  # c = 2t - 1
        "fall": t - t * t,  # c = 1 - 2t
        "rise-fall": hump,
        "fall-rise": -hump,
    }
    integral = integrals[name]
    integral.flags.writeable = False
    return integral


def _render_audio(
    shape: int,
    colour: int,
    size: int,
    u: Sequence[float],
    rng: np.random.Generator,
    sample_rate: int = 16000,
    num_samples: int = 16000,
    motion: int | None = None,
) -> np.ndarray:
    """Synthesises the scene's sound: ``SHAPE_BEEPS[shape]`` equally spaced beeps of a sine.

    Pitch ``COLOUR_FREQUENCIES[colour]`` (+-2%), peak amplitude ``SIZE_AMPLITUDES[size]``
    (+-10%), onset at a random time in the first 8% of the clip, then additive noise. With a
    ``motion``, the pitch of every beep glides by ``MOTION_GLIDES[motion]`` within
    ``+-GLIDE_DEPTH`` of that pitch; without one, the pitch is steady.

    Args:
      shape, colour, size: attribute indices.
      u: ``_NUM_UNIFORMS`` floats in ``[0, 1)`` (slots 20..23 used).
      rng: source of the noise.
      sample_rate: Hz.
      num_samples: ``N``.
      motion: index into MOTIONS, or None (no video: no glide).

    Returns:
      float32 ``[N]`` in ``[-1, 1]``.
    """
    n = num_samples
    freq = COLOUR_FREQUENCIES[colour] * (1.0 + _JITTER_FREQ * (2 * u[20] - 1))
    amp = np.float32(SIZE_AMPLITUDES[size] * (1.0 + _JITTER_AMP * (2 * u[22] - 1)))
    beeps = SHAPE_BEEPS[shape]
    onset = int(0.08 * n * u[21])
    period = _BEEP_WINDOW * n / beeps
    length = round(_BEEP_DUTY * period)
    fade = _fade(max(1, min(round(_RAMP_SECONDS * sample_rate), length // 2))) * amp
    env = np.zeros(n, dtype=np.float32)
    for k in range(beeps):
        start = onset + round(k * period)
        env[start : start + length] = amp
        env[start : start + len(fade)] = fade
        env[start + length - len(fade) : start + length] = fade[::-1]
    wave = _time_grid(n, sample_rate) * np.float32(2 * math.pi * freq)
    wave += np.float32(2 * math.pi * u[23])
    if motion is not None:
        # Phase of the instantaneous frequency freq * (1 + GLIDE_DEPTH * c(t)) within a beep.
        scale = 2 * math.pi * freq * GLIDE_DEPTH * length / sample_rate
        glide = (_glide_integral(motion, length) * scale).astype(np.float32)
        for k in range(beeps):
            start = onset + round(k * period)
            part = wave[start : start + length]
            part += glide[: len(part)]
    np.sin(wave, out=wave)
    wave *= env
    wave += _normal_noise(rng, wave.shape, AUDIO_NOISE)
    return np.clip(wave, -1.0, 1.0, out=wave)


def _make_caption(
    shape: int,
    colour: int,
    size: int,
    position: int,
    u: Sequence[float],
    motion: int | None = None,
    w: Sequence[float] = (),
) -> str:
    """Builds an ASCII caption (<= ``MAX_CAPTION_BYTES`` bytes) naming every attribute.

    ``u``: ``_NUM_UNIFORMS`` floats in ``[0, 1)``; slots 0..5 choose the template and synonyms.
    A combination that would be too long falls back to the shortest template, ``TEMPLATES[0]``,
    which always fits. With a ``motion`` (video), ``w``: two more floats in ``[0, 1)`` choose
    a template of VIDEO_TEMPLATES (fallback ``VIDEO_TEMPLATES[0]``) and the motion's synonym;
    slots 1..5 of ``u`` still choose the other synonyms.
    """

    def pick(options: tuple[str, ...], x: float) -> str:
        return options[int(x * len(options))]

    where = pick(POSITION_PHRASES[position], u[4])
    fields = {
        "size": pick(SIZE_SYNONYMS[size], u[1]),
        "colour": pick(COLOUR_SYNONYMS[colour], u[2]),
        "shape": pick(SHAPE_SYNONYMS[shape], u[3]),
        "where": where,
        "Where": where[0].upper() + where[1:],
        "label": pick(POSITION_LABELS[position], u[5]),
    }
    templates = TEMPLATES
    if motion is not None:
        templates = VIDEO_TEMPLATES
        fields["motion"] = pick(MOTION_SYNONYMS[motion], w[1])
        caption = pick(templates, w[0]).format(**fields)
    else:
        caption = pick(templates, u[0]).format(**fields)
    if len(caption) > MAX_CAPTION_BYTES:
        caption = templates[0].format(**fields)
    return caption


def describe(example: Mapping[str, Any]) -> str:
    """Canonical caption, e.g. ``"a small red circle in the top left"``.

    Args:
      example: a mapping with int-like ``shape``, ``colour``, ``size`` and ``position``, and
        optionally ``motion`` (a video example's), which adds its name: ``"a small red circle
        in the top left moving upwards"``.

    Returns:
      an ASCII ``str`` (<= ``MAX_CAPTION_BYTES`` bytes) built from the canonical names (first
      synonym of each table).
    """
    text = TEMPLATES[0].format(
        size=SIZES[int(example["size"])],
        colour=COLOURS[int(example["colour"])],
        shape=SHAPES[int(example["shape"])],
        where=POSITION_PHRASES[int(example["position"])][0],
    )
    if "motion" in example:
        text += " " + MOTIONS[int(example["motion"])]
    return text


class SyntheticSource:
    """Random-access source of procedural scenes (grain ``RandomAccessDataSource`` protocol).

    Example ``i`` of a split is generated only from ``np.random.default_rng(key(i))`` with
    ``key(i) = (seed, split_id, global_index)``; no state is kept, so any order, shuffle or
    shard yields the same examples.

    Split disjointness, by construction and twice over: ``split_id`` is 0 for train and 1 for
    eval, so the two splits seed different RNG streams; and the global index is ``i`` for
    train but ``EVAL_OFFSET + i`` for eval, with ``size <= EVAL_OFFSET``, so no train key
    equals any eval key even ignoring ``split_id``. Attribute combinations (only 1152) do
    recur across splits, as in any classification data; the rendered examples never do.

    Args:
      split: ``"train"`` or ``"eval"``.
      seed: dataset seed; a different seed gives a different dataset.
      size: number of examples; defaults to ``DEFAULT_SIZES[split]``.
      image_size: ``H = W`` of the images.
      sample_rate: audio sample rate in Hz.
      audio_seconds: clip length; ``S = round(sample_rate * audio_seconds)`` samples.
      video_frames: ``F``, frames of a video clip per example; 0 (the default) = no video,
        and then every output is exactly what it was before video existed. At least 2.
      video_size: ``V``, the clip's height and width; 0 = ``image_size``.

    ``source[i]`` returns a dict:

      * ``caption``: ``str``, ASCII, at most ``MAX_CAPTION_BYTES`` bytes.
      * ``image``: float32 ``[H, W, 3]`` in ``[0, 1]``.
      * ``audio``: float32 ``[S]`` in ``[-1, 1]``.
      * ``label``: int32 scalar ``shape * NUM_COLOURS + colour`` in ``[0, NUM_CLASSES)``,
        named by :data:`CLASS_NAMES`.
      * ``shape``, ``colour``, ``size``, ``position``: ``int`` attribute indices.

    and, with video (``video_frames > 0``), also:

      * ``video``: float32 ``[F, V, V, 3]`` in ``[0, 1]``: the same object on the same kind of
        background (the image's, static, with fresh pixel noise in every frame), moving
        ``VIDEO_TRAVEL * V`` pixels in the direction ``MOTION_DIRECTIONS[motion]`` at constant
        speed (8 frames of 32x32: about 2.2 px per frame, 15 to 16 px in all), wholly in frame
        throughout. Across the motion it keeps the image's position; along it the path spans
        half the frame, at the end the position names (see ``_video_path``).
      * ``motion``: ``int`` index into :data:`MOTIONS`.

    With video, the image, audio noise, label and attributes are those of the same example
    without video; the caption comes from :data:`VIDEO_TEMPLATES` and names the motion; every
    beep of the audio glides in pitch (:data:`MOTION_GLIDES`). The random numbers that video
    adds (motion, caption choice, the clip's noise) come from a child stream of the example's
    key, so the others are untouched. :attr:`attributes` lists the example's attributes.
    """

    def __init__(
        self,
        split: str = "train",
        seed: int = 0,
        size: int | None = None,
        image_size: int = 64,
        sample_rate: int = 16000,
        audio_seconds: float = 1.0,
        video_frames: int = 0,
        video_size: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        size = DEFAULT_SIZES[split] if size is None else int(size)
        if not 0 <= size <= EVAL_OFFSET:
            raise ValueError(f"size must be in [0, {EVAL_OFFSET}], got {size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        num_samples = round(sample_rate * audio_seconds)
        if sample_rate <= 0 or num_samples <= 0:
            raise ValueError(
                f"need a positive sample_rate and audio_seconds, got {sample_rate}, {audio_seconds}"
            )
        video_frames, video_size = operator.index(video_frames), operator.index(video_size)
        if video_frames < 0 or video_frames == 1:
            raise ValueError(
                f"video_frames must be 0 (no video) or >= 2 (motion needs two frames), "
                f"got {video_frames}"
            )
        if video_size != 0 and video_size < 16:
            raise ValueError(f"video_size must be 0 (= image_size) or >= 16, got {video_size}")
        self.split = split
        self.seed = int(seed)
        self.size = size
        self.image_size = int(image_size)
        self.sample_rate = int(sample_rate)
        self.audio_seconds = float(audio_seconds)
        self.num_samples = int(num_samples)
        self.video_frames = video_frames
        self.video_size = (video_size or self.image_size) if video_frames else 0

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attribute keys of an example: :data:`VIDEO_ATTRIBUTES` with video, else
        :data:`ATTRIBUTES`."""
        return VIDEO_ATTRIBUTES if self.video_frames else ATTRIBUTES

    def __len__(self) -> int:
        """Number of examples in the split."""
        return self.size

    def __repr__(self) -> str:
        return (
            f"SyntheticSource(split={self.split!r}, seed={self.seed}, size={self.size}, "
            f"image_size={self.image_size}, sample_rate={self.sample_rate}, "
            f"audio_seconds={self.audio_seconds}"
            + (
                f", video_frames={self.video_frames}, video_size={self.video_size})"
                if self.video_frames
                else ")"
            )
        )

    def key(self, index: int) -> tuple[int, int, int]:
        """The example's identity and RNG entropy: ``(seed, split_id, global_index)``."""
        index = self._check_index(index)
        split_id = SPLITS[self.split]
        return self.seed, split_id, index + split_id * EVAL_OFFSET

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Generates example ``index`` (negative indices count from the end); see the class."""
        rng = np.random.default_rng(self.key(index))
        shape, colour, size, position = (
            int(v) for v in rng.integers(0, (NUM_SHAPES, NUM_COLOURS, NUM_SIZES, NUM_POSITIONS))
        )
        u = rng.random(_NUM_UNIFORMS).tolist()
        image = _render_image(shape, colour, size, position, u, rng, self.image_size)
        if not self.video_frames:
            audio = _render_audio(shape, colour, size, u, rng, self.sample_rate, self.num_samples)
            return {
                "caption": _make_caption(shape, colour, size, position, u),
                "image": image,
                "audio": audio,
                "label": np.int32(shape * NUM_COLOURS + colour),
                "shape": shape,
                "colour": colour,
                "size": size,
                "position": position,
            }
        # Video: every new random number from a child stream of the same key.
        video_rng = np.random.default_rng(
            np.random.SeedSequence(self.key(index), spawn_key=(_VIDEO_STREAM,))
        )
        motion = int(video_rng.integers(NUM_MOTIONS))
        w = video_rng.random(2).tolist()
        audio = _render_audio(
            shape, colour, size, u, rng, self.sample_rate, self.num_samples, motion
        )
        video = _render_video(
            shape, colour, size, position, motion, u, video_rng, self.video_frames, self.video_size
        )
        return {
            "caption": _make_caption(shape, colour, size, position, u, motion, w),
            "image": image,
            "audio": audio,
            "video": video,
            "label": np.int32(shape * NUM_COLOURS + colour),
            "shape": shape,
            "colour": colour,
            "size": size,
            "position": position,
            "motion": motion,
        }

    def _check_index(self, index: int) -> int:
        index = operator.index(index)
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"index out of range for a source of {self.size} examples")
        return index
