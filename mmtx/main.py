"""Train and evaluate: ``python -m mmtx.main --config=configs/base.py --workdir=DIR``.

Any config field can be overridden on the command line, e.g.
``--config.train.steps=100 --config.fusion.type=gated``; ``--config=configs/base.py:tiny``
passes ``tiny`` to the file's ``get_config``.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from mmtx.train.loop import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).")
_WORKDIR = flags.DEFINE_string("workdir", "./workdir", "Directory for checkpoints and logs.")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
