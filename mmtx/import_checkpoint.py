"""Import a published checkpoint as an mmtx workdir:
``python -m mmtx.import_checkpoint --family=FAMILY --path=FILE --workdir=DIR``.

Families: ``open_clip`` (an OpenAI-style CLIP state dict, ``.safetensors``), ``hf_clip``
(HF ``CLIPModel``), ``hf_siglip`` (HF ``SiglipModel``), ``big_vision_siglip`` (a big_vision
SigLIP ``.npz``), ``hf_ast`` (HF ``ASTModel``). The HF families read the ``config.json`` next
to the weights (or ``--hf_config``). ``--tokenizer=FILE`` (``bpe_simple_vocab_16e6.txt.gz``,
``spiece.model`` or ``tokenizer.json``) is copied into the workdir, so that
``mmtx.Model.from_checkpoint(DIR)(text_inputs=[...])`` tokenizes as the original does.
``--image_size`` runs the image tower at another size (the position table is resampled).
An open_clip state dict records neither its heads nor its activation: they are read from the
``open_clip_config.json`` next to the weights (as a model hub holds it; or ``--hf_config``),
which also gives the image mean/std and must agree with the tensors' sizes; ``--num_heads=
text:8,image:12`` and ``--activation=gelu`` override it. Without either, heads are
``width // 64`` and the activation QuickGELU (OpenAI's), and the command prints an
``assumed ...`` line for each.

The workdir gets ``config.json``, ``import.json`` (the source), the tokenizer and a step-0
checkpoint. A torch pickle (``.bin``/``.pt``) is refused with the command that converts it
to safetensors once. Exits 0 when done; 1 with one ``error: ...`` line (nothing written)
for an unknown family, a checkpoint with missing, unexpected or mis-shaped tensors, or a
workdir that exists and is not empty; 2 for a mistyped flag.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from absl import flags


def parse_flags(argv: Sequence[str]) -> tuple[flags.FlagValues, list[str]]:
    """Parses ``argv`` (``argv[0]`` is the program) into a fresh ``FlagValues``; returns it and
    the arguments that are not flags. Raises ``absl.flags.Error``."""
    values = flags.FlagValues()
    flags.DEFINE_string(
        "family",
        None,
        "open_clip | hf_clip | hf_siglip | big_vision_siglip | hf_ast.",
        flag_values=values,
    )
    flags.DEFINE_string("path", None, "The weights: .safetensors or .npz.", flag_values=values)
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


def main(argv: Sequence[str], stderr: TextIO | None = None) -> int:
    """Runs the command on ``argv``; returns the exit status (see the module docstring)."""
    stderr = stderr or sys.stderr
    if any(arg in ("--help", "-h", "--helpfull", "--helpshort") for arg in argv[1:]):
        values, _ = parse_flags(argv[:1])
        print(f"{__doc__.strip()}\n\nflags:\n{values.get_help()}")
        return 0
    try:
        values, extra = parse_flags(argv)
        if extra:
            raise flags.Error(f"unexpected arguments: {extra}")
        for name in ("family", "path", "workdir"):
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
            tokenizer=values.tokenizer,
            image_size=values.image_size,
            activation=values.activation,
            num_heads=parse_num_heads(values.num_heads),
        )
        workdir = write_workdir(imported, values.workdir)
    except (CheckpointImportError, OSError, ValueError) as error:
        print(f"error: {error}", file=stderr, flush=True)
        return 1
    for note in imported.source["assumed"]:
        print(f"assumed {note}")
    for note in imported.source["differences"]:
        print(f"differs: {note}")
    print(
        f"imported {values.family} {values.path} ({imported.source['tensors']} tensors):\n"
        f"{describe(imported.config)}\nwrote {workdir} "
        f"(load it with mmtx.Model.from_checkpoint({workdir!r}))"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
