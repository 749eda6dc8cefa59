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
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from mmtx.data.source_kinds import FILE_KINDS, source_kind
from mmtx.schemas import get_modality, modality_names, tower_options
from mmtx.schemas.audio import audio_patch_grid, spectrogram_frames  # noqa: F401 (re-exported)
from mmtx.schemas.ranges import Above, AtLeast, Either, Interval, Range

# The built-in fusion types; mmtx.fusion.register_fusion adds more. "none" is no fusion
# (two-tower contrastive models, CLIP/SigLIP): no fusion params and no "fused" output.
FUSION_TYPES = ("concat", "gated", "cross_attention", "bottleneck", "perceiver")
NO_FUSION = "none"
CROSS_ATTENTION_KERNELS = ("dense", "linear")
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
# Groups whose keys are names the user chooses (attribute names), not fixed fields.
OPEN_GROUPS = ("model.attribute_classes", "model.attribute_modalities", "model.tasks")
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
    per part, each made and documented, field by field, by its own function below (the
    modalities' groups by their schemas, :mod:`mmtx.schemas`)."""
    c = ml_collections.ConfigDict()
    c.variant = "small"  # Name of the size variant last applied (see VARIANTS); informational.
    c.dtype = "auto"  # Compute dtype: float32 | bfloat16 | float16 | auto (bf16 on TPU/GPU).
    c.param_dtype = "float32"  # Dtype of params and optimizer state.

    c.tokenizer = _tokenizer_defaults()
    c.model = _model_defaults()
    c.fusion = _fusion_defaults()
    c.attention = _attention_defaults()
    c.loss = _loss_defaults()
    c.train = _train_defaults()
    c.eval = _eval_defaults()
    c.data = _data_defaults()
    c.mesh = _mesh_defaults()
    return c


def _tokenizer_defaults() -> ml_collections.ConfigDict:
    """The tokenizer's type and file."""
    g = ml_collections.ConfigDict()
    # bytes (UTF-8 bytes, no download) | sentencepiece (mmtx's own, pad id 0) | the published
    # families' own: clip_bpe (OpenAI CLIP's BPE, ids as open_clip) | siglip (SigLIP's
    # SentencePiece, ids as transformers' SiglipTokenizer) | tokenizer_json (any Hugging Face
    # tokenizer.json).
    g.type = "bytes"
    # The tokenizer's file, for every type but bytes: the SentencePiece .model (sentencepiece),
    # bpe_simple_vocab_16e6.txt.gz (clip_bpe), spiece.model (siglip), tokenizer.json.
    g.model_file = ""
    return g


def _model_defaults() -> ml_collections.ConfigDict:
    """The model: its modalities, output embedding, heads and one group per modality."""
    g = ml_collections.ConfigDict()
    g.modalities = ("text", "image", "audio")  # Encoders the model has (any subset).
    g.embed_dim = 128  # Width of the per-modality and fused output embeddings.
    g.num_classes = 64  # Classification head size on the fused embedding; 0 = none.
    # Auxiliary attribute heads on each modality's embedding (empty = none): attribute name ->
    # number of classes, and modality -> the attributes it can express. The loss term is
    # config.loss.attribute_weight; the batch must carry an int label per attribute.
    g.attribute_classes = ml_collections.ConfigDict()
    g.attribute_modalities = ml_collections.ConfigDict()
    # Downstream tasks, each with its own learned fusion weights over the modality embeddings
    # (a gated fusion per task) and a classification head: task name -> the batch key it
    # predicts ("label", classes model.num_classes, or an attribute of attribute_classes).
    # Trained together with weight config.loss.task_weight; the weights are reported per task.
    g.tasks = ml_collections.ConfigDict()
    g.temperature_init = 0.07  # Initial contrastive temperature (learned). CLIP: 0.07.
    g.logit_bias_init = -10.0  # Initial bias of the sigmoid (SigLIP) loss, learned.
    g.dropout_rate = 0.0  # Dropout after attention and MLP in every block (train only).
    g.modality_dropout = 0.0  # P(drop a modality from the fusion), per example, train only.
    g.remat = "none"  # Rematerialisation policy per block: none | full | dots | dots_no_batch.
    g.scan_layers = True  # nn.scan over layers (fast compile); False unrolls them.

    # One group per registered modality (mmtx.modalities): its encoder's fields and the
    # projection of its pooled output. Their defaults and comments live with the modality.
    for modality in modality_names():
        g[modality] = get_modality(modality).default_config()
    return g


def _fusion_defaults() -> ml_collections.ConfigDict:
    """How the modalities' tokens or embeddings are fused."""
    g = ml_collections.ConfigDict()
    # concat: one joint transformer over all tokens (early fusion). gated: learned weights
    # over the pooled embeddings (late fusion). cross_attention: per-modality streams that
    # cross-attend to each other (ViLBERT). bottleneck: per-modality streams that exchange
    # information only through shared bottleneck tokens (MBT). perceiver: a latent array
    # cross-attends to all tokens (cost linear in the token count). none: no fusion (a
    # contrastive two-tower model such as CLIP; needs model.num_classes = 0).
    g.type = "concat"
    g.width = 128  # Width of the fusion layers (gated: of the projections).
    g.depth = 1  # Fusion layers (not used by gated).
    g.num_heads = 4
    g.mlp_dim = 256
    g.attention = "dense"  # Kernel of the fusion's self-attention.
    g.cross_attention = "dense"  # Kernel of cross_attention/perceiver: dense | linear.
    g.num_bottlenecks = 4  # bottleneck: shared bottleneck tokens.
    g.fusion_layer = 0  # bottleneck: layers run per modality before fusion starts.
    g.num_latents = 16  # perceiver: size of the latent array.
    g.latent_layers = 1  # perceiver: latent self-attention blocks per cross-attention.
    return g


def _attention_defaults() -> ml_collections.ConfigDict:
    """Options of the attention kernels, shared by every tower whose `attention` names them."""
    g = ml_collections.ConfigDict()
    # Attention implementation: auto (cuDNN flash for the dense kernel on a GPU when the dtype
    # and head dim allow, the Pallas splash kernel for the local kernel on a TPU, else XLA) | xla
    # | cudnn (dense kernel, GPU, bf16/fp16 only) | pallas (local kernel, TPU; interpret mode
    # anywhere with MMTX_PALLAS_INTERPRET=1); an explicit one that cannot run fails validation.
    g.implementation = "auto"
    g.local = ml_collections.ConfigDict()
    g.local.radius = 64  # Query i sees keys j with |i - j| <= radius.
    g.local.num_global = 1  # The first tokens (e.g. CLS) see and are seen by all.
    g.linear = ml_collections.ConfigDict()
    g.linear.feature_map = "elu"  # elu (elu + 1, exact) | favor (FAVOR+ features).
    g.linear.num_features = 0  # FAVOR+ random features; 0 = 4 * head_dim.
    g.linear.seed = 0  # Seed of the fixed FAVOR+ random projection.
    return g


def _loss_defaults() -> ml_collections.ConfigDict:
    """The loss terms and their weights."""
    g = ml_collections.ConfigDict()
    g.contrastive = "softmax"  # softmax (CLIP) | sigmoid (SigLIP) | none; every modality pair.
    g.contrastive_weight = 1.0  # Weight of each pairwise contrastive term.
    g.classification_weight = 1.0  # Weight of the cross-entropy on the fused embedding.
    g.attribute_weight = 0.0  # Weight of each auxiliary attribute cross-entropy term.
    g.task_weight = 1.0  # Weight of each model.tasks head's cross-entropy term.
    return g


def _train_defaults() -> ml_collections.ConfigDict:
    """The optimizer, its schedule, logging, checkpointing and fine-tuning."""
    g = ml_collections.ConfigDict()
    g.steps = 2000  # Optimizer steps.
    g.batch_size = 64  # Global batch (all processes together).
    g.microbatches = 1  # Gradient accumulation pieces per step (1 = none).
    # Unroll the microbatch gradient loop when microbatches <= this, else lax.scan (0: always
    # scan; -1: auto, 8 on CPU where it is faster, 0 on accelerators).
    g.accumulation_unroll = -1
    g.learning_rate = 1e-3  # Peak learning rate of the warmup + cosine schedule.
    g.warmup_steps = 100  # Linear warmup from 0 to the peak.
    g.end_learning_rate_factor = 0.01  # Cosine decays to peak * this at the last step.
    g.weight_decay = 0.05  # AdamW decoupled decay, applied to weight matrices only.
    g.b1 = 0.9  # Adam first-moment decay.
    g.b2 = 0.98  # Adam second-moment decay (0.98 as in CLIP, stabler than 0.999).
    g.grad_clip = 1.0  # Clip the global gradient norm; 0 = no clipping.
    g.seed = 0  # Seeds param init and dropout.
    g.log_every = 50  # Steps between progress lines / train metric writes.
    g.eval_every = 500  # Steps between evaluations (and one at the end).
    g.checkpoint_every = 500  # Steps between checkpoints (and one at the end).
    g.keep_checkpoints = 3  # Checkpoints kept on disk.
    # Peak FLOP/s per device that the logged MFU divides by; 0 = the table for TPU v4/v5e/v5p/
    # v6e and A100/H100/H200 (bf16 dense), else measured once at start (a large matmul; CPU).
    g.peak_flops = 0.0
    # Steps START,END (1-based, inclusive) traced with jax.profiler to workdir/profile for
    # TensorBoard's profile plugin; (0, 0) = off.
    g.profile_steps = (0, 0)
    # On a non-finite loss or gradient: "stop" (exit non-zero naming the step, saving no new
    # checkpoint) or "skip" (leave the state unchanged and count the step in train/nonfinite).
    g.nonfinite = "stop"
    _add_fine_tuning_defaults(g)
    return g


def _add_fine_tuning_defaults(g: ml_collections.ConfigDict) -> None:
    """The fine-tuning fields of the ``train`` group ``g``: where the params start, which
    train, layer-wise decay, EMA and LoRA (added after the optimizer's, in place)."""
    # Fine-tuning (docs/usage.md, "Fine-tuning"). A fresh run's params start from another
    # run's: a workdir (its newest intact checkpoint) or a step directory DIR/checkpoints/STEP.
    # Params are matched by path; new ones stay initialised, learned 2-D position tables are
    # resampled to this config's patch grid; the optimizer starts fresh. "" = from scratch.
    g.init_from = ""
    # Regexes over "/"-joined param paths ("^image/", "_head/"): a param trains when it matches
    # one of `trainable` (or `trainable` is empty) and none of `frozen`. Frozen params get no
    # optimizer state and no weight decay, and stay bit-identical.
    g.trainable = ()
    g.frozen = ()
    # Layer-wise learning-rate decay: block i of a tower of depth L trains at lr * d^(L - i),
    # its embeddings at lr * d^(L + 1), everything else at lr. 1 = off.
    g.layer_decay = 1.0
    # Exponential moving average of the params, updated every step (ema = d * ema + (1 - d) *
    # params, starting at the initial / init_from params), evaluated and checkpointed beside
    # them (eval metrics ema/...; mmtx.Model.from_checkpoint(dir, ema=True)). 0 = none.
    g.ema_decay = 0.0
    g.lora = _lora_defaults()


def _lora_defaults() -> ml_collections.ConfigDict:
    """LoRA adapters (Hu et al. 2021) on the towers' block kernels: W + alpha / rank * A @ B,
    B zero at the start. With rank > 0 only the adapters (and `trainable` matches) train."""
    g = ml_collections.ConfigDict()
    g.rank = 0  # Adapter rank; 0 = no adapters.
    g.alpha = 1.0  # Adapter scale numerator: the update is alpha / rank * A @ B.
    # Kernels that get adapters: attention (query, key, value, out), mlp (fc1, fc2), one of
    # those six names, or a regex over param paths ending in a kernel (mmtx.train.lora).
    g.targets = ("attention", "mlp")
    return g


def _eval_defaults() -> ml_collections.ConfigDict:
    """Evaluation: batch size, zero-shot classification and retrieval."""
    g = ml_collections.ConfigDict()
    g.batch_size = 256  # Eval batch (global); the last partial batch is padded.
    # Zero-shot classification of the eval images/audio by prompted class names (CLIP):
    # needs a text tower and labels with names (see classnames).
    g.zero_shot = True
    # Prompt templates, "{}" = the class name; each class's prompt embeddings are averaged.
    g.zero_shot_templates = ("a photo of a {}.", "a {}.", "a picture of a {}.")
    # Zero-shot class names in label order; () = the data's own (synthetic: "red circle", ...,
    # "white ring" = shape x colour; TFDS: a ClassLabel's names).
    g.classnames = ()
    # Retrieval with every caption of an example when the data has several (COCO protocol:
    # image->text hits when any caption is in the top k; each caption a text->image query).
    g.all_captions = True
    return g


def _data_defaults() -> ml_collections.ConfigDict:
    """The data source, its columns or features, the input pipeline and augmentation."""
    g = ml_collections.ConfigDict()
    # synthetic (built-in, no download) | tfds:<name> (a TFDS dataset prepared as array_record
    # in data_dir, e.g. tfds:coco_captions/2017; see mmtx.data.tfds_source) | your own files:
    # csv:PATH | folder:DIR | arrayrecord:PATTERN | wds:PATTERN | parquet:PATTERN, local or a
    # bucket URL (gs://, s3://), patterns with globs or braces (see mmtx.data.sources).
    g.source = "synthetic"
    # Evaluation data of a file source, in the same syntax; "" = the last data.holdout examples
    # of a random-access data.source (csv, folder, arrayrecord), or no evaluation.
    g.eval_source = ""
    g.holdout = 0  # Examples at the end of a random-access file source kept for eval.
    g.csv_separator = "\t"  # csv: the field separator (open_clip's default, a tab).
    # The CSV / Parquet column behind each role; "" = the format's default (csv: filepath,
    # title for image, text; parquet: jpg, caption as img2dataset writes them; else none).
    g.columns = ml_collections.ConfigDict({**dict.fromkeys(modality_names(), ""), "label": ""})
    g.shuffle_buffer = 1000  # Streams: examples shuffled within a window of this many.
    g.cycle_length = 4  # Streams: shards read at once (interleaved), per worker.
    g.resampled = False  # Streams: draw shards with replacement (open_clip's resampled).
    # Examples in one pass over the training data, for the epoch shown in the progress line
    # (needed for a stream; 0 = the source's length where it has one, else not shown).
    g.train_num_samples = 0
    # A run stops once more than this fraction of the examples read is bad (undecodable,
    # missing, empty; judged after 100 examples). Bad examples below it are skipped, counted.
    g.max_bad_fraction = 0.05
    g.seed = 0  # Seeds the synthetic examples, the shuffle order and augmentation.
    g.train_size = 1_000_000  # Examples in the synthetic train split.
    g.eval_size = 1024  # Examples in the synthetic eval split.
    g.data_dir = ""  # TFDS data_dir; "" = TFDS's default ($TFDS_DATA_DIR or ~/).
    g.train_split = "train"  # TFDS split trained on; slicing allowed ("train[:90%]").
    g.eval_split = "validation"  # TFDS split evaluated on ("train[90%:]", "test", ...).
    # TFDS feature behind each role; nested features joined with "/" ("captions/text");
    # "" = the dataset has none. Every modality in model.modalities needs one.
    g.features = ml_collections.ConfigDict({**dict.fromkeys(modality_names(), ""), "label": ""})
    g.audio_sample_rate = 0  # Source audio's rate in Hz; 0 = from the TFDS feature.
    g.augment = False  # Training augmentation: random image crop + flip, audio crop.
    # With augment: () = resize the shorter side, then a random square + flip; (lo, hi) = a
    # random-resized crop of that area fraction (open_clip trains with (0.9, 1.0)) + flip.
    g.crop_scale = ()
    g.num_threads = 2  # Threads reading and preprocessing examples (per process/worker).
    g.num_workers = 0  # grain worker processes making batches; 0 = none (threads only).
    g.prefetch = 4  # Batches buffered ahead of the train step.
    return g


def _mesh_defaults() -> ml_collections.ConfigDict:
    """The device mesh's axis sizes."""
    g = ml_collections.ConfigDict()
    g.data = -1  # Data-parallel mesh axis size; -1 = the remaining devices.
    g.fsdp = 1  # Param-sharding (ZeRO-3 style) axis size.
    g.tensor = 1  # Tensor-parallel axis size.
    return g


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

# The allowed values of every numeric field (mmtx.schemas.ranges). Tuple entries are checked
# one by one. Floats are also finite (_check_type). Tower fields are checked for the
# configured modalities only.
RANGES: dict[str, Range] = {
    "model.embed_dim": Above(0),
    "model.num_classes": AtLeast(0),
    "model.temperature_init": Above(0),
    "model.dropout_rate": Interval(0, 1, closed="left"),
    "model.modality_dropout": Interval(0, 1, closed="left"),
    "fusion.num_bottlenecks": Above(0),
    "fusion.num_latents": Above(0),
    "fusion.latent_layers": Above(0),
    "attention.local.radius": AtLeast(0),
    "attention.local.num_global": AtLeast(0),
    "attention.linear.num_features": AtLeast(0),
    "attention.linear.seed": AtLeast(0),
    "loss.contrastive_weight": AtLeast(0),
    "loss.classification_weight": AtLeast(0),
    "loss.attribute_weight": AtLeast(0),
    "loss.task_weight": AtLeast(0),
    "train.steps": Above(0),
    "train.batch_size": Above(0),
    "train.microbatches": Above(0),
    "train.accumulation_unroll": Either(-1, AtLeast(0)),
    "train.learning_rate": Above(0),
    "train.warmup_steps": AtLeast(0),
    "train.end_learning_rate_factor": Interval(0, 1, closed="both"),
    "train.weight_decay": AtLeast(0),
    "train.b1": Interval(0, 1, closed="left"),
    "train.b2": Interval(0, 1, closed="left"),
    "train.grad_clip": AtLeast(0),
    "train.seed": AtLeast(0),
    "train.log_every": Above(0),
    "train.eval_every": Above(0),
    "train.checkpoint_every": Above(0),
    "train.keep_checkpoints": Above(0),
    "train.peak_flops": AtLeast(0),
    "train.profile_steps": AtLeast(0),
    "train.layer_decay": Interval(0, 1, closed="right"),
    "train.ema_decay": Interval(0, 1, closed="left"),
    "train.lora.rank": AtLeast(0),
    "train.lora.alpha": Above(0),
    "eval.batch_size": Above(0),
    "data.seed": AtLeast(0),
    "data.train_size": Above(0),
    "data.eval_size": Above(0),
    "data.audio_sample_rate": AtLeast(0),
    "data.holdout": AtLeast(0),
    "data.shuffle_buffer": AtLeast(0),
    "data.cycle_length": Above(0),
    "data.train_num_samples": AtLeast(0),
    "data.max_bad_fraction": Interval(0, 1, closed="both"),
    "data.num_threads": Above(0),
    "data.num_workers": AtLeast(0),
    "data.prefetch": AtLeast(0),
    "mesh.data": Either(-1, Above(0)),
    "mesh.fsdp": Either(-1, Above(0)),
    "mesh.tensor": Either(-1, Above(0)),
}
# The transformer sizes' ranges, every tower's and the fusion's (mmtx.schemas.tower_options.SIZES).
TOWER_RANGES = {field.name: field.range for field in tower_options.SIZES}
# Fields of the modality towers only (the fusion has none of them).
MODALITY_TOWER_RANGES = {tower_options.NORM_EPS.name: tower_options.NORM_EPS.range}


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
    for path, spec in RANGES.items():
        group, name = path.rsplit(".", 1)
        node = config
        for part in group.split("."):
            node = node[part]
        _check_range(path, node[name], spec)
    for modality in config.model.modalities:
        tower = config.model[modality]
        specs = {**TOWER_RANGES, **MODALITY_TOWER_RANGES, **get_modality(modality).ranges}
        for name, spec in specs.items():
            _check_range(f"model.{modality}.{name}", tower[name], spec)
    for name, spec in TOWER_RANGES.items():
        _check_range(f"fusion.{name}", config.fusion[name], spec)


# ------------------------------------------------------------------------- validation


def validate(
    config: ml_collections.ConfigDict, *, platform: str | None = None
) -> ml_collections.ConfigDict:
    """Checks every field against the schema (:func:`default_config`) and its range.

    ``platform`` (``cpu`` | ``gpu`` | ``tpu``): the platform the run will be compiled for,
    against which an explicit ``attention.implementation`` (``cudnn``, ``pallas``) is
    checked; default jax's backend.

    In order: unknown or missing keys and types (a bool is not an int, a float is not an
    int, floats must be finite; ``TypeError`` for a wrong type), the ranges of
    :data:`RANGES` / :data:`TOWER_RANGES` / each modality's ``ranges``, the choices (kernel,
    fusion, pooling names ...) and the checks that span fields (width divisible by heads,
    patches that fit the image and the spectrogram, ...). Raises ``ValueError`` (or
    ``TypeError``) whose message starts ``config.<field>:`` and names the allowed values;
    returns ``config``.

    This module imports no jax, flax or grain (the modalities' schemas come from
    :mod:`mmtx.schemas`), so the key, type, range and modality checks run without them. Two
    checks need JAX-side registries and import them when reached: ``fusion.type`` against
    the registered fusions (:mod:`mmtx.fusion`, where custom fusions register, flax) and
    ``attention.implementation`` against what the target platform can run
    (:mod:`mmtx.nn.attention`, :mod:`mmtx.nn.platform`, jax's backend).
    """
    _check_schema(config, default_config())
    _validate_modality_names(tuple(config.model.modalities))
    _check_ranges(config)
    _validate_dtypes(config)
    _validate_heads(config.model)
    _validate_towers(config)
    _validate_fusion(config)
    _validate_attention(config, platform)
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
    """The fusion's type and kernels, and what a model without fusion cannot have."""
    # Imported here: the fusion package imports flax; custom fusions register there.
    from mmtx.fusion import FUSION_MODULES

    fusion = config.fusion

    _require(
        fusion.type in FUSION_MODULES or fusion.type == NO_FUSION,
        "fusion.type",
        f"{fusion.type!r} is not a registered fusion (registered: {tuple(FUSION_MODULES)}; or "
        f"{NO_FUSION!r} for none). A "
        "custom fusion module must be registered with mmtx.fusion.register_fusion("
        f"{fusion.type!r}, YourModule) before the config is validated or a checkpoint that uses "
        "it is loaded: import the module that registers it first",
    )
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


def _validate_attention(config: ml_collections.ConfigDict, platform: str | None) -> None:
    _require(
        config.attention.linear.feature_map in ("elu", "favor"),
        "attention.linear.feature_map",
        "elu | favor",
    )
    _validate_attention_implementation(config, platform)


def _validate_attention_implementation(
    config: ml_collections.ConfigDict, platform: str | None = None
) -> None:
    """An explicit ``cudnn`` or ``pallas`` must be able to run here: checked against
    ``platform`` (default jax's backend), the compute dtype, every tower's (and MAP head's)
    and the fusion's kernels and head dims (before compile)."""
    from mmtx.nn.attention import (
        IMPLEMENTATIONS,
        cudnn_unsupported_reason,
        pallas_unsupported_reason,
    )

    implementation = config.attention.implementation
    _require(
        implementation in IMPLEMENTATIONS,
        "attention.implementation",
        f"{implementation!r} is not one of {IMPLEMENTATIONS}",
    )
    if implementation not in ("cudnn", "pallas"):
        return
    from mmtx.nn.platform import canonical_platform, target_platform

    backend = target_platform() if platform is None else canonical_platform(platform)
    dtype = config.dtype
    if dtype == "auto":
        dtype = "float32" if backend == "cpu" else "bfloat16"
    for name, tower, kernels in _attention_kernel_uses(config):
        for kernel in kernels:
            if implementation == "pallas":
                reason = pallas_unsupported_reason(kernel=kernel, backend=backend)
            else:
                reason = cudnn_unsupported_reason(
                    kernel=kernel,
                    dtype=dtype,
                    head_dim=tower.width // tower.num_heads,
                    backend=backend,
                )
            _require(
                reason is None,
                "attention.implementation",
                f"{implementation!r} in {name}: {reason}",
            )


def _attention_kernel_uses(
    config: ml_collections.ConfigDict,
) -> list[tuple[str, ml_collections.ConfigDict, tuple[str, ...]]]:
    """``(field, group, kernels)`` for every configured tower (its kernel, and the dense MAP
    head's) and the fusion (the kernels its type runs)."""
    uses = [
        (
            f"model.{m}",
            config.model[m],
            (config.model[m].attention,)
            + (("dense",) if config.model[m].get("pooling") == "map" else ()),
        )
        for m in config.model.modalities
    ]
    fusion = config.fusion
    fusion_kernels = {
        "concat": (fusion.attention,),
        "bottleneck": (fusion.attention,),
        "cross_attention": (fusion.attention, fusion.cross_attention),
        "perceiver": (fusion.attention, fusion.cross_attention),
    }.get(fusion.type, ())
    uses.append(("fusion", fusion, fusion_kernels))
    return uses


def _validate_training(config: ml_collections.ConfigDict) -> None:
    train = config.train
    _require(train.nonfinite in ("stop", "skip"), "train.nonfinite", "stop | skip")
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
        config.loss.contrastive in ("softmax", "sigmoid", "none"),
        "loss.contrastive",
        "softmax | sigmoid | none",
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
    _require(
        tokenizer.type in ("bytes", "sentencepiece", "clip_bpe", "siglip", "tokenizer_json"),
        "tokenizer.type",
        "bytes | sentencepiece | clip_bpe | siglip | tokenizer_json",
    )
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


def load_config(
    spec: ml_collections.ConfigDict | str | os.PathLike, *, platform: str | None = None
) -> ml_collections.ConfigDict:
    """Loads a config from a ConfigDict, ``path/to/file.py[:arg]`` or a JSON file.

    A file is executed only when its name ends in ``.py`` (any case; :func:`is_python_config`)
    and must define ``get_config(arg=None)``. Any other file is read as JSON
    (:func:`read_json_config`): a nested dict of overrides merged onto :func:`default_config`
    (unknown keys are an error). The result is validated with :func:`validate` (for
    ``platform``, as there) and returned as a new ConfigDict.
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
    return validate(config, platform=platform)
