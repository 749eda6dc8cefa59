"""Evaluate a trained or imported model without training: ``python -m mmtx.evaluate
--workdir=DIR [--config.eval.FIELD=VALUE ...]``.

``DIR`` is a training run's workdir or one written by ``python -m mmtx.import_checkpoint``
(its ``config.json`` and a step-0 checkpoint; its data config is whatever the import wrote,
by default the built-in synthetic data). The command reads ``DIR/config.json``, applies the
``--config.*`` overrides (``eval.*``, ``data.eval_size``, ``data.eval_split``,
``data.source`` ...), restores the newest checkpoint and evaluates it with the evaluator
the training loop runs (:func:`mmtx.train.evaluate_checkpoint.evaluate_checkpoint`; the
training loop is not entered), so the metrics are the loop's (``accuracy``,
``<a>_to_<b>_recall@k``, ``<m>_zero_shot_top<k>`` with ``config.eval.zero_shot``, retrieval
over every caption with ``config.eval.all_captions``) and land where the loop writes them:
``DIR/summary.json`` (``eval``), ``DIR/evals.json`` (by step) and TensorBoard (``eval/*``
at the checkpoint's step). ``config.json`` is rewritten with the overrides, as a rerun of
training with them would.

Exits 0 when done; 1, with one ``error: ...`` line on stderr, for a missing workdir, one
without ``config.json`` or a checkpoint, one in use by another run, or a checkpoint that does
not fit the config; 2 for a bad flag, an unknown config field or a bad value.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import ml_collections
from absl import flags, logging
from ml_collections import config_flags

from mmtx import config as config_lib
from mmtx.launch import answer_help


class UsageError(Exception):
    """A bad flag, config field or value (exit 2); the message is one line."""


class EvaluateError(Exception):
    """A workdir that cannot be evaluated (exit 1); the message is one line."""


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def find_workdir(argv: Sequence[str]) -> str | None:
    """The ``--workdir`` value in ``argv`` (``--workdir=DIR`` or ``--workdir DIR``; the last
    one wins), or None."""
    found = None
    for i, arg in enumerate(argv):
        if arg.startswith(("--workdir=", "-workdir=")):
            found = arg.split("=", 1)[1]
        elif arg in ("--workdir", "-workdir") and i + 1 < len(argv):
            found = argv[i + 1]
    return found


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """``workdir/config.json`` merged onto :func:`mmtx.config.default_config` (fields added
    since it was written take their defaults). Raises :class:`EvaluateError`."""
    if not os.path.isdir(workdir):
        raise EvaluateError(f"--workdir: no such directory: {workdir}")
    path = os.path.join(workdir, "config.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise EvaluateError(
            f"{workdir} has no config.json: not the workdir of a training run or of "
            "python -m mmtx.import_checkpoint"
        ) from None
    except (OSError, ValueError) as error:
        raise EvaluateError(f"cannot read {path}: {_one_line(str(error))}") from error
    try:
        return config_lib.merge_overrides(config_lib.default_config(), saved)
    except (KeyError, TypeError, ValueError) as error:
        raise EvaluateError(f"{path}: {_one_line(str(error))}") from error


def _unknown_field(error: BaseException) -> str:
    """ConfigDict's error for ``--config.eval.batchsize`` (the key, then a hint) -> one line."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]  # AttributeError(KeyError(message))
    text = str(error.args[0]) if error.args else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    key = lines[0].strip("'\"") if lines else "?"
    hint = f"; {lines[1][0].lower()}{lines[1][1:]}" if len(lines) > 1 else ""
    return f"unknown config field {key!r}{hint}"


def parse_flags(
    argv: Sequence[str], config: ml_collections.ConfigDict
) -> tuple[flags.FlagValues, list[str]]:
    """Parses ``argv`` (``argv[0]`` is the program) into a fresh ``FlagValues`` holding
    ``--workdir`` and ``--config`` (``config`` with the ``--config.*`` overrides applied);
    returns it and the arguments that are not flags. Raises :class:`UsageError`."""
    values = flags.FlagValues()
    flags.DEFINE_string(
        "workdir", None, "Workdir of a trained or imported model.", flag_values=values
    )
    try:
        config_flags.DEFINE_config_dict(
            "config",
            config,
            "The workdir's config; override fields with --config.eval.batch_size=128 etc.",
            flag_values=values,
            sys_argv=list(argv),
        )
        rest = values(list(argv))
    except (AttributeError, KeyError) as error:  # an unknown field, found while defining
        raise UsageError(_unknown_field(error)) from error
    except (flags.Error, TypeError, ValueError) as error:
        raise UsageError(_one_line(str(error))) from error
    return values, rest[1:]


def evaluate_workdir(workdir: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Evaluates ``workdir``'s newest checkpoint with ``config`` (validated here) and writes
    the metrics (:func:`mmtx.train.evaluate_checkpoint.evaluate_checkpoint`); returns the
    summary. Raises :class:`UsageError` for a config that does not validate and
    :class:`EvaluateError` for a workdir that cannot be evaluated."""
    # The training layer is imported here: this entry point runs it (as mmtx.main does).
    from mmtx.train.checkpoint import CheckpointMismatchError
    from mmtx.train.evaluate_checkpoint import evaluate_checkpoint
    from mmtx.train.workdir import WorkdirError

    try:
        config = config_lib.validate(config_lib.split_comma_lists(config))
    except (TypeError, ValueError) as error:
        raise UsageError(_one_line(str(error))) from error
    try:
        return evaluate_checkpoint(config, workdir)
    except (WorkdirError, CheckpointMismatchError) as error:
        raise EvaluateError(_one_line(str(error))) from error
    except FileNotFoundError as error:
        raise EvaluateError(_one_line(str(error))) from error
    except OSError as error:
        raise EvaluateError(f"{type(error).__name__}: {_one_line(str(error))}") from error


def main(argv: Sequence[str], stderr: TextIO | None = None) -> int:
    """Runs the command on ``argv`` (``sys.argv``); returns the exit status: 0 when done, 1 or
    2 after printing one ``error: ...`` line to ``stderr`` (default ``sys.stderr``). Progress
    and the metrics go to stdout."""
    stderr = stderr or sys.stderr
    if answer_help(argv, __doc__):
        return 0
    try:
        workdir = find_workdir(argv[1:])
        if not workdir:
            raise UsageError("--workdir=DIR is required (a trained or imported model's workdir)")
        config = load_workdir_config(workdir)
        _, extra = parse_flags(argv, config)
        if extra:
            raise UsageError(f"unexpected arguments: {extra}")
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()  # absl logging and grain read absl's global flags
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # orbax's INFO lines, as mmtx.main
        from mmtx.train import distributed

        distributed.initialize()  # a multi-host TPU VM, Slurm or MPI job: run it on every host
        summary = evaluate_workdir(workdir, config)
    except UsageError as error:
        print(f"error: {error}", file=stderr, flush=True)
        return 2
    except EvaluateError as error:
        print(f"error: {error}", file=stderr, flush=True)
        return 1
    print(f"evaluated step {summary['step']}: {json.dumps(summary['eval'])}")
    return 0
