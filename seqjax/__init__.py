"""seqjax: recurrent networks and Transformers on long-range dependency tasks, in JAX.

Shape vocabulary, used in every docstring:
  b: batch, t: time, d: input features, h: hidden size, g: number of gates,
  L: number of layers, n: number of directions (2 if bidirectional).

Modules:
  cells:          pure RNN/LSTM/GRU cells (`init`, `initial_carry`, `project`, `step`).
  scan:           running a cell over time with `lax.scan`, with per-example lengths;
                  `scan_cell`, the layers' path, with a hand-written backward pass.
  layers:         `RNN`, `LSTM`, `GRU`: deep, bidirectional, PyTorch's arguments.
  torch_weights:  exact conversion to and from PyTorch state_dicts.
  linen:          Flax linen wrappers of the cells and layers.
  nnx:            a Flax NNX wrapper of the layers.
  transformer:    a small pre-LayerNorm Transformer with a KV cache for decoding.
  models:         task models (input encoding, backbone, readout); `count_params`.
  tasks:          long-range dependency tasks generated in JAX.
  train:          vmapped training over seeds and learning rates, checkpoints, metrics.
  distributed:    device meshes (runs x data parallel) and multi-process jobs.
  diagnostics:    gradient-flow profiles and recurrent Jacobian spectra.
"""

from seqjax import cells, scan
from seqjax.cells import LSTMState
from seqjax.layers import GRU, LSTM, RNN
from seqjax.models import SequenceModel, count_params
from seqjax.transformer import Transformer

__all__ = ["GRU", "LSTM", "RNN", "LSTMState", "SequenceModel", "Transformer", "cells", "count_params", "scan"]
