"""seqjax: recurrent networks, parallel recurrences and Transformers on long-range tasks, in JAX.

Shape vocabulary, used in every docstring:
  b: batch, t: time, d: input features, h: hidden size, g: number of gates,
  L: number of layers, n: number of directions (2 if bidirectional), o: outputs.

Packages, from the bottom up:
  registry:     the model families every tool can name (`register_cell`, `register_backbone`).
  recurrences:  the cell protocol and its capabilities (`protocol`), the built-in cells
                (`cells`), the parallel recurrences (`linear`, `min_rnn`, `lru`, `mamba`),
                and what runs a cell over time (`scan`, `cpu_kernel`, `paths`).
  models:       `Recurrent` layers over any cell and PyTorch's `RNN`/`LSTM`/`GRU`
                (`layers`), the `Transformer`, and `SequenceModel` over any family.
  data:         long-range dependency tasks (`tasks`) and the Chomsky-hierarchy tasks
                (`chomsky`), generated in JAX; in-memory `datasets` of real sequences
                (`text`, `classification`).
  training:     vmapped training over seeds and learning rates, checkpoints, meshes.
  analysis:     gradient-flow diagnostics (`diagnostics`).
  interop:      PyTorch state_dicts (`torch_weights`), Flax linen and NNX wrappers.
  host:         the process's memory settings for XLA:CPU (`keep_freed_memory`).

The flat module paths of seqjax 0.1 (`seqjax.train`, `seqjax.tasks`, `seqjax.linen`,
...) still import, as the modules of their new homes.
"""

import importlib
import importlib.abc
import importlib.util
import sys

from seqjax import registry
from seqjax.models import (
    GRU,
    LRU,
    LSTM,
    RGLRU,
    RNN,
    Mamba,
    MinGRU,
    MinLSTM,
    Recurrent,
    SequenceModel,
    Transformer,
    count_params,
)  # fmt: skip
from seqjax.recurrences import cells, scan
from seqjax.recurrences.cells import LSTMState
from seqjax.recurrences.linear import linear_recurrence
from seqjax.registry import register_backbone, register_cell

__all__ = [
    "GRU",
    "LRU",
    "LSTM",
    "RGLRU",
    "RNN",
    "LSTMState",
    "Mamba",
    "MinGRU",
    "MinLSTM",
    "Recurrent",
    "SequenceModel",
    "Transformer",
    "cells",
    "count_params",
    "linear_recurrence",
    "register_backbone",
    "register_cell",
    "registry",
    "scan",
]

_MOVED = {
    "seqjax.cells": "seqjax.recurrences.cells",
    "seqjax.scan": "seqjax.recurrences.scan",
    "seqjax.cpu_kernel": "seqjax.recurrences.cpu_kernel",
    "seqjax.layers": "seqjax.models.layers",
    "seqjax.transformer": "seqjax.models.transformer",
    "seqjax.tasks": "seqjax.data.tasks",
    "seqjax.train": "seqjax.training",
    "seqjax.distributed": "seqjax.training.distributed",
    "seqjax.diagnostics": "seqjax.analysis.diagnostics",
    "seqjax.torch_weights": "seqjax.interop.torch_weights",
    "seqjax.linen": "seqjax.interop.linen",
    "seqjax.nnx": "seqjax.interop.nnx",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a 0.1 module path as the module at its new home (loaded on first use)."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in _MOVED else None

    def create_module(self, spec):
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module):
        pass


sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    # `seqjax.tasks` without an import statement, as for the modules imported above.
    if f"seqjax.{name}" in _MOVED:
        return importlib.import_module(f"seqjax.{name}")
    raise AttributeError(f"module 'seqjax' has no attribute {name!r}")
