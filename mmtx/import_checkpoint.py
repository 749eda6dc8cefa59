"""Import a published checkpoint as an mmtx workdir:
``python -m mmtx.import_checkpoint --path=DIR_OR_FILE --workdir=DIR [--family=FAMILY]``.

``--path`` is a weights file or a directory as a model hub holds it:
``open_clip_model.safetensors`` + ``open_clip_config.json`` (open_clip), ``model.safetensors``
+ ``config.json`` + ``preprocessor_config.json`` (HF CLIP, SigLIP, AST), a big_vision
``.npz``; the tokenizer file found there (``tokenizer.json``, ``spiece.model``,
``bpe_simple_vocab_16e6.txt.gz``) or ``--tokenizer`` is tried once and copied into the
workdir. Without ``--family`` the family is detected from the tensor names and printed.
Families: ``open_clip`` (an OpenAI-style CLIP state dict), ``hf_clip``, ``hf_siglip``,
``big_vision_siglip``, ``hf_ast``.

Everything the model needs beyond the tensors is read from those files: heads, activation,
LayerNorm epsilon, the image resize (interpolation, shorter side + centre crop or squash),
mean/std, AST's sampling rate and statistics. What no file gives (an OpenAI-style state dict
alone) comes from ``--num_heads=text:8,image:12`` / ``--activation=gelu``, else a documented
default, printed on an ``assumed ...`` line. The summary lists every such value with its
source. ``--image_size`` runs the image tower at another size (position table resampled).

The workdir gets ``config.json``, ``import.json`` (the source and every value's origin), the
tokenizer and a step-0 checkpoint. A torch pickle (``.bin``/``.pt``) is refused with the
command that converts it to safetensors once; it is never unpickled. Exits 0 when done; 1
with one ``error: ...`` line (nothing written) for a bad or unreadable file, a checkpoint
with missing, unexpected or mis-shaped tensors, or a workdir that exists and is not empty;
2 for a mistyped flag.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from absl import flags

from mmtx.launch import answer_help


def parse_flags(argv: Sequence[str]) -> tuple[flags.FlagValues, list[str]]:
    """Parses ``argv`` (``argv[0]`` is the program) into a fresh ``FlagValues``; returns it and
    the arguments that are not flags. Raises ``absl.flags.Error``."""
    values = flags.FlagValues()
    flags.DEFINE_string(
        "family",
        None,
        "open_clip | hf_clip | hf_siglip | big_vision_siglip | hf_ast (default: detected).",
        flag_values=values,
    )
    flags.DEFINE_string(
        "path",
        None,
        "The weights (.safetensors, .npz) or a model hub directory holding them.",
        flag_values=values,
    )
    flags.DEFINE_string("workdir", None, "A new directory to write.", flag_values=values)
    flags.DEFINE_string(
        "tokenizer",
        None,
        "The family's tokenizer file (bpe_simple_vocab_16e6.txt.gz, spiece.model, tokenizer.json).",
        flag_values=values,
    )
    flags.DEFINE_string(
        "hf_config",
        None,
        "The model's config.json (HF) or open_clip_config.json (default: next to --path).",
        flag_values=values,
    )
    flags.DEFINE_string(
        "preprocessor_config",
        None,
        "HF preprocessor_config.json (default: next to the weights).",
        flag_values=values,
    )
    flags.DEFINE_string(
        "num_heads",
        None,
        "open_clip heads per tower when no open_clip_config.json gives them: text:8,image:12.",
        flag_values=values,
    )
    flags.DEFINE_integer(
        "image_size", None, "Image size to run at (resamples positions).", flag_values=values
    )
    flags.DEFINE_string(
        "activation", None, "Override: gelu_tanh | gelu | quick_gelu.", flag_values=values
    )
    rest = values(list(argv))
    return values, rest[1:]


def parse_num_heads(text: str | None) -> dict[str, int]:
    """``"text:8,image:12"`` -> ``{"text": 8, "image": 12}``; ``None`` -> ``{}``. Raises
    ``ValueError`` naming the bad entry."""
    heads: dict[str, int] = {}
    for entry in (text or "").split(","):
        if not entry.strip():
            continue
        modality, colon, count = entry.partition(":")
        if not colon or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"--num_heads: {entry!r} is not MODALITY:COUNT (e.g. text:8,image:12)")
        heads[modality.strip()] = int(count)
    return heads


def describe(config: object) -> str:
    """One line per tower of an imported config: depth x width, heads, input size."""
    model = config.model  # type: ignore[attr-defined]
    lines = []
    for modality in model.modalities:
        tower = model[modality]
        if modality == "text":
            size = f"{tower.max_length} tokens, vocab {tower.vocab_size}"
        elif modality == "image":
            size = f"{tower.image_size} px, patch {tower.patch_size}"
        else:
            size = (
                f"{tower.num_mel_bins} mel x {tower.num_samples} samples, patch "
                f"{tuple(tower.patch_size)} stride {tuple(tower.patch_stride)}"
            )
        lines.append(
            f"  {modality}: {tower.depth} x {tower.width} wide, {tower.num_heads} heads, "
            f"{size}, pooling {tower.pooling}, {tower.activation}"
        )
    tokenizer = config.tokenizer.type  # type: ignore[attr-defined]
    lines.append(
        f"  embedding: {model.embed_dim}"
        + (f"; tokenizer: {tokenizer}" if "text" in model.modalities else "")
    )
    return "\n".join(lines)


def describe_values(values: dict) -> str:
    """The import record's ``values`` (field -> {value, from}), one line each: the values
    not read off the tensors' shapes and where each came from."""
    lines = ["values from files, flags and defaults:"]
    width = min(max((len(f"{field} = {v['value']}") for field, v in values.items()), default=0), 44)
    for field, entry in values.items():
        shown = f"{field} = {entry['value']}"
        lines.append(f"  {shown:<{width}}  <- {entry['from']}")
    return "\n".join(lines)


def main(argv: Sequence[str], stderr: TextIO | None = None) -> int:
    """Runs the command on ``argv``; returns the exit status (see the module docstring)."""
    stderr = stderr or sys.stderr
    if answer_help(argv, __doc__, lambda: parse_flags(argv[:1])[0].get_help()):
        return 0
    try:
        values, extra = parse_flags(argv)
        if extra:
            raise flags.Error(f"unexpected arguments: {extra}")
        for name in ("path", "workdir"):
            if not values[name].value:
                raise flags.Error(f"--{name} is required")
    except flags.Error as error:
        print(f"error: {error}", file=stderr, flush=True)
        return 2
    # Imported here: jax and the model are slow to import, and --help needs neither.
    from mmtx.checkpoints import CheckpointImportError, import_checkpoint, write_workdir

    try:
        imported = import_checkpoint(
            values.family,
            values.path,
            hf_config=values.hf_config,
            preprocessor_config=values.preprocessor_config,
            tokenizer=values.tokenizer,
            image_size=values.image_size,
            activation=values.activation,
            num_heads=parse_num_heads(values.num_heads),
        )
        workdir = write_workdir(imported, values.workdir)
    except (CheckpointImportError, OSError, ValueError) as error:
        print(f"error: {error}", file=stderr, flush=True)
        return 1
    if "detected" in imported.source:
        print(f"detected {imported.source['detected']}")
    for note in imported.source["assumed"]:
        print(f"assumed {note}")
    for note in imported.source["differences"]:
        print(f"differs: {note}")
    print(
        f"imported {imported.source['family']} {imported.source['path']} "
        f"({imported.source['tensors']} tensors; sizes from the tensors' shapes):\n"
        f"{describe(imported.config)}\n{describe_values(imported.source['values'])}\n"
        f"wrote {workdir} (load it with mmtx.Model.from_checkpoint({workdir!r}))"
    )
    return 0


if __name__ == "__main__":
    from mmtx import launch

    launch.skip_absent_tpu()  # libtpu for mmtx.compile, on a host without TPU chips
    sys.exit(main(sys.argv))
