"""The choices of :func:`mmtx.data.preprocessing.preprocess_image`'s keywords (and of the
pixel modalities' config fields of the same names).

Standard library only: the config layer checks these fields without importing the
preprocessing module (PIL, and jax through the log-mel frontend it re-exports).
"""

from __future__ import annotations

# How preprocess_image makes an image image_size square: "shorter_side" resizes the shorter
# side (to resize_size, default image_size) keeping the aspect ratio, then cuts the centre
# square; "squash" resizes both sides to image_size (aspect ratio not kept, nothing cut).
RESIZE_MODES = ("shorter_side", "squash")
# The resampling filters, PIL's (antialiased when shrinking: the support widens with the scale).
INTERPOLATIONS = ("bilinear", "bicubic")
# Where center_crop starts an odd margin: "round" (torchvision's CenterCrop, which open_clip
# uses: round((H - size) / 2), half to even) | "floor" (HF image processors: (H - size) // 2).
CROP_OFFSETS = ("round", "floor")
