"""Published checkpoints (CLIP, SigLIP, AST) imported into mmtx, equal to the originals.

``import_checkpoint(family, path)`` reads a family's weights with numpy (``.safetensors`` /
``.npz``, or a model hub's directory of them, the family detected when ``family`` is None;
torch is not needed) and the configs and preprocessing files beside them, derives the mmtx
config from the tensors' names and shapes and those files, converts every tensor to mmtx's
layout and checks the result against the model's param tree; ``write_workdir`` saves it as
a workdir that :meth:`mmtx.Model.from_checkpoint` loads. The command line is
``python -m mmtx.import_checkpoint``.
"""

from mmtx.checkpoints.hub import detect_family, find_tokenizer, weights_file
from mmtx.checkpoints.importer import (
    FAMILIES,
    ImportedModel,
    import_checkpoint,
    write_workdir,
)
from mmtx.checkpoints.tensors import CheckpointImportError, read_tensors
from mmtx.nn.posemb import resample_position_embedding

__all__ = [
    "FAMILIES",
    "CheckpointImportError",
    "ImportedModel",
    "detect_family",
    "find_tokenizer",
    "import_checkpoint",
    "read_tensors",
    "resample_position_embedding",
    "weights_file",
    "write_workdir",
]
