"""Embed files with a trained model: ``python -m mmtx.embed --workdir=DIR --images=FOLDER
--out=FILE.npz``.

One of ``--images=FOLDER`` (every file of the folder that PIL reads, by extension: PNG, JPEG,
WebP, ...), ``--texts=FILE`` (one caption per non-empty line, UTF-8) or ``--audio=FOLDER``
(every ``.wav`` file: 8-bit, 16-bit, 24-bit, 32-bit PCM or float, mono or multi-channel,
any rate) is embedded with the model of ``--workdir`` (a training run's or an imported
checkpoint, loaded by :meth:`mmtx.Model.from_checkpoint`), ``--batch_size`` inputs at a
time, with a progress bar on stderr. Folders are read in sorted file-name order, not
recursively; hidden files are skipped.

``--out`` is an ``.npz`` file with ``embeddings`` float32 ``[N, D]`` (the modality's own
embedding, ``outputs["image"]`` etc., un-normalised unless ``--normalize``), ``names`` str
``[N]`` (the file names, or the caption lines), ``modality`` (a str), ``normalized``
(a bool) and ``step`` (the checkpoint step loaded). Read it with
``np.load("FILE.npz")["embeddings"]``.

``--out`` is never one of the inputs, a directory or a file inside a workdir, and an existing
file is replaced only with ``--overwrite``; the file is written whole or not at all (a
temporary file renamed over it), so a failed run leaves nothing behind.

Exits 0 when done; 1, with one ``error: ...`` line on stderr, for a missing or empty input,
an ``--out`` it may not write, a workdir without a loadable checkpoint, a model without an
encoder for the modality, or an input file that cannot be read or decoded (the error names it,
a decompression bomb with its pixel count).

The functions behind the command (:func:`find_inputs`, :func:`load_input`,
:func:`embed_files`, :func:`write_embeddings`) work without it, in a notebook or a script.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np
import scipy.io.wavfile
from absl import flags
from PIL import Image

from mmtx import output_paths
from mmtx.batch_checks import check_batch
from mmtx.data.preprocessing import audio_to_float
from mmtx.inference import Model
from mmtx.launch import answer_help
from mmtx.models import NonFiniteOutputError

MODALITIES = ("image", "text", "audio")


class EmbedError(Exception):
    """An input, workdir or output that cannot be used; the message is one line for the user."""


# ---------------------------------------------------------------------------- inputs


def image_extensions() -> set[str]:
    """The lower-case file extensions (``".png"``, ``".jpg"``, ...) PIL can open."""
    return {extension.lower() for extension in Image.registered_extensions()}


def find_inputs(modality: str, path: str | os.PathLike) -> list[str]:
    """What to embed: for ``"image"`` the paths of the files in folder ``path`` with an
    extension PIL reads, for ``"audio"`` those of its ``.wav`` files (both sorted by name,
    hidden files skipped, no subfolders); for ``"text"`` the non-empty lines of the UTF-8 text
    file ``path``, stripped of surrounding whitespace. Raises :class:`EmbedError` when
    ``path`` is missing or holds nothing to embed."""
    path = os.fspath(path)
    if modality == "text":
        if not os.path.isfile(path):
            raise EmbedError(f"no such text file: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                lines = [line.strip() for line in f]
        except UnicodeDecodeError as error:
            raise EmbedError(f"{path}: not UTF-8 text ({error})") from error
        lines = [line for line in lines if line]
        if not lines:
            raise EmbedError(f"{path} has no non-empty lines to embed")
        return lines
    if modality not in ("image", "audio"):
        raise ValueError(f"modality must be one of {MODALITIES}; got {modality!r}")
    if not os.path.isdir(path):
        raise EmbedError(f"no such folder: {path}")
    extensions = image_extensions() if modality == "image" else {".wav"}
    files = sorted(
        os.path.join(path, name)
        for name in os.listdir(path)
        if not name.startswith(".")
        and os.path.splitext(name)[1].lower() in extensions
        and os.path.isfile(os.path.join(path, name))
    )
    if not files:
        kinds = (
            "image files (extensions PIL reads: .png, .jpg, ...)"
            if modality == "image"
            else ".wav files"
        )
        raise EmbedError(f"no {kinds} in {path}")
    return files


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A WAV file -> (float32 ``[S]`` mono waveform in about ``[-1, 1]``, sample rate in Hz).

    PCM integers are scaled by their full range (:func:`mmtx.data.preprocessing.audio_to_float`;
    24-bit files arrive from scipy as left-aligned int32), floats kept; several channels are
    averaged to mono, as :class:`mmtx.Model` mixes them.
    """
    try:
        rate, samples = scipy.io.wavfile.read(os.fspath(path))
    except OSError:
        raise
    except Exception as error:
        # scipy raises several types for a damaged file (a truncated header: UnboundLocalError).
        raise ValueError(
            f"not a WAV file scipy can read ({type(error).__name__}: {error})"
        ) from error
    samples = audio_to_float(samples)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return samples, int(rate)


def load_input(modality: str, item: str) -> dict[str, Any]:
    """One input as the keyword arguments of :meth:`mmtx.Model.preprocess`: ``item`` is a
    caption (``"text"``) or a file path (``"image"``: encoded bytes, decoded by the model's
    preprocessing; ``"audio"``: the waveform of :func:`read_wav` and its rate)."""
    if modality == "text":
        return {"text_inputs": item}
    if modality == "image":
        with open(item, "rb") as f:
            return {"image_features": f.read()}
    if modality == "audio":
        samples, rate = read_wav(item)
        return {"audio_inputs": samples, "audio_sample_rate": rate}
    raise ValueError(f"modality must be one of {MODALITIES}; got {modality!r}")


# ---------------------------------------------------------------------------- embedding


class ProgressBar:
    """``\\r``-redrawn ``label [#####.....] 37/120`` on a text stream (stderr), ending in a
    newline on :meth:`close`, or blanked when the work failed."""

    def __init__(self, total: int, label: str, stream: TextIO, width: int = 30):
        self.total, self.label, self.stream, self.width = total, label, stream, width
        self.start = time.monotonic()
        self.update(0)

    def update(self, done: int) -> None:
        filled = self.width * done // max(self.total, 1)
        elapsed = time.monotonic() - self.start
        rate = f", {done / elapsed:.1f}/s" if done and elapsed > 0 else ""
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total}{rate}")
        self.stream.flush()

    def close(self, *, erase: bool = False) -> None:
        """Ends the bar's line; with ``erase`` blanks it instead (an error line follows)."""
        if erase:
            self.stream.write("\r" + " " * (len(self.label) + self.width + 40) + "\r")
        else:
            self.stream.write("\n")
        self.stream.flush()


def _pad_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Repeats the last example of every ``[n, ...]`` array up to ``[size, ...]``, so that
    the last, shorter batch reuses the compiled program."""
    return {
        key: np.concatenate([value, np.repeat(value[-1:], size - len(value), axis=0)])
        for key, value in batch.items()
    }


def embed_files(
    model: Model,
    items: Sequence[str],
    modality: str,
    batch_size: int = 32,
    *,
    normalize: bool = False,
    progress: TextIO | None = None,
) -> np.ndarray:
    """Embeds ``items`` (file paths for ``"image"`` and ``"audio"``, captions for ``"text"``;
    see :func:`find_inputs`) with ``model``, ``batch_size`` at a time.

    Returns float32 ``[len(items), embed_dim]``: row ``i`` is ``model(...)[modality]`` of
    item ``i`` (L2-normalised with ``normalize``), as calling the model on that input gives
    it (to float32 round-off: XLA may sum in another order for another batch size). Every
    batch has ``batch_size`` rows (the last is padded), so the model compiles once. With
    ``progress`` (a stream such as ``sys.stderr``) a progress bar is drawn there. Raises
    :class:`EmbedError` when the model has no encoder for ``modality`` or an input cannot be
    read (naming it).
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}; got {modality!r}")
    if modality not in model.module.encoders:
        raise EmbedError(
            f"the model has no {modality} encoder; its modalities are "
            f"{', '.join(sorted(model.module.encoders))}"
        )
    if batch_size < 1:
        raise EmbedError(f"--batch_size must be >= 1; got {batch_size}")
    if not items:
        raise EmbedError(f"nothing to embed: no {modality} inputs")
    size = min(batch_size, len(items))
    bar = ProgressBar(len(items), f"embedding {modality}", progress) if progress else None
    rows = []
    done = False
    try:
        for start in range(0, len(items), size):
            examples = []
            for item in items[start : start + size]:
                try:
                    example = model.preprocess(**load_input(modality, item))
                    # Finite and in range (a WAV of floats may hold anything), per file.
                    check_batch(example, model.module.encoders)
                    examples.append(example)
                except (OSError, ValueError, TypeError, Image.DecompressionBombError) as error:
                    # PIL's UnidentifiedImageError is an OSError; scipy raises ValueError;
                    # PIL's bomb error names the pixel count and the limit.
                    raise EmbedError(f"{item}: {error}") from error
            batch = {key: np.concatenate([e[key] for e in examples]) for key in examples[0]}
            try:
                outputs = model.run(_pad_batch(batch, size), normalize=normalize)
            except NonFiniteOutputError as error:
                names = ", ".join(items[start : start + size][:3])
                raise EmbedError(f"embedding {names}...: {error}") from None
            rows.append(outputs[modality][: len(examples)])
            if bar:
                bar.update(start + len(examples))
        done = True
    finally:
        if bar:
            bar.close(erase=not done)
    return np.concatenate(rows).astype(np.float32)


def write_embeddings(
    path: str | os.PathLike,
    embeddings: np.ndarray,
    names: Sequence[str],
    modality: str,
    *,
    normalized: bool = False,
    step: int | None = None,
) -> None:
    """Writes ``embeddings`` float32 ``[N, D]``, ``names`` str ``[N]`` (file names or
    captions), ``modality``, ``normalized`` and ``step`` (-1 for none) to the ``.npz`` file
    ``path`` (exactly that name) with :func:`mmtx.output_paths.atomic_output`: the file
    appears complete, or not at all. Check ``path`` first with
    :func:`mmtx.output_paths.check_output_path`."""
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(names):
        raise ValueError(
            f"embeddings {embeddings.shape} must be [N, D] with N = {len(names)} names"
        )
    with output_paths.atomic_output(path) as temporary, open(temporary, "wb") as f:
        np.savez(
            f,
            embeddings=embeddings,
            names=np.asarray(list(names), dtype=str),
            modality=np.asarray(modality),
            normalized=np.asarray(normalized),
            step=np.asarray(-1 if step is None else step, np.int64),
        )


def load_model(workdir: str | os.PathLike) -> Model:
    """:meth:`mmtx.Model.from_checkpoint` of ``workdir``, its errors as :class:`EmbedError`."""
    workdir = os.fspath(workdir)
    if not os.path.isdir(workdir):
        raise EmbedError(f"--workdir: no such directory: {workdir}")
    try:
        return Model.from_checkpoint(workdir)
    except (OSError, ValueError) as error:
        # No checkpoint, a damaged one, or a config that does not validate (such as a custom
        # fusion that is not registered).
        raise EmbedError(f"cannot load the model of {workdir}: {error}") from error


def embed(
    workdir: str | os.PathLike,
    modality: str,
    source: str | os.PathLike,
    out: str | os.PathLike,
    batch_size: int = 32,
    *,
    normalize: bool = False,
    overwrite: bool = False,
    progress: TextIO | None = None,
) -> np.ndarray:
    """The command: finds the inputs, loads the model, embeds, writes ``out``; returns the
    float32 ``[N, D]`` embeddings. Inputs and ``out`` are checked before the model is loaded,
    so that a mistake is reported at once: ``out`` may not be an input, a directory or a file
    in a workdir (``workdir`` included, marked or not), and replaces an existing file only
    with ``overwrite`` (:func:`mmtx.output_paths.check_output_path`)."""
    if batch_size < 1:
        raise EmbedError(f"--batch_size must be >= 1; got {batch_size}")
    items = find_inputs(modality, source)
    inputs = [source] if modality == "text" else items
    try:
        output_paths.check_output_path(out, inputs=inputs, overwrite=overwrite)
    except output_paths.OutputPathError as error:
        raise EmbedError(str(error)) from None
    workdir_path = os.path.realpath(os.fspath(workdir))
    if os.path.realpath(os.fspath(out)).startswith(workdir_path + os.sep):
        raise EmbedError(f"--out={out} is inside --workdir={workdir}; write it somewhere else")
    model = load_model(workdir)
    embeddings = embed_files(
        model, items, modality, batch_size, normalize=normalize, progress=progress
    )
    names = items if modality == "text" else [os.path.basename(item) for item in items]
    try:
        write_embeddings(out, embeddings, names, modality, normalized=normalize, step=model.step)
    except OSError as error:  # a full disk, permissions: the temporary file is gone
        raise EmbedError(f"cannot write --out={out}: {error.strerror or error}") from error
    return embeddings


# ---------------------------------------------------------------------------- command line


def parse_flags(argv: Sequence[str]) -> tuple[flags.FlagValues, list[str]]:
    """Parses ``argv`` (``argv[0]`` is the program) into a fresh ``FlagValues``; returns it and
    the arguments that are not flags. The flags are defined there, not in absl's global
    ``FLAGS``, so that this module imports next to :mod:`mmtx.main` (which defines
    ``--workdir`` too) and its command runs in-process. Raises ``absl.flags.Error``."""
    values = flags.FlagValues()
    flags.DEFINE_string(
        "workdir", None, "Workdir of a trained or imported model.", flag_values=values
    )
    flags.DEFINE_string("images", None, "Folder of images to embed.", flag_values=values)
    flags.DEFINE_string(
        "texts", None, "Text file: one caption per non-empty line.", flag_values=values
    )
    flags.DEFINE_string("audio", None, "Folder of .wav files to embed.", flag_values=values)
    flags.DEFINE_string("out", None, "The .npz file to write.", flag_values=values)
    flags.DEFINE_integer("batch_size", 32, "Inputs per model call.", flag_values=values)
    flags.DEFINE_bool("normalize", False, "L2-normalise the embeddings.", flag_values=values)
    flags.DEFINE_bool(
        "overwrite", False, "Replace --out when it exists (never an input).", flag_values=values
    )
    rest = values(list(argv))
    return values, rest[1:]


def main(argv: Sequence[str], stderr: TextIO | None = None) -> int:
    """Runs the command on ``argv`` (``sys.argv``); returns the exit status: 0 when done, 1
    after printing one ``error: ...`` line to ``stderr`` (default ``sys.stderr``), where the
    progress bar goes too."""
    stderr = stderr or sys.stderr
    if answer_help(argv, __doc__, lambda: parse_flags(argv[:1])[0].get_help()):
        return 0
    try:
        try:
            values, extra = parse_flags(argv)
        except flags.Error as error:
            raise EmbedError(str(error)) from error
        if extra:
            raise EmbedError(f"unexpected arguments: {extra}")
        sources = {
            modality: value
            for modality, value in (
                ("image", values.images),
                ("text", values.texts),
                ("audio", values.audio),
            )
            if value
        }
        if len(sources) != 1:
            raise EmbedError("give exactly one of --images=FOLDER, --texts=FILE, --audio=FOLDER")
        if not values.workdir or not values.out:
            raise EmbedError("--workdir=DIR and --out=FILE.npz are required")
        ((modality, source),) = sources.items()
        embeddings = embed(
            values.workdir,
            modality,
            source,
            values.out,
            values.batch_size,
            normalize=values.normalize,
            overwrite=values.overwrite,
            progress=stderr,
        )
    except EmbedError as error:
        print(f"error: {error}", file=stderr, flush=True)
        return 1
    count, width = embeddings.shape
    print(f"wrote {count} {modality} embeddings [{count}, {width}] to {values.out}")
    return 0


if __name__ == "__main__":
    from mmtx import launch

    launch.skip_absent_tpu()  # libtpu for mmtx.compile, on a host without TPU chips
    sys.exit(main(sys.argv))
