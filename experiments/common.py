"""What every experiment shares: flags, the sweep, the summary files, the table and plots.

An experiment module (one per task) describes itself with an `Experiment` and
calls `main(experiment)`; everything else happens here:

    python -m experiments.copy_task --models=lstm,rnn --lengths=20,50 --seeds=0,1

A sweep is the cross product of the flag lists. Each (model, length) pair is one
compiled program that trains every (seed, learning rate) together with `vmap`.

A model is a registered family (`seqjax.registry`), with the family's own
options after colons: `--models=rnn:nonlinearity=relu,lstm:forget_bias=0.0,transformer:num_heads=2`
(values are Python literals, else strings). `--num_heads` and `--positional`
set those options for every family that takes them. A user's own family comes
from `--user_module=path/to/file.py` (see `experiments.user_modules`).

Outputs in --workdir:
  config.json                 the resolved configuration, versions and backend;
                              `--config=.../config.json` reruns it
  summary.json, summary.csv   one row per (model, length, seed, learning rate)
  results.md                  the Markdown table printed at the end
  learning_curves.png         evaluation loss against steps, with the baseline
  accuracy_vs_length.png      final accuracy against length, per model
  <model>_len<length>/        metrics.jsonl and checkpoints of that group
"""

from __future__ import annotations

import ast
import bisect
import contextlib
import csv
import dataclasses
import itertools
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging
from jax.sharding import Mesh

from experiments import run_config, statistics, user_modules
from seqjax import registry
from seqjax.models import SequenceModel, count_params
from seqjax.models.transformer import Positional
from seqjax.training import (
    COMPUTE_DTYPES,
    NonFiniteError,
    OnNonFinite,
    Optimizer,
    TrainConfig,
    checkpoints,
    distributed,
    make_evaluate,
    num_windows,
    train,
)
from seqjax.validation import check_positive_int, check_real

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "models",
    ["rnn", "lstm", "gru", "transformer"],
    "Models: registered families (rnn, lstm, gru, transformer, and any from --user_module), each with "
    "optional family options after colons, e.g. rnn:nonlinearity=relu.",
)
flags.DEFINE_list(
    "lengths", None, "Task lengths (the delay T for the copy task, the sequence length elsewhere)."
)
flags.DEFINE_list(
    "task_options",
    [],
    "Fields of the experiment's task to change, key=value (Python literals), e.g. memory=10 (copy task).",
)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; all of them train together in one program.")
flags.DEFINE_list("learning_rates", ["3e-3"], "Peak learning rates; trained together with the seeds.")
flags.DEFINE_list(
    "model_learning_rates",
    None,
    "Learning rates of particular models instead of --learning_rates, model=rate/rate, e.g. "
    "transformer=3e-3/1e-2 (default: the experiment's, unless --learning_rates is given).",
)
flags.DEFINE_integer("steps", None, "Training steps.")
flags.DEFINE_integer("batch_size", 64, "Examples per step.")
flags.DEFINE_integer(
    "hidden_size",
    None,
    "Width of every model (the recurrent h; d_model of the Transformer); the experiment's default if unset.",
)
flags.DEFINE_integer("num_layers", 1, "Layers of every model (the experiment's default if unset).")
flags.DEFINE_integer("num_heads", 4, "Attention heads: the num_heads option of every family that has it.")
flags.DEFINE_enum(
    "positional", "rope", [p.value for p in Positional], "Positions: the option of every family that has it."
)
flags.DEFINE_boolean(
    "match_params",
    None,
    "Resize each model's width to --match_reference's parameter count (the experiment's default if unset).",
)
flags.DEFINE_boolean(
    "bidirectional",
    False,
    "Cell families read each sequence both ways (experiments with one output per sequence).",
)
flags.DEFINE_string("match_reference", "lstm", "The model whose parameter count --match_params matches.")
flags.DEFINE_list("eval_lengths", [], "Extra lengths to evaluate the trained models at (generalisation).")
flags.DEFINE_string("workdir", None, "Output directory; runs/<experiment> if unset.")
flags.DEFINE_integer("log_every", None, "Steps between metric lines (one compiled chunk).")
flags.DEFINE_integer("eval_every", None, "Steps between evaluations; a multiple of log_every.")
flags.DEFINE_integer("checkpoint_every", None, "Steps between checkpoints; a multiple of log_every (0: off).")
flags.DEFINE_boolean("resume", False, "Continue each group from its latest checkpoint in --workdir.")
flags.DEFINE_boolean(
    "early_stopping",
    True,
    "Freeze each run at the first evaluation where its validation accuracy reaches the experiment's "
    "solved threshold; a group stops once all its runs are frozen.",
)
flags.DEFINE_integer(
    "patience",
    None,
    "Also freeze a run after this many evaluations without a lower validation loss (unset: off).",
)
flags.DEFINE_enum("optimizer", "adam", [o.value for o in Optimizer], "Update rule (training.Optimizer).")
flags.DEFINE_float("clip_norm", 1.0, "Global gradient-norm clipping threshold (0: no clipping).")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (AdamW with adam).")
flags.DEFINE_integer("warmup_steps", None, "Linear warm-up steps (default: min(100, steps // 10)).")
flags.DEFINE_enum(
    "on_nonfinite",
    "stop",
    [o.value for o in OnNonFinite],
    "When a run's loss, gradient norm or weights stop being finite: stop (exit non-zero, keeping the last "
    "finite checkpoint), skip_run (mark it failed, train the others on) or continue.",
)
flags.DEFINE_integer(
    "tbptt",
    None,
    "Truncated BPTT: read each sequence in windows of this many steps, one update per window, "
    "the model's state carried (without gradient) between them and kept in checkpoints. Unset: off.",
)
flags.DEFINE_enum(
    "compute_dtype",
    "float32",
    list(COMPUTE_DTYPES),
    "Mixed precision: bfloat16 runs the model in bfloat16, with float32 master weights, optimiser and loss.",
)
flags.DEFINE_string("config", None, "A run's config.json: rerun it (flags given explicitly still apply).")
flags.DEFINE_integer(
    "run_devices", 1, "Devices that split the runs (seeds x learning rates); the others split each batch."
)
flags.DEFINE_boolean(
    "multi_process", False, "Join a multi-process job; unset coordinator flags are detected from the cluster."
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (implies --multi_process).")
flags.DEFINE_integer("num_processes", None, "Processes in the job (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")

# Options that a shared flag sets for every family whose factory takes them.
_SHARED_OPTIONS = ("num_heads", "positional")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One task's experiment.

    Args:
      name: the module name, and the default work directory.
      task: the training task (a `seqjax.tasks` instance).
      lengths: default lengths.
      steps: default training steps.
      solved_accuracy: evaluation accuracy at which a run counts as solved.
      variants: extra tasks, by name, to evaluate the trained models on (e.g. the
        sparse and dense flip-flop mixes).
      learning_rates: default peak learning rates.
      model_learning_rates: default rates of particular models, `"spec=rate/rate"`
        (see `--model_learning_rates`), e.g. a Transformer's lower ones.
      eval_lengths: default extra lengths to evaluate at (generalisation).
      eval_task: `train_length -> task` used at those lengths (default: the task),
        e.g. parity scored on strings longer than any seen in training.
      validate_beyond: validation (the curves, early stopping, the choice of rate)
        scores `eval_task` at the longest eval length, on the validation stream,
        instead of the training task: for experiments whose result is the
        generalisation, where a run exact on its training lengths may still be
        learning what carries over. Without eval lengths, the training task.
      num_layers: default depth of every model.
      hidden_size: default width of every model.
      x_axis: `(label, length -> value)`: what accuracy_vs_length.png plots
        accuracy against (the length if None), e.g. MQAR's number of pairs.
      per_sequence: one output per sequence (a classifier): cell families read out
        their last valid step (both directions' with `--bidirectional`), backbone
        families the mean over the valid steps (`SequenceModel.readout`).
      readout: the `SequenceModel.readout` of every family, in place of the one that
        `per_sequence` implies (a forecaster's causal Transformer reads its last step).
      make_model: `(settings, spec) -> model`, in place of a `SequenceModel` of the
        spec's family (an encoder-decoder); the model has `init`, `apply`,
        `hidden_size` and the task's `output_size`, `vocab_size`, `input_size`.
      match_params: the default of `--match_params`.
      prepare: `experiment -> experiment`, called once the flags are read: builds
        what depends on them (a dataset read from `--text_file`); its ValueErrors
        and ImportErrors are usage errors.
      flags: the experiment's own flags and their values (`(("text_file", path),)`),
        which config.json records and `--config` sets again.
    """

    name: str
    task: Any
    lengths: tuple[int, ...]
    steps: int
    solved_accuracy: float = 0.99
    variants: tuple[tuple[str, Any], ...] = ()
    learning_rates: tuple[float, ...] = (3e-3,)
    model_learning_rates: tuple[str, ...] = ()
    eval_lengths: tuple[int, ...] = ()
    eval_task: Callable[[int], Any] | None = None
    validate_beyond: bool = False
    num_layers: int = 1
    hidden_size: int = 64
    x_axis: tuple[str, Callable[[int], float]] | None = None
    per_sequence: bool = False
    readout: str | None = None
    make_model: Callable[[Settings, str], Any] | None = None
    match_params: bool = False
    prepare: Callable[[Experiment], Experiment] | None = None
    flags: tuple[tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class Settings:
    """A sweep, as the flags give it (each field is the flag of the same name, resolved)."""

    models: tuple[str, ...]
    lengths: tuple[int, ...]
    seeds: tuple[int, ...]
    learning_rates: tuple[float, ...]
    steps: int
    task_options: tuple[str, ...] = ()
    model_learning_rates: tuple[str, ...] = ()
    batch_size: int = 64
    hidden_size: int = 64
    num_layers: int = 1
    num_heads: int = 4
    positional: str = "rope"
    match_params: bool = False
    bidirectional: bool = False
    match_reference: str = "lstm"
    eval_lengths: tuple[int, ...] = ()
    workdir: str = "runs/experiment"
    log_every: int = 50
    eval_every: int = 250
    checkpoint_every: int = 500
    resume: bool = False
    early_stopping: bool = True
    patience: int | None = None
    optimizer: str = "adam"
    clip_norm: float = 1.0
    weight_decay: float = 0.0
    warmup_steps: int | None = None
    on_nonfinite: str = "stop"
    run_devices: int = 1
    tbptt: int | None = None
    compute_dtype: str = "float32"


def _parse(values: Sequence[str], kind: type, name: str) -> tuple:
    try:
        return tuple(kind(v) for v in values)
    except ValueError:
        raise app.UsageError(
            f"--{name} must be a comma list of {kind.__name__}s; got {','.join(values)}"
        ) from None


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_model(spec: str) -> tuple[str, dict[str, Any]]:
    """`"family:key=value:..."` -> `(family, options)`; values are Python literals, else strings."""
    name, *pairs = spec.split(":")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(
                f"model {spec!r}: options follow the family as key=value, e.g. lstm:forget_bias=0.0"
            )
        options[key] = _literal(value)
    return name, options


def model_options(settings: Settings, spec: str) -> tuple[str, dict[str, Any]]:
    """The family of `spec` and its options: the spec's own, then the shared flags'
    (--num_heads, --positional) for a family whose factory names them."""
    name, options = parse_model(spec)
    family = registry.get(name)
    for option in _SHARED_OPTIONS:
        if option not in options and option in family.option_names():
            options[option] = getattr(settings, option)
    return name, options


def label(spec: str) -> str:
    """A model's name in paths: the spec with its colons as underscores."""
    return spec.replace(":", "_")


def with_task_options(experiment: Experiment, options: Sequence[str]) -> Experiment:
    """The experiment with its task's fields changed by `"key=value"` options (values
    are Python literals); a ValueError names a field the task does not have, or a
    value it refuses."""
    if not options:
        return experiment
    pairs = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError(f"--task_options are key=value, e.g. memory=10; got {option!r}")
        pairs[key.strip()] = _literal(value)
    fields = {f.name for f in dataclasses.fields(experiment.task)}
    unknown = [name for name in pairs if name not in fields]
    if unknown:
        raise ValueError(
            f"--task_options: the {experiment.task.name} task has no field {', '.join(unknown)}; "
            f"its fields are {', '.join(sorted(fields)) or 'none'}"
        )
    try:
        task = dataclasses.replace(experiment.task, **pairs)
    except (ValueError, TypeError) as error:
        raise ValueError(f"--task_options: {error}") from None
    return dataclasses.replace(experiment, task=task)


def _model_learning_rates_from_flags(experiment: Experiment, models: Sequence[str]) -> tuple[str, ...]:
    """--model_learning_rates if given; else the experiment's, for the models that
    --models names, unless --learning_rates is given (then it is every model's)."""
    if FLAGS.model_learning_rates is not None:
        return tuple(FLAGS.model_learning_rates)
    if FLAGS["learning_rates"].present:
        return ()
    return tuple(e for e in experiment.model_learning_rates if e.rpartition("=")[0] in models)


def settings_from_flags(experiment: Experiment) -> Settings:
    """Reads and checks the flags, before anything is compiled."""
    models = tuple(m.strip() for m in FLAGS.models)
    task_options = tuple(o.strip() for o in FLAGS.task_options)
    try:
        experiment = with_task_options(experiment, task_options)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    # An unset flag takes the experiment's default; a flag given as 0 is an error, not unset.
    steps = experiment.steps if FLAGS.steps is None else FLAGS.steps
    log_every = min(50, steps) if FLAGS.log_every is None else FLAGS.log_every
    eval_every = FLAGS.eval_every
    if eval_every is None:
        eval_every = max(log_every, (steps // 8) // log_every * log_every) if log_every > 0 else log_every
    checkpoint_every = FLAGS.checkpoint_every if FLAGS.checkpoint_every is not None else 10 * log_every
    settings = Settings(
        models=models,
        lengths=experiment.lengths if FLAGS.lengths is None else _parse(FLAGS.lengths, int, "lengths"),
        seeds=_parse(FLAGS.seeds, int, "seeds"),
        task_options=task_options,
        model_learning_rates=_model_learning_rates_from_flags(experiment, models),
        learning_rates=_parse(FLAGS.learning_rates, float, "learning_rates")
        if FLAGS["learning_rates"].present
        else experiment.learning_rates,
        steps=steps,
        batch_size=FLAGS.batch_size,
        hidden_size=experiment.hidden_size if FLAGS.hidden_size is None else FLAGS.hidden_size,
        num_layers=FLAGS.num_layers if FLAGS["num_layers"].present else experiment.num_layers,
        num_heads=FLAGS.num_heads,
        positional=FLAGS.positional,
        match_params=experiment.match_params if FLAGS.match_params is None else FLAGS.match_params,
        bidirectional=FLAGS.bidirectional,
        match_reference=FLAGS.match_reference,
        eval_lengths=_parse(FLAGS.eval_lengths, int, "eval_lengths")
        if FLAGS["eval_lengths"].present
        else experiment.eval_lengths,
        workdir=FLAGS.workdir or f"runs/{experiment.name}",
        log_every=log_every,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        resume=FLAGS.resume,
        early_stopping=FLAGS.early_stopping,
        patience=FLAGS.patience,
        optimizer=FLAGS.optimizer,
        clip_norm=FLAGS.clip_norm,
        weight_decay=FLAGS.weight_decay,
        warmup_steps=FLAGS.warmup_steps,
        on_nonfinite=FLAGS.on_nonfinite,
        run_devices=FLAGS.run_devices,
        tbptt=FLAGS.tbptt,
        compute_dtype=FLAGS.compute_dtype,
    )
    try:
        check_settings(experiment, settings)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    return settings


def check_settings(experiment: Experiment, settings: Settings) -> None:
    """Builds every model, task batch and config of the sweep once, abstractly, so that
    a bad value is a ValueError naming its flag before anything compiles."""
    experiment = with_task_options(experiment, settings.task_options)
    models = settings.models
    for name in ("models", "lengths", "seeds", "learning_rates"):
        if not getattr(settings, name):
            raise ValueError(f"--{name} must name at least one; got none")
    for seed in settings.seeds:
        if not 0 <= seed < 2**31:
            raise ValueError(f"--seeds must be ints in [0, 2**31); got {seed}")
    for lr in settings.learning_rates:
        check_real(lr, "--learning_rates", 0.0, math.inf, low_open=True)
    for spec in model_learning_rates(settings):
        if spec not in settings.models:
            raise ValueError(f"--model_learning_rates names {spec!r}, which --models does not")
    check_real(settings.clip_norm, "--clip_norm (0: off)", 0.0, math.inf)
    check_positive_int(settings.num_heads, "--num_heads")
    if settings.patience is not None:
        check_positive_int(settings.patience, "--patience (unset: off)")
    if len(set(models)) != len(models):
        raise ValueError(f"--models lists a model twice: {','.join(models)}")
    if settings.bidirectional and not experiment.per_sequence:
        raise ValueError(
            f"--bidirectional reads the future: {experiment.name} predicts every step; "
            "it is for experiments with one output per sequence"
        )
    if hasattr(experiment.task, "check_batch_size"):
        experiment.task.check_batch_size(settings.batch_size, "--batch_size")
    key = jax.random.key(0)
    for length in settings.lengths:
        try:
            jax.eval_shape(lambda k, n=length: experiment.task.sample(k, 1, n), key)
        except ValueError as error:
            raise ValueError(f"--lengths: {error}") from None
        eval_task = _eval_task(experiment, length)
        for eval_length in settings.eval_lengths:
            try:
                jax.eval_shape(lambda k, n=eval_length, t=eval_task: t.sample(k, 1, n), key)
            except ValueError as error:
                raise ValueError(f"--eval_lengths (after training at length {length}): {error}") from None
    for length in settings.lengths:
        config = _train_config(settings, length, experiment.solved_accuracy)
        if config.tbptt is not None:  # a state to carry, with room for the whole sequence
            room = num_windows(experiment.task, config) * config.tbptt
            for spec in settings.models:
                try:
                    jax.eval_shape(
                        lambda s=spec, n=room: _model(experiment, settings, s).initial_state(1, max_len=n)
                    )
                except ValueError as error:
                    raise ValueError(f"--tbptt with --models={spec}: {error}") from None
    for flag, spec in [("models", m) for m in settings.models] + [
        ("match_reference", settings.match_reference)
    ]:
        try:
            _model(experiment, settings, spec)
        except (ValueError, TypeError) as error:
            raise ValueError(f"--{flag}: {error}") from None
    mesh = _mesh(settings)
    if mesh is not None:
        for spec in settings.models:
            num_runs = len(settings.seeds) * len(learning_rates_of(settings, spec))
            distributed.check_divisible(mesh, num_runs, settings.batch_size)


def model_learning_rates(settings: Settings) -> dict[str, tuple[float, ...]]:
    """`--model_learning_rates` as {model spec: rates} (a ValueError names a bad entry)."""
    rates = {}
    for entry in settings.model_learning_rates:
        spec, sep, values = entry.rpartition("=")
        try:
            rates[spec] = tuple(float(v) for v in values.split("/"))
        except ValueError:
            spec = ""
        if not sep or not spec:
            raise ValueError(
                f"--model_learning_rates are model=rate/rate, e.g. transformer=3e-3/1e-2; got {entry!r}"
            )
        for lr in rates[spec]:
            check_real(lr, f"--model_learning_rates of {spec}", 0.0, math.inf, low_open=True)
    return rates


def learning_rates_of(settings: Settings, spec: str) -> tuple[float, ...]:
    """The learning rates the model `spec` trains with."""
    return model_learning_rates(settings).get(spec, settings.learning_rates)


def _train_config(settings: Settings, length: int, solved_accuracy: float) -> TrainConfig:
    warmup = settings.warmup_steps
    return TrainConfig(
        length=length,
        steps=settings.steps,
        batch_size=settings.batch_size,
        warmup_steps=min(100, settings.steps // 10) if warmup is None else warmup,
        clip_norm=settings.clip_norm or None,
        weight_decay=settings.weight_decay,
        optimizer=settings.optimizer,
        log_every=settings.log_every,
        eval_every=settings.eval_every,
        checkpoint_every=settings.checkpoint_every,
        tbptt=settings.tbptt,
        compute_dtype=settings.compute_dtype,
        stop_accuracy=solved_accuracy if settings.early_stopping else None,
        patience=settings.patience,
    )


def _model(
    experiment: Experiment, settings: Settings, spec: str, hidden_size: int | None = None
) -> SequenceModel:
    if experiment.make_model is not None:
        return experiment.make_model(settings, spec)
    task = experiment.task
    family, options = model_options(settings, spec)
    recurrent = registry.get(family).make_cell is not None
    return SequenceModel(
        family,
        output_size=task.output_size,
        hidden_size=hidden_size or settings.hidden_size,
        vocab_size=task.vocab_size,
        input_size=None if task.vocab_size else task.input_size,
        num_layers=settings.num_layers,
        options=options,
        bidirectional=settings.bidirectional and recurrent,
        readout=experiment.readout
        or (("last" if recurrent else "mean") if experiment.per_sequence else "steps"),
    )


def _num_params(model: SequenceModel) -> int:
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    return count_params(shapes)


def matched_model(experiment: Experiment, settings: Settings, spec: str) -> SequenceModel:
    """The model of `spec` whose parameter count is closest to that of
    `settings.match_reference` at `settings.hidden_size`, among the widths up to
    8 * hidden_size that the family accepts (a Transformer's must divide into heads)."""
    target = _num_params(_model(experiment, settings, settings.match_reference))
    widths = []
    for width in range(1, 8 * settings.hidden_size + 1):
        try:
            widths.append(_model(experiment, settings, spec, width))
        except ValueError:
            continue
    # Parameter counts grow with width: bisect for the first width at or above the target.
    index = bisect.bisect_left(widths, target, key=_num_params)
    candidates = [widths[i] for i in {max(index - 1, 0), min(index, len(widths) - 1)}]
    return min(candidates, key=lambda m: abs(_num_params(m) - target))


def _mesh(settings: Settings) -> Mesh | None:
    """Every device of the job, runs split over `run_devices` of them; None on one device."""
    if jax.device_count() == 1 and settings.run_devices == 1:
        return None
    mesh = distributed.make_mesh(settings.run_devices)  # a bad --run_devices fails here, first
    if jax.default_backend() == "cpu":
        # The fused CPU kernel is not partitioned (seqjax.recurrences.cpu_kernel.enabled); the
        # scan is, so each device trains its own share.
        os.environ["SEQJAX_CPU_KERNEL"] = "0"
    return mesh


def apply_config(path: str, experiment_name: str) -> None:
    """Sets every flag that the command line left unset from a config.json's
    settings and experiment flags, and imports its user modules."""
    try:
        config = json.loads(pathlib.Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise app.UsageError(f"--config: cannot read {path}: {error}") from None
    if config.get("experiment") != experiment_name:
        raise app.UsageError(
            f"--config: {path} is a config of {config.get('experiment')!r}, not of {experiment_name!r}"
        )
    for spec in config.get("user_modules", []):
        user_modules.import_user_module(spec)
    for name, value in (config["settings"] | config.get("flags", {})).items():
        if FLAGS[name].present or value is None:
            continue
        # Parsed as from a command line, so that the flag counts as given.
        FLAGS[name].parse(",".join(map(str, value)) if isinstance(value, list) else str(value))


def run(
    experiment: Experiment, settings: Settings, on_trained: Callable[..., Any] | None = None
) -> list[dict]:
    """Trains the sweep and writes the config, summary, table and plots (process 0
    of a multi-process job); returns the rows. The summary files are rewritten after
    every (model, length) group, so a group that stops (`NonFiniteError`, a crash)
    leaves the finished ones on disk; the workdir is locked while it runs.
    `on_trained(model, state, rows)` sees each group's model, final states `[R]`
    and summary rows (e.g. to sample from the best run)."""
    experiment = with_task_options(experiment, settings.task_options)
    workdir = pathlib.Path(settings.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    writer = jax.process_index() == 0
    with checkpoints.workdir_lock(workdir) if writer else contextlib.nullcontext():
        return _run(experiment, settings, workdir, writer, on_trained)


def _run(
    experiment: Experiment,
    settings: Settings,
    workdir: pathlib.Path,
    writer: bool,
    on_trained: Callable[..., Any] | None,
) -> list[dict]:
    mesh = _mesh(settings)
    families = [parse_model(spec)[0] for spec in (*settings.models, settings.match_reference)]
    settings_dict = dataclasses.asdict(settings)
    run_config.write(workdir, experiment.name, settings_dict, families, dict(experiment.flags))
    task, rows, curves = experiment.task, [], {}
    runs = {
        spec: list(itertools.product(settings.seeds, learning_rates_of(settings, spec)))
        for spec in settings.models
    }
    models = {
        spec: matched_model(experiment, settings, spec)
        if settings.match_params
        else _model(experiment, settings, spec)
        for spec in settings.models
    }
    groups = [
        (
            spec,
            length,
            _train_config(settings, length, experiment.solved_accuracy),
            workdir / f"{label(spec)}_len{length}",
            _validation(experiment, settings, length),
        )
        for spec, length in itertools.product(settings.models, settings.lengths)
    ]
    if settings.resume:  # every group's checkpoint against this command, before anything compiles
        for spec, _, config, group, validation in groups:
            run_lists = zip(*runs[spec], strict=True)
            record = checkpoints.run_record(models[spec], task, config, *run_lists, validation)
            checkpoints.check_resumable(group, record, config)
    for spec, length, config, group, validation in groups:
        model = models[spec]
        start = time.perf_counter()
        seeds, lrs = zip(*runs[spec], strict=True)
        state, history = train(
            model,
            task,
            config,
            seeds,
            lrs,
            group,
            resume=settings.resume,
            mesh=mesh,
            on_nonfinite=settings.on_nonfinite,
            validation=validation,
        )
        seconds = time.perf_counter() - start
        group_rows = _rows(experiment, settings, spec, length, config, model, state, history, mesh, seconds)
        rows += group_rows
        if on_trained is not None:
            on_trained(model, state, group_rows)
        for r, (seed, lr) in enumerate(runs[spec]):
            curves[(spec, length, seed, lr)] = [
                (line["step"], line["eval_loss"])
                for line in history
                if line["run"] == r and "eval_loss" in line
            ]
        if writer:  # after every group: a later failure loses none of these
            write_summary(workdir, rows)
            (workdir / "results.md").write_text(markdown_table(rows) + "\n")
    if writer:
        table = markdown_table(rows)
        plot(workdir, experiment, rows, curves)
        print(f"\n{experiment.name}: results in {workdir}\n\n{table}\n")
    return rows


def _eval_task(experiment: Experiment, length: int) -> Any:
    """The task the eval lengths score, for a group trained at `length`."""
    return experiment.eval_task(length) if experiment.eval_task else experiment.task


def _validation(experiment: Experiment, settings: Settings, length: int) -> tuple[Any, int] | None:
    """`train`'s validation for a group trained at `length`: the eval task at the
    longest eval length where the experiment validates beyond its training lengths."""
    if not (experiment.validate_beyond and settings.eval_lengths):
        return None
    return _eval_task(experiment, length), max(settings.eval_lengths)


def _rows(experiment, settings, spec, length, config, model, state, history, mesh, seconds) -> list[dict]:
    """One summary row per run of a trained group: its validation figures (the last
    evaluation of training) and its test figures, scored here on the test stream."""
    task, extra = experiment.task, {}

    def scored(on_task, at_length):  # (loss [R], accuracy [R]); compiles per task and length
        evaluate = make_evaluate(model, on_task, config, mesh, split="test")
        return jax.device_get(evaluate(state.params, state.seed, at_length))

    test = scored(task, length)
    # Generalisation and variants are scored on the test stream too.
    eval_task = _eval_task(experiment, length)
    for eval_length in settings.eval_lengths:
        extra[f"accuracy_at_{eval_length}"] = scored(eval_task, eval_length)[1]
    for name, variant in experiment.variants:
        extra[f"accuracy_{name}"] = scored(variant, length)[1]
    baseline, params, rows = task.baseline(length), _num_params(model), []
    for r in range(len(state.seed)):
        lines = [line for line in history if line["run"] == r]
        evals = [line for line in lines if "eval_accuracy" in line]
        solved_at = next((e["step"] for e in evals if e["eval_accuracy"] >= experiment.solved_accuracy), None)
        stop = next((line for line in lines if "stopped" in line), None)
        rows.append(
            {
                "model": spec,
                "length": length,
                "seed": lines[0]["seed"],
                "learning_rate": lines[0]["learning_rate"],
                "steps": settings.steps,
                "hidden_size": model.hidden_size,
                "test_loss": float(test[0][r]),
                "test_accuracy": float(test[1][r]),
                "val_loss": evals[-1]["eval_loss"],
                "val_accuracy": evals[-1]["eval_accuracy"],
                "baseline_loss": baseline.loss,
                "baseline_accuracy": baseline.accuracy,
                "solved": bool(test[1][r] >= experiment.solved_accuracy),
                "steps_to_solve": solved_at,
                "stopped_at": stop and stop["step"],
                "stop_reason": stop and stop["stopped"],
                "params": params,
                "seconds": seconds,
                "tokens_per_second": float(np.median([line["tokens_per_second"] for line in lines])),
                "failed": any(line.get("failed", False) for line in lines),
                **{k: float(v[r]) for k, v in extra.items()},
            }
        )
    return rows


def write_summary(workdir: pathlib.Path, rows: list[dict]) -> None:
    """summary.json (strict JSON: a value that is not finite is null, and named in the
    row's "nonfinite" entry) and summary.csv, one row per run."""
    strict = [checkpoints.strict(row) for row in rows]
    (workdir / "summary.json").write_text(json.dumps(strict, indent=1, allow_nan=False))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (workdir / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def _group(row: dict) -> tuple:
    """The rows one learning rate is chosen for: a model (at a width) and a length."""
    return row["model"], row["hidden_size"], row["length"]


def selected(rows: list[dict]) -> list[dict]:
    """The rows of each group's learning rate chosen on validation (all, with one rate)."""
    best = statistics.best_learning_rates(rows, _group)
    return [row for row in rows if row["learning_rate"] == best[_group(row)]]


def markdown_table(rows: list[dict]) -> str:
    """model x length at each model's learning rate chosen on validation: test
    figures as mean ± 95% t interval over seeds, solved and early-stopped counts; with
    several rates, then every rate's validation accuracy."""
    extra = [k for k in rows[0] if k.startswith("accuracy_")] if rows else []
    head = ["model", "length", "lr", "test accuracy", "test loss", "baseline acc", "solved", "steps to solve"]
    head += ["stopped", "params", "time (s)", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups: dict[tuple, list[dict]] = {}
    for row in selected(rows):
        groups.setdefault((row["model"], row["length"], row["learning_rate"]), []).append(row)
    for (model, length, lr), group in groups.items():
        solved = [r["steps_to_solve"] for r in group if r["solved"] and r["steps_to_solve"] is not None]
        cells = [
            model,
            str(length),
            f"{lr:g}",
            statistics.format_interval([r["test_accuracy"] for r in group]),
            statistics.format_interval([r["test_loss"] for r in group], 4),
            f"{group[0]['baseline_accuracy']:.3f}",
            f"{sum(r['solved'] for r in group)}/{len(group)}",
            f"{np.mean(solved):.0f}" if solved else "-",
            f"{sum(r['stopped_at'] is not None for r in group)}/{len(group)}",
            str(group[0]["params"]),
            f"{group[0]['seconds']:.0f}",
            *(statistics.format_interval([r[k] for r in group]) for k in extra),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    rates = sorted({r["learning_rate"] for r in rows})
    rates_of: dict[tuple, set[float]] = {}
    for r in rows:
        rates_of.setdefault(_group(r), set()).add(r["learning_rate"])
    if any(len(group_rates) > 1 for group_rates in rates_of.values()):  # a sweep to show
        lines += [
            "",
            "Validation accuracy per learning rate (mean over seeds; the table above uses the best):",
            "",
        ]
        lines += ["| model | length | " + " | ".join(f"lr {lr:g}" for lr in rates) + " |"]
        lines += ["|" + "---|" * (2 + len(rates))]
        means: dict[tuple, list[float]] = {}
        for r in rows:
            means.setdefault((r["model"], r["length"], r["learning_rate"]), []).append(r["val_accuracy"])
        for model, length in dict.fromkeys((r["model"], r["length"]) for r in rows):
            cells = [
                f"{np.mean(means[model, length, lr]):.3f}" if (model, length, lr) in means else "-"
                for lr in rates
            ]
            lines.append(f"| {model} | {length} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(workdir: pathlib.Path, experiment: Experiment, rows: list[dict], curves: dict) -> None:
    """learning_curves.png (one panel per length: each model at its chosen learning
    rate, the mean over seeds and the band from the lowest to the highest seed) and
    accuracy_vs_length.png (test accuracy, mean and 95% interval over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = selected(rows)
    lengths = sorted({r["length"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    colors = {m: f"C{i}" for i, m in enumerate(models)}
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.5 * len(lengths), 3.6), squeeze=False)
    for ax, length in zip(axes[0], lengths, strict=True):
        for model in models:
            group = [r for r in chosen if r["model"] == model and r["length"] == length]
            seeds = [curves[(model, length, r["seed"], r["learning_rate"])] for r in group]
            if not seeds or not seeds[0]:
                continue
            steps = [step for step, _ in seeds[0]]
            losses = np.array([[np.nan if x is None else x for _, x in c] for c in seeds], np.float64)
            ax.plot(
                steps,
                np.nanmean(losses, 0),
                color=colors[model],
                label=f"{model} lr={group[0]['learning_rate']:g}",
            )
            if len(seeds) > 1:
                ax.fill_between(
                    steps, np.nanmin(losses, 0), np.nanmax(losses, 0), color=colors[model], alpha=0.2
                )
        ax.axhline(experiment.task.baseline(length).loss, color="k", linestyle="--", label="memoryless")
        ax.set_title(f"{experiment.name}, length {length}")
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss" + (" (eval lengths)" if experiment.validate_beyond else ""))
        ax.set_yscale("log")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(workdir / "learning_curves.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    label, x_of = experiment.x_axis or ("length", lambda n: n)
    xs = [x_of(n) for n in lengths]
    for model in models:
        spans = [
            statistics.interval(
                [r["test_accuracy"] for r in chosen if r["model"] == model and r["length"] == n]
            )
            for n in lengths
        ]
        ax.errorbar(
            xs, [m for m, _ in spans], yerr=[0.0 if np.isnan(h) else h for _, h in spans],
            fmt="o-", capsize=3, color=colors[model], label=model,
        )  # fmt: skip
    ax.plot(xs, [experiment.task.baseline(n).accuracy for n in lengths], "k--", label="memoryless")
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy (95% interval over seeds)")
    ax.set_ylim(0, 1.02)
    ax.set_title(experiment.name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(workdir / "accuracy_vs_length.png", dpi=100)
    plt.close(fig)


def main(experiment: Experiment, sweep: Callable[[Experiment, Settings], Any] | None = None) -> None:
    """Entry point of `python -m experiments.<name>`: the flags, read and checked against
    `experiment`, then `sweep(experiment, settings)` (default: `run`)."""

    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.set_verbosity(logging.INFO)
        # Progress lines from seqjax and the experiments; other libraries' INFO chatter is dropped.
        logging.get_absl_handler().addFilter(
            lambda record: (
                record.levelno >= logging.converter.STANDARD_WARNING
                or "seqjax" in record.pathname
                or "experiments" in record.pathname
            )
        )
        if FLAGS.config:
            apply_config(FLAGS.config, experiment.name)
        if FLAGS.multi_process or FLAGS.coordinator_address:
            distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        try:
            prepared = experiment.prepare(experiment) if experiment.prepare else experiment
        except (ValueError, ImportError) as error:
            raise app.UsageError(str(error)) from None
        settings = settings_from_flags(prepared)
        try:
            (sweep or run)(prepared, settings)
        except (NonFiniteError, checkpoints.ResumeError, checkpoints.WorkdirInUse) as error:
            logging.error("%s", error)
            sys.exit(1)

    user_modules.run(_main)
