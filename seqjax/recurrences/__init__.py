"""Recurrences: what a cell is, the built-in cells, and the algorithms that run a cell over time.

protocol:    the minimal `Cell` protocol and the optional capabilities fast paths check.
cells:       RNN (tanh, relu), LSTM and GRU cells with PyTorch's equations.
scan:        `lax.scan` over time with per-example lengths and reversal; `scan_cell`,
             a hand-written backward pass for dense recurrences.
cpu_kernel:  fused C++ loops for XLA:CPU (kernels/rnn_cpu.cc).
paths:       which of these runs a given cell, chosen from its capabilities.
"""

from seqjax.recurrences import cells, cpu_kernel, paths, protocol, scan

__all__ = ["cells", "cpu_kernel", "paths", "protocol", "scan"]
