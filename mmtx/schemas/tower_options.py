"""The options that modalities' towers share, each declared once (:class:`Field`).

A modality's schema lists its group's fields in order (:attr:`ModalitySchema.fields
<mmtx.schemas.ModalitySchema.fields>`): its own, and these where its tower has them. The
fusion declares :data:`SIZES` too (``mmtx.config.FUSION_FIELDS``).
"""

from __future__ import annotations

from mmtx.data.image_options import CROP_OFFSETS, INTERPOLATIONS, RESIZE_MODES
from mmtx.schemas.field import Field
from mmtx.schemas.ranges import Above, AtLeast

# The transformer's sizes; mmtx.config.VARIANTS sets them for every tower.
WIDTH = Field("width", 128, "Token width D.", range=Above(0))
DEPTH = Field("depth", 2, "Transformer blocks.", range=AtLeast(0))
NUM_HEADS = Field("num_heads", 4, "Attention heads; width must be divisible by it.", range=Above(0))
MLP_DIM = Field("mlp_dim", 256, "Hidden width of each block's MLP.", range=Above(0))
SIZES = (WIDTH, DEPTH, NUM_HEADS, MLP_DIM)

# The attention's names, as data (mmtx.nn.attention's kernels and implementations read them).
KERNELS = ("dense", "local", "linear")  # the attention kernels (mmtx.nn.ATTENTION_KERNELS)
CROSS_ATTENTION_KERNELS = ("dense", "linear")  # those that attend across two sequences
# config.attention.implementation: auto (cuDNN flash or the Pallas local kernel where it can
# run, else XLA), xla, cudnn (dense kernel, GPU), pallas (local kernel, TPU).
IMPLEMENTATIONS = ("auto", "xla", "cudnn", "pallas")
FEATURE_MAPS = ("elu", "favor")  # the linear kernel's (config.attention.linear.feature_map)
ATTENTION = Field("attention", "dense", "Attention kernel name.", choices=KERNELS)
POOLING = Field(
    "pooling", "cls", "How the tokens become one vector: one of the modality's poolings."
)
POSITION_EMBEDDING = Field(
    "position_embedding",
    "learned",
    "learned (a table; video's: a spatial table plus a temporal table) | sincos (fixed).",
    choices=("learned", "sincos"),
)

# A pixel modality's (image, video) channels and their normalisation.
CHANNELS = Field("channels", 3, "Input channels.", range=Above(0))
MEAN = Field("mean", (0.5, 0.5, 0.5), "Per-channel normalisation of [0, 1] pixels: the mean.")
STD = Field("std", (0.5, 0.5, 0.5), "Per-channel normalisation: the std.", range=Above(0))

# How a pixel modality makes each picture image_size square: the keywords of the same names
# of mmtx.data.preprocessing.preprocess_image, read by the input's preprocessing.
RESIZE = Field(
    "resize",
    "shorter_side",
    "shorter_side (then the centre crop) | squash (no crop); video: per frame.",
    choices=RESIZE_MODES,
    encoder=False,
)
INTERPOLATION = Field(
    "interpolation",
    "bilinear",
    "Resize filter, PIL's (antialiased): bilinear | bicubic.",
    choices=INTERPOLATIONS,
    encoder=False,
)
RESIZE_SIZE = Field(
    "resize_size",
    0,
    "shorter_side: the side's length before the crop; 0 = image_size.",
    range=AtLeast(0),
    encoder=False,
)
CROP_OFFSET = Field(
    "crop_offset",
    "round",
    "Where the centre crop starts an odd margin: round (torchvision's CenterCrop, as "
    "open_clip) | floor (HF image processors).",
    choices=CROP_OFFSETS,
    encoder=False,
)
RESIZE_OPTIONS = (RESIZE, INTERPOLATION, RESIZE_SIZE, CROP_OFFSET)

# A patch modality's (image, audio) stem and class-token positions.
PATCH_BIAS = Field("patch_bias", True, "Bias of the patch projection.")
CLASS_TOKEN_POSEMB = Field(
    "class_token_posemb",
    False,
    "Learned position table with rows for the class tokens too, added after they are "
    "prepended (CLIP); False: rows for the patches only, added before.",
)

# Every tower's last options: its blocks' MLP and norms, and the projection head.
ACTIVATIONS = ("gelu_tanh", "gelu", "quick_gelu")  # gelu: exact (erf)
ACTIVATION = Field("activation", "gelu_tanh", "The MLP's activation.", choices=ACTIVATIONS)
NORM_EPS = Field(
    "norm_eps", 1e-6, "Epsilon of every LayerNorm in the tower (CLIP 1e-5).", range=Above(0)
)
PRE_NORM = Field("pre_norm", False, "A LayerNorm before the first block (CLIP's ln_pre).")
FINAL_NORM = Field("final_norm", True, "The LayerNorm after the last block, on every token.")
PROJECTION = Field(
    "projection",
    "dense",
    "Projection of the pooled output to model.embed_dim: dense | no_bias (kernel only) | "
    "none (the pooled output itself; needs width == model.embed_dim).",
    choices=("dense", "no_bias", "none"),
    encoder=False,
)
NORMS_AND_HEAD = (ACTIVATION, NORM_EPS, PRE_NORM, FINAL_NORM, PROJECTION)

# Every shared option, in the order validation checks their ranges: after a modality's own.
SHARED = (
    *SIZES,
    ATTENTION,
    POOLING,
    POSITION_EMBEDDING,
    CHANNELS,
    MEAN,
    STD,
    *RESIZE_OPTIONS,
    PATCH_BIAS,
    CLASS_TOKEN_POSEMB,
    *NORMS_AND_HEAD,
)
