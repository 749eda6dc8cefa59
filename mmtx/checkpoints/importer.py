"""Importing a published checkpoint: read, convert, check against mmtx's model, write a workdir."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmtx import config as config_lib
from mmtx.checkpoints import hub
from mmtx.checkpoints.ast import convert_hf_ast
from mmtx.checkpoints.clip import convert_hf_clip, convert_open_clip
from mmtx.checkpoints.family import Converted
from mmtx.checkpoints.siglip import convert_big_vision_siglip, convert_hf_siglip
from mmtx.checkpoints.tensors import (
    CheckpointImportError,
    Missing,
    TensorSource,
    first_names,
    read_tensors,
)
from mmtx.nn.posemb import resample_position_embedding

# (tensors, the config file (config.json / open_clip_config.json) or None, the HF
# preprocessor_config.json or None, per-modality head counts given by the user) -> mmtx.
Converter = Callable[
    [TensorSource, "dict[str, Any] | None", "dict[str, Any] | None", "Mapping[str, int]"],
    Converted,
]

# Family name -> converter. The names are part of mmtx's interface (scripts use them).
FAMILIES: dict[str, Converter] = {
    "open_clip": convert_open_clip,
    "hf_clip": convert_hf_clip,
    "hf_siglip": convert_hf_siglip,
    "big_vision_siglip": convert_big_vision_siglip,
    "hf_ast": convert_hf_ast,
}
# Which tokenizer.type a family's tokenizer file is, by the file's name.
TOKENIZER_TYPES = {
    "open_clip": {".gz": "clip_bpe", ".txt": "clip_bpe", ".json": "tokenizer_json"},
    "hf_clip": {".gz": "clip_bpe", ".txt": "clip_bpe", ".json": "tokenizer_json"},
    "hf_siglip": {".model": "siglip", ".json": "tokenizer_json"},
    "big_vision_siglip": {".model": "siglip", ".json": "tokenizer_json"},
}
ACTIVATIONS = ("gelu_tanh", "gelu", "quick_gelu")


@dataclasses.dataclass
class ImportedModel:
    """A published checkpoint as an mmtx config and param tree (numpy float32 leaves).

    ``source`` records where it came from (family, file, tensor count). :meth:`model`
    makes a ready :class:`mmtx.Model`; :func:`write_workdir` saves it as a workdir.
    """

    config: ml_collections.ConfigDict
    params: dict[str, Any]
    source: dict[str, Any]

    def model(self) -> Any:
        """The imported model as an :class:`mmtx.Model` (tokenizer and preprocessing from
        the config)."""
        from mmtx.inference import create_model

        return create_model(self.config, params=jax.tree.map(jnp.asarray, self.params))


def import_checkpoint(
    family: str | None,
    path: str | os.PathLike,
    *,
    hf_config: str | os.PathLike | Mapping[str, Any] | None = None,
    preprocessor_config: str | os.PathLike | Mapping[str, Any] | None = None,
    tokenizer: str | os.PathLike | None = None,
    image_size: int | None = None,
    activation: str | None = None,
    num_heads: Mapping[str, int] | None = None,
) -> ImportedModel:
    """Reads a checkpoint and converts it to mmtx, checked tensor by tensor.

    Args:
      family: one of :data:`FAMILIES` (``open_clip``, ``hf_clip``, ``hf_siglip``,
        ``big_vision_siglip``, ``hf_ast``), or None to detect it from the tensor names
        (:func:`mmtx.checkpoints.hub.detect_family`; the record's ``detected`` says how).
      path: the weights (``.safetensors``, or ``.npz`` for big_vision), or a directory as a
        model hub holds it (``open_clip_model.safetensors`` + ``open_clip_config.json``;
        ``model.safetensors`` + ``config.json`` + ``preprocessor_config.json``; tokenizer
        files). Torch pickles are refused with the command that converts them.
      hf_config: the model's config (a path or the loaded dict): the HF families'
        ``config.json``, open_clip's ``open_clip_config.json`` (heads, activation, the
        preprocessing); default: that file next to the weights, when it is there.
      preprocessor_config: the HF families' ``preprocessor_config.json`` (image resize,
        crop, mean/std; AST's sampling rate and statistics); default: next to the weights.
      tokenizer: the family's tokenizer file (``bpe_simple_vocab_16e6.txt.gz`` or
        ``tokenizer.json`` for CLIP, ``spiece.model`` or ``tokenizer.json`` for SigLIP);
        default: the first of those next to the weights
        (:data:`mmtx.checkpoints.hub.TOKENIZER_FILES`). It is loaded and tried once here.
        Without one the model keeps mmtx's byte tokenizer (ids, not text, are its input),
        and the record's ``assumed`` says so.
      image_size: run the image tower at this size; the learned position table is resampled
        bilinearly to the new patch grid (class tokens kept).
      activation: override the tower activation (open_clip state dicts without a config do
        not record it: QuickGELU is then assumed, as in OpenAI's weights).
      num_heads: modality -> attention heads, for open_clip state dicts, which do not record
        them (else from ``open_clip_config.json``, else ``width // 64``, open_clip's rule for
        OpenAI-style files, noted in the record's ``assumed``); the other families read them
        from their config or the tensors' shapes.

    Returns:
      An :class:`ImportedModel` whose config validates and whose params have exactly the
      shapes ``mmtx.models.MultiModalTransformer`` expects. Its ``source["values"]`` lists
      every config value not read off the tensors' shapes with where it came from.

    Raises:
      CheckpointImportError: unknown or undetectable family; a bad weights, config or
        tokenizer file; missing or unexpected tensors (the first few named); a tensor whose
        shape disagrees (its name and both shapes).
      FileNotFoundError: no such weights / config / tokenizer file.
    """
    found = _find_files(family, path, hf_config, preprocessor_config, tokenizer)
    imported = convert_tensors(
        found.family,
        found.tensors,
        path=found.weights,
        hf_config=found.config,
        preprocessor_config=found.preprocessor,
        tokenizer=found.tokenizer,
        image_size=image_size,
        activation=activation,
        num_heads=num_heads,
    )
    if found.tokenizer is not None:
        imported.source["values"]["tokenizer.model_file"]["from"] = found.tokenizer_source
    if found.detected is not None:
        imported.source["detected"] = found.detected
    imported.source["files"] = found.files
    return imported


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise CheckpointImportError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")


@dataclasses.dataclass
class _Found:
    """A checkpoint's files as :func:`import_checkpoint` finds and reads them.

    Attributes:
      family: the family given, or detected (``detected`` then says how).
      weights, tensors: the weights file and its tensors (name -> array).
      config, preprocessor: the loaded model and preprocessor configs, or None.
      tokenizer, tokenizer_source: the tokenizer file (or None) and where it came from.
      files: role (``config``, ``preprocessor``) -> the path of each JSON file read.
    """

    family: str
    detected: str | None
    weights: str
    tensors: dict[str, np.ndarray]
    config: dict[str, Any] | None
    preprocessor: dict[str, Any] | None
    tokenizer: str | os.PathLike | None
    tokenizer_source: str
    files: dict[str, str]


def _find_files(
    family: str | None,
    path: str | os.PathLike,
    hf_config: str | os.PathLike | Mapping[str, Any] | None,
    preprocessor_config: str | os.PathLike | Mapping[str, Any] | None,
    tokenizer: str | os.PathLike | None,
) -> _Found:
    """:func:`import_checkpoint`'s files: the weights (``path`` or the family's file in it),
    the family (detected when None), and the configs and tokenizer given or beside them."""
    if family is not None:
        _check_family(family)
    weights = hub.weights_file(os.fspath(path), family)
    directory = os.path.dirname(os.path.abspath(weights))
    tensors = read_tensors(weights)
    detected = None
    if family is None:
        family, evidence = hub.detect_family(tensors, directory)
        detected = f"{family} ({evidence})"
    files: dict[str, str] = {}
    config, preprocessor = _config_files(family, directory, hf_config, preprocessor_config, files)
    tokenizer, tokenizer_source = _tokenizer_file(family, directory, tokenizer)
    return _Found(
        family=family,
        detected=detected,
        weights=weights,
        tensors=tensors,
        config=config,
        preprocessor=preprocessor,
        tokenizer=tokenizer,
        tokenizer_source=tokenizer_source,
        files=files,
    )


def _config_files(
    family: str,
    directory: str,
    hf_config: str | os.PathLike | Mapping[str, Any] | None,
    preprocessor_config: str | os.PathLike | Mapping[str, Any] | None,
    files: dict[str, str],
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The family's model config and (HF families only) preprocessor config: the ones given,
    else those beside the weights in ``directory``, else None; the paths read go in
    ``files`` (:func:`_json_file`)."""
    config = _json_file(hf_config, directory, hub.CONFIG_FILES.get(family), files, "config")
    preprocessor = None
    if family.startswith("hf_"):
        preprocessor = _json_file(
            preprocessor_config, directory, hub.PREPROCESSOR_FILE, files, "preprocessor"
        )
    return config, preprocessor


def _tokenizer_file(
    family: str, directory: str, tokenizer: str | os.PathLike | None
) -> tuple[str | os.PathLike | None, str]:
    """The tokenizer file, ``tokenizer`` or else the family's beside the weights (None if
    neither), and where it came from (for the import record)."""
    if tokenizer is None and family in TOKENIZER_TYPES:
        found = hub.find_tokenizer(directory, family)
        return found, f"found beside the weights ({os.path.basename(found or '')})"
    return tokenizer, "--tokenizer"


def _json_file(
    given: str | os.PathLike | Mapping[str, Any] | None,
    directory: str,
    name: str | None,
    files: dict[str, str],
    role: str,
) -> dict[str, Any] | None:
    """A JSON config: ``given`` (a dict, or a path), else ``directory/name`` when it exists,
    else None. The path read is recorded in ``files[role]``. A file that is not a JSON object
    is a one-line :class:`CheckpointImportError`."""
    if isinstance(given, Mapping):
        return dict(given)
    if given is None:
        if name is None or not os.path.isfile(os.path.join(directory, name)):
            return None
        given = os.path.join(directory, name)
    path = os.fspath(given)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {role} file {path}")
    try:
        loaded = config_lib.read_json_object(path)
    except config_lib.ConfigFileError as error:
        raise CheckpointImportError(str(error)) from None
    files[role] = os.path.abspath(path)
    return loaded


def convert_tensors(
    family: str,
    tensors: Mapping[str, np.ndarray],
    *,
    path: str = "",
    hf_config: Mapping[str, Any] | None = None,
    preprocessor_config: Mapping[str, Any] | None = None,
    tokenizer: str | os.PathLike | None = None,
    image_size: int | None = None,
    activation: str | None = None,
    num_heads: Mapping[str, int] | None = None,
) -> ImportedModel:
    """:func:`import_checkpoint` on tensors already read (name -> array) and configs already
    loaded, e.g. to derive a full-size config from names and shapes alone (``np.zeros`` of
    each shape costs no memory until written). ``path`` only names the source in messages
    and the record."""
    _check_family(family)
    if not tensors:
        raise CheckpointImportError(f"{path or 'the checkpoint'} holds no tensors")
    config_dict = dict(hf_config) if hf_config is not None else None
    preprocessor = dict(preprocessor_config) if preprocessor_config is not None else None
    source = TensorSource(tensors, family=family, path=path)
    try:
        converted = FAMILIES[family](source, config_dict, preprocessor, dict(num_heads or {}))
    except CheckpointImportError:
        raise
    except Exception as error:
        raise _conversion_error(source, error) from error
    source.check()
    params = converted.params
    config = config_lib.merge_overrides(config_lib.default_config(), converted.overrides)
    config = config_lib.merge_overrides(config, converted.facts.overrides())
    config.variant = f"imported {family}"
    sources = dict(converted.facts.sources)
    _apply_activation(config, sources, activation)
    _apply_tokenizer(config, sources, converted, family, tokenizer)
    if image_size is not None:
        _resample_image(config, params, converted, int(image_size))
        sources["model.image.image_size"] = "--image_size (position table resampled)"
    # The two scalars every mmtx model has, for families that lack them (CLIP has no bias).
    params.setdefault("logit_scale", np.float32(-np.log(config.model.temperature_init)))
    params.setdefault("logit_bias", np.float32(config.model.logit_bias_init))
    try:
        config = config_lib.validate(config)
    except (TypeError, ValueError) as error:
        raise CheckpointImportError(f"{path}: the derived config is not valid: {error}") from error
    _check_against_model(config, params, path)
    if tokenizer is not None:
        _try_tokenizer(config)
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    record = _record(source, converted, config, sources, activation)
    return ImportedModel(config=config, params=params, source=record)


def _conversion_error(source: TensorSource, error: Exception) -> CheckpointImportError:
    """A converter's unexpected ``error`` as one :class:`CheckpointImportError` naming the
    file; when tensors were missing, :meth:`TensorSource.check` raises its error instead."""
    if source.missing:  # a missing tensor broke the conversion: name it
        source.check()
    return CheckpointImportError(
        f"{source.path} could not be read as {source.family} ({type(error).__name__}: "
        f"{error}); its first tensors: {first_names(source.tensors)}"
    )


def _apply_activation(
    config: ml_collections.ConfigDict, sources: dict[str, str], activation: str | None
) -> None:
    """``--activation``: every tower's activation (checked against :data:`ACTIVATIONS`)."""
    if activation is None:
        return
    if activation not in ACTIVATIONS:
        raise CheckpointImportError(f"activation {activation!r}: choose one of {ACTIVATIONS}")
    for modality in config.model.modalities:
        config.model[modality].activation = activation
        sources[f"model.{modality}.activation"] = "--activation"


def _apply_tokenizer(
    config: ml_collections.ConfigDict,
    sources: dict[str, str],
    converted: Converted,
    family: str,
    tokenizer: str | os.PathLike | None,
) -> None:
    """Sets the tokenizer file; without one a family with a text tower gets an ``assumed``
    line (the model takes ids)."""
    if tokenizer is not None:
        _set_tokenizer(config, family, os.fspath(tokenizer))
        sources["tokenizer.model_file"] = "--tokenizer"
    elif family in TOKENIZER_TYPES:
        converted.facts.assumed.append(
            "tokenizer: none (no --tokenizer and no tokenizer file beside the weights); the "
            "model takes token ids, not text"
        )


def _record(
    source: TensorSource,
    converted: Converted,
    config: ml_collections.ConfigDict,
    sources: Mapping[str, str],
    activation: str | None,
) -> dict[str, Any]:
    """The import record (``ImportedModel.source``, ``import.json``): where the checkpoint
    came from, what was ignored, assumed and differs, and every value's source."""
    return {
        "family": source.family,
        "path": os.path.abspath(source.path) if source.path else "",
        "tensors": len(source.tensors),
        "ignored": sorted(source.ignored),
        # What no file and no argument said, so the conversion assumed it (one line each).
        "assumed": [note for note in converted.facts.assumed if not _overridden(note, activation)],
        # Where mmtx's preprocessing differs from the original's (one line each).
        "differences": list(converted.facts.differences),
        # Every config value not read off the tensors' shapes, with where it came from.
        "values": {
            field: {"value": _json_value(_lookup(config, field)), "from": origin}
            for field, origin in sorted(sources.items())
        },
    }


def _lookup(config: ml_collections.ConfigDict, field: str) -> Any:
    for part in field.split("."):
        config = config[part]
    return config


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _try_tokenizer(config: ml_collections.ConfigDict) -> None:
    """Loads the configured tokenizer and encodes one sentence, so that a file that is no
    tokenizer, or one whose ids do not fit the model's vocabulary, fails the import."""
    from mmtx.data.tokenizer import create_tokenizer

    path = config.tokenizer.model_file
    try:
        tokenizer = create_tokenizer(config.tokenizer.type, path)
        ids = tokenizer.encode("a photo of a cat")
    except Exception as error:  # each tokenizer library raises its own kinds
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointImportError(
            f"{path}: not a usable {config.tokenizer.type} tokenizer ({message})"
        ) from None
    vocab = config.model.text.vocab_size
    if tokenizer.vocab_size > vocab or (ids and max(ids) >= vocab):
        raise CheckpointImportError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the model's "
            f"vocabulary is {vocab}: it is not this checkpoint's tokenizer"
        )


def _overridden(note: str, activation: str | None) -> bool:
    return activation is not None and note.startswith("activation:")


def _set_tokenizer(config: ml_collections.ConfigDict, family: str, path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tokenizer file {path}")
    kinds = TOKENIZER_TYPES.get(family)
    if kinds is None:
        raise CheckpointImportError(f"{family} has no text tower: --tokenizer does not apply")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in kinds:
        raise CheckpointImportError(
            f"{path}: a {family} tokenizer is one of {sorted(kinds)} files; got {suffix!r}"
        )
    config.tokenizer.type = kinds[suffix]
    config.tokenizer.model_file = os.path.abspath(path)


def _resample_image(
    config: ml_collections.ConfigDict, params: dict[str, Any], converted: Converted, size: int
) -> None:
    image = config.model.image
    if "image" not in config.model.modalities:
        raise CheckpointImportError("image_size: this checkpoint has no image tower")
    if size % image.patch_size:
        raise CheckpointImportError(
            f"image_size {size} is not a multiple of the patch size {image.patch_size}"
        )
    grid = size // image.patch_size
    prefix = 1 if image.class_token_posemb and image.pooling == "cls" else 0
    posemb = params["image"]["posemb"]
    posemb["embedding"] = resample_position_embedding(
        posemb["embedding"], converted.grids["image"], (grid, grid), prefix
    )
    if image.get("resize_size"):  # the checkpoint resizes beyond its crop: keep the ratio
        image.resize_size = max(size, round(image.resize_size * size / image.image_size))
    image.image_size = size


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_against_model(
    config: ml_collections.ConfigDict, params: dict[str, Any], path: str
) -> None:
    """Raises unless ``params`` has exactly the paths and shapes of the model ``config``
    describes (computed with ``jax.eval_shape``: nothing is initialised)."""
    from mmtx.models import MultiModalTransformer, dummy_batch

    module = MultiModalTransformer.from_config(config, vocab_size=config.model.text.vocab_size or 1)
    batch = dummy_batch(config, batch_size=1)
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), batch, train=False)["params"])
    import flax.linen as nn

    expected = {k: tuple(v.shape) for k, v in _flat(nn.meta.unbox(abstract)).items()}
    got = _flat(params)
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    if missing or unexpected:
        raise CheckpointImportError(
            f"{path}: internal error, the converted params do not fit mmtx's model "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for key, shape in expected.items():
        value = got[key]
        if isinstance(value, Missing):  # reported by TensorSource.check already
            raise CheckpointImportError(f"{path}: tensor {value.name} is missing")
        if tuple(np.shape(value)) != shape:
            raise CheckpointImportError(
                f"{path}: tensor for mmtx param {key} has shape {tuple(np.shape(value))}, the "
                f"model needs {shape}"
            )


def write_workdir(imported: ImportedModel, workdir: str | os.PathLike) -> str:
    """Saves an imported model as an mmtx workdir: ``config.json``, the tokenizer file (in
    ``tokenizer/``), ``import.json`` (where it came from) and a step-0 checkpoint of the
    train state (the imported params, a fresh optimizer state) with its integrity record,
    which :meth:`mmtx.Model.from_checkpoint` loads.

    The workdir is written in a temporary sibling directory and renamed into place at the
    end, so a failure leaves nothing behind; an existing non-empty ``workdir`` is refused.
    Returns the workdir's absolute path.
    """
    from mmtx.train import workdir as workdir_lib
    from mmtx.train.checkpoint import Checkpointer
    from mmtx.train.optimizer import create_optimizer
    from mmtx.train.state import TrainState

    workdir = os.path.abspath(os.fspath(workdir))
    if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
        raise FileExistsError(
            f"{workdir} exists and is not empty; import into a new directory (nothing written)"
        )
    parent = os.path.dirname(workdir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(workdir)}.importing-")
    try:
        workdir_lib.claim(staging)
        config = ml_collections.ConfigDict(imported.config.to_dict())
        if config.tokenizer.model_file:
            os.makedirs(os.path.join(staging, "tokenizer"))
            name = os.path.basename(config.tokenizer.model_file)
            shutil.copyfile(config.tokenizer.model_file, os.path.join(staging, "tokenizer", name))
            config.tokenizer.model_file = os.path.join("tokenizer", name)
        config_json = json.loads(config.to_json_best_effort())
        workdir_lib.write_json_atomically(os.path.join(staging, "config.json"), config_json)
        workdir_lib.write_json_atomically(os.path.join(staging, "import.json"), imported.source)
        params = jax.tree.map(jnp.asarray, imported.params)
        tx = create_optimizer(config.train)
        state = TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=jax.random.split(jax.random.PRNGKey(config.train.seed))[1],
        )
        checkpointer = Checkpointer(os.path.join(staging, "checkpoints"), config=config_json)
        try:
            checkpointer.save(0, state, force=True)
            checkpointer.wait()
        finally:
            checkpointer.close()
        if os.path.exists(workdir):  # an empty directory the user made
            os.rmdir(workdir)
        os.rename(staging, workdir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return workdir
