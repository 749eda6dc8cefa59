"""The configuration schema: every field mmtx reads, its default, and what it means.

Configs are nested ``ml_collections.ConfigDict``s grouped by part (``model``, ``fusion``,
``tokenizer``, ...). :func:`default_config` is the schema; config files (``configs/*.py``)
start from it and change fields, and JSON model files (``configs/*.json``) are partial
overrides merged onto it by :func:`merge_overrides`, which rejects keys the schema lacks.
Size variants are data (:data:`VARIANTS`), applied by :func:`apply_variant`.
"""

from __future__ import annotations

import copy
import difflib
import importlib.machinery
import importlib.util
import json
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import ml_collections
import numpy as np

from mmtx.data.source_kinds import FILE_KINDS, source_kind
from mmtx.schemas import get_modality, modality_names, tower_options
from mmtx.schemas.audio import audio_patch_grid, spectrogram_frames  # noqa: F401 (re-exported)
from mmtx.schemas.field import Field, Group, config_group, declared_ranges
from mmtx.schemas.ranges import Above, AtLeast, Either, Interval, Range

# The built-in fusion types; mmtx.fusion.register_fusion adds more. "none" is no fusion
# (two-tower contrastive models, CLIP/SigLIP): no fusion params and no "fused" output.
FUSION_TYPES = ("concat", "gated", "cross_attention", "bottleneck", "perceiver")
NO_FUSION = "none"
CROSS_ATTENTION_KERNELS = tower_options.CROSS_ATTENTION_KERNELS
ATTENTION_KERNELS = tower_options.ATTENTION.choices


def __getattr__(name: str) -> Any:
    # The registered modalities and their poolings, read from the registry each time (a
    # modality registered after this module is imported appears too).
    if name == "MODALITIES":
        return modality_names()
    if name == "POOLINGS":
        return {m: get_modality(m).poolings for m in modality_names()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Class tokens each pooling prepends to the tower's tokens (others: none).
CLASS_TOKENS = {"cls": 1, "cls_distill": 2}
# The choices of the towers' shared options (declared with them, in mmtx.schemas.tower_options).
ACTIVATIONS = tower_options.ACTIVATION.choices
PROJECTIONS = tower_options.PROJECTION.choices
POSITION_EMBEDDINGS = tower_options.POSITION_EMBEDDING.choices
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16", "float16", "auto")
PARAM_DTYPES = ("float32", "bfloat16", "float16")


def _encoder(width: int, depth: int, num_heads: int, mlp_dim: int) -> dict[str, Any]:
    return {"width": width, "depth": depth, "num_heads": num_heads, "mlp_dim": mlp_dim}


# Transformer sizes per variant: (width, depth, heads, mlp_dim) for every tower and the fusion.
# "base" and "large" follow ViT-B and ViT-L (Dosovitskiy et al. 2021, Table 1);
# "small" is sized to train on a 2-core CPU in minutes; "tiny" is for tests.
VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": {"embed_dim": 32, "tower": _encoder(32, 1, 2, 64), "fusion": _encoder(32, 1, 2, 64)},
    "small": {
        "embed_dim": 128,
        "tower": _encoder(128, 2, 4, 256),
        "fusion": _encoder(128, 1, 4, 256),
    },
    "base": {
        "embed_dim": 512,
        "tower": _encoder(768, 12, 12, 3072),
        "fusion": _encoder(768, 2, 12, 3072),
    },
    "large": {
        "embed_dim": 768,
        "tower": _encoder(1024, 24, 16, 4096),
        "fusion": _encoder(1024, 2, 16, 4096),
    },
}


def default_config() -> ml_collections.ConfigDict:
    """The full schema with defaults (the "small" variant): the top-level fields and one group
    per part, each field declared once below (a :class:`~mmtx.schemas.Field`: its default,
    doc and range), and the modalities' groups, declared by their schemas
    (:mod:`mmtx.schemas`)."""
    config = config_group(SCHEMA)
    # One group per registered modality (mmtx.modalities): its encoder's fields and the
    # projection of its pooled output. Their defaults and docs live with the modality.
    for modality in modality_names():
        config.model[modality] = get_modality(modality).default_config()
    return config


TOP_LEVEL_FIELDS = (
    Field(
        "variant", "small", "Name of the size variant last applied (see VARIANTS); informational."
    ),
    Field(
        "dtype",
        "auto",
        "Compute dtype: float32 | bfloat16 | float16 | auto (bf16 on TPU/GPU).",
        choices=DTYPES,
    ),
    Field("param_dtype", "float32", "Dtype of params and optimizer state.", choices=PARAM_DTYPES),
)

TOKENIZER_TYPES = ("bytes", "sentencepiece", "clip_bpe", "siglip", "tokenizer_json")
TOKENIZER_FIELDS = (
    Field(
        "type",
        "bytes",
        "bytes (UTF-8 bytes, no download) | sentencepiece (mmtx's own, pad id 0) | the "
        "published families' own: clip_bpe (OpenAI CLIP's BPE, ids as open_clip) | siglip "
        "(SigLIP's SentencePiece, ids as transformers' SiglipTokenizer) | tokenizer_json (any "
        "Hugging Face tokenizer.json).",
        choices=TOKENIZER_TYPES,
    ),
    Field(
        "model_file",
        "",
        "The tokenizer's file, for every type but bytes: the SentencePiece .model "
        "(sentencepiece), bpe_simple_vocab_16e6.txt.gz (clip_bpe), spiece.model (siglip), "
        "tokenizer.json.",
    ),
)

MODEL_FIELDS = (
    Field("modalities", ("text", "image", "audio"), "Encoders the model has (any subset)."),
    Field(
        "embed_dim", 128, "Width of the per-modality and fused output embeddings.", range=Above(0)
    ),
    Field(
        "num_classes",
        64,
        "Classification head size on the fused embedding; 0 = none.",
        range=AtLeast(0),
    ),
    Group(
        "attribute_classes",
        (),
        "Auxiliary attribute heads on each modality's embedding (empty = none): attribute "
        "name -> number of classes. The loss term is config.loss.attribute_weight; the batch "
        "must carry an int label per attribute.",
    ),
    Group(
        "attribute_modalities",
        (),
        "Of the attribute heads: modality -> the attributes it can express.",
    ),
    Group(
        "tasks",
        (),
        "Downstream tasks, each with its own learned fusion weights over the modality "
        "embeddings (a gated fusion per task) and a classification head: task name -> the "
        'batch key it predicts ("label", classes model.num_classes, or an attribute of '
        "attribute_classes). Trained together with weight config.loss.task_weight; the "
        "weights are reported per task.",
    ),
    Field(
        "temperature_init",
        0.07,
        "Initial contrastive temperature (learned). CLIP: 0.07.",
        range=Above(0),
    ),
    Field("logit_bias_init", -10.0, "Initial bias of the sigmoid (SigLIP) loss, learned."),
    Field(
        "dropout_rate",
        0.0,
        "Dropout after attention and MLP in every block (train only).",
        range=Interval(0, 1, closed="left"),
    ),
    Field(
        "modality_dropout",
        0.0,
        "P(drop a modality from the fusion), per example, train only.",
        range=Interval(0, 1, closed="left"),
    ),
    Field(
        "remat",
        "none",
        "Rematerialisation policy per block: none | full | dots | dots_no_batch.",
        choices=REMAT_POLICIES,
    ),
    Field("scan_layers", True, "nn.scan over layers (fast compile); False unrolls them."),
)
# Groups whose keys are names the user chooses (attribute names), not fixed fields: the
# model's groups declared without fields.
OPEN_GROUPS = tuple(
    f"model.{group.name}" for group in MODEL_FIELDS if isinstance(group, Group) and not group.fields
)

FUSION_FIELDS = (
    Field(
        "type",
        "concat",
        "concat: one joint transformer over all tokens (early fusion). gated: learned weights "
        "over the pooled embeddings (late fusion). cross_attention: per-modality streams that "
        "cross-attend to each other (ViLBERT). bottleneck: per-modality streams that exchange "
        "information only through shared bottleneck tokens (MBT). perceiver: a latent array "
        "cross-attends to all tokens (cost linear in the token count). none: no fusion (a "
        "contrastive two-tower model such as CLIP; needs model.num_classes = 0).",
    ),
    # The transformer's sizes, as the towers' (mmtx.schemas.tower_options; VARIANTS sets them).
    tower_options.WIDTH.with_default(
        128, doc="Width of the fusion layers (gated: of the projections)."
    ),
    tower_options.DEPTH.with_default(1, doc="Fusion layers (not used by gated)."),
    tower_options.NUM_HEADS,
    tower_options.MLP_DIM,
    tower_options.ATTENTION.with_default("dense", doc="Kernel of the fusion's self-attention."),
    Field(
        "cross_attention",
        "dense",
        "Kernel of cross_attention/perceiver: dense | linear.",
        choices=CROSS_ATTENTION_KERNELS,
    ),
    Field("num_bottlenecks", 4, "bottleneck: shared bottleneck tokens.", range=Above(0)),
    Field("fusion_layer", 0, "bottleneck: layers run per modality before fusion starts."),
    Field("num_latents", 16, "perceiver: size of the latent array.", range=Above(0)),
    Field(
        "latent_layers",
        1,
        "perceiver: latent self-attention blocks per cross-attention.",
        range=Above(0),
    ),
)

FEATURE_MAPS = tower_options.FEATURE_MAPS
# How jax runs the attention: whether an explicit one can run is checked where the model is
# built (mmtx.model_checks).
ATTENTION_IMPLEMENTATIONS = tower_options.IMPLEMENTATIONS
ATTENTION_FIELDS = (
    Field(
        "implementation",
        "auto",
        "Attention implementation: auto (cuDNN flash for the dense kernel on a GPU when the "
        "dtype and head dim allow, the Pallas splash kernel for the local kernel on a TPU, "
        "else XLA) | xla | cudnn (dense kernel, GPU, bf16/fp16 only) | pallas (local kernel, "
        "TPU; interpret mode anywhere with MMTX_PALLAS_INTERPRET=1); an explicit one that "
        "cannot run fails when the model is built (mmtx.model_checks).",
        choices=ATTENTION_IMPLEMENTATIONS,
    ),
    Group(
        "local",
        (
            Field("radius", 64, "Query i sees keys j with |i - j| <= radius.", range=AtLeast(0)),
            Field(
                "num_global",
                1,
                "The first tokens (e.g. CLS) see and are seen by all.",
                range=AtLeast(0),
            ),
        ),
        "The local kernel's window.",
    ),
    Group(
        "linear",
        (
            Field(
                "feature_map",
                "elu",
                "elu (elu + 1, exact) | favor (FAVOR+ features).",
                choices=FEATURE_MAPS,
            ),
            Field("num_features", 0, "FAVOR+ random features; 0 = 4 * head_dim.", range=AtLeast(0)),
            Field("seed", 0, "Seed of the fixed FAVOR+ random projection.", range=AtLeast(0)),
        ),
        "The linear kernel's feature map.",
    ),
)

CONTRASTIVE_LOSSES = ("softmax", "sigmoid", "none")
LOSS_FIELDS = (
    Field(
        "contrastive",
        "softmax",
        "softmax (CLIP) | sigmoid (SigLIP) | none; every modality pair.",
        choices=CONTRASTIVE_LOSSES,
    ),
    Field("contrastive_weight", 1.0, "Weight of each pairwise contrastive term.", range=AtLeast(0)),
    Field(
        "classification_weight",
        1.0,
        "Weight of the cross-entropy on the fused embedding.",
        range=AtLeast(0),
    ),
    Field(
        "attribute_weight",
        0.0,
        "Weight of each auxiliary attribute cross-entropy term.",
        range=AtLeast(0),
    ),
    Field(
        "task_weight",
        1.0,
        "Weight of each model.tasks head's cross-entropy term.",
        range=AtLeast(0),
    ),
)

LORA_FIELDS = (
    Field("rank", 0, "Adapter rank; 0 = no adapters.", range=AtLeast(0)),
    Field(
        "alpha",
        1.0,
        "Adapter scale numerator: the update is alpha / rank * A @ B.",
        range=Above(0),
    ),
    Field(
        "targets",
        ("attention", "mlp"),
        "Kernels that get adapters: attention (query, key, value, out), mlp (fc1, fc2), one "
        "of those six names, or a regex over param paths ending in a kernel (mmtx.train.lora).",
    ),
)

NONFINITE_ACTIONS = ("stop", "skip")
TRAIN_FIELDS = (
    Field("steps", 2000, "Optimizer steps.", range=Above(0)),
    Field("batch_size", 64, "Global batch (all processes together).", range=Above(0)),
    Field("microbatches", 1, "Gradient accumulation pieces per step (1 = none).", range=Above(0)),
    Field(
        "accumulation_unroll",
        -1,
        "Unroll the microbatch gradient loop when microbatches <= this, else lax.scan (0: "
        "always scan; -1: auto, 8 on CPU where it is faster, 0 on accelerators).",
        range=Either(-1, AtLeast(0)),
    ),
    Field(
        "learning_rate",
        1e-3,
        "Peak learning rate of the warmup + cosine schedule.",
        range=Above(0),
    ),
    Field("warmup_steps", 100, "Linear warmup from 0 to the peak.", range=AtLeast(0)),
    Field(
        "end_learning_rate_factor",
        0.01,
        "Cosine decays to peak * this at the last step.",
        range=Interval(0, 1, closed="both"),
    ),
    Field(
        "weight_decay",
        0.05,
        "AdamW decoupled decay, applied to weight matrices only.",
        range=AtLeast(0),
    ),
    Field("b1", 0.9, "Adam first-moment decay.", range=Interval(0, 1, closed="left")),
    Field(
        "b2",
        0.98,
        "Adam second-moment decay (0.98 as in CLIP, stabler than 0.999).",
        range=Interval(0, 1, closed="left"),
    ),
    Field("grad_clip", 1.0, "Clip the global gradient norm; 0 = no clipping.", range=AtLeast(0)),
    Field("seed", 0, "Seeds param init and dropout.", range=AtLeast(0)),
    Field("log_every", 50, "Steps between progress lines / train metric writes.", range=Above(0)),
    Field("eval_every", 500, "Steps between evaluations (and one at the end).", range=Above(0)),
    Field(
        "checkpoint_every",
        500,
        "Steps between checkpoints (and one at the end).",
        range=Above(0),
    ),
    Field("keep_checkpoints", 3, "Checkpoints kept on disk.", range=Above(0)),
    Field(
        "peak_flops",
        0.0,
        "Peak FLOP/s per device that the logged MFU divides by; 0 = the table for TPU "
        "v4/v5e/v5p/v6e and A100/H100/H200 (bf16 dense), else measured once at start (a "
        "large matmul; CPU).",
        range=AtLeast(0),
    ),
    Field(
        "profile_steps",
        (0, 0),
        "Steps START,END (1-based, inclusive) traced with jax.profiler to workdir/profile for "
        "TensorBoard's profile plugin; (0, 0) = off.",
        range=AtLeast(0),
    ),
    Field(
        "nonfinite",
        "stop",
        'On a non-finite loss or gradient: "stop" (exit non-zero naming the step, saving no '
        'new checkpoint) or "skip" (leave the state unchanged and count the step in '
        "train/nonfinite).",
        choices=NONFINITE_ACTIONS,
    ),
    # Fine-tuning (docs/usage.md, "Fine-tuning"): where the params start, which train,
    # layer-wise decay, EMA and LoRA.
    Field(
        "init_from",
        "",
        "A fresh run's params start from another run's: a workdir (its newest intact "
        "checkpoint) or a step directory DIR/checkpoints/STEP. Params are matched by path; new "
        "ones stay initialised, learned 2-D position tables are resampled to this config's "
        'patch grid; the optimizer starts fresh. "" = from scratch.',
    ),
    Field(
        "trainable",
        (),
        'Regexes over "/"-joined param paths ("^image/", "_head/"): a param trains when it '
        "matches one of `trainable` (or `trainable` is empty) and none of `frozen`.",
    ),
    Field(
        "frozen",
        (),
        "Regexes as `trainable`'s. Frozen params get no optimizer state and no weight decay, "
        "and stay bit-identical.",
    ),
    Field(
        "layer_decay",
        1.0,
        "Layer-wise learning-rate decay: block i of a tower of depth L trains at lr * d^(L - "
        "i), its embeddings at lr * d^(L + 1), everything else at lr. 1 = off.",
        range=Interval(0, 1, closed="right"),
    ),
    Field(
        "ema_decay",
        0.0,
        "Exponential moving average of the params, updated every step (ema = d * ema + (1 - "
        "d) * params, starting at the initial / init_from params), evaluated and checkpointed "
        "beside them (eval metrics ema/...; mmtx.Model.from_checkpoint(dir, ema=True)). 0 = "
        "none.",
        range=Interval(0, 1, closed="left"),
    ),
    Group(
        "lora",
        LORA_FIELDS,
        "LoRA adapters (Hu et al. 2021) on the towers' block kernels: W + alpha / rank * A @ "
        "B, B zero at the start. With rank > 0 only the adapters (and `trainable` matches) "
        "train.",
    ),
)

EVAL_FIELDS = (
    Field(
        "batch_size",
        256,
        "Eval batch (global); the last partial batch is padded.",
        range=Above(0),
    ),
    Field(
        "zero_shot",
        True,
        "Zero-shot classification of the eval images/audio by prompted class names (CLIP): "
        "needs a text tower and labels with names (see classnames).",
    ),
    Field(
        "zero_shot_templates",
        ("a photo of a {}.", "a {}.", "a picture of a {}."),
        'Prompt templates, "{}" = the class name; each class\'s prompt embeddings are averaged.',
    ),
    Field(
        "classnames",
        (),
        'Zero-shot class names in label order; () = the data\'s own (synthetic: "red circle", '
        '..., "white ring" = shape x colour; TFDS: a ClassLabel\'s names).',
    ),
    Field(
        "all_captions",
        True,
        "Retrieval with every caption of an example when the data has several (COCO "
        "protocol: image->text hits when any caption is in the top k; each caption a "
        "text->image query).",
    ),
)


def _role_fields(what: str) -> Callable[[], tuple[Field, ...]]:
    """The fields of a role map (``data.columns``, ``data.features``), made when a config is:
    one per registered modality, then ``label``, each naming the ``what`` behind that role
    ("" by default)."""
    return lambda: tuple(
        Field(role, "", f"The {what} of the {role}.") for role in (*modality_names(), "label")
    )


DATA_FIELDS = (
    Field(
        "source",
        "synthetic",
        "synthetic (built-in, no download) | tfds:<name> (a TFDS dataset prepared as "
        "array_record in data_dir, e.g. tfds:coco_captions/2017; see "
        "mmtx.data.tfds_source) | your own files: csv:PATH | folder:DIR | "
        "arrayrecord:PATTERN | wds:PATTERN | parquet:PATTERN, local or a bucket URL "
        "(gs://, s3://), patterns with globs or braces (see mmtx.data.sources).",
    ),
    Field(
        "eval_source",
        "",
        'Evaluation data of a file source, in the same syntax; "" = the last data.holdout '
        "examples of a random-access data.source (csv, folder, arrayrecord), or no "
        "evaluation.",
    ),
    Field(
        "holdout",
        0,
        "Examples at the end of a random-access file source kept for eval.",
        range=AtLeast(0),
    ),
    Field("csv_separator", "\t", "csv: the field separator (open_clip's default, a tab)."),
    Group(
        "columns",
        _role_fields("column"),
        'The CSV / Parquet column behind each role; "" = the format\'s default (csv: '
        "filepath, title for image, text; parquet: jpg, caption as img2dataset writes "
        "them; else none).",
    ),
    Field(
        "shuffle_buffer",
        1000,
        "Streams: examples shuffled within a window of this many.",
        range=AtLeast(0),
    ),
    Field(
        "cycle_length",
        4,
        "Streams: shards read at once (interleaved), per worker.",
        range=Above(0),
    ),
    Field("resampled", False, "Streams: draw shards with replacement (open_clip's resampled)."),
    Field(
        "train_num_samples",
        0,
        "Examples in one pass over the training data, for the epoch shown in the progress "
        "line (needed for a stream; 0 = the source's length where it has one, else not "
        "shown).",
        range=AtLeast(0),
    ),
    Field(
        "max_bad_fraction",
        0.05,
        "A run stops once more than this fraction of the examples read is bad "
        "(undecodable, missing, empty; judged after 100 examples). Bad examples below it "
        "are skipped, counted.",
        range=Interval(0, 1, closed="both"),
    ),
    Field(
        "seed",
        0,
        "Seeds the synthetic examples, the shuffle order and augmentation.",
        range=AtLeast(0),
    ),
    Field("train_size", 1_000_000, "Examples in the synthetic train split.", range=Above(0)),
    Field("eval_size", 1024, "Examples in the synthetic eval split.", range=Above(0)),
    Field("data_dir", "", 'TFDS data_dir; "" = TFDS\'s default ($TFDS_DATA_DIR or ~/).'),
    Field("train_split", "train", 'TFDS split trained on; slicing allowed ("train[:90%]").'),
    Field(
        "eval_split",
        "validation",
        'TFDS split evaluated on ("train[90%:]", "test", ...).',
    ),
    Group(
        "features",
        _role_fields("TFDS feature"),
        'TFDS feature behind each role; nested features joined with "/" ("captions/text"); '
        '"" = the dataset has none. Every modality in model.modalities needs one.',
    ),
    Field(
        "audio_sample_rate",
        0,
        "Source audio's rate in Hz; 0 = from the TFDS feature.",
        range=AtLeast(0),
    ),
    Field("augment", False, "Training augmentation: random image crop + flip, audio crop."),
    Field(
        "crop_scale",
        (),
        "With augment: () = resize the shorter side, then a random square + flip; (lo, hi) "
        "= a random-resized crop of that area fraction (open_clip trains with (0.9, 1.0)) "
        "+ flip.",
    ),
    Field(
        "num_threads",
        2,
        "Threads reading and preprocessing examples (per process/worker).",
        range=Above(0),
    ),
    Field(
        "num_workers",
        0,
        "grain worker processes making batches; 0 = none (threads only).",
        range=AtLeast(0),
    ),
    Field("prefetch", 4, "Batches buffered ahead of the train step.", range=AtLeast(0)),
)


MESH_FIELDS = (
    Field(
        "data",
        -1,
        "Data-parallel mesh axis size; -1 = the remaining devices.",
        range=Either(-1, Above(0)),
    ),
    Field("fsdp", 1, "Param-sharding (ZeRO-3 style) axis size.", range=Either(-1, Above(0))),
    Field("tensor", 1, "Tensor-parallel axis size.", range=Either(-1, Above(0))),
)

# The declared top-level fields and groups, in config.json's order (default_config adds one
# group per registered modality to the model's).
SCHEMA: tuple[Field | Group, ...] = (
    *TOP_LEVEL_FIELDS,
    Group("tokenizer", TOKENIZER_FIELDS, "The tokenizer's type and file."),
    Group(
        "model",
        MODEL_FIELDS,
        "The model: its modalities, output embedding and heads (and one group per "
        "modality, added by default_config).",
    ),
    Group("fusion", FUSION_FIELDS, "How the modalities' tokens or embeddings are fused."),
    Group(
        "attention",
        ATTENTION_FIELDS,
        "Options of the attention kernels, shared by every tower whose `attention` names them.",
    ),
    Group("loss", LOSS_FIELDS, "The loss terms and their weights."),
    Group(
        "train",
        TRAIN_FIELDS,
        "The optimizer, its schedule, logging, checkpointing and fine-tuning.",
    ),
    Group("eval", EVAL_FIELDS, "Evaluation: batch size, zero-shot classification and retrieval."),
    Group(
        "data",
        DATA_FIELDS,
        "The data source, its columns or features, the input pipeline and augmentation.",
    ),
    Group("mesh", MESH_FIELDS, "The device mesh's axis sizes."),
)
# Dotted field -> its range, read off SCHEMA (the modality towers' ranges are on their schemas'
# fields: ModalitySchema.ranges).
RANGES: Mapping[str, Range] = MappingProxyType(dict(declared_ranges(SCHEMA)))


class UnknownKeyError(KeyError):
    """A config key the schema does not have. Its message prints as is (a plain ``KeyError``
    would print it quoted, with escaped quotes inside)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def split_comma_lists(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Splits ``"text,image"`` entries of the schema's tuple-of-str fields into items, in place.

    A command-line override ``--config.model.modalities=text,image`` arrives as the one-item
    tuple ``("text,image",)``; this makes it ``("text", "image")``, the same as
    ``--config.model.modalities="('text','image')"``.
    """

    def split(group: ml_collections.ConfigDict, schema: ml_collections.ConfigDict) -> None:
        for key, schema_value in schema.items():
            if key not in group:
                continue
            value = group[key]
            if isinstance(schema_value, ml_collections.ConfigDict):
                if isinstance(value, ml_collections.ConfigDict):
                    split(value, schema_value)
            elif isinstance(schema_value, tuple) and all(isinstance(v, str) for v in schema_value):
                entries = [value] if isinstance(value, str) else value
                if isinstance(entries, tuple | list) and all(isinstance(v, str) for v in entries):
                    items = tuple(i.strip() for v in entries for i in v.split(",") if i.strip())
                    if items != tuple(entries):
                        group[key] = items

    split(config, default_config())
    return config


def apply_variant(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """Sets the sizes of every tower and the fusion from ``VARIANTS[name]``, in place."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
    variant = VARIANTS[name]
    config.variant = name
    config.model.embed_dim = variant["embed_dim"]
    for modality in modality_names():
        config.model[modality].update(variant["tower"])
    config.fusion.update(variant["fusion"])
    return config


# Fields that older runs' saved configs (workdir/config.json) may hold and that no longer
# exist: merge_overrides skips them (train.inject_nan_at_step: tests now wrap the loss).
RETIRED_KEYS = frozenset({"train.inject_nan_at_step"})


def merge_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any], prefix: str = ""
) -> ml_collections.ConfigDict:
    """Merges a nested dict onto ``config`` in place; unknown keys raise a ``KeyError``.

    The error names the full dotted path of the unknown key and the closest known key. A
    value of another type than the field's (a bool or float for an int, a str for a number)
    raises a ``TypeError`` naming the field (:func:`validate` checks the ranges). Groups in
    :data:`OPEN_GROUPS` hold user-named entries and take any key.
    """
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if prefix.rstrip(".") in OPEN_GROUPS:
            config[key] = tuple(value) if isinstance(value, list) else value
            continue
        if key not in config and path in RETIRED_KEYS:
            continue
        if key not in config:
            close = difflib.get_close_matches(key, list(config.keys()), n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
            raise UnknownKeyError(f"unknown config key {path!r}{hint}")
        if isinstance(config[key], ml_collections.ConfigDict):
            if not isinstance(value, Mapping):
                raise TypeError(f"config key {path!r} is a group; got {type(value).__name__}")
            merge_overrides(config[key], value, prefix=f"{path}.")
        else:
            # Checked here: ConfigDict would take a bool for an int and cast it to a float.
            _check_type(path, value, config[key])
            if isinstance(config[key], tuple) and isinstance(value, list):
                value = tuple(value)
            config[key] = value
    return config


def workdir_file(path: str, workdir: str) -> str:
    """``path`` as named inside ``workdir`` when it is relative and that file exists (an
    imported checkpoint keeps its tokenizer file there, as ``tokenizer/<file>``); else
    ``path`` unchanged."""
    if path and not os.path.isabs(path) and os.path.exists(os.path.join(workdir, path)):
        return os.path.join(workdir, path)
    return path


def tower_tokens(config: ml_collections.ConfigDict, modality: str) -> int:
    """Tokens ``modality``'s transformer attends over, its class tokens included.

    The modality's own count (:meth:`mmtx.modalities.ModalitySpec.num_tokens`: text
    ``max_length``, padding being masked, not dropped; image one per patch; audio one per
    (time x mel) patch of the log-mel spectrogram, :func:`audio_patch_grid`; video one per
    tubelet) plus the class tokens of the pooling (:data:`CLASS_TOKENS`: cls 1, cls_distill
    2, others 0).
    """
    tower = config.model[modality]
    tokens = get_modality(modality).num_tokens(tower)
    return tokens + CLASS_TOKENS.get(tower.pooling, 0)


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"config.{field}: {message}")


# ---------------------------------------------------------------------- types (the schema)

# Tuples whose length the schema fixes (image mean/std follow model.image.channels instead).
TUPLE_LENGTHS = {"model.audio.patch_size": 2, "model.audio.patch_stride": 2}


def _describe_type(schema_value: Any) -> str:
    """What the schema's ``schema_value`` asks for, in words: "an int", "a list of numbers"."""
    if isinstance(schema_value, tuple):
        element = _describe_type(schema_value[0]).split(" ", 1)[1] if schema_value else "value"
        return f"a list of {element}s"
    if isinstance(schema_value, bool):
        return "a bool"
    if isinstance(schema_value, int):
        return "an int"
    if isinstance(schema_value, float):
        return "a number"
    return "a str" if isinstance(schema_value, str) else type(schema_value).__name__


def _fits(value: Any, schema_value: Any) -> bool:
    """Whether ``value`` has the type of the schema's ``schema_value``.

    A bool is not a number; an int stands for a float (JSON writes 1.0 as 1); a list or
    tuple stands for a tuple when its entries fit the schema's first entry.
    """
    if isinstance(schema_value, bool):
        return isinstance(value, bool | np.bool_)
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(schema_value, int):
        return isinstance(value, numbers.Integral)
    if isinstance(schema_value, float):
        return isinstance(value, numbers.Real)
    if isinstance(schema_value, tuple):
        if not isinstance(value, tuple | list):
            return False
        return not schema_value or all(_fits(v, schema_value[0]) for v in value)
    return isinstance(value, type(schema_value))


def _check_type(path: str, value: Any, schema_value: Any) -> None:
    """Raises ``TypeError`` unless ``value`` fits the schema's type at ``path``, and
    ``ValueError`` for a non-finite float (or float entry) or a tuple of the wrong length."""
    if not _fits(value, schema_value):
        raise TypeError(
            f"config.{path}: must be {_describe_type(schema_value)}; "
            f"got {type(value).__name__} {value!r}"
        )
    entries = tuple(value) if isinstance(schema_value, tuple) else (value,)
    kind = schema_value[0] if isinstance(schema_value, tuple) and schema_value else schema_value
    if isinstance(kind, float):
        _require(all(math.isfinite(v) for v in entries), path, f"must be finite; got {value!r}")
    if path in TUPLE_LENGTHS:
        _require(
            len(entries) == TUPLE_LENGTHS[path],
            path,
            f"must have {TUPLE_LENGTHS[path]} entries; got {len(entries)}: {entries}",
        )


def _check_schema(
    config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, prefix: str = ""
) -> None:
    """Walks ``config`` alongside the schema: no unknown or missing keys, every value of the
    schema's type (:func:`_check_type`); the user-named entries of :data:`OPEN_GROUPS` are
    checked by :func:`_check_open_group`."""
    for key in config.keys():
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema.keys()), n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
            raise ValueError(f"config.{prefix}{key}: unknown key{hint}")
    for key, schema_value in schema.items():
        path = f"{prefix}{key}"
        _require(key in config, path, "missing (start from mmtx.config.default_config())")
        value = config[key]
        if isinstance(schema_value, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                raise TypeError(f"config.{path}: must be a group; got {type(value).__name__}")
            if path in OPEN_GROUPS:
                _check_open_group(path, value)
            else:
                _check_schema(value, schema_value, prefix=f"{path}.")
        else:
            _check_type(path, value, schema_value)


def _check_open_group(path: str, group: ml_collections.ConfigDict) -> None:
    # attribute_classes: name -> number of classes; attribute_modalities: modality -> names.
    for name, value in group.items():
        if path == "model.attribute_classes":
            _check_type(f"{path}.{name}", value, 0)
            _require(value > 0, f"{path}.{name}", f"must be > 0 classes; got {value}")
        elif path == "model.tasks":
            _check_type(f"{path}.{name}", value, "")
        else:
            _check_type(f"{path}.{name}", value, ("",))


# ---------------------------------------------------------------------------- ranges


def _check_range(path: str, value: Any, spec: Range) -> None:
    """Raises ``ValueError`` unless ``value`` (each entry of a tuple) lies in ``spec``."""
    bound = f"in {spec}" if isinstance(spec, Interval) else str(spec)
    if isinstance(value, tuple | list):
        _require(
            all(spec.contains(v) for v in value),
            path,
            f"every entry must be {bound}; got {tuple(value)}",
        )
    else:
        _require(spec.contains(value), path, f"must be {bound}; got {value!r}")


def _check_ranges(config: ml_collections.ConfigDict) -> None:
    """Checks every declared field's range (:data:`RANGES`, in :data:`SCHEMA`'s order), then
    each configured modality's tower: the sizes and ``norm_eps`` that every tower has, then
    its schema's :attr:`~mmtx.schemas.ModalitySchema.ranges`."""
    for path, spec in RANGES.items():
        node = config
        for part in path.split("."):
            node = node[part]
        _check_range(path, node, spec)
    tower_fields = (*tower_options.SIZES, tower_options.NORM_EPS)
    for modality in config.model.modalities:
        tower = config.model[modality]
        specs = {
            **{field.name: field.range for field in tower_fields},
            **get_modality(modality).ranges,
        }
        for name, spec in specs.items():
            _check_range(f"model.{modality}.{name}", tower[name], spec)


# ------------------------------------------------------------------------- validation


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks every field against the schema (:func:`default_config`) and its range.

    In order: unknown or missing keys and types (a bool is not an int, a float is not an
    int, floats must be finite; ``TypeError`` for a wrong type), the ranges declared on the
    fields (:data:`RANGES`, then each configured modality's ``ranges``), the choices (kernel,
    fusion, pooling names ...) and the checks that span fields (width divisible by heads,
    patches that fit the image and the spectrogram, ...). Raises ``ValueError`` (or
    ``TypeError``) whose message starts ``config.<field>:`` and names the allowed values;
    returns ``config``.

    The config is data: this module imports no jax, flax or grain (the modalities' schemas
    come from :mod:`mmtx.schemas`). What only the code can answer, whether ``fusion.type``
    is a registered fusion and whether an explicit ``attention.implementation`` can run on
    the target platform, is checked where the model is built from the config
    (:func:`mmtx.model_checks.check_runnable`), before anything is traced.
    """
    _check_schema(config, default_config())
    _validate_modality_names(tuple(config.model.modalities))
    _check_ranges(config)
    _validate_dtypes(config)
    _validate_heads(config.model)
    _validate_towers(config)
    _validate_fusion(config)
    _validate_attention(config.attention)
    _validate_training(config)
    _validate_eval(config.eval)
    _validate_tokenizer(config.tokenizer)
    return config


def _validate_modality_names(modalities: tuple[str, ...]) -> None:
    _require(len(modalities) > 0, "model.modalities", "needs at least one modality")
    for modality in modalities:
        _require(
            modality in modality_names(),
            "model.modalities",
            f"unknown modality {modality!r}; registered: {modality_names()}",
        )


def _validate_dtypes(config: ml_collections.ConfigDict) -> None:
    _require(config.dtype in DTYPES, "dtype", f"{config.dtype!r} is not one of {DTYPES}")
    _require(
        config.param_dtype in PARAM_DTYPES,
        "param_dtype",
        f"{config.param_dtype!r} is not one of {PARAM_DTYPES}",
    )


def _validate_heads(model: ml_collections.ConfigDict) -> None:
    """The attribute heads and the tasks name what they predict."""
    for modality, names in model.attribute_modalities.items():
        field = f"model.attribute_modalities.{modality}"
        _require(modality in modality_names(), field, f"unknown modality {modality!r}")
        for name in names:
            _require(
                name in model.attribute_classes,
                field,
                f"attribute {name!r} has no entry in model.attribute_classes",
            )
    for name, label in model.tasks.items():
        _require(
            (label == "label" and model.num_classes > 0) or label in model.attribute_classes,
            f"model.tasks.{name}",
            f"predicts {label!r}, which needs an entry in model.attribute_classes (or 'label' "
            "with model.num_classes > 0)",
        )


def _validate_towers(config: ml_collections.ConfigDict) -> None:
    """The configured modalities' towers and the fusion's transformer: remat, heads and
    kernels, then each tower's choices and its modality's own checks."""
    _require(config.model.remat in REMAT_POLICIES, "model.remat", f"one of {REMAT_POLICIES}")
    modalities = tuple(config.model.modalities)
    towers = [(f"model.{m}", config.model[m]) for m in modalities]
    for name, tower in [*towers, ("fusion", config.fusion)]:
        _require(
            tower.width % tower.num_heads == 0,
            f"{name}.width",
            f"width {tower.width} is not divisible by num_heads {tower.num_heads}",
        )
        _require(
            tower.attention in ATTENTION_KERNELS,
            f"{name}.attention",
            f"unknown attention kernel {tower.attention!r}; choose one of {ATTENTION_KERNELS}",
        )
    for modality in modalities:
        _validate_tower(modality, config.model[modality], config.model.embed_dim)
        get_modality(modality).validate(config.model[modality], _require)


def _validate_tower(modality: str, tower: ml_collections.ConfigDict, embed_dim: int) -> None:
    name = f"model.{modality}"
    poolings = get_modality(modality).poolings
    _require(tower.pooling in poolings, f"{name}.pooling", f"one of {poolings}")
    _require(
        tower.position_embedding in POSITION_EMBEDDINGS,
        f"{name}.position_embedding",
        f"one of {POSITION_EMBEDDINGS}",
    )
    _require(
        tower.activation in ACTIVATIONS,
        f"{name}.activation",
        f"{tower.activation!r} is not one of {ACTIVATIONS}",
    )
    _require(
        tower.projection in PROJECTIONS,
        f"{name}.projection",
        f"{tower.projection!r} is not one of {PROJECTIONS}",
    )
    _require(
        tower.projection != "none" or tower.width == embed_dim,
        f"{name}.projection",
        f"'none' makes the pooled output the embedding, so width ({tower.width}) must equal "
        f"model.embed_dim ({embed_dim})",
    )
    if "class_token_posemb" in tower:
        _require(
            not tower.class_token_posemb or tower.position_embedding == "learned",
            f"{name}.class_token_posemb",
            "needs position_embedding='learned' (a table with rows for the class tokens); "
            f"got {tower.position_embedding!r}",
        )


def _validate_fusion(config: ml_collections.ConfigDict) -> None:
    """The fusion's kernels and layers, and what a model without fusion cannot have (its
    type names a registered fusion: :func:`mmtx.model_checks.check_fusion_registered`)."""
    fusion = config.fusion
    _require(
        fusion.cross_attention in CROSS_ATTENTION_KERNELS,
        "fusion.cross_attention",
        f"one of {CROSS_ATTENTION_KERNELS} (the local kernel needs one sequence)",
    )
    if fusion.type == "bottleneck":
        _require(
            0 <= fusion.fusion_layer < fusion.depth,
            "fusion.fusion_layer",
            f"must be in [0, fusion.depth={fusion.depth}) so that at least one layer fuses; "
            f"got {fusion.fusion_layer}",
        )
    if fusion.type in ("cross_attention", "bottleneck", "perceiver"):
        _require(fusion.depth > 0, "fusion.depth", f"{fusion.type} fusion needs depth >= 1")
    _require(
        fusion.type != NO_FUSION or config.model.num_classes == 0,
        "model.num_classes",
        "fusion.type='none' has no fused embedding to classify: set model.num_classes to 0; "
        f"got {config.model.num_classes}",
    )
    _require(
        fusion.type != NO_FUSION or config.model.modality_dropout == 0,
        "model.modality_dropout",
        "drops modalities from the fusion, which fusion.type='none' does not have: set it "
        f"to 0; got {config.model.modality_dropout}",
    )


def _validate_attention(attention: ml_collections.ConfigDict) -> None:
    _require(
        attention.linear.feature_map in FEATURE_MAPS,
        "attention.linear.feature_map",
        " | ".join(FEATURE_MAPS),
    )
    _require(
        attention.implementation in ATTENTION_IMPLEMENTATIONS,
        "attention.implementation",
        f"{attention.implementation!r} is not one of {ATTENTION_IMPLEMENTATIONS}",
    )


def _validate_training(config: ml_collections.ConfigDict) -> None:
    train = config.train
    _require(train.nonfinite in NONFINITE_ACTIONS, "train.nonfinite", " | ".join(NONFINITE_ACTIONS))
    profile = tuple(train.profile_steps)
    _require(
        profile in ((), (0, 0)) or (len(profile) == 2 and 0 < profile[0] <= profile[1]),
        "train.profile_steps",
        f"START,END with 0 < START <= END, or 0,0 (off); got {profile}",
    )
    _require(
        train.batch_size % train.microbatches == 0,
        "train.microbatches",
        f"train.batch_size={train.batch_size} must divide into {train.microbatches} microbatches",
    )
    _require(
        config.loss.contrastive in CONTRASTIVE_LOSSES,
        "loss.contrastive",
        " | ".join(CONTRASTIVE_LOSSES),
    )
    regexes = {
        "train.trainable": train.trainable,
        "train.frozen": train.frozen,
        "train.lora.targets": train.lora.targets,
    }
    for name, patterns in regexes.items():
        for pattern in patterns:
            _require(isinstance(pattern, str), name, f"entries must be str; got {pattern!r}")
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"config.{name}: {pattern!r} is not a regex ({error})") from None
    _require(
        train.lora.rank == 0 or len(train.lora.targets) > 0,
        "train.lora.targets",
        "needs at least one target when train.lora.rank > 0 (e.g. ('attention', 'mlp'))",
    )
    _validate_data(config)


def _validate_eval(evaluation: ml_collections.ConfigDict) -> None:
    for name in evaluation.classnames:
        _require(isinstance(name, str), "eval.classnames", f"entries must be str; got {name!r}")
    if evaluation.zero_shot:
        _require(
            len(evaluation.zero_shot_templates) > 0,
            "eval.zero_shot_templates",
            "needs at least one template when eval.zero_shot is on (e.g. 'a photo of a {}.')",
        )
    for template in evaluation.zero_shot_templates:
        _require(
            isinstance(template, str) and template.count("{}") == 1,
            "eval.zero_shot_templates",
            f"each template needs exactly one '{{}}' for the class name; got {template!r}",
        )


def _validate_tokenizer(tokenizer: ml_collections.ConfigDict) -> None:
    _require(tokenizer.type in TOKENIZER_TYPES, "tokenizer.type", " | ".join(TOKENIZER_TYPES))
    _require(
        tokenizer.type == "bytes" or bool(tokenizer.model_file),
        "tokenizer.model_file",
        f"tokenizer.type={tokenizer.type!r} needs the path of its file (a SentencePiece "
        ".model, bpe_simple_vocab_16e6.txt.gz, spiece.model or tokenizer.json)",
    )


def _validate_data(config: ml_collections.ConfigDict) -> None:
    data = config.data
    source = data.source
    kinds = ", ".join(f"{kind}:..." for kind in FILE_KINDS)
    _require(
        source_kind(source) != "",
        "data.source",
        f"'synthetic', 'tfds:<name>' or a file source ({kinds})",
    )
    if data.eval_source:
        _require(
            source_kind(source) in FILE_KINDS and source_kind(data.eval_source) in FILE_KINDS,
            "data.eval_source",
            f"a file source ({kinds}), with a file source in data.source (the synthetic and TFDS "
            "sources evaluate on their own eval split)",
        )
    crop_scale = tuple(data.crop_scale)
    _require(
        crop_scale == () or (len(crop_scale) == 2 and 0 < crop_scale[0] <= crop_scale[1] <= 1),
        "data.crop_scale",
        f"() or (lo, hi) with 0 < lo <= hi <= 1 (open_clip: (0.9, 1.0)); got {crop_scale}",
    )
    if source_kind(source) in FILE_KINDS:
        _require(
            "video" not in config.model.modalities,
            "model.modalities",
            "video from files is not read yet (.mp4 members are recognised, not decoded); "
            "train video on the synthetic or a TFDS source",
        )
        _require(
            len(data.csv_separator) == 1,
            "data.csv_separator",
            f"one character (a tab is '\\t'); got {data.csv_separator!r}",
        )
    if source.startswith("tfds:"):
        for modality in config.model.modalities:
            _require(
                bool(data.features.get(modality, "")),
                f"data.features.{modality}",
                f"name the TFDS feature that holds the {modality} (model.modalities has it)",
            )


class ConfigFileError(ValueError):
    """A config file that cannot be used (missing, not valid JSON, not Python); the message is
    one line naming the file."""


def is_python_config(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` (``path[:arg]``) names a Python config: its path, the part before the
    first ``:``, ends in ``.py`` in any case. Only such files are ever executed."""
    return os.fspath(spec).partition(":")[0].lower().endswith(".py")


def read_json_config(spec: str | os.PathLike) -> dict[str, Any]:
    """The overrides dict of the JSON config file ``spec`` (any name that is not ``.py``).

    Files it names (:data:`FILE_FIELDS`: the tokenizer file, ``train.init_from``) resolve
    against the config file's own directory when they exist there, so that a workdir's
    ``config.json`` works from anywhere. Raises ``FileNotFoundError`` when it is missing, and
    :class:`ConfigFileError` (one line naming the file) when it is given a ``:arg`` (only
    Python configs take one), is a directory, is not UTF-8, is not valid JSON (with the line
    and column of the error) or does not hold an object at the top level.
    """
    path = os.fspath(spec)
    if not os.path.exists(path):
        before, colon, _ = path.partition(":")
        if colon and os.path.isfile(before):
            raise ConfigFileError(
                f"{path}: only a Python (.py) config takes ':arg'; {before} is read as JSON"
            )
        raise FileNotFoundError(f"config file not found: {path}")
    if os.path.isdir(path):
        raise ConfigFileError(f"{path} is a directory, not a config file")
    overrides = read_json_object(
        path, hint="; a config file is read as JSON unless its name ends in .py"
    )
    _resolve_file_fields(overrides, os.path.dirname(os.path.abspath(path)))
    return overrides


def read_json_object(path: str, *, hint: str = "") -> dict[str, Any]:
    """The JSON object in the file ``path`` (a config: mmtx's, or a checkpoint's
    ``config.json``). Raises :class:`ConfigFileError`, one line naming the file, when it is not
    UTF-8, not valid JSON (with the line and column of the error, then ``hint``) or does not
    hold an object at the top level."""
    try:
        with open(path, encoding="utf-8") as f:
            loaded = json.load(f)
    except json.JSONDecodeError as error:
        raise ConfigFileError(
            f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}){hint}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not UTF-8 text, so not a JSON config") from None
    if not isinstance(loaded, dict):
        raise ConfigFileError(f"{path}: a JSON config must hold an object at the top level")
    return loaded


# Config fields that name a file or directory: a relative one in a JSON config file is looked
# up beside that file first (an imported workdir's config.json names "tokenizer/<file>").
FILE_FIELDS = (("tokenizer", "model_file"), ("train", "init_from"))


def _resolve_file_fields(overrides: dict[str, Any], directory: str) -> None:
    """Makes each relative :data:`FILE_FIELDS` path of ``overrides`` absolute when it exists
    relative to ``directory`` (the config file's own); other paths are left as written."""
    for group, name in FILE_FIELDS:
        holder = overrides.get(group)
        value = holder.get(name) if isinstance(holder, dict) else None
        if isinstance(value, str) and value and not os.path.isabs(value):
            candidate = os.path.join(directory, value)
            if os.path.exists(candidate):
                holder[name] = candidate


def load_config(spec: ml_collections.ConfigDict | str | os.PathLike) -> ml_collections.ConfigDict:
    """Loads a config from a ConfigDict, ``path/to/file.py[:arg]`` or a JSON file.

    A file is executed only when its name ends in ``.py`` (any case; :func:`is_python_config`)
    and must define ``get_config(arg=None)``. Any other file is read as JSON
    (:func:`read_json_config`): a nested dict of overrides merged onto :func:`default_config`
    (unknown keys are an error). The result is validated with :func:`validate` and returned
    as a new ConfigDict.
    """
    if isinstance(spec, ml_collections.ConfigDict):
        config = copy.deepcopy(spec)
    elif is_python_config(spec):
        path, _, arg = os.fspath(spec).partition(":")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        module_spec = importlib.util.spec_from_file_location(
            "_mmtx_config_file",
            path,
            loader=importlib.machinery.SourceFileLoader("_mmtx_config_file", path),
        )
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        config = module.get_config(arg) if arg else module.get_config()
    else:
        overrides = read_json_config(spec)
        config = merge_overrides(default_config(), overrides)
    return validate(config)
