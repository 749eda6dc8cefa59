"""The grain input pipeline: source -> shuffle -> shard -> preprocess -> batch -> prefetch.

Sources: the built-in synthetic data (``config.data.source = "synthetic"``), a prepared
TensorFlow Datasets split (``"tfds:<name>"``, :mod:`mmtx.data.tfds_source`), or your own files
(``csv:``, ``folder:``, ``arrayrecord:``, ``wds:``, ``parquet:``; :mod:`mmtx.data.sources`).
All go through the same per-example preprocessing (:mod:`mmtx.data.preprocessing`: tokenise,
image resize / crop / flip, audio resample / crop / pad). The log-mel spectrogram is computed
inside the model (:class:`mmtx.encoders.AudioEncoder`) where it runs on the accelerator, so
the pipeline ships raw waveforms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grain
import ml_collections
import numpy as np
from absl import flags
from PIL import Image

from mmtx.data import bad_examples, records, sources
from mmtx.data.bad_examples import DropBadIterDataset, is_bad
from mmtx.data.preprocessing import decode_image
from mmtx.data.streams import stream_dataset
from mmtx.data.synthetic import CLASS_NAMES, SyntheticSource
from mmtx.data.tfds_source import TfdsSource, tfds_name
from mmtx.data.tokenizer import Tokenizer
from mmtx.modalities import get_modality, modality_names, ordered, present_key

# Keys a pipeline batch carries besides the model inputs: attributes used by the metrics.
ATTRIBUTE_KEYS = ("shape", "colour", "size", "position", "motion")
# A source example's own audio sample rate (decoded files), overriding the source's.
AUDIO_RATE_KEY = "_audio_rate"
# grain's own absl flags that its main process reads when it starts worker processes.
GRAIN_WORKER_FLAGS = ("grain_enable_multiprocess_worker_profiling",)


def _grain_worker_flags_readable() -> None:
    """Lets grain read :data:`GRAIN_WORKER_FLAGS` at their defaults where nobody parsed absl
    flags (a notebook, a test, a script without ``absl.app``), without parsing anything.

    grain 0.2.18 starts ``mp_prefetch`` workers after reading
    ``--grain_enable_multiprocess_worker_profiling`` with ``FlagHolder.value``, which raises
    ``UnparsedFlagAccessError`` before absl's flags are parsed (google/grain#1355; later grain
    versions read the default instead). absl gives an unparsed flag's value once the flag is
    marked present, as grain marks its debug flags in its workers; only grain's flags are
    touched, the program's own stay unparsed, and an entry point that parses flags (``absl.app``)
    makes this a no-op.
    """
    if flags.FLAGS.is_parsed():
        return
    for name in GRAIN_WORKER_FLAGS:
        if name in flags.FLAGS and not flags.FLAGS[name].present:
            flags.FLAGS[name].present = True


def split_name(config: ml_collections.ConfigDict, split: str) -> str:
    """The source's name for mmtx's ``"train"``/``"eval"`` split (TFDS: the configured
    ``data.train_split`` / ``data.eval_split``, slicing included)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval'; got {split!r}")
    if sources.source_kind(config.data.source) in sources.FILE_KINDS:
        return split
    if tfds_name(config.data.source) is None:
        return split
    return config.data.train_split if split == "train" else config.data.eval_split


def create_source(config: ml_collections.ConfigDict, split: str) -> Any:
    """The source named by ``config.data.source`` for ``split`` ("train" or "eval"): a
    :class:`SyntheticSource`, a :class:`TfdsSource`, or a file source of
    :func:`mmtx.data.sources.create_file_source` (None for "eval" when there is no eval data:
    see :func:`has_eval_data`)."""
    data = config.data
    if sources.source_kind(data.source) in sources.FILE_KINDS:
        return sources.create_file_source(config, split)
    if data.source == "synthetic":
        size = data.train_size if split == "train" else data.eval_size
        return SyntheticSource(
            split=split,
            seed=data.seed,
            size=size,
            image_size=config.model.image.image_size,
            sample_rate=config.model.audio.sample_rate,
            audio_seconds=config.model.audio.num_samples / config.model.audio.sample_rate,
            # Clips only when the model has video (they cost ~2x an image + audio example).
            video_frames=config.model.video.num_frames if "video" in config.model.modalities else 0,
            video_size=config.model.video.image_size,
        )
    name = tfds_name(data.source)
    if name:
        return TfdsSource(name, split_name(config, split), data.data_dir, dict(data.features))
    raise ValueError(
        f"unknown config.data.source {data.source!r}; available: 'synthetic', 'tfds:<name>', "
        + ", ".join(f"'{kind}:...'" for kind in sources.FILE_KINDS)
    )


def has_eval_data(config: ml_collections.ConfigDict) -> bool:
    """Whether the config has data to evaluate on: always for the synthetic and TFDS sources;
    for file sources, see :mod:`mmtx.data.sources` (``data.eval_source`` / ``data.holdout``)."""
    if sources.source_kind(config.data.source) not in sources.FILE_KINDS:
        return True
    return bool(sources.eval_spec(config))


def source_sample_rate(config: ml_collections.ConfigDict, source: Any) -> int:
    """Sample rate of the source's audio: ``config.data.audio_sample_rate`` when set, else the
    source's own (a TFDS Audio feature's ``sample_rate``; the synthetic data is generated at
    the model's rate)."""
    if config.data.audio_sample_rate:
        return int(config.data.audio_sample_rate)
    rate = int(getattr(source, "audio_sample_rate", 0) or 0)
    return rate or int(config.model.audio.sample_rate)


def is_empty(value: Any) -> bool:
    """Whether a source example's value stands for a missing input: None, an empty string or
    bytes, or an array/sequence with no elements."""
    if value is None:
        return True
    if isinstance(value, str | bytes):
        return len(value) == 0
    if isinstance(value, np.ndarray):
        return value.size == 0
    if isinstance(value, list | tuple):
        return len(value) == 0
    return False


def make_preprocess(
    config: ml_collections.ConfigDict,
    tokenizer: Tokenizer,
    *,
    sample_rate: int | None = None,
    augment: bool = False,
    mark_presence: bool = False,
) -> Callable[..., dict[str, np.ndarray]]:
    """Returns the per-example map ``(example, rng=None) -> model inputs`` of the configured
    modalities, each through its spec's
    :meth:`mmtx.modalities.ModalitySpec.preprocess_example`.

    ``example`` has a source's keys (``caption``, ``image``, ``audio``, ``video``, ``label``
    and the synthetic attributes). ``rng`` (a ``np.random.Generator``; training only) picks
    one of several captions and, with ``augment``, a random image crop and flip and a random
    audio crop; without it the first caption, the centre crop and the clip's start are used.
    ``sample_rate``: the source audio's rate (default: the model's).

    With ``mark_presence`` (sources whose examples may lack inputs, TFDS) every modality gets
    ``present/<modality>`` bool ``[]``: an example whose value is missing or empty
    (:func:`is_empty`) is marked absent and carries zeros of the right shape instead.

    Output (numpy): ``text`` int32 ``[T]`` and ``text_mask`` bool ``[T]``, ``image`` float32
    ``[H, W, C]`` in [0, 1], ``audio`` float32 ``[S]``, ``video`` float32 ``[T, H, W, C]``,
    ``label`` int32 ``[]``, and the attribute ints in :data:`ATTRIBUTE_KEYS` that the source
    provides.
    """
    modalities = ordered(config.model.modalities)
    specs = {m: get_modality(m) for m in modalities}
    fillers = {
        m: {k: np.asarray(v[0]) for k, v in specs[m].dummy_input(config.model[m], 1).items()}
        for m in modalities
    }

    def preprocess(
        example: dict[str, Any], rng: np.random.Generator | None = None
    ) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for modality, spec in specs.items():
            value = example.get(spec.example_key)
            if mark_presence and is_empty(value):
                out.update({k: np.zeros_like(v) for k, v in fillers[modality].items()})
                out[present_key(modality)] = np.asarray(False)
                continue
            if value is None:
                raise KeyError(
                    f"the example has no {spec.example_key!r} for the {modality} modality "
                    f"(its keys: {sorted(example)})"
                )
            out.update(
                spec.preprocess_example(
                    value,
                    config=config,
                    tokenizer=tokenizer,
                    rng=rng,
                    augment=augment,
                    sample_rate=example.get(AUDIO_RATE_KEY, sample_rate),
                )
            )
            if mark_presence:
                out[present_key(modality)] = np.asarray(True)
        if "label" in example:
            out["label"] = np.asarray(example["label"], np.int32)
        for key in ATTRIBUTE_KEYS:
            if key in example:
                out[key] = np.asarray(example[key], np.int32)
        return out

    return preprocess


def _has_text(value: Any) -> bool:
    """Whether a caption (``str``/``bytes``, or a list of them) has a non-blank one."""
    if isinstance(value, list | tuple | np.ndarray):
        return any(_has_text(v) for v in value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value is not None and bool(str(value).strip())


def make_file_preprocess(
    config: ml_collections.ConfigDict, tokenizer: Tokenizer, *, augment: bool = False
) -> Callable[..., dict[str, Any]]:
    """:func:`make_preprocess` for examples read from files, where any one may be bad: returns
    ``(example, rng=None) -> model inputs``, or a :func:`mmtx.data.bad_examples.bad` marker
    (passed on unchanged when the example is one already) for

    * an image that does not decode (``undecodable image``) or is past PIL's decompression-bomb
      limit (``image too large``), an audio file that does not decode (``undecodable audio``);
    * an empty or blank caption (``empty caption``);
    * an example without a field the model needs (``missing input``).

    Images are decoded at a reduced JPEG scale (:func:`mmtx.data.preprocessing.decode_image`);
    audio by its format (:func:`mmtx.data.records.decode_audio`), at its own sample rate.
    """
    preprocess = make_preprocess(config, tokenizer, augment=augment)
    modalities = ordered(config.model.modalities)
    keys = {m: get_modality(m).example_key for m in modalities}
    # The shorter side the resize makes (image_size, or resize_size before the centre crop):
    # a JPEG is decoded at the smallest libjpeg scale that still has it.
    decode_size = int(config.model.image.resize_size or config.model.image.image_size)
    channels = int(config.model.image.channels)

    def guarded(example: dict[str, Any], rng: np.random.Generator | None = None) -> dict[str, Any]:
        if is_bad(example):
            return example
        name = str(example.get(bad_examples.NAME_KEY, "?"))
        example = dict(example)
        for modality, key in keys.items():
            value = example.get(key)
            if modality == "text" and not _has_text(value):
                return bad_examples.bad("empty caption", name)
            if is_empty(value):
                return bad_examples.bad("missing input", f"{name} (no {key})")
        if isinstance(example.get("image"), bytes) and "image" in keys:
            try:
                example["image"] = decode_image(example["image"], decode_size, channels)
            except Image.DecompressionBombError:
                return bad_examples.bad("image too large", name)
            except Exception:  # PIL raises many types for damaged files
                return bad_examples.bad("undecodable image", name)
        if isinstance(example.get("audio"), bytes) and "audio" in keys:
            try:
                audio_format = example.get(records.AUDIO_FORMAT_KEY, "wav")
                example["audio"], example[AUDIO_RATE_KEY] = records.decode_audio(
                    example["audio"], audio_format
                )
            except ImportError:
                raise
            except Exception:  # scipy / soundfile errors on damaged files
                return bad_examples.bad("undecodable audio", name)
            if example["audio"].size == 0:
                return bad_examples.bad("undecodable audio", f"{name} (no samples)")
        return preprocess(example, rng)

    return guarded


def _random_access_examples(
    source: Any,
    preprocess: Callable[..., dict[str, Any]],
    *,
    seed: int,
    train: bool,
    with_index: bool,
    process_index: int,
    process_count: int,
) -> grain.MapDataset:
    """This process's preprocessed examples of a random-access source: for training shuffled
    globally each epoch, repeated and augmented by global position; else in order (with
    ``index`` when asked, on every example that is not a :func:`bad_examples.bad` marker);
    then every ``process_count``-th from ``process_index``."""
    dataset = grain.MapDataset.source(source)
    if train:
        dataset = dataset.shuffle(seed=seed).repeat().random_map(preprocess, seed=seed)
    elif with_index:

        def with_position(index: int, example: dict[str, Any]) -> dict[str, Any]:
            out = preprocess(example)
            return out if is_bad(out) else {**out, "index": np.int32(index)}

        dataset = dataset.map_with_index(with_position)
    else:
        dataset = dataset.map(preprocess)
    return dataset[process_index::process_count]


def _in_workers(dataset: grain.IterDataset, data: ml_collections.ConfigDict) -> grain.IterDataset:
    """``dataset`` made by ``data.num_workers`` grain worker processes (``mp_prefetch``); the
    dataset itself with none."""
    if data.num_workers <= 0:
        return dataset
    _grain_worker_flags_readable()
    return dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=data.num_workers))


def _create_file_dataset(
    config: ml_collections.ConfigDict,
    split: str,
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    train: bool,
    process_index: int,
    process_count: int,
    with_index: bool,
    source: Any,
) -> grain.IterDataset:
    """:func:`create_dataset` for a file source (:mod:`mmtx.data.sources`)."""
    data = config.data
    if source is None:
        raise ValueError(f"no eval data: {sources.describe_eval(config)}")
    preprocess = make_file_preprocess(config, tokenizer, augment=train and data.augment)
    read_options = grain.ReadOptions(
        num_threads=data.num_threads, prefetch_buffer_size=data.prefetch
    )
    if isinstance(source, sources.StreamSource):
        dataset = stream_dataset(
            source.urls,
            source.reader,
            seed=data.seed,
            train=train,
            resampled=data.resampled,
            process_index=process_index,
            process_count=process_count,
            cycle_length=data.cycle_length,
            shuffle_buffer=data.shuffle_buffer,
        )
        if train:
            dataset = dataset.random_map(preprocess, seed=data.seed)
        else:
            dataset = dataset.map(preprocess)
    else:
        examples = _random_access_examples(
            source,
            preprocess,
            seed=data.seed,
            train=train,
            with_index=with_index,
            process_index=process_index,
            process_count=process_count,
        )
        dataset = examples.to_iter_dataset(read_options)
    dataset = DropBadIterDataset(dataset, data.max_bad_fraction)
    dataset = dataset.batch(batch_size, drop_remainder=train)
    if data.num_workers > 0:
        return _in_workers(dataset, data)
    if isinstance(source, sources.StreamSource) and data.prefetch > 0:
        # Streams decode in the iterating thread: a thread ahead overlaps it with the step.
        dataset = grain.experimental.ThreadPrefetchIterDataset(
            dataset, prefetch_buffer_size=data.prefetch
        )
    return dataset


def create_dataset(
    config: ml_collections.ConfigDict,
    split: str,
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    train: bool,
    process_index: int = 0,
    process_count: int = 1,
    with_index: bool = False,
    source: Any = None,
) -> grain.IterDataset:
    """Builds the pipeline for one process.

    Training data is shuffled globally with ``config.data.seed`` (re-shuffled each epoch),
    repeated forever and preprocessed with per-example random numbers drawn from the seed
    and the example's position in that global order; process ``i`` then reads elements
    ``i, i + P, ...``. So the P processes' batches of a step together hold exactly the
    examples of the one-process global batch, augmentation included, whatever the process
    count. Eval data is sharded the same way, read in order, once, without augmentation,
    with the last partial batch kept. Batches are dicts of numpy arrays with a leading
    ``batch_size`` axis (the per-process batch). With ``config.data.num_workers > 0`` the
    batches are produced by that many worker processes (grain ``mp_prefetch``). The
    iterator's position is checkpointable (``grain.checkpoint``), workers included.
    Deterministic: the same config gives the same batches. With ``with_index`` (eval data
    only) each example also carries ``index``, int32: its position in the split, which
    :func:`eval_captions` refers to.

    File sources (:mod:`mmtx.data.sources`) are built the same way where they are random
    access; streams are read as :func:`mmtx.data.streams.stream_dataset` says. Their bad
    examples are skipped (:mod:`mmtx.data.bad_examples`): each batch then also carries
    ``_skipped`` int32 ``[batch_size, len(REASONS)]``, which
    :class:`mmtx.data.bad_examples.SkipTally` takes off and counts.

    ``source``: the split's source when the caller has it already (from
    :func:`create_source`), so that it is not opened twice; default: opened here.
    """
    if source is None:
        source = create_source(config, split)
    if sources.source_kind(config.data.source) in sources.FILE_KINDS:
        return _create_file_dataset(
            config,
            split,
            tokenizer,
            batch_size=batch_size,
            train=train,
            process_index=process_index,
            process_count=process_count,
            with_index=with_index,
            source=source,
        )
    preprocess = make_preprocess(
        config,
        tokenizer,
        sample_rate=source_sample_rate(config, source),
        augment=train and config.data.augment,
        mark_presence=bool(getattr(source, "may_lack_inputs", False)),
    )
    dataset = _random_access_examples(
        source,
        preprocess,
        seed=config.data.seed,
        train=train,
        with_index=with_index,
        process_index=process_index,
        process_count=process_count,
    )
    dataset = dataset.batch(batch_size, drop_remainder=train)
    read_options = grain.ReadOptions(
        num_threads=config.data.num_threads, prefetch_buffer_size=config.data.prefetch
    )
    return _in_workers(dataset.to_iter_dataset(read_options), config.data)


def close_iterator(iterator: Any) -> None:
    """Stops a data iterator's worker processes now (grain ``mp_prefetch``), rather than in
    interpreter-exit finalizers, which fail noisily once their queues are gone."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def eval_class_names(config: ml_collections.ConfigDict, source: Any) -> tuple[str, ...]:
    """Names of the eval data's labels, in label order, for zero-shot classification:
    ``config.eval.classnames`` when given, else the source's own (the synthetic data's
    shape x colour names, :data:`mmtx.data.synthetic.CLASS_NAMES`; a TFDS ``ClassLabel``'s
    names); ``()`` when there are none."""
    if config.eval.classnames:
        return tuple(config.eval.classnames)
    if isinstance(source, SyntheticSource):
        return CLASS_NAMES
    return tuple(getattr(source, "class_names", ()) or ())


def eval_captions(
    config: ml_collections.ConfigDict, source: Any
) -> tuple[list[str], np.ndarray] | None:
    """Every caption of the eval split and the split position of the example each describes:
    ``(captions, example_index int64 [M])``, for retrieval with several captions per image.

    None when the model has no text tower, ``config.eval.all_captions`` is off, or the source
    has one caption per example (the synthetic data; a TFDS text feature outside a
    ``Sequence``). Reads every example of the split on every process (its text feature).
    """
    if "text" not in config.model.modalities or not config.eval.all_captions:
        return None
    if not getattr(source, "multiple_captions", False):
        return None
    captions: list[str] = []
    example_index: list[int] = []
    for index in range(len(source)):
        texts = source.captions(index)
        captions.extend(texts)
        example_index.extend([index] * len(texts))
    return captions, np.asarray(example_index, np.int64)


def modality_attributes() -> dict[str, tuple[str, ...]]:
    """Which synthetic attributes each registered modality expresses (its spec's
    ``attributes``): retrieval between two modalities counts a hit when the retrieved item
    agrees on the attributes both express (audio has no position; motion needs video data)."""
    return {m: get_modality(m).attributes for m in modality_names()}
