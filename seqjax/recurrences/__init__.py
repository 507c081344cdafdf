"""Recurrences: what a cell is, the built-in cells, and the algorithms that run a cell over time.

protocol:    the minimal `Cell` protocol and the optional capabilities fast paths check.
cells:       RNN (tanh, relu), LSTM and GRU cells with PyTorch's equations.
scan:        `lax.scan` over time with per-example lengths and reversal; `scan_cell`,
             a hand-written backward pass for dense recurrences.
cpu_kernel:  fused C++ loops for XLA:CPU (kernels/rnn_cpu.cc).
cudnn:       cuDNN's LSTM on CUDA GPUs, through `jax.experimental.rnn` (opt-in).
linear:      the diagonal linear recurrence h_t = a_t h_{t-1} + b_t, sequential,
             parallel, chunked or fused (kernels/linear_cpu.cc).
min_rnn:     minGRU and minLSTM (Feng et al. 2024).
lru:         LRU (Orvieto et al. 2023) and Griffin's RG-LRU (De et al. 2024).
mamba:       Mamba's selective state-space mixer (Gu & Dao 2023).
paths:       which of these runs a given cell, chosen from its capabilities.
"""

from seqjax.recurrences import cells, cpu_kernel, cudnn, linear, lru, mamba, min_rnn, paths, protocol, scan

__all__ = ["cells", "cpu_kernel", "cudnn", "linear", "lru", "mamba", "min_rnn", "paths", "protocol", "scan"]
