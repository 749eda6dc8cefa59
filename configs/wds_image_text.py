"""CLIP-style image-text training on WebDataset tar shards, as img2dataset writes them.

Each shard holds samples as ``<key>.jpg`` + ``<key>.txt`` (+ ``<key>.json``, ignored); shards
are streamed (never loaded whole, so a bucket larger than the disk works), shuffled shard-wise
and within a window of ``data.shuffle_buffer`` examples, split across processes and workers::

    python -m mmtx.main --config=configs/wds_image_text.py \\
        --config.data.source='wds:gs://my-bucket/cc3m/{00000..00331}.tar' \\
        --config.data.eval_source='wds:gs://my-bucket/cc3m-val/{00000..00001}.tar' \\
        --config.data.train_num_samples=2905954 --workdir=/tmp/cc3m

``data.eval_source`` is what is evaluated (a stream holds nothing out; without it the run
trains only). ``--config.data.resampled=True`` draws shards with replacement, as open_clip's
``--dataset-resampled``. Shards from your own CSV or folder: ``python -m mmtx.data.pack
--from=csv:train.csv --to=wds:shards/``. The model is ``configs/csv_image_text.py``'s;
``arg`` picks its size variant.
"""

import os

from mmtx import config as config_lib


def get_config(arg: str | None = None):
    """Returns the ConfigDict for size variant ``arg`` (default ``small``)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csv_image_text.py")
    config = config_lib.load_config(f"{path}:{arg}" if arg else path)
    config.data.source = "wds:shards/"
    config.data.holdout = 0  # a stream has no held-out part: set data.eval_source
    config.data.shuffle_buffer = 1000
    config.data.num_workers = 2 if config.data.num_workers == 0 else config.data.num_workers
    return config
