"""Datasets of real sequences that fit in memory, trained on as the generated tasks are.

A `Dataset` holds train, validation and test `Split`s of NumPy arrays. `seqjax.train`
puts a dataset's arrays on the device once and, inside the compiled step, gathers
each batch by index:

- training: epoch e of a run is a permutation of the n training examples drawn
  from (the run's seed, e); step s takes the (s mod k)-th slice of b examples of
  its epoch's permutation, k = n // b batches per epoch (the n mod b examples left
  over sit that epoch out, as a drop-last loader's do). The indices are a pure
  function of (seed, step): runs are reproducible, vmappable over seeds and
  learning rates, and resume bit for bit; two seeds see different orders.
- evaluation: a split is read whole, in order, in ceil(n / b) batches (the last
  padded with masked copies of example 0), every example scored exactly once;
  the loss and accuracy are pooled over every scored position of the split.

A split's arrays, with n examples of t steps:
  inputs:  `[n, t]` int32 tokens in [0, vocab_size), or `[n, t, d]` float32 features.
  targets: `[n, t]` per step (a label or value at every step, as a language model's),
           or `[n]` per sequence (one label or value, as a classifier's);
           int32 classes in [0, output_size) or float32 values. A regression with
           o = output_size > 1 values per target (a forecast of o future steps)
           has `[n, t, o]` or `[n, o]`; its loss is the mean square over the o.
  lengths: `[n]` int32 valid steps in [1, t], or None (every step valid). Per-step
           targets are scored up to each length.
  mask:    optional float32 of the targets' `[n, t]` or `[n]`: 1 where a target is
           scored, 0 where not, in place of the lengths' (an encoder-decoder's
           inputs hold the source and the target, and only the target is scored).

Datasets too large for memory are out of scope here: stream them with `grain`
into a training loop of your own (`make_train_chunk` takes any task).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.data.tasks import Baseline, Batch, Loss
from seqjax.validation import as_enum, check_positive_int, check_real

Array = jax.Array

SPLIT_NAMES = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """One split's arrays (see the module docstring for shapes and dtypes)."""

    inputs: np.ndarray
    targets: np.ndarray
    lengths: np.ndarray | None = None
    mask: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def masks(self) -> np.ndarray:
        """`[n, t]` (per-step targets) or `[n]` (per sequence) float32: 1 where scored.

        The `Dataset` holding the split works it out (`mask`, else from `lengths`)."""
        if self.mask is None:
            raise ValueError("a Split's masks are worked out by the Dataset that holds it")
        return self.mask


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train, validation and test splits of one data set, and what its models predict.

    Args:
      name: names the dataset in errors and summaries.
      train, validation, test: the `Split`s, with the same t (and d) and target layout.
      output_size: classes (cross-entropy) or values per target (mean squared error).
      vocab_size: token inputs in [0, vocab_size); None for feature inputs.
      loss: "cross_entropy" or "mse".
      tolerance: regression accuracy counts |error| < tolerance (mse only).

    A model's `length` (the tasks' difficulty knob) is the dataset's t; the
    reported baseline is the best predictor that ignores the inputs, fitted on the
    training split: its class frequencies (cross-entropy, and the majority class's
    accuracy), or its mean (mse). Hashable by identity, so compiled programs are
    shared by everything trained on one `Dataset` object.
    """

    name: str
    train: Split
    validation: Split
    test: Split
    output_size: int
    vocab_size: int | None = None
    loss: Loss | str = Loss.CROSS_ENTROPY
    tolerance: float = 0.04

    def __post_init__(self):
        object.__setattr__(self, "loss", as_enum(Loss, self.loss, "loss"))
        check_positive_int(self.output_size, "output_size")
        if self.vocab_size is not None:
            check_positive_int(self.vocab_size, "vocab_size")
        if self.loss is Loss.MSE:
            check_real(self.tolerance, "tolerance", 0.0, math.inf, low_open=True)
        for name in SPLIT_NAMES:
            object.__setattr__(self, name, self._checked(name, getattr(self, name)))

    def _checked(self, name: str, split: Any) -> Split:
        """The split with its arrays as NumPy of the documented dtypes; a ValueError
        names the split and the array that does not fit."""
        if not isinstance(split, Split):
            raise TypeError(f"{name} must be a seqjax.data.datasets.Split; got {type(split).__name__}")
        inputs, targets = np.asarray(split.inputs), np.asarray(split.targets)
        tokens = self.vocab_size is not None
        if inputs.ndim != (2 if tokens else 3) or not inputs.shape[0] or not inputs.shape[1]:
            layout = "[n, t] tokens" if tokens else "[n, t, d] features (or give vocab_size for tokens)"
            raise ValueError(f"{name}.inputs must be {layout} with n, t >= 1; got shape {inputs.shape}")
        n, t = inputs.shape[:2]
        inputs = _values(inputs, f"{name}.inputs", self.vocab_size, "tokens", "vocab_size")
        values = self.value_shape
        if targets.shape not in ((n, *values), (n, t, *values)):
            raise ValueError(
                f"{name}.targets must be [n{', o' * bool(values)}]={(n, *values)} (one per sequence) or "
                f"[n, t{', o' * bool(values)}]={(n, t, *values)} (one per step); got shape {targets.shape}"
            )
        classes = self.output_size if self.loss is Loss.CROSS_ENTROPY else None
        targets = _values(targets, f"{name}.targets", classes, "classes", "output_size")
        lengths = split.lengths
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
                raise ValueError(
                    f"{name}.lengths must be [n]={(n,)} ints; got {lengths.shape} {lengths.dtype}"
                )
            if lengths.min() < 1 or lengths.max() > t:
                raise ValueError(
                    f"{name}.lengths must lie in [1, t={t}]; got values in [{lengths.min()}, {lengths.max()}]"
                )
            lengths = lengths.astype(np.int32)
        if name != "train":
            first = self.train
            if inputs.shape[1:] != first.inputs.shape[1:] or targets.ndim != first.targets.ndim:
                raise ValueError(
                    f"{name} must have the train split's layout: inputs [n, *{first.inputs.shape[1:]}] and "
                    f"{first.targets.ndim}-D targets; got inputs {inputs.shape}, targets {targets.shape}"
                )
            if (lengths is None) != (first.lengths is None):
                raise ValueError(f"{name}.lengths must be given exactly when train.lengths is")
        scored = targets.shape[: targets.ndim - len(values)]
        if split.mask is None:  # per sequence: every target; per step: those within the lengths
            valid = np.full(n, t) if lengths is None else lengths
            mask = np.ones(n) if len(scored) == 1 else np.arange(t) < valid[:, None]
        else:
            mask = np.asarray(split.mask)
            if mask.shape != scored or not np.isin(mask, (0, 1)).all():
                raise ValueError(f"{name}.mask must be {list(scored)} of 0s and 1s; got shape {mask.shape}")
        return Split(inputs, targets, lengths, mask.astype(np.float32))

    @property
    def value_shape(self) -> tuple[int, ...]:
        """The trailing shape of one target: `(o,)` for a regression of o > 1 values, else ()."""
        return (self.output_size,) if self.loss is Loss.MSE and self.output_size > 1 else ()

    @property
    def input_size(self) -> int | None:
        return None if self.vocab_size is not None else self.train.inputs.shape[2]

    @property
    def steps(self) -> int:
        """t, the steps of every sequence (padded ones included)."""
        return self.train.inputs.shape[1]

    def num_steps(self, length: int) -> int:
        """t; `length` must be it (a dataset has no difficulty knob)."""
        if length != self.steps:
            raise ValueError(f"length must be the {self.name} dataset's {self.steps} steps; got {length!r}")
        return self.steps

    def check_batch_size(self, batch_size: int, name: str = "batch_size") -> None:
        """Raises a ValueError unless the training split holds one batch of `batch_size`."""
        check_positive_int(batch_size, name)
        if batch_size > len(self.train):
            raise ValueError(
                f"{name}={batch_size} is more than the {self.name} dataset's {len(self.train)} training "
                "examples; lower it"
            )

    @functools.cached_property
    def _baseline(self) -> Baseline:
        split = self.train
        weights, targets = split.masks(), split.targets
        if self.loss is Loss.CROSS_ENTROPY:
            counts = np.bincount(targets.ravel(), weights.ravel(), minlength=self.output_size)
            p = counts / counts.sum()
            entropy = -sum(q * math.log(q) for q in p if q > 0)
            return Baseline(float(entropy), float(p.max()))
        scored_axes = tuple(range(weights.ndim))
        weights = weights.reshape(weights.shape + (1,) * len(self.value_shape))
        weights = np.broadcast_to(weights, targets.shape)
        mean = np.average(targets, weights=weights, axis=scored_axes)
        variance = np.average((targets - mean) ** 2, weights=weights)
        within = np.average(np.abs(targets - mean) < self.tolerance, weights=weights)
        return Baseline(float(variance), float(within))

    def baseline(self, length: int) -> Baseline:
        """The input-blind predictor fitted on the training split, scored there."""
        self.num_steps(length)
        return self._baseline

    def arrays(self, split: str) -> Batch:
        """A split's whole arrays as a `Batch` of NumPy arrays (`[n, ...]` each), masks included."""
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {', '.join(SPLIT_NAMES)}; got {split!r}")
        data = getattr(self, split)
        masks = data.masks()
        return Batch(data.inputs, data.targets, masks, masks, data.lengths)

    def num_batches(self, split: str, batch_size: int) -> int:
        """ceil(n / b): the batches that read `split` whole."""
        check_positive_int(batch_size, "batch_size")
        return -(-len(getattr(self, split)) // batch_size)

    def sample(self, key: Array, batch_size: int, length: int) -> Batch:
        """b training examples drawn uniformly with replacement (for a look at the data;
        training draws epochs, see `training_batch`)."""
        self.num_steps(length)
        check_positive_int(batch_size, "batch_size")
        return gather(self.arrays("train"), jax.random.randint(key, (batch_size,), 0, len(self.train)))


def _values(x: np.ndarray, name: str, limit: int | None, what: str, limit_name: str) -> np.ndarray:
    """`x` as int32 `what` in [0, limit), or (limit None) as finite float32; else a
    ValueError naming `name`."""
    if limit is None:
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"{name} must be finite; got NaN or inf")
        return x
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must be integer {what}; got {x.dtype}")
    if x.min() < 0 or x.max() >= limit:
        raise ValueError(
            f"{name} must be {what} in [0, {limit_name}={limit}); got values in [{x.min()}, {x.max()}]"
        )
    return x.astype(np.int32)


def gather(arrays: Batch, indices: Array) -> Batch:
    """The examples `indices` `[b]` of a split's arrays (`[n, ...]` each): `[b, ...]` each."""
    return Batch(*(None if x is None else jnp.take(x, indices, axis=0) for x in arrays))


def epoch_indices(key: Array, step: Array, num_examples: int, batch_size: int) -> Array:
    """The training examples `[b]` int32 of `step` of a run whose stream is `key`.

    Args:
      key: the run's training stream (a function of its seed alone).
      step: `[]` int, the step (traced: one compiled program for every step).
      num_examples: n, the training split's size; batch_size: b <= n.
    """
    per_epoch = num_examples // batch_size
    order = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), num_examples)
    return jax.lax.dynamic_slice_in_dim(order, (step % per_epoch) * batch_size, batch_size).astype(jnp.int32)


def training_batch(arrays: Batch, key: Array, step: Array, batch_size: int) -> Batch:
    """`step`'s batch of the training split `arrays` (see `epoch_indices`)."""
    return gather(arrays, epoch_indices(key, step, arrays.inputs.shape[0], batch_size))


def evaluation_batch(arrays: Batch, index: Array, batch_size: int) -> Batch:
    """Batch `index` of a split read in order: examples `[index * b, (index + 1) * b)`,
    those past the split's end replaced by example 0 with zero masks."""
    positions = index * batch_size + jnp.arange(batch_size)
    valid = positions < arrays.inputs.shape[0]
    batch = gather(arrays, jnp.where(valid, positions, 0))
    scale = valid.reshape(-1, *(1,) * (batch.loss_mask.ndim - 1)).astype(jnp.float32)
    return batch._replace(loss_mask=batch.loss_mask * scale, eval_mask=batch.eval_mask * scale)
