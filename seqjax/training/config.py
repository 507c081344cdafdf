"""What a group of runs shares (`TrainConfig`), and the optimiser it builds."""

from __future__ import annotations

import dataclasses
import enum
import math

import optax

from seqjax.validation import as_enum, check_positive_int, check_real


class Optimizer(enum.Enum):
    """The update rule, before the schedule and the run's peak learning rate.

    ADAM (Kingma & Ba 2015; AdamW with `weight_decay`), SGD (plain), MOMENTUM
    (heavy-ball, 0.9), RMSPROP (Tieleman & Hinton 2012), LION (Chen et al. 2023).
    """

    ADAM = "adam"
    SGD = "sgd"
    MOMENTUM = "momentum"
    RMSPROP = "rmsprop"
    LION = "lion"


_SCALINGS = {
    Optimizer.ADAM: optax.scale_by_adam,
    Optimizer.SGD: optax.identity,
    Optimizer.MOMENTUM: lambda: optax.trace(decay=0.9),
    Optimizer.RMSPROP: optax.scale_by_rms,
    Optimizer.LION: optax.scale_by_lion,
}


COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What a group of runs shares.

    Args:
      length: the task's length knob during training (see `seqjax.tasks`).
      steps: optimisation steps.
      batch_size: examples per step.
      warmup_steps: linear warm-up, then cosine decay to `final_lr_fraction` of the peak.
      final_lr_fraction: the schedule's end, a fraction of the peak in [0, 1].
      clip_norm: global gradient-norm clipping (None: off).
      weight_decay: decoupled (AdamW) weight decay, >= 0.
      optimizer: the update rule; see `Optimizer`.
      log_every: steps per compiled chunk, between metrics lines.
      eval_every: steps between evaluations on fresh batches (a multiple of log_every).
      checkpoint_every: steps between checkpoints (a multiple of log_every; 0: off).
      eval_batches: batches per evaluation.
      tbptt: truncated backpropagation through time (None: off): each sequence is
        read in windows of this many steps, one update per window, the model's
        final state of a window carried (without gradient) into the next, as
        Keras' `stateful=True` and PyTorch's language-model examples do. A window
        of the whole sequence is ordinary training.
      stop_accuracy: early stopping (None: off): a run whose validation accuracy
        reaches this at an evaluation is frozen there (its parameters and optimiser
        state stop changing; the other runs of the group train on unchanged).
      patience: early stopping (None: off): a run is frozen after this many
        evaluations in a row without a new lowest validation loss. The group
        stops at the first evaluation at which every run is frozen.
      compute_dtype: "float32", or "bfloat16" for mixed precision: the model's
        forward and backward passes (parameters, float inputs, activations, the
        recurrent carry) in bfloat16, while the master weights, gradients,
        optimiser state, loss, softmax and metrics stay float32 (the outputs are
        cast up before the loss), as do LayerNorm's statistics inside the cells.
        Evaluation runs in the same dtype as training.
    """

    length: int
    steps: int = 2000
    batch_size: int = 64
    warmup_steps: int = 100
    final_lr_fraction: float = 0.1
    clip_norm: float | None = 1.0
    weight_decay: float = 0.0
    optimizer: Optimizer | str = Optimizer.ADAM
    log_every: int = 50
    eval_every: int = 250
    checkpoint_every: int = 500
    eval_batches: int = 4
    tbptt: int | None = None
    stop_accuracy: float | None = None
    patience: int | None = None
    compute_dtype: str = "float32"

    def __post_init__(self):
        for name in ("length", "steps", "batch_size", "log_every", "eval_every", "eval_batches"):
            check_positive_int(getattr(self, name), name)
        for name in ("warmup_steps", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0; got {value!r}")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) % self.log_every:
                raise ValueError(
                    f"{name}={getattr(self, name)} must be a multiple of log_every={self.log_every}"
                )
        if self.steps % self.log_every:
            raise ValueError(f"steps={self.steps} must be a multiple of log_every={self.log_every}")
        if self.tbptt is not None:
            check_positive_int(self.tbptt, "tbptt (None: off)")
        if self.stop_accuracy is not None:
            check_real(self.stop_accuracy, "stop_accuracy (None: off)", 0.0, 1.0 + 1e-12, low_open=True)
        if self.patience is not None:
            check_positive_int(self.patience, "patience (None: off)")
        if self.clip_norm is not None:
            check_real(self.clip_norm, "clip_norm (None: off)", 0.0, math.inf, low_open=True)
        check_real(self.weight_decay, "weight_decay", 0.0, math.inf)
        check_real(self.final_lr_fraction, "final_lr_fraction", 0.0, 1.0 + 1e-12)
        object.__setattr__(self, "optimizer", as_enum(Optimizer, self.optimizer, "optimizer"))
        if self.compute_dtype not in COMPUTE_DTYPES:
            names = ", ".join(map(repr, COMPUTE_DTYPES))
            raise ValueError(f"compute_dtype must be one of {names}; got {self.compute_dtype!r}")


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Clipping, the update rule, weight decay and a warm-up + cosine schedule of unit peak.

    The peak learning rate is applied in the step instead (`TrainState.learning_rate`),
    so that it can differ between vmapped runs of one compiled program.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, 1.0, min(config.warmup_steps, config.steps - 1), config.steps, end_value=config.final_lr_fraction
    )
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm) if config.clip_norm else optax.identity(),
        _SCALINGS[config.optimizer](),
        optax.add_decayed_weights(config.weight_decay),
        optax.scale_by_schedule(schedule),
    )
