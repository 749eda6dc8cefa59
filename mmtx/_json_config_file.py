"""A config file for ``ml_collections.config_flags`` that loads a JSON config.

``python -m mmtx.main --config=run.json`` is turned into ``--config=<this file>:run.json``,
so the command line takes the JSON configs that :func:`mmtx.create_model` takes (a nested
dict of overrides merged onto :func:`mmtx.config.default_config`).
"""

from __future__ import annotations

import ml_collections

from mmtx import config as config_lib


def get_config(path: str) -> ml_collections.ConfigDict:
    """The validated config of the JSON file at ``path``."""
    return config_lib.load_config(path)
