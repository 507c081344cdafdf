"""Models: recurrent layers over any cell, the Transformer, and task models over any family.

layers:          `Recurrent` (any cell; deep, bidirectional, lengths, dropout,
                 step), PyTorch's `RNN`, `LSTM`, `GRU`, and the parallel recurrences
                 `MinGRU`, `MinLSTM`, `LRU`, `RGLRU`, `Mamba`.
transformer:     a pre-LayerNorm Transformer with a KV cache; the "transformer" family.
sequence_model:  the `Backbone` interface every family has, and `SequenceModel`:
                 encoding, backbone, readout; online use: step, stream, generate, forecast.
decoding:        sampling from logits (temperature, top-k) and the compiled rollout
                 that feeds a model's outputs back as its inputs.
seq2seq:         encoder-decoders (any cell family, with or without attention; the
                 Transformer's), greedy and beam-search decoding.
"""

from seqjax.models.layers import GRU, LRU, LSTM, RGLRU, RNN, Mamba, MinGRU, MinLSTM, Recurrent
from seqjax.models.sequence_model import Backbone, SequenceModel, count_params
from seqjax.models.transformer import Transformer

__all__ = [
    "GRU",
    "LRU",
    "LSTM",
    "RGLRU",
    "RNN",
    "Backbone",
    "Mamba",
    "MinGRU",
    "MinLSTM",
    "Recurrent",
    "SequenceModel",
    "Transformer",
    "count_params",
]
