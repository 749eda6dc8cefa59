#!/usr/bin/env bash
# Creates benchmarks/peers/.venv-peers: PyTorch + open_clip + transformers + timm, for
# make_import_fixtures.py (the checkpoint-import reference fixtures of
# tests/checkpoints/fixtures/), and webdataset + pandas for open_clip_wds_pipeline.py (open_clip's
# own WebDataset training pipeline, `open_clip_train.data.get_wds_dataset`, which imports pandas;
# run by benchmarks/input_pipeline.py --own_data). webdataset is 0.2.86, the newest that
# open_clip_torch[training] 3.3.0 allows (<=0.2.86): 1.x's tar iterator yields samples without
# the "fname" key open_clip's tarfile_to_samples_nothrow reads.
#
# Not a dependency of mmtx (nothing in the project imports torch; the fixtures are committed so
# the test suite never needs this environment). Run from anywhere:
#     benchmarks/peers/setup_peers.sh
#     benchmarks/peers/.venv-peers/bin/python benchmarks/peers/make_import_fixtures.py
# torch 2.14.1 / torchvision 0.29.1 are the releases this machine's pip can take from its local
# wheel files (a ~5.5 GB CUDA build; it runs on the CPU); torch pins its own nvidia-* / triton
# dependencies. Every other package is pinned exactly (the set that transformers 5.24.0,
# open_clip 3.3.0 and timm 1.0.31 need to import), so the fixtures regenerate bit for bit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${PEERS_VENV:-$here/.venv-peers}"
python="${PYTHON:-python3.11}"
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet torch==2.14.1 torchvision==0.29.1
"$venv/bin/pip" install --quiet \
    open_clip_torch==3.3.0 transformers==5.24.0 timm==1.0.31 \
    safetensors==0.8.0 huggingface_hub==2.4.0 tokenizers==0.23.3 \
    ftfy==6.3.1 wcwidth==0.9.4 regex==2026.11.19 tqdm==4.70.1 sentencepiece==0.2.3 \
    numpy==2.4.6 pillow==13.0.0 packaging==26.4 PyYAML==6.0.4 filelock==4.3.1 \
    fsspec==2026.9.0 hf-xet==1.8.0 typing_extensions==4.16.0 \
    httpx2==2.16.2 httpcore2==2.16.2 h11==0.16.0 anyio==4.16.0 idna==3.20 truststore==0.10.5 \
    typer==0.29.2 click==8.5.1 rich==15.0.0 shellingham==1.5.4 markdown-it-py==4.3.0 \
    mdurl==0.1.2 Pygments==2.21.0 annotated-doc==0.0.7 protobuf==7.36.2 \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
"$venv/bin/pip" install --quiet \
    webdataset==0.2.86 braceexpand==0.1.7 \
    pandas==2.3.3 python-dateutil==4.0.0 pytz==2026.6 tzdata==2026.6
"$venv/bin/python" -c "
import open_clip, open_clip_train.data, timm, torch, torchvision, transformers, webdataset
from transformers import ASTModel, CLIPModel, SiglipModel
print('torch', torch.__version__, 'torchvision', torchvision.__version__,
      'open_clip', open_clip.__version__, 'transformers', transformers.__version__,
      'timm', timm.__version__, 'webdataset', webdataset.__version__)"
