"""Published checkpoints (CLIP, SigLIP, AST) imported into mmtx, equal to the originals.

``import_checkpoint(family, path)`` reads a family's weights with numpy (``.safetensors`` /
``.npz``; torch is not needed), derives the mmtx config from the tensors' names and shapes,
converts every tensor to mmtx's layout and checks the result against the model's param
tree; ``write_workdir`` saves it as a workdir that :meth:`mmtx.Model.from_checkpoint`
loads. The command line is ``python -m mmtx.import_checkpoint``.
"""

from mmtx.checkpoints.importer import (
    FAMILIES,
    ImportedModel,
    import_checkpoint,
    write_workdir,
)
from mmtx.checkpoints.posemb import resample_position_embedding
from mmtx.checkpoints.tensors import CheckpointImportError, read_tensors

__all__ = [
    "FAMILIES",
    "CheckpointImportError",
    "ImportedModel",
    "import_checkpoint",
    "read_tensors",
    "resample_position_embedding",
    "write_workdir",
]
