#!/usr/bin/env bash
# Creates benchmarks/peers/.venv-open-clip: PyTorch + open_clip, for open_clip_step.py only.
#
# Not a dependency of mmtx (nothing in the project imports torch). Run from anywhere:
#     benchmarks/peers/setup_open_clip.sh
# torch 2.14.1 / torchvision 0.29.1 are the releases this machine's pip can take from its
# local wheel files (a ~5.5 GB CUDA build; it runs on the CPU). open_clip_torch goes in with
# --no-deps, plus the four small packages `import open_clip` needs (huggingface_hub, timm and
# safetensors are imported only to load pretrained weights, which the benchmark never does).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${OPEN_CLIP_VENV:-$here/.venv-open-clip}"
python="${PYTHON:-python3.11}"
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet torch==2.14.1 torchvision==0.29.1
"$venv/bin/pip" install --quiet --no-deps open_clip_torch==3.3.0 ftfy wcwidth regex tqdm
"$venv/bin/python" -c "import open_clip, torch; print('open_clip', open_clip.__version__, 'torch', torch.__version__)"
