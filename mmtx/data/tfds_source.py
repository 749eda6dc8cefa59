"""TensorFlow Datasets as a random-access grain source, read from prepared ``array_record`` files.

``config.data.source = "tfds:<name>"`` (``<name>`` as ``tfds.data_source`` takes it, e.g.
``coco_captions/2017`` or ``speech_commands:0.0.3``) reads a dataset that was prepared
beforehand into ``config.data.data_dir`` in the ``array_record`` file format. Reading uses
``tfds.data_source`` (random access, so grain can shuffle globally and shard by process) and
never downloads. ``config.data.features`` names the TFDS feature behind each role::

    config.data.features.text = "captions/text"   # nested features joined with "/"
    config.data.features.image = "image"
    config.data.features.audio = ""               # "" = the dataset has no such role
    config.data.features.label = ""

TensorFlow is not needed to read image and text features. Preparing a dataset that has a
``tfds.features.Image`` needs it (the images are encoded with TensorFlow), and so does merely
reading one that has a ``tfds.features.Audio`` (TFDS 4.9's Audio feature builds a TensorFlow
dtype when it is constructed): install the optional extra, ``pip install 'mmtx[tfds]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmtx.data.preprocessing import all_texts

TFDS_PREFIX = "tfds:"
# Leave a top-level Image feature encoded for preprocessing to decode (at a reduced JPEG
# scale); False makes TFDS decode it at full size.
DEFER_IMAGE_DECODING = True


def role_keys() -> dict[str, str]:
    """The example key a source yields per role: each registered modality's
    ``example_key`` (``text`` -> ``caption``, the synthetic source's names) and ``label``."""
    from mmtx.modalities import get_modality, modality_names

    return {**{m: get_modality(m).example_key for m in modality_names()}, "label": "label"}


def tfds_name(source: str) -> str | None:
    """``"tfds:<name>"`` -> ``"<name>"``; any other source -> None."""
    if source.startswith(TFDS_PREFIX):
        return source[len(TFDS_PREFIX) :]
    return None


def prepare_command(name: str, data_dir: str) -> str:
    """The shell command that prepares ``name`` into ``data_dir`` as ``tfds.data_source``
    reads it (run on a machine with internet and ``mmtx[tfds]`` installed)."""
    target = f" --data_dir={data_dir}" if data_dir else ""
    return f"tfds build {name}{target} --file_format=array_record"


def lookup_feature(example: Mapping[str, Any], path: str) -> Any:
    """The value at feature ``path`` of a decoded TFDS example.

    A key containing ``/`` (COCO's ``"image/id"``) is tried whole first; otherwise ``path``
    is split at the first ``/`` and the rest looked up in the nested dict
    (``"captions/text"`` -> ``example["captions"]["text"]``).
    """
    node: Any = example
    rest = path
    while isinstance(node, Mapping):
        if rest in node:
            return node[rest]
        head, sep, tail = rest.partition("/")
        if not (sep and head in node):
            break
        node, rest = node[head], tail
    raise KeyError(f"feature {path!r} not in the example (features: {sorted(example)})")


def _feature_info(features: Any, path: str) -> Any:
    """The ``tfds.features`` object at ``path`` of a ``FeaturesDict`` (same rules as
    :func:`lookup_feature`)."""
    if path in features.keys():
        return features[path]
    head, sep, rest = path.partition("/")
    if sep and head in features.keys():
        inner = features[head]
        inner = getattr(inner, "feature", inner)  # tfds.features.Sequence wraps its feature
        return _feature_info(inner, rest)
    raise KeyError(f"feature {path!r} not in the dataset (features: {sorted(features.keys())})")


def _in_sequence(features: Any, path: str) -> bool:
    """Whether feature ``path`` of a ``FeaturesDict`` is (inside) a ``tfds.features.Sequence``
    or a tensor with a leading axis: several values per example."""
    if path in features.keys():
        feature = features[path]
        return hasattr(feature, "feature") or len(getattr(feature, "shape", ()) or ()) > 0
    head, sep, rest = path.partition("/")
    if sep and head in features.keys():
        inner = features[head]
        if hasattr(inner, "feature"):  # a tfds.features.Sequence
            return True
        return _in_sequence(inner, rest)
    return False


class TfdsSource:
    """One split of a prepared TFDS dataset; ``source[i]`` is a dict keyed by role.

    Each example holds, for each role given a feature path in ``features``, the decoded
    value under its role's key (:func:`role_keys`): ``caption``, bytes or an array of
    bytes; ``image``, the encoded bytes of a top-level Image feature (else uint8
    ``[H, W, C]``); ``audio``, ``[S]`` PCM or float at :attr:`audio_sample_rate`; ``video``,
    the frames of a ``Video`` feature, ``[T, H, W, C]`` uint8; ``label``, an int. Picklable,
    so grain worker processes can read it. ``multiple_captions`` says whether the text
    feature holds several captions per example (read them all with :meth:`captions`);
    ``class_names`` are the label's names when it is a ``ClassLabel`` with names
    (underscores as spaces), else ``()``. Any example may lack any modality (an empty
    feature): ``may_lack_inputs`` is True, so the pipeline marks each example's presence
    (``present/<modality>``).

    Args:
      name: the TFDS name, with config and version as ``tfds.data_source`` takes them.
      split: a TFDS split, slicing allowed (``"train[:90%]"``).
      data_dir: where the dataset was prepared; ``""`` = TFDS's default.
      features: role (``text``/``image``/``audio``/``label``) -> feature path; empty = absent.
    """

    def __init__(self, name: str, split: str, data_dir: str, features: Mapping[str, str]):
        import tensorflow_datasets as tfds

        self.name, self.split, self.data_dir = name, split, data_dir
        self.features = {role: path for role, path in features.items() if path}
        self.role_keys = role_keys()
        unknown = set(self.features) - set(self.role_keys)
        if unknown:
            raise ValueError(
                f"unknown feature roles {sorted(unknown)}; use {sorted(self.role_keys)}"
            )
        # A top-level image is decoded later, in preprocessing, where a JPEG can be decoded
        # at a reduced scale (mmtx.data.preprocessing.decode_image).
        image_path = self.features.get("image", "")
        skip = DEFER_IMAGE_DECODING and image_path and "/" not in image_path
        try:
            self._source = tfds.data_source(
                name,
                split=split,
                data_dir=data_dir or None,
                download=False,
                decoders={image_path: tfds.decode.SkipDecoding()} if skip else None,
            )
        except (
            tfds.core.registered.DatasetNotFoundError,  # no builder and no prepared files
            NotImplementedError,  # a registered builder, not prepared as array_record
            FileNotFoundError,
        ) as error:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared as array_record in "
                f"{data_dir or 'the default TFDS data_dir'} ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''})\n"
                "mmtx reads prepared array_record files and never downloads. Prepare it on a "
                f"machine with internet (pip install 'mmtx[tfds]'):\n  "
                f"{prepare_command(name, data_dir)}"
            ) from error
        except ValueError as error:  # e.g. an unknown split
            raise ValueError(f"TFDS dataset {name!r}, split {split!r}: {error}") from error
        info_features = self._source.dataset_info.features
        for path in self.features.values():
            _feature_info(info_features, path)  # fails early, naming the dataset's features
        self.may_lack_inputs = True
        self.audio_sample_rate = 0
        if "audio" in self.features:
            audio_feature = _feature_info(info_features, self.features["audio"])
            self.audio_sample_rate = int(getattr(audio_feature, "sample_rate", 0) or 0)
        # A text feature inside a tfds.features.Sequence (COCO's "captions/text") holds
        # several captions per example.
        self.multiple_captions = "text" in self.features and _in_sequence(
            info_features, self.features["text"]
        )
        self.class_names: tuple[str, ...] = ()
        if "label" in self.features:
            names = getattr(_feature_info(info_features, self.features["label"]), "names", None)
            self.class_names = tuple(str(name).replace("_", " ") for name in names or ())

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self._source[index]
        return {
            self.role_keys[role]: lookup_feature(example, path)
            for role, path in self.features.items()
        }

    def captions(self, index: int) -> list[str]:
        """Every caption of example ``index`` (one for a plain text feature), as ``str``."""
        return all_texts(lookup_feature(self._source[index], self.features["text"]))

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.split!r}, {len(self)} examples)"
