"""The reference workload's train step in open_clip (PyTorch), for comparison with mmtx.

Runs in its own virtual environment, never in the project's (torch is not an mmtx
dependency)::

    benchmarks/peers/setup_peers.sh                           # once: makes .venv-peers
    benchmarks/peers/.venv-peers/bin/python benchmarks/peers/open_clip_step.py \
        [--batch_size 64] [--steps 10] [--warmup 3] [--bf16] [--threads N]

(``setup_open_clip.sh`` makes the older, open_clip-only ``.venv-open-clip``, which also works.)

The model is open_clip's own ``open_clip.model.CLIP``, randomly initialised from a
vision/text config dict with the dimensions of ``configs/bench_clip.py``: a ViT of width 256,
4 layers, 4 heads (``head_width`` 64), MLP ratio 4 over 64x64 images in 8x8 patches; a text
transformer of width 256, 4 layers, 4 heads over 64 tokens of a 259-token vocabulary; embed
dim 256. The loss is ``open_clip.loss.ClipLoss``, the optimizer ``torch.optim.AdamW`` (with
global-norm clipping at 1.0 and open_clip's clamp of the logit scale, as its training loop
does and as mmtx's step does). Inputs are random: images ``[B, 3, 64, 64]`` float32, token
ids ``[B, 64]`` int64 with the highest id (open_clip pools the text at ``argmax``) at a
random position.

Reports the median step time over ``--steps`` timed steps after ``--warmup`` untimed ones,
plus the machine's float32 matmul rate in torch (2048^3, after the timed steps;
``compare_open_clip.py`` takes the best of it and XLA's as the peak of both libraries' MFU),
and ends with one JSON line: ``examples_per_sec``, ``step_ms``, ``step_ms_all``,
``batch_size``, ``dtype``, ``threads``, ``num_params``, ``torch``, ``open_clip``,
``torch_matmul_gflops``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import open_clip
import torch
from open_clip.loss import ClipLoss
from open_clip.model import CLIP

EMBED_DIM = 256
VISION_CFG = {
    "image_size": 64,
    "patch_size": 8,
    "width": 256,
    "layers": 4,
    "head_width": 64,  # 256 / 4 heads
    "mlp_ratio": 4.0,
}
TEXT_CFG = {
    "context_length": 64,
    "vocab_size": 259,
    "width": 256,
    "heads": 4,
    "layers": 4,
    "mlp_ratio": 4.0,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build(batch_size: int, seed: int) -> tuple[CLIP, ClipLoss, torch.optim.Optimizer, Any]:
    """The model, loss, optimizer and one random batch ``(images, texts)``."""
    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=EMBED_DIM,
        vision_cfg=dict(VISION_CFG),
        text_cfg=dict(TEXT_CFG),
        output_dict=True,
    )
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embedding" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, 64, 64, generator=generator)
    vocab = TEXT_CFG["vocab_size"]
    length = TEXT_CFG["context_length"]
    texts = torch.randint(3, vocab - 1, (batch_size, length), generator=generator)
    eot = torch.randint(1, length, (batch_size,), generator=generator)
    texts[torch.arange(batch_size), eot] = vocab - 1
    return model, ClipLoss(), optimizer, (images, texts)


def train_step(
    model: CLIP,
    loss_fn: ClipLoss,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    texts: torch.Tensor,
    bf16: bool,
) -> float:
    """One optimizer step as open_clip's training loop takes it; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(images, texts)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, 4.6052)  # log(100), as open_clip's train loop does
    return loss.item()


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Median float32 ``[n, n] @ [n, n]`` rate in torch, GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model, loss_fn, optimizer, (images, texts) = build(args.batch_size, args.seed)
    for _ in range(args.warmup):
        train_step(model, loss_fn, optimizer, images, texts, args.bf16)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = train_step(model, loss_fn, optimizer, images, texts, args.bf16)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    result = {
        "library": "open_clip",
        "examples_per_sec": round(args.batch_size / step_s, 3),
        "step_ms": round(step_s * 1e3, 2),
        "step_ms_all": [round(t * 1e3, 2) for t in times],
        "batch_size": args.batch_size,
        "dtype": "bfloat16-autocast" if args.bf16 else "float32",
        "threads": torch.get_num_threads(),
        "num_params": sum(p.numel() for p in model.parameters()),
        "final_loss": round(loss, 5),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "torch_matmul_gflops": round(matmul_gflops(), 2),
    }
    print(
        f"open_clip: {result['examples_per_sec']:.1f} ex/s, {result['step_ms']:.1f} ms/step "
        f"(batch {args.batch_size}, {result['dtype']}, {result['threads']} threads)"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
