"""Train and evaluate: ``python -m mmtx.main --config=configs/base.py --workdir=DIR``.

Any config field can be overridden on the command line, e.g.
``--config.train.steps=100 --config.fusion.type=gated``; ``--config=configs/base.py:tiny``
passes ``tiny`` to the file's ``get_config``. Rerunning with the same ``--workdir`` resumes;
rerunning a finished run reports its recorded evaluation, and ``--eval_only`` evaluates the
newest checkpoint again without training.
Exits 0 when done or when stopped by SIGTERM or a first Ctrl-C (a checkpoint is saved first);
1 on a non-finite loss under ``config.train.nonfinite="stop"``, a workdir that is not mmtx's,
not writable or in use by another run, or a checkpoint made by a different config; 130 on a
second Ctrl-C (exits at once, the last committed checkpoint kept).

``--config`` also takes a JSON file of overrides (as :func:`mmtx.create_model` does), and a
tuple field takes a comma list (``--config.model.modalities=text,image``). A mistyped flag
or field is one ``error:`` line (exit 2). Progress goes to stdout; library logs (orbax, JAX)
show only warnings unless ``--verbosity=0`` (absl's flag) asks for INFO.

On a CPU host it first restarts itself with glibc malloc settings that let XLA reuse its
buffers (:mod:`mmtx.launch`; ``MMTX_HOST_MALLOC=default`` turns that off).
"""

from __future__ import annotations

if __name__ == "__main__":
    # Restart before the heavy imports below (jax, flax, the model): the restarted process
    # does them once, so a mistyped flag is reported after one import, not two.
    from mmtx import launch as _launch

    _launch.skip_absent_tpu()  # libtpu for mmtx.compile, on a host without TPU chips
    _launch.restart_with_tuned_malloc()

import logging as pylogging
import os
import sys
import traceback
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from mmtx import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).")
_WORKDIR = flags.DEFINE_string("workdir", "./workdir", "Directory for checkpoints and logs.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0, for multi-process runs without "
    "cluster auto-detection (TPU VMs, Slurm and MPI are detected).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, from 0.")
_EVAL_ONLY = flags.DEFINE_bool(
    "eval_only",
    False,
    "Evaluate the workdir's newest checkpoint (again) without training; updates "
    "summary.json's eval, evals.json and TensorBoard.",
)
flags.mark_flags_as_required(["config"])


class _ConfigFileParser(flags.ArgumentParser):
    """``--config``'s parser, whatever spelling gave the value (``--config=F``, ``--config F``,
    a flagfile): a path ending in ``.py`` (any case, with or without ``:arg``) goes to
    ml_collections' own parser, which executes it; any other file is read as JSON
    (:func:`mmtx.config.load_config`) and is never executed."""

    def __init__(self, python_parser: flags.ArgumentParser):
        self.python_parser = python_parser

    def parse(self, argument: str) -> ml_collections.ConfigDict:
        if config_lib.is_python_config(argument):
            return self.python_parser.parse(argument)
        try:
            return config_lib.load_config(argument)
        except (OSError, TypeError, ValueError) as error:
            # Marked as ours, so that parse_flags drops absl's "flag --config=PATH: " prefix.
            raise config_lib.ConfigFileError(str(error)) from None

    def flag_type(self) -> str:
        return self.python_parser.flag_type()


flags.FLAGS[_CONFIG.name].parser = _ConfigFileParser(flags.FLAGS[_CONFIG.name].parser)


def _argv_config(argv: list[str]) -> str:
    """The ``--config`` value given on the command line (for messages)."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    return values[-1] if values else "--config"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text


def _innermost_message(text: str) -> str:
    """A config file's error that ml_collections wrapped with its traceback -> the error's
    own message (the traceback's last line, without the exception's type)."""
    if "Traceback (most recent call last)" not in text:
        return text
    last = _last_line(text)
    kind, colon, message = last.partition(": ")
    return message if colon and kind.replace(".", "").isidentifier() else last


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _unknown_field(error: KeyError, argv: list[str]) -> str:
    """``--config.train.step=5`` -> ``unknown config field --config.train.step; did you mean
    "steps" instead of "step"?`` (ConfigDict's KeyError holds the key, then its hint)."""
    lines = [line.strip() for line in str(error.args[0]).splitlines() if line.strip()]
    key = lines[0].strip("'\"") if lines else "?"
    flag = next(
        (
            a.split("=")[0]
            for a in argv
            if a.startswith("--config.") and a.split("=")[0].endswith(f".{key}")
        ),
        key,
    )
    hint = f"; {lines[1][0].lower()}{lines[1][1:]}" if len(lines) > 1 else ""
    return f"unknown config field {flag}{hint}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag, config file or config field reported as one
    ``error:`` line naming it (exit 2) instead of a chained traceback."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as error:
        inner = error.args[0] if error.args else error
        if isinstance(error, config_lib.UnknownKeyError):
            message = f"{_argv_config(argv)}: {error}"
        elif isinstance(inner, config_lib.UnknownKeyError):
            message = str(inner)
        elif isinstance(error, KeyError) or isinstance(inner, KeyError):
            message = _unknown_field(inner if isinstance(inner, KeyError) else error, argv)
        else:
            message = _one_line(str(error))
    except (flags.Error, TypeError, ValueError, OSError) as error:
        if isinstance(error.__context__, config_lib.ConfigFileError):
            error = error.__context__  # without absl's "flag --config=PATH: " (it names PATH)
        message = _one_line(_innermost_message(str(error)))
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _from_orbax(record: pylogging.LogRecord) -> bool:
    return f"{os.sep}orbax{os.sep}" in record.pathname


def _quiet_library_logs() -> None:
    """Library INFO logs (orbax writes ~55 lines per save) only with an explicit
    ``--verbosity``; progress lines are printed to stdout by the loop. Without it orbax's own
    error logs are dropped too: they are tracebacks from its writer threads, and every save
    error reaches the loop, which reports it as one ``error:`` line."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
        logging.get_absl_logger().addFilter(lambda record: not _from_orbax(record))
        sys.excepthook = _without_closed_loop_noise(sys.excepthook)
        sys.unraisablehook = _unraisable_without_closed_loop_noise(sys.unraisablehook)


def _is_closed_loop_noise(kind: Any, value: Any, tb: Any) -> bool:
    """``RuntimeError: Event loop is closed`` raised inside asyncio alone: what tensorstore
    reports when its writes complete after orbax closed the event loop of a failed save (which
    mmtx reports as one line)."""
    frames = traceback.extract_tb(tb)
    return (
        kind is RuntimeError
        and str(value) == "Event loop is closed"
        and bool(frames)
        and all(f"{os.sep}asyncio{os.sep}" in frame.filename for frame in frames)
    )


def _without_closed_loop_noise(hook: Any) -> Any:
    """``sys.excepthook`` without :func:`_is_closed_loop_noise`."""

    def filtered(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if not _is_closed_loop_noise(kind, value, tb):
            hook(kind, value, tb)

    return filtered


def _unraisable_without_closed_loop_noise(hook: Any) -> Any:
    """``sys.unraisablehook`` without :func:`_is_closed_loop_noise` (tensorstore reports an
    error in a callback it runs from C with ``PyErr_WriteUnraisable``)."""

    def filtered(unraisable: Any) -> None:
        if not _is_closed_loop_noise(
            unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback
        ):
            hook(unraisable)

    return filtered


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # The training side (jax, flax, the model) is imported once the flags and the config's
    # fields have parsed (mmtx.config imports no jax), so a mistyped flag or field is
    # reported without it.
    from mmtx.data.bad_examples import BadDataError
    from mmtx.train import distributed
    from mmtx.train.checkpoint import CheckpointMismatchError, CheckpointSaveError
    from mmtx.train.evaluate_checkpoint import evaluate_checkpoint
    from mmtx.train.loop import NonFiniteError, train_and_evaluate
    from mmtx.train.workdir import WorkdirError

    _quiet_library_logs()
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    try:
        config = config_lib.split_comma_lists(_CONFIG.value)
    except OSError as error:  # config_flags defers a file's load error to here
        cause = error.__cause__ or error
        print(f"error: cannot load --config: {_last_line(str(cause))}", file=sys.stderr)
        sys.exit(2)
    try:
        if _EVAL_ONLY.value:
            summary = evaluate_checkpoint(config, _WORKDIR.value)
        else:
            summary = train_and_evaluate(config, _WORKDIR.value)
    except (NonFiniteError, WorkdirError, CheckpointMismatchError, BadDataError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    except CheckpointSaveError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # At once: an abandoned save's writer threads would hold up interpreter exit.
        os._exit(1)
    except ValueError as error:
        if not str(error).startswith("config."):
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    except OSError as error:  # a read that failed: the cause, not orbax's logs
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: exiting without saving", file=sys.stderr, flush=True)
        # At once: don't wait for an async save or worker processes at interpreter exit.
        os._exit(130)
    if summary["preempted"]:
        print(f"preempted: checkpoint saved at step {summary['step']}; rerun to resume")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
