"""Training: every seed and learning rate of a sweep in one compiled program.

config:       `TrainConfig` and the optimiser it builds.
loop:         `train`, the vmapped chunked training loop (optionally truncated BPTT),
              evaluation, `loss_and_metrics`; datasets' batches by `dataset_indices`.
checkpoints:  orbax checkpoints and the metrics file of a group of runs.
distributed:  device meshes (runs x data) and multi-process jobs.
"""

from seqjax.training import checkpoints, distributed
from seqjax.training.config import COMPUTE_DTYPES, Optimizer, TrainConfig, make_optimizer
from seqjax.training.loop import (
    NonFiniteError,
    OnNonFinite,
    TrainState,
    dataset_indices,
    init_state,
    loss_and_metrics,
    make_evaluate,
    make_train_chunk,
    num_windows,
    train,
)

__all__ = [
    "COMPUTE_DTYPES",
    "NonFiniteError",
    "OnNonFinite",
    "Optimizer",
    "TrainConfig",
    "TrainState",
    "checkpoints",
    "dataset_indices",
    "distributed",
    "init_state",
    "loss_and_metrics",
    "make_evaluate",
    "make_optimizer",
    "make_train_chunk",
    "num_windows",
    "train",
]
