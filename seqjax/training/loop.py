"""Training engine: several runs (seeds x learning rates) in one compiled program.

A run's state is a `TrainState` pytree; a group of R runs is the same pytree with
a leading `[R]` axis, trained by one `jax.vmap`-ed, jitted step. Every run's data
and dropout stream is a pure function of its seed and step, so a run is
reproducible bit for bit, whether trained alone, in a group, or resumed from a
checkpoint. The data is a generated task (`seqjax.data.tasks`), sampled in the
step, or an in-memory dataset (`seqjax.data.datasets`), whose arrays are passed to
the compiled programs and gathered by index in the step.

    state = init_state(model, optimizer, seeds, learning_rates)      # [R] runs
    state, history = train(model, task, config, seeds, learning_rates, workdir)

Checkpoints are orbax's (atomic: written to a temporary directory, then
renamed); `resume=True` continues from the latest one. Metrics go to
`workdir/metrics.jsonl`, one line per run per log step.

Given a `mesh` (`seqjax.training.distributed.make_mesh`), the runs are split along its
`runs` axis and every step's batch along its `data` axis, with parameters
replicated over `data` and their gradients reduced by XLA's collectives; the
mesh may span the devices of several processes (`seqjax.training.distributed.initialize`),
each of which then calls `train` with the same arguments. Process 0 writes the
metrics; checkpoints are orbax's multi-host ones, and restore onto whatever mesh
the resuming job has.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import math
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh

from seqjax.data import datasets
from seqjax.data.tasks import Batch, Loss
from seqjax.training import checkpoints, distributed
from seqjax.training.config import TrainConfig, make_optimizer
from seqjax.validation import as_enum, check_positive_int, check_real

Array = jax.Array

# Independent streams derived from a run's seed.
_TRAIN_STREAM, _EVAL_STREAM, _INIT_STREAM, _TEST_STREAM, _ORDER_STREAM = 0, 1, 2, 3, 4
# The evaluation splits: validation is what training looks at (evaluations, early
# stopping, choosing a learning rate); test is scored once, at the end.
SPLITS = {"validation": _EVAL_STREAM, "test": _TEST_STREAM}


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: Array  # [], int32: steps taken
    seed: Array  # [], int32: the run's seed; every random stream derives from it
    learning_rate: Array  # [], float32: the peak learning rate
    active: Array  # [], bool: False once early stopping has frozen the run
    carry: Any = None  # truncated BPTT: the model's state after the last window (else None)


def scored_sums(task: Any, outputs: Array, batch: Batch) -> Array:
    """`[4]` float32: the masked loss sum, the `loss_mask` sum, the masked count of
    correct outputs and the `eval_mask` sum, which pool over batches.

    Args:
      task: gives the loss kind (and the tolerance of regression accuracy).
      outputs: `[b, t, o]` model outputs (`[b, o]` for one output per sequence).
      batch: the targets `[b, t]` (`[b]`; a regression of o values: `[b, t, o]`, `[b, o]`)
        and masks `[b, t]` (`[b]`).
    """
    if task.loss is Loss.CROSS_ENTROPY:
        per_step = optax.softmax_cross_entropy_with_integer_labels(outputs.astype(jnp.float32), batch.targets)
        correct = jnp.argmax(outputs, axis=-1) == batch.targets
    else:
        outputs = outputs.astype(jnp.float32)
        # One value per target (`[b, t]` or `[b]`), or o of them (`[b, t, o]`, `[b, o]`).
        targets = batch.targets.reshape(*batch.loss_mask.shape, -1)
        error = outputs.reshape(targets.shape) - targets
        per_step = jnp.mean(error**2, axis=-1)
        correct = jnp.mean(jnp.abs(error) < task.tolerance, axis=-1)
    return jnp.stack(
        [
            jnp.sum(per_step * batch.loss_mask),
            jnp.sum(batch.loss_mask),
            jnp.sum(correct.astype(jnp.float32) * batch.eval_mask),
            jnp.sum(batch.eval_mask),
        ]
    )


def _ratios(sums: Array) -> tuple[Array, Array]:
    """(loss, accuracy) from `scored_sums` (pooled)."""
    return sums[0] / jnp.maximum(sums[1], 1.0), sums[2] / jnp.maximum(sums[3], 1.0)


def loss_and_metrics(task: Any, outputs: Array, batch: Batch) -> tuple[Array, Array]:
    """Masked loss and accuracy.

    Args:
      task: gives the loss kind (and the tolerance of regression accuracy).
      outputs: `[b, t, o]` model outputs (`[b, o]` for one output per sequence).
      batch: the targets `[b, t]` (`[b]`) and masks of the same shape.

    Returns:
      `(loss, accuracy)`, scalars: the loss averaged over `loss_mask` positions,
      the accuracy over `eval_mask` positions (argmax for classes; within
      `task.tolerance` for regression).
    """
    return _ratios(scored_sums(task, outputs, batch))


def dataset_indices(seed: int, step: int, num_examples: int, batch_size: int) -> np.ndarray:
    """`[b]` int32: the training examples that the run with `seed` gathers at `step` from
    a dataset of `num_examples` (see `seqjax.data.datasets`), as the compiled step does."""
    order = _stream(jnp.int32(seed), _ORDER_STREAM)
    return np.asarray(datasets.epoch_indices(order, jnp.int32(step), num_examples, batch_size))


def _split_data(task: Any, split: str, mesh: Mesh | None) -> Batch | None:
    """A dataset's split on the device (replicated over a mesh), passed to the compiled
    programs as an argument (a captured constant would be copied into the program);
    None for a generated task."""
    if not hasattr(task, "arrays"):
        return None
    return jax.device_put(task.arrays(split), None if mesh is None else distributed.replicated(mesh))


def _stream(seed: Array, stream: int) -> Array:
    return jax.random.fold_in(jax.random.key(seed), stream)


def _vmap_runs(fn: Callable, mesh: Mesh | None, **kwargs) -> Callable:
    """`jax.vmap` over runs; with a mesh, the runs axis of every sharding inside is `runs`."""
    return jax.vmap(fn, spmd_axis_name=None if mesh is None else distributed.RUNS, **kwargs)


def _jit(fn: Callable, mesh: Mesh | None, out_shardings: Any, **kwargs) -> Callable:
    if mesh is None:
        return jax.jit(fn, **kwargs)
    return jax.jit(fn, out_shardings=out_shardings, **kwargs)


@functools.cache
def _init_program(model: Any, optimizer: optax.GradientTransformation, mesh: Mesh | None):
    """The compiled `(seeds [R], learning_rates [R]) -> TrainState [R]`, one per model,
    optimizer and mesh."""

    def one(seed, lr):
        params = model.init(_stream(seed, _INIT_STREAM))
        step = jnp.zeros((), jnp.int32)
        return TrainState(params, optimizer.init(params), step, seed, lr, jnp.ones((), bool))

    return _jit(_vmap_runs(one, mesh), mesh, mesh and distributed.runs_sharding(mesh))


def init_state(
    model: Any,
    optimizer: optax.GradientTransformation,
    seeds: Sequence[int],
    learning_rates: Sequence[float],
    mesh: Mesh | None = None,
) -> TrainState:
    """States of R runs, leaves with a leading `[R]` axis; run i has seeds[i] and
    learning_rates[i]. With a mesh, the runs are split along its `runs` axis."""
    # NumPy inputs: identical in every process, which is all a multi-process jit needs.
    return _init_program(model, optimizer, mesh)(
        np.asarray(seeds, np.int32), np.asarray(learning_rates, np.float32)
    )


def num_windows(task: Any, config: TrainConfig) -> int:
    """Updates per sequence: 1, or with truncated BPTT its windows of `config.tbptt` steps."""
    return 1 if config.tbptt is None else -(-task.num_steps(config.length) // config.tbptt)


def window_of(batch: Batch, window: Array, size: int) -> Batch:
    """Steps `[window * size, (window + 1) * size)` of a `[b, t, ...]` batch, zero past
    its end; `lengths` (None if every window is full) count the valid steps in it."""
    t = batch.inputs.shape[1]
    padded = -(-t // size) * size
    start = window * size

    def cut(x):
        x = jnp.pad(x, [(0, 0), (0, padded - t)] + [(0, 0)] * (x.ndim - 2))
        return jax.lax.dynamic_slice_in_dim(x, start, size, axis=1)

    if batch.lengths is None and padded == t:
        return Batch(*(cut(x) for x in batch[:4]))
    full = batch.lengths if batch.lengths is not None else jnp.full(batch.inputs.shape[:1], t, jnp.int32)
    return Batch(*(cut(x) for x in batch[:4]), jnp.clip(full - start, 0, size).astype(jnp.int32))


def make_train_chunk(
    model: Any,
    task: Any,
    config: TrainConfig,
    optimizer: optax.GradientTransformation,
    mesh: Mesh | None = None,
):
    """A `(states [R]) -> (states, metrics)` that takes `log_every` steps of every
    run in one compiled call, without returning to the host: metrics `[R, log_every]`
    (loss, accuracy, grad_norm) and `[R]` (params_finite, after the chunk). The input
    states are donated. With a mesh, states stay split along `runs`, each step's batch
    is split along `data`, and the metrics come back replicated.

    A generated task samples each batch from the run's seed and step; a dataset
    (`seqjax.data.datasets`) gathers it from its training split on the device."""

    windows = num_windows(task, config)
    data = _split_data(task, "train", mesh)

    def step(data: Batch | None, state: TrainState, _):
        key = jax.random.fold_in(_stream(state.seed, _TRAIN_STREAM), state.step)
        data_key, dropout_key = jax.random.split(key)
        if data is not None:
            # Every window of a sequence (truncated BPTT) reads the same examples.
            order = _stream(state.seed, _ORDER_STREAM)
            batch = datasets.training_batch(data, order, state.step // windows, config.batch_size)
        else:
            if config.tbptt is not None:
                # Every window of a sequence draws the same sequence: its key is the first window's.
                first = state.step - state.step % windows
                data_key = jax.random.split(jax.random.fold_in(_stream(state.seed, _TRAIN_STREAM), first))[0]
            batch = task.sample(data_key, config.batch_size, config.length)
        if mesh is not None:
            batch = distributed.shard_batch(batch, mesh)

        if config.tbptt is None:

            def loss_fn(params):
                params, inputs = in_compute_dtype(config, (params, batch.inputs))
                outputs = model.apply(
                    params, inputs, lengths=batch.lengths, key=dropout_key, deterministic=False
                )
                loss, accuracy = loss_and_metrics(task, outputs.astype(jnp.float32), batch)
                return loss, (accuracy, None)

        else:
            batch, carry = window_of(batch, state.step % windows, config.tbptt), state.carry
            fresh = model.initial_state(config.batch_size, max_len=windows * config.tbptt)
            carry = jax.tree.map(lambda c, f: jnp.where(state.step % windows == 0, f, c), carry, fresh)

            def loss_fn(params):
                params, inputs = in_compute_dtype(config, (params, batch.inputs))
                carry_out, outputs = model.stream(
                    params, carry, inputs, lengths=batch.lengths, key=dropout_key, deterministic=False
                )
                loss, accuracy = loss_and_metrics(task, outputs.astype(jnp.float32), batch)
                # The carried state keeps its own dtype between windows.
                carry_out = jax.tree.map(lambda new, old: new.astype(old.dtype), carry_out, carry)
                return loss, (accuracy, jax.lax.stop_gradient(carry_out))

        (loss, (accuracy, carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        updates = jax.tree.map(lambda u: -state.learning_rate * u, updates)
        params = optax.apply_updates(state.params, updates)
        # A run frozen by early stopping keeps its weights; computing its step anyway keeps
        # one program for the group, and each run's arithmetic independent of the others'.
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(state.active, new, old),
            (params, opt_state),
            (state.params, state.opt_state),
        )
        metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads)}
        if config.tbptt is not None:
            # Windows hold different numbers of targets: the logged means weigh them so.
            metrics |= {"loss_weight": jnp.sum(batch.loss_mask), "accuracy_weight": jnp.sum(batch.eval_mask)}
        state = state._replace(params=params, opt_state=opt_state, step=state.step + 1, carry=carry)
        return state, metrics

    def chunk(state: TrainState, data: Batch | None):
        state, metrics = jax.lax.scan(functools.partial(step, data), state, None, length=config.log_every)
        # Checked before a checkpoint is written: a finite loss can precede inf weights.
        metrics["params_finite"] = jnp.all(
            jnp.array([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(state.params)])
        )
        return state, metrics

    out_shardings = mesh and (distributed.runs_sharding(mesh), distributed.replicated(mesh))
    program = _jit(_vmap_runs(chunk, mesh, in_axes=(0, None)), mesh, out_shardings, donate_argnums=0)
    return lambda state: program(state, data)


def make_evaluate(
    model: Any, task: Any, config: TrainConfig, mesh: Mesh | None = None, split: str = "validation"
):
    """A compiled `(params [R], seeds [R], length) -> (loss [R], accuracy [R])`, pooled
    over every scored position of its batches; `length` is static. A generated task
    is scored on `config.eval_batches` batches of the run's `split` stream
    ("validation" or "test": independent of each other and of training; the same
    batches at every call); a dataset on the whole `split`, every example once.
    With a mesh, batches are split along `data` and the results come back replicated."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    stream = SPLITS[split]
    data = _split_data(task, split, mesh)
    batches = config.eval_batches if data is None else task.num_batches(split, config.batch_size)

    def evaluate(params, seed, length, data):
        def one(i):
            if data is None:
                batch = task.sample(jax.random.fold_in(_stream(seed, stream), i), config.batch_size, length)
            else:
                batch = datasets.evaluation_batch(data, i, config.batch_size)
            if mesh is not None:
                batch = distributed.shard_batch(batch, mesh)
            run_params, inputs = in_compute_dtype(config, (params, batch.inputs))
            outputs = model.apply(run_params, inputs, lengths=batch.lengths)
            return scored_sums(task, outputs.astype(jnp.float32), batch)

        return _ratios(jax.lax.map(one, jnp.arange(batches)).sum(axis=0))

    vmapped = _vmap_runs(evaluate, mesh, in_axes=(0, 0, None, None))
    program = _jit(vmapped, mesh, mesh and distributed.replicated(mesh), static_argnums=2)
    return lambda params, seeds, length: program(params, seeds, length, data)


def in_compute_dtype(config: TrainConfig, tree: Any) -> Any:
    """`tree` with its real floating leaves in `config.compute_dtype` (token ids and
    complex leaves as they are). The cast is differentiable: gradients come back
    to the float32 master weights in float32."""
    dtype = jnp.dtype(config.compute_dtype)

    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, tree)


@functools.cache
def _programs(model: Any, task: Any, config: TrainConfig, mesh: Mesh | None, validation_task: Any):
    """Optimizer and compiled programs, shared by every `train` call of one
    configuration (models, tasks, configs and meshes are hashable); evaluation
    scores `validation_task`."""
    optimizer = make_optimizer(config)
    return (
        optimizer,
        make_train_chunk(model, task, config, optimizer, mesh),
        make_evaluate(model, validation_task, config, mesh),
    )


def _mean(metrics: dict[str, np.ndarray], name: str, run: int) -> float:
    """A metric's mean over a chunk's steps, weighted where the steps say how much they hold."""
    weights = metrics.get(f"{name}_weight")
    if weights is None or not weights[run].sum():
        return float(np.mean(metrics[name][run]))
    return float(np.average(metrics[name][run], weights=weights[run]))


@functools.partial(jax.jit, donate_argnums=0)
def _freeze(state: TrainState, active: np.ndarray) -> TrainState:
    """`state` with runs frozen where `active` `[R]` (NumPy, the same in every process) is
    False; traced, so that the runs keep their sharding on a mesh of several processes."""
    return state._replace(active=state.active & active)


def _stop_reason(config: TrainConfig, history: list[dict], line: dict) -> str | None:
    """Why early stopping freezes a run at the evaluation `line` ("solved",
    "patience"), or None; `history` holds the earlier lines, of every run."""
    if config.stop_accuracy is not None and line["eval_accuracy"] >= config.stop_accuracy:
        return "solved"
    if config.patience is None:
        return None
    losses = [h["eval_loss"] for h in history if h["run"] == line["run"] and "eval_loss" in h]
    losses.append(line["eval_loss"])
    finite = [x if x is not None and math.isfinite(x) else math.inf for x in losses]
    best = min(range(len(finite)), key=finite.__getitem__)  # the first evaluation at the lowest loss
    return "patience" if len(finite) - 1 - best >= config.patience else None


class OnNonFinite(enum.Enum):
    """What `train` does when a run's loss, gradient norm or parameters stop being finite.

    STOP: raise `NonFiniteError` after writing that chunk's metrics, without the
    checkpoint (the last one on disk is finite). SKIP_RUN: mark the run failed (its
    lines carry "failed": true) and train the others on. CONTINUE: train on; the
    lines still say which values were not finite.
    """

    STOP = "stop"
    SKIP_RUN = "skip_run"
    CONTINUE = "continue"


class NonFiniteError(RuntimeError):
    """A run's loss, gradient norm or parameters stopped being finite."""


def _check_runs(model: Any, task: Any, seeds: Sequence[int], learning_rates: Sequence[float]) -> None:
    if len(seeds) != len(learning_rates):
        raise ValueError(f"seeds and learning_rates must pair up; got {len(seeds)} and {len(learning_rates)}")
    if not len(seeds):
        raise ValueError("train needs at least one run (one seed and learning rate)")
    for seed in seeds:
        if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or not 0 <= seed < 2**31:
            raise ValueError(f"seeds must be ints in [0, 2**31); got {seed!r}")
    for lr in learning_rates:
        check_real(lr, "learning_rates", 0.0, math.inf, low_open=True)
    # The model's sizes against the task's (a wrapper that does not say is trusted).
    for name in ("output_size", "vocab_size", "input_size"):
        ours, theirs = getattr(model, name, "-"), getattr(task, name, None)
        if ours != "-" and ours != theirs:
            raise ValueError(
                f"the model's {name}={ours} does not match the {task.name} task's {name}={theirs}"
            )


def train(
    model: Any,
    task: Any,
    config: TrainConfig,
    seeds: Sequence[int],
    learning_rates: Sequence[float],
    workdir: str | pathlib.Path,
    *,
    resume: bool = False,
    on_log: Callable[[int, list[dict]], None] | None = None,
    mesh: Mesh | None = None,
    on_nonfinite: OnNonFinite | str = OnNonFinite.STOP,
    validation: tuple[Any, int] | None = None,
) -> tuple[TrainState, list[dict]]:
    """Trains R = len(seeds) runs together (run i: seeds[i], learning_rates[i]).

    Args:
      model: has `init(key)` and `apply(params, inputs, *, lengths, key, deterministic)`
        (and, with `config.tbptt`, `initial_state(batch, max_len=)` and `stream`, as
        `SequenceModel` has); its `output_size`, `vocab_size` and `input_size`, where
        it has them, must be the task's.
      task: a `seqjax.tasks` task, or a `seqjax.data.datasets.Dataset` (then
        `config.length` is its steps t, and evaluation reads whole splits).
      config: the shared settings.
      seeds, learning_rates: one entry per run; ints in [0, 2**31) and finite rates > 0.
      workdir: where `metrics.jsonl`, `run.json` and `checkpoints/` go; locked while
        training (a second live run on it is refused).
      resume: continue from the newest readable checkpoint in workdir if there is
        one (otherwise start afresh, discarding old metrics). The workdir's run.json
        must describe the same runs (see `checkpoints.check_resume`), else a
        ValueError before anything compiles.
      on_log: called after each logged chunk with the step and its metric lines.
      mesh: where to train (see the module docstring); None: the default device.
        The number of runs must be a multiple of its `runs` axis and
        `config.batch_size` of its `data` axis.
      on_nonfinite: see `OnNonFinite`.
      validation: `(task, length)` that every evaluation scores on the validation
        stream, in place of `task` at `config.length`: where the result is how a model
        carries over to other inputs (longer ones, for length generalisation), early
        stopping and the curves follow those. A generated task with the training
        task's vocabulary and outputs.

    Returns:
      The final states `[R]` and the metrics history (dicts with run, seed,
      learning_rate, step, loss, accuracy, grad_norm, baseline_loss,
      baseline_accuracy, seconds, tokens_per_second, and eval_loss /
      eval_accuracy at evaluation steps, and "stopped": "solved" or "patience" at
      the evaluation where early stopping froze the run, see `TrainConfig`;
      a frozen run's later lines score its frozen weights). Loss, accuracy and gradient norm are
      means over the steps since the previous line; a value that is not finite
      is None in the file and named in the line's "nonfinite" entry.

    Raises:
      NonFiniteError: with `on_nonfinite="stop"`, naming the runs and the step.
    """
    _check_runs(model, task, seeds, learning_rates)
    task.num_steps(config.length)  # a dataset refuses a length that is not its own
    if validation is not None:
        _check_validation(task, validation)
    if hasattr(task, "check_batch_size"):
        task.check_batch_size(config.batch_size, "config.batch_size")
    on_nonfinite = as_enum(OnNonFinite, on_nonfinite, "on_nonfinite")
    if mesh is not None:
        distributed.check_divisible(mesh, len(seeds), config.batch_size)
    writer = jax.process_index() == 0
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with checkpoints.workdir_lock(workdir) if writer else contextlib.nullcontext():
        return _train(
            model, task, config, seeds, learning_rates, workdir, resume, on_log, mesh, on_nonfinite, writer,
            validation,
        )  # fmt: skip


def _check_validation(task: Any, validation: Any) -> None:
    if not isinstance(validation, tuple) or len(validation) != 2:
        raise ValueError(f"validation must be a (task, length) pair; got {validation!r}")
    other, length = validation
    check_positive_int(length, "validation's length")
    for name in ("output_size", "vocab_size", "input_size", "loss"):
        if getattr(other, name, None) != getattr(task, name, None):
            raise ValueError(
                f"validation's task must have the training task's {name}={getattr(task, name, None)}; "
                f"got {getattr(other, name, None)}"
            )
    if not hasattr(other, "sample"):
        raise ValueError(f"validation's task must be a generated task (with `sample`); got {other!r}")
    jax.eval_shape(lambda key: other.sample(key, 1, length), jax.random.key(0))  # the task checks the length


def _train(model, task, config, seeds, learning_rates, workdir, resume, on_log, mesh, on_nonfinite, writer,
           validation):  # fmt: skip
    record = checkpoints.run_record(model, task, config, seeds, learning_rates, validation)
    manager = checkpoints.manager(workdir, config) if config.checkpoint_every else None
    resuming = resume and manager is not None and manager.latest_step() is not None
    if resuming:
        checkpoints.check_resume(workdir, record, manager.latest_step())  # before compiling
    elif writer:
        checkpoints.write_run_record(workdir, record)
    if manager is not None and not resuming:
        # A fresh start owns the directory: an older run's checkpoints would collide with
        # its steps, or be resumed as if they were its own.
        for stale in manager.all_steps():
            manager.delete(stale)
    validation_task, validation_length = validation or (task, config.length)
    optimizer, train_chunk, evaluate = _programs(model, task, config, mesh, validation_task)
    state = init_state(model, optimizer, seeds, learning_rates, mesh)
    if config.tbptt is not None:
        # Overwritten at each sequence's first window; a checkpoint keeps it between windows.
        fresh = model.initial_state(config.batch_size, max_len=num_windows(task, config) * config.tbptt)
        carry = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(seeds), *x.shape)), fresh)
        state = state._replace(
            carry=carry if mesh is None else jax.device_put(carry, distributed.runs_sharding(mesh))
        )
    metrics_path = workdir / checkpoints.METRICS_FILE
    history: list[dict] = []
    start = 0
    restored = checkpoints.restore_latest(manager, state) if resuming else None
    if restored is not None:
        start, state = restored
        history = checkpoints.read_history(metrics_path, start)
        logging.info("resumed %s at step %d", workdir, start)
    if writer:
        metrics_path.write_text(checkpoints.dumps(history))

    steps_per_update = task.num_steps(config.length) / num_windows(task, config)
    tokens_per_chunk = len(seeds) * config.batch_size * steps_per_update * config.log_every
    baseline = task.baseline(config.length)
    clock = time.perf_counter()
    elapsed = history[-1]["seconds"] if history else 0.0
    failed = {line["run"] for line in history if line.get("failed")}
    stopped = {line["run"] for line in history if "stopped" in line}
    for step in range(start + config.log_every, config.steps + 1, config.log_every):
        if len(stopped) == len(seeds):  # every run frozen (a resumed group that had stopped)
            break
        state, metrics = train_chunk(state)
        metrics = jax.device_get(metrics)  # [R, log_every] each; one host transfer per chunk
        now = time.perf_counter()
        chunk_seconds, clock = now - clock, now
        elapsed += chunk_seconds
        lines = [
            {
                "run": r,
                "seed": int(seeds[r]),
                "learning_rate": float(learning_rates[r]),
                "step": step,
                "loss": _mean(metrics, "loss", r),
                "accuracy": _mean(metrics, "accuracy", r),
                "grad_norm": float(np.mean(metrics["grad_norm"][r])),
                "baseline_loss": baseline.loss,
                "baseline_accuracy": baseline.accuracy,
                "seconds": elapsed,
                "tokens_per_second": tokens_per_chunk / len(seeds) / chunk_seconds,
            }
            for r in range(len(seeds))
        ]
        if step % config.eval_every == 0 or step == config.steps:
            eval_loss, eval_accuracy = jax.device_get(evaluate(state.params, state.seed, validation_length))
            for r, line in enumerate(lines):
                line["eval_loss"], line["eval_accuracy"] = float(eval_loss[r]), float(eval_accuracy[r])
                reason = None if r in stopped else _stop_reason(config, history, line)
                if reason is not None:
                    line["stopped"] = reason
                    stopped.add(r)
            if any("stopped" in line for line in lines):
                state = _freeze(state, np.array([r not in stopped for r in range(len(seeds))]))
        bad = [
            r
            for r, line in enumerate(lines)
            if not metrics["params_finite"][r]
            or any(isinstance(v, float) and not math.isfinite(v) for v in line.values())
        ]
        if on_nonfinite is OnNonFinite.SKIP_RUN:
            failed.update(bad)
            for r in failed:
                lines[r]["failed"] = True
        if writer:
            with metrics_path.open("a") as f:
                f.write(checkpoints.dumps(lines))
        history.extend(lines)
        logging.info(
            "%s step %d/%d: loss %s acc %s (%.0f tokens/s)",
            workdir.name,
            step,
            config.steps,
            " ".join(f"{line['loss']:.4f}" for line in lines),
            " ".join(f"{line['accuracy']:.3f}" for line in lines),
            lines[0]["tokens_per_second"] * len(seeds),
        )
        if bad:
            runs = ", ".join(f"run {r} (seed {seeds[r]}, learning rate {learning_rates[r]:g})" for r in bad)
            message = f"{workdir}: {runs}: loss, gradient norm or parameters not finite by step {step}"
            if on_nonfinite is OnNonFinite.STOP:
                if manager is not None:
                    manager.close()
                raise NonFiniteError(f"{message}; stopped, the last checkpoint is the last finite one")
            logging.warning("%s (%s)", message, on_nonfinite.value)
        done = len(stopped) == len(seeds)
        if manager is not None and (step % config.checkpoint_every == 0 or step == config.steps or done):
            manager.save(step, args=ocp.args.StandardSave(state), force=step == config.steps or done)
            manager.wait_until_finished()
        if on_log is not None:
            on_log(step, lines)
        if done:
            logging.info("%s: every run stopped early, at step %d", workdir.name, step)
        clock = time.perf_counter()  # checkpoint and callback time is not training time
    if manager is not None:
        manager.close()
    return state, history
