"""Shared helpers for the research studies in ``experiments/``.

The studies (attention kernels, fusion modules) train small models on the built-in synthetic
dataset with the same budget and compare them. This module holds what they share:

* :func:`base_study_config`: the small, fast config every study run starts from;
* :func:`train`: one training run (``mmtx.train.loop.train_and_evaluate``) -> its summary;
* :func:`evaluate_subsets`: a trained run re-evaluated with only some modalities present
  (:func:`load_trained_model` loads the run);
* :func:`flops_per_example` / :func:`train_step_flops_per_example`: XLA's FLOP count of the
  jitted forward pass / train step, per example; :func:`train_steps_per_second` (the train
  step alone, timed); :func:`count_params`;
* :func:`write_markdown_table`, :func:`bar_chart` and :func:`machine_description` for reports.

Import it from a script in ``experiments/`` as ``import common`` (the script's directory is on
``sys.path``) or, from the repository root, as ``experiments.common``.
"""

from __future__ import annotations

import copy
import glob
import json
import math
import os
import platform
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmtx import Model, output_paths
from mmtx import config as config_lib
from mmtx.data.pipeline import create_dataset
from mmtx.models import dummy_batch
from mmtx.train import mesh as mesh_lib
from mmtx.train.build import Run, build
from mmtx.train.evaluate import evaluate
from mmtx.train.loop import train_and_evaluate
from mmtx.train.step import make_eval_step

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(REPO_ROOT, "configs", "base.py")

# A column of a markdown table: (row key, header, format spec such as ".3f" or "," or "").
Column = tuple[str, str, str]


def base_study_config(
    steps: int = 200,
    *,
    variant: str = "small",
    width: int | None = 64,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    warmup_steps: int | None = None,
    eval_size: int = 512,
    eval_batch_size: int = 256,
    seed: int = 0,
) -> ml_collections.ConfigDict:
    """The config every study run starts from: ``configs/base.py:<variant>``, made fast.

    ``configs/base.py`` gives the three-modality model with a conv image stem, sin-cos image
    positions and auxiliary attribute heads. This narrows every tower and the fusion to
    ``width`` (the ``small`` depths and 4 heads; 0.39 M params instead of 1.38 M), shortens the
    schedule to ``steps`` steps at ``batch_size``, and evaluates and checkpoints once, at the
    last step (so the final checkpoint always exists for :func:`evaluate_subsets`), on
    ``eval_size`` held-out examples.

    With the defaults (width 64, 200 steps at batch 32) a run reaches held-out accuracy about
    0.7 and recall@1 about 0.2 in each direction, in about 1.5-4 minutes on this project's
    shared 2-core CPU (compile and evaluation included; see
    ``docs/research/attention_variants.md``). The ``small`` width (128) at 150 steps took
    about 1.5 times as long and reached accuracy 0.5.

    Args:
      steps: optimizer steps (the whole cosine schedule).
      variant: size variant of :data:`mmtx.config.VARIANTS` (``tiny`` for tests).
      width: token width of every tower and the fusion, with ``mlp_dim = 2 * width``; the
        variant's heads are kept (``width`` must divide by them). ``None`` keeps the
        variant's widths.
      batch_size: global train batch.
      learning_rate: peak of the warmup + cosine schedule.
      warmup_steps: linear warmup; default ``max(1, steps // 10)``.
      eval_size: synthetic held-out examples evaluated at the end.
      eval_batch_size: eval batch (the last partial batch is padded).
      seed: seeds the params (``train.seed``) and the data (``data.seed``).

    Returns:
      A validated ``ConfigDict``; studies change its model / fusion / attention fields.
    """
    config = config_lib.load_config(f"{BASE_CONFIG}:{variant}")
    if width is not None:
        for tower in (*(config.model[m] for m in config_lib.MODALITIES), config.fusion):
            tower.width, tower.mlp_dim = width, 2 * width
    config.train.steps = steps
    config.train.batch_size = batch_size
    config.train.learning_rate = learning_rate
    config.train.warmup_steps = max(1, steps // 10) if warmup_steps is None else warmup_steps
    config.train.log_every = max(1, min(50, steps // 5))
    config.train.eval_every = steps
    config.train.checkpoint_every = steps
    config.train.keep_checkpoints = 1
    config.train.seed = seed
    config.data.seed = seed
    config.data.eval_size = eval_size
    config.eval.batch_size = min(eval_batch_size, eval_size)
    return config_lib.validate(config)


def study_base_config(
    args: Any, base_config: ml_collections.ConfigDict | None = None
) -> ml_collections.ConfigDict:
    """A study's starting config: :func:`base_study_config` from the parsed flags
    (``steps``, ``variant``, ``width``, ``batch_size``, ``eval_size``, ``seed``), or a copy of
    ``base_config`` when given, in which case those flags are set from it (so the report
    describes what ran)."""
    if base_config is None:
        return base_study_config(
            args.steps,
            variant=args.variant,
            width=args.width or None,
            batch_size=args.batch_size,
            eval_size=args.eval_size,
            seed=args.seed,
        )
    base = copy.deepcopy(base_config)
    args.steps, args.batch_size = base.train.steps, base.train.batch_size
    args.eval_size, args.seed, args.variant = base.data.eval_size, base.train.seed, base.variant
    return base


def set_attention(
    config: ml_collections.ConfigDict, kernel: str, *, fusion: bool = True
) -> ml_collections.ConfigDict:
    """Sets the attention kernel of every tower (and of the fusion when ``fusion``), in place.

    ``kernel`` is ``dense``, ``local`` or ``linear`` (its options live in
    ``config.attention.<kernel>``). Returns ``config``.
    """
    for modality in config.model.modalities:
        config.model[modality].attention = kernel
    if fusion:
        config.fusion.attention = kernel
    return config


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint); returns the summary.

    The summary is ``train_and_evaluate``'s: ``step`` (int), ``num_params`` (int),
    ``train_seconds_this_run`` and ``steps_per_second`` (floats; ``steps_per_second`` is None
    when the run had nothing left to train), ``steps_this_run`` (int) and ``eval``: metric name ->
    float (``accuracy``, ``<query>_to_<gallery>_recall@{1,5}``, ``classification``,
    ``num_examples``); plus ``steady_steps_per_second`` (:func:`steady_steps_per_second`).
    ``steps_per_second`` is over the loop's whole wall time, so it includes compiling the
    train step and the evaluations; ``steady_steps_per_second`` excludes both.
    Leaves ``workdir/config.json``, ``summary.json``, event files and ``checkpoints/``.
    """
    summary = train_and_evaluate(copy.deepcopy(config), os.fspath(workdir))
    summary["steady_steps_per_second"] = steady_steps_per_second(workdir)
    return summary


def steady_steps_per_second(workdir: str | os.PathLike) -> float | None:
    """Training steps/s after the first logging interval, from the run's event files.

    The loop writes each interval's train metrics when it logs (every ``train.log_every``
    steps), so the wall times of the ``train/loss`` events at step ``log_every`` and at the
    last step bound the steady-state steps: the train step's compile (in the first interval)
    and the evaluations (after the writes) are left out; input and host overhead stay in.
    None when the run has no event after its first interval.
    """
    from tensorboardX.proto import event_pb2

    log_every = int(load_run_config(workdir).train.log_every)
    times: dict[int, float] = {}
    for path in sorted(glob.glob(os.path.join(os.fspath(workdir), "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            if any(value.tag == "train/loss" for value in event.summary.value):
                times[int(event.step)] = float(event.wall_time)
    last = max(times, default=0)
    if log_every not in times or last <= log_every or times[last] <= times[log_every]:
        return None
    return (last - log_every) / (times[last] - times[log_every])


def subset_name(subset: Sequence[str]) -> str:
    """``("text", "image")`` -> ``"text+image"``."""
    return "+".join(subset)


def drop_modalities(batch: Mapping[str, np.ndarray], keep: Sequence[str]) -> dict[str, np.ndarray]:
    """``batch`` without the model inputs of modalities not in ``keep``.

    Dropping ``text`` also drops ``text_mask``; labels and attribute columns are kept.
    """
    dropped = {m for m in config_lib.MODALITIES if m not in keep}
    if "text" in dropped:
        dropped.add("text_mask")
    return {k: v for k, v in batch.items() if k not in dropped}


def load_run_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The validated config of a training run, from ``workdir/config.json``."""
    with open(os.path.join(os.fspath(workdir), "config.json")) as f:
        saved = json.load(f)
    return config_lib.validate(config_lib.merge_overrides(config_lib.default_config(), saved))


def load_trained_model(workdir: str | os.PathLike, step: int | None = None) -> Model:
    """The :class:`mmtx.Model` of a training run at ``step`` (default: the latest):
    :meth:`mmtx.Model.from_checkpoint`."""
    return Model.from_checkpoint(workdir, step)


def evaluate_subsets(
    workdir: str | os.PathLike,
    subsets: Iterable[Sequence[str]],
    *,
    step: int | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluates a trained run with only some modalities present in each batch.

    Loads ``workdir/config.json`` and the params checkpointed at ``step`` (default: the
    latest) with :func:`load_trained_model`, builds the run's eval split
    (``create_dataset(..., train=False)``, read once and kept in memory), and for each subset
    removes the other modalities' inputs from every batch before running a jitted eval step
    through :func:`mmtx.train.evaluate.evaluate`. Batches and params are placed on the run's
    device mesh (``config.mesh``) as the training loop places them, so this works on one
    device or many (single process).

    Args:
      workdir: a training run's workdir.
      subsets: modality tuples, e.g. ``[("text", "image", "audio"), ("image", "audio")]``;
        each must be a non-empty subset of the run's ``config.model.modalities``.
      step: checkpoint step; default the latest.

    Returns:
      ``subset_name(subset)`` (e.g. ``"text+image"``) -> that subset's metrics, floats:
      ``accuracy`` and ``classification`` (the fused classifier), ``num_examples``, and
      ``<query>_to_<gallery>_recall@{1,5}`` for the retrieval directions whose two modalities
      are both in the subset.
    """
    subsets = [tuple(s) for s in subsets]
    model = load_trained_model(workdir, step=step)
    config = model.config
    for subset in subsets:
        unknown = [m for m in subset if m not in config.model.modalities]
        if not subset or unknown:
            raise ValueError(
                f"subset {subset} must be a non-empty subset of the run's modalities "
                f"{tuple(config.model.modalities)}"
            )
    if jax.process_count() != 1:
        raise NotImplementedError("evaluate_subsets runs in a single process")

    mesh = mesh_lib.create_mesh(config.mesh)
    data_sharding = mesh_lib.batch_sharding(mesh)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    params = jax.device_put(model.params, replicated)
    batch_size = config.eval.batch_size

    def to_global(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(data_sharding, x), batch
        )

    eval_data = list(
        create_dataset(config, "eval", model.tokenizer, batch_size=batch_size, train=False)
    )
    eval_step = jax.jit(make_eval_step(model.module))
    results: dict[str, dict[str, float]] = {}
    for subset in subsets:
        batches = (drop_modalities(batch, subset) for batch in eval_data)
        metrics = evaluate(
            eval_step, params, batches, local_batch_size=batch_size, to_global=to_global
        )
        results[subset_name(subset)] = {k: float(v) for k, v in metrics.items()}
    return results


def _unrolled_run(config: ml_collections.ConfigDict) -> Run:
    """:func:`mmtx.train.build.build` of ``config`` with its layers unrolled
    (``scan_layers=False``): XLA's cost analysis of a scan's while loop need not count every
    iteration, the unrolled graph is counted exactly. Nothing is computed."""
    config = copy.deepcopy(config)
    config.model.scan_layers = False
    return build(config_lib.validate(config))


def _flops(compiled: Any) -> float:
    """The ``flops`` entry of a compiled computation's cost analysis (a dict in jax 0.10;
    older versions return a list with one dict per device program)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, Sequence):
        analysis = analysis[0] if analysis else {}
    if not analysis or "flops" not in analysis:
        raise RuntimeError(f"XLA's cost analysis has no 'flops' entry: {analysis!r}")
    return float(analysis["flops"])


def flops_per_example(config: ml_collections.ConfigDict, batch_size: int = 8) -> float:
    """Forward-pass FLOPs per example of ``config``'s model on a full batch, from XLA.

    Lowers and compiles ``module.apply(params, batch, train=False)`` (unrolled layers; see
    :func:`_unrolled_run`) on a dummy batch of every configured modality
    (``text`` int32 ``[B, T]``, ``text_mask`` bool ``[B, T]``, ``image`` float32
    ``[B, H, W, C]``, ``audio`` float32 ``[B, S]``; ``B = batch_size``) and divides the
    compiled program's ``cost_analysis()["flops"]`` by ``B``. Counts what XLA executes on this
    backend (the log-mel frontend included); a multiply-add counts as 2 FLOPs.
    """
    run = _unrolled_run(config)
    batch = jax.eval_shape(lambda: dummy_batch(config, batch_size))

    def forward(params: Any, batch: dict[str, jax.Array]) -> dict[str, Any]:
        return run.module.apply({"params": params}, batch, train=False)

    compiled = jax.jit(forward).lower(run.abstract_state.params, batch).compile()
    return _flops(compiled) / batch_size


def train_step_flops_per_example(config: ml_collections.ConfigDict, batch_size: int = 8) -> float:
    """FLOPs per example of one train step (forward, backward, loss and AdamW update), from XLA.

    As :func:`flops_per_example`, for the run's jitted train step (:func:`mmtx.train.build.build`)
    on a dummy batch that also carries ``label`` and the attribute labels (int32 ``[B]``). The
    optimizer update is per step, not per example, so it is divided by ``batch_size`` like the
    rest.
    """
    run = _unrolled_run(config)
    batch = _abstract_train_batch(config, batch_size)
    compiled = run.train_step.lower(run.abstract_state, batch).compile()
    return _flops(compiled) / batch_size


def _abstract_train_batch(
    config: ml_collections.ConfigDict, batch_size: int
) -> dict[str, jax.ShapeDtypeStruct]:
    """A dummy batch of every configured modality plus ``label`` and the attribute labels
    (int32 ``[B]``), as ``ShapeDtypeStruct``s."""

    def make_batch() -> dict[str, jax.Array]:
        batch = dummy_batch(config, batch_size)
        for name in ("label", *config.model.attribute_classes.keys()):
            batch[name] = jnp.zeros((batch_size,), jnp.int32)
        return batch

    return jax.eval_shape(make_batch)


def train_steps_per_second(
    config: ml_collections.ConfigDict, *, batch_size: int | None = None, steps: int = 5
) -> float:
    """Steps/s of ``config``'s jitted train step alone, on a fixed dummy batch.

    Compiles the step (layers as ``config.model.scan_layers`` says) at ``batch_size``
    (default ``config.train.batch_size``), runs it once to warm up, then times ``steps``
    steps. No input pipeline, logging or evaluation: a cleaner speed comparison than the
    training loop's own figure, though still subject to other load on the machine. Params
    are zeros, which does not change the work done.
    """
    batch_size = config.train.batch_size if batch_size is None else batch_size
    run = build(config)
    zeros = lambda s: jnp.zeros(s.shape, s.dtype)
    state = jax.device_put(jax.tree.map(zeros, run.abstract_state), run.state_shardings)
    batch = jax.tree.map(zeros, _abstract_train_batch(config, batch_size))
    jitted = run.train_step
    state, metrics = jitted(state, batch)
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for _ in range(steps):
        state, metrics = jitted(state, batch)
    jax.block_until_ready((state, metrics))
    return steps / (time.perf_counter() - started)


def count_params(params: Any) -> int:
    """Total number of scalars in a params pytree (arrays or ``ShapeDtypeStruct``s)."""
    return int(sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params)))


def format_value(value: Any, spec: str) -> str:
    """``format(value, spec)``; ``None`` / NaN render as ``-``, strings as themselves."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """A GitHub markdown table: one line per row, cells ``format_value(row.get(key), fmt)``.

    Columns whose format is numeric (not ``""``) are right-aligned.
    """
    headers = [header for _, header, _ in columns]
    align = ["---:" if fmt else ":---" for _, _, fmt in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        cells = [format_value(row.get(key), fmt) for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    path: str | os.PathLike,
    *,
    header: str = "",
    footer: str = "",
) -> str:
    """Writes ``header``, the table of :func:`markdown_table` and ``footer`` to ``path``.

    Args:
      rows: one mapping per table row; a missing key renders as ``-``.
      columns: ``(key, header, format)`` per column, e.g. ``("accuracy", "acc", ".3f")``;
        format ``""`` means ``str``.
      path: output file; its directory is created.
      header: markdown put before the table (e.g. a title and the command that made it).
      footer: markdown put after the table.

    Returns:
      The table alone (for printing).
    """
    table = markdown_table(rows, columns)
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    parts = [p.strip("\n") + "\n" for p in (header, table, footer) if p]
    output_paths.write_text(path, "\n".join(parts))
    return table


def bar_chart(
    groups: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike,
    title: str,
    ylabel: str,
    *,
    ax: Any = None,
    ylim: tuple[float, float] | None = None,
) -> None:
    """Grouped bar chart: one group of bars per key of ``groups``, one bar per inner key.

    ``groups = {"dense": {"accuracy": 0.9, "t2i R@1": 0.5}, "local": {...}}`` draws a group per
    kernel with a coloured bar per metric (the legend lists the metrics; a metric missing from
    a group is left out). Each bar is labelled with its value. Writes a PNG to ``path``
    (matplotlib Agg) unless ``ax`` is given, in which case it draws into that axes and the
    caller saves the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    series = list(dict.fromkeys(k for values in groups.values() for k in values))
    own_figure = ax is None
    if own_figure:
        fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names) * max(1, len(series)) / 2), 4))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(names))
    for i, name in enumerate(series):
        heights = [groups[g].get(name, np.nan) for g in names]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=name)
        labels = ["" if np.isnan(h) else f"{h:.3g}" for h in heights]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
    ax.set_xticks(x, names)
    ax.set(title=title, ylabel=ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    if own_figure:
        fig.tight_layout()
        directory = os.path.dirname(os.fspath(path))
        if directory:
            os.makedirs(directory, exist_ok=True)
        save_png(fig, path)
        plt.close(fig)


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 110) -> None:
    """Saves a matplotlib figure as a PNG, whole (:func:`mmtx.output_paths.atomic_output`)."""
    with output_paths.atomic_output(path) as temporary:
        fig.savefig(temporary, dpi=dpi, format="png")


def machine_description() -> str:
    """One line naming the CPU, its cores and JAX's backend/devices, for report headers."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    devices = jax.devices()
    return (
        f"{cpu}, {os.cpu_count()} cores; jax {jax.__version__} on {jax.default_backend()} "
        f"({len(devices)} x {devices[0].device_kind})"
    )


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Runs ``fn()``; returns ``(result, wall seconds)``."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started
