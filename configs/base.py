"""The main config: all three modalities on the built-in synthetic dataset.

    python -m mmtx.main --config=configs/base.py --workdir=/tmp/mmtx
    python -m mmtx.main --config=configs/base.py:tiny --config.train.steps=20 --workdir=/tmp/t

``arg`` picks a size variant (``tiny`` | ``small`` | ``base`` | ``large``; default ``small``,
which trains on a 2-core CPU in minutes). The model and fusion fields, with their meaning,
are in :func:`mmtx.config.default_config`; this file sets what the experiment changes.
"""

from mmtx import config as config_lib


def get_config(arg: str | None = None):
    """Returns the ConfigDict for size variant ``arg`` (default ``small``)."""
    config = config_lib.default_config()
    config_lib.apply_variant(config, arg or "small")
    config.model.modalities = ("text", "image", "audio")
    config.fusion.type = "concat"
    return config
