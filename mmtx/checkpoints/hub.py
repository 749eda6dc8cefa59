"""A checkpoint as a user has it: one weights file, or a directory as a model hub holds it.

:func:`weights_file` finds the weights in a directory (``open_clip_model.safetensors``,
``model.safetensors``, a big_vision ``.npz``), :func:`detect_family` names the family from
the tensor names, and :func:`find_tokenizer` the family's tokenizer file beside the weights.
Torch pickles (``pytorch_model.bin``, ``open_clip_pytorch_model.bin``) are refused, never
unpickled, with the one-line command that converts them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from mmtx.checkpoints.tensors import (
    TORCH_PICKLE_SUFFIXES,
    CheckpointImportError,
    convert_command,
)

OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
HF_WEIGHTS = "model.safetensors"
# Each family's config file beside its weights (read by the converter).
CONFIG_FILES = {
    "open_clip": "open_clip_config.json",
    "hf_clip": "config.json",
    "hf_siglip": "config.json",
    "hf_ast": "config.json",
}
PREPROCESSOR_FILE = "preprocessor_config.json"
# Tokenizer files a hub directory may hold, in the order they are preferred.
TOKENIZER_FILES = {
    "open_clip": ("tokenizer.json", "bpe_simple_vocab_16e6.txt.gz"),
    "hf_clip": ("tokenizer.json",),
    "hf_siglip": ("spiece.model", "tokenizer.json"),
    "big_vision_siglip": (),
    "hf_ast": (),
}
# A tensor name only one family has -> that family (the first match wins).
SIGNATURES = (
    ("visual.conv1.weight", "open_clip"),
    ("vision_model.embeddings.class_embedding", "hf_clip"),
    ("vision_model.head.probe", "hf_siglip"),
    ("embeddings.distillation_token", "hf_ast"),
    ("img/embedding/kernel", "big_vision_siglip"),
)
# config.json's model_type -> family, to cross-check the names.
HF_MODEL_TYPES = {
    "clip": "hf_clip",
    "siglip": "hf_siglip",
    "audio-spectrogram-transformer": "hf_ast",
}


def weights_file(path: str, family: str | None = None) -> str:
    """The weights file of ``path``: ``path`` itself when it is a file; in a directory,
    ``open_clip_model.safetensors`` (family ``open_clip`` or none given, when present), else
    ``model.safetensors``, else its one ``.npz``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      CheckpointImportError: the directory holds only a torch pickle (the message has the
        command that converts it), sharded or no weights at all.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint file or directory {path}")
    if not os.path.isdir(path):
        return path
    names = set(os.listdir(path))
    order = [OPEN_CLIP_WEIGHTS, HF_WEIGHTS]
    if family is not None and family != "open_clip":
        order = [HF_WEIGHTS]
    elif family == "open_clip":
        order = [OPEN_CLIP_WEIGHTS]
    for name in order:
        if name in names:
            return os.path.join(path, name)
    npz = sorted(n for n in names if n.endswith(".npz"))
    if len(npz) == 1 and family in (None, "big_vision_siglip"):
        return os.path.join(path, npz[0])
    pickles = sorted(n for n in names if n.endswith(TORCH_PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointImportError(
            f"{path} holds only torch pickles ({', '.join(pickles)}), which mmtx does not "
            f"unpickle. Convert once where torch is installed:  "
            f"{convert_command(os.path.join(path, pickles[0]))}"
        )
    if any(n.endswith(".safetensors.index.json") for n in names):
        raise CheckpointImportError(
            f"{path} holds a sharded checkpoint (*.safetensors.index.json); mmtx reads one "
            "weights file: merge the shards into model.safetensors"
        )
    wanted = " or ".join(order) + (" or one .npz" if family in (None, "big_vision_siglip") else "")
    if len(npz) > 1:
        wanted += f" (it has {len(npz)} .npz files: name one with --path)"
    raise CheckpointImportError(f"{path}: no weights file in the directory (looked for {wanted})")


def detect_family(names: Iterable[str], directory: str) -> tuple[str, str]:
    """The family of a checkpoint with tensors ``names`` (and its files in ``directory``),
    with the evidence in words (``tensor visual.conv1.weight``).

    Raises :class:`CheckpointImportError` when no family's tensors are there, or when
    ``config.json``'s ``model_type`` names another family than the tensors do.
    """
    names = list(names)
    matches = (
        (name, family)
        for signature, family in SIGNATURES
        for name in names
        if name == signature or name.endswith(signature)
    )
    found, family = next(matches, (None, ""))
    if found is None:
        shown = ", ".join(names[:5])
        raise CheckpointImportError(
            f"cannot tell the family from the tensor names ({shown}, ...); give --family "
            f"(open_clip, hf_clip, hf_siglip, big_vision_siglip, hf_ast)"
        )
    evidence = f"tensor {found}"
    config_name = CONFIG_FILES.get(family)
    if config_name and os.path.isfile(os.path.join(directory, config_name)):
        evidence += f", {config_name}"
    model_type = _hf_model_type(directory)
    if family.startswith("hf_") and model_type is not None:
        if HF_MODEL_TYPES.get(model_type, family) != family:
            raise CheckpointImportError(
                f"{directory}: the tensors are {family}'s ({evidence}) but config.json's "
                f"model_type is {model_type!r}; give --family"
            )
        evidence += f" (model_type {model_type})"
    return family, evidence


def _hf_model_type(directory: str) -> str | None:
    import json

    path = os.path.join(directory, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def find_tokenizer(directory: str, family: str) -> str | None:
    """The family's tokenizer file in ``directory`` (:data:`TOKENIZER_FILES`, first found),
    or None."""
    for name in TOKENIZER_FILES.get(family, ()):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None
