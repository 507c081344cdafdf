"""The LSTM on NVIDIA GPUs through cuDNN's persistent RNN kernels (`jax.experimental.rnn`).

A `lax.scan` launches a few kernels per time step; cuDNN runs the whole time loop
of a layer in its own kernels, forward and backward. JAX exposes cuDNN's LSTM
only (`jax.experimental.rnn.lstm`: float32, PyTorch's gate order, one flat
weight vector), so this path runs a `DenseRecurrence` cell whose `kernel`
attribute is "lstm" (the maths of PyTorch's `nn.LSTM`, which cuDNN computes),
on the CUDA backend, in float32, when a layer asks for it (`cudnn=True`). It is
not the default: on an H200 seqjax's unrolled scan trained and ran the LSTM
faster than cuDNN at every size measured (`seqjax.recurrences.paths`).

What this module adds to `jax.experimental.rnn`:

- zero-length sequences (jax #17966: cuDNN refuses them): they run one step of
  length 1 whose outputs are masked and whose final state is the initial one;
- the backward direction of a bidirectional layer, reversed within each length;
- `vmap` (the cuDNN call has no batching rule): a batched call runs as a loop
  over the vmapped axis (`jax.custom_batching.sequential_vmap`), so vmapped
  seeds and learning rates work;
- exact conversion between seqjax's parameters and cuDNN's flat weights
  (`pack`, `unpack`), the layout `jax.experimental.rnn.unpack_lstm_weights` reads:
  every pseudo-layer's `W_ih [4h, d]` and `W_hh [4h, h]` (layer 0 forward,
  layer 0 backward, layer 1 forward, ...), then every pseudo-layer's `b_ih`, `b_hh`.

Precision: cuDNN may use TF32 for float32 unless the matmul precision is
"highest" (`jax.default_matmul_precision` or `$JAX_DEFAULT_MATMUL_PRECISION`),
as XLA's own matmuls do.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import rnn
from jax.experimental.layout import Layout, with_layout_constraint

from seqjax.recurrences.cells import LSTMState
from seqjax.recurrences.linear import reverse_within
from seqjax.recurrences.protocol import DenseRecurrence, offers

Array = jax.Array
GATES = 4  # cuDNN's LSTM; the only cell JAX exposes
KINDS = frozenset({"lstm"})  # the cells' `kernel` kinds that cuDNN computes through JAX


def computes(cell: Any) -> bool:
    """Whether cuDNN's LSTM computes `cell`: a `DenseRecurrence` cell whose `kernel`
    attribute is "lstm" (PyTorch's LSTM maths; see `seqjax.recurrences.protocol`)."""
    return offers(cell, DenseRecurrence) and getattr(cell, "kernel", None) in KINDS


def available() -> bool:
    """Whether JAX runs on a CUDA GPU with its cuDNN RNN kernels registered."""
    try:
        from jax._src.lib import gpu_rnn  # the plugin's registration of the cuDNN calls
    except ImportError:
        return False
    return jax.default_backend() == "gpu" and getattr(gpu_rnn, "_cuda_rnn", None) is not None


def unsupported_reason(cell: Any, *arrays: Any) -> str | None:
    """Why this path cannot run `cell` on these arrays (pytrees), or None if it can."""
    if not computes(cell):
        return (
            f"cuDNN computes only the LSTM (a DenseRecurrence cell with kernel='lstm'); "
            f"{type(cell).__name__} has kernel={getattr(cell, 'kernel', None)!r}"
        )
    dtypes = {jnp.result_type(x) for x in jax.tree.leaves(arrays)}
    if dtypes != {jnp.dtype(jnp.float32)}:
        return f"cuDNN's LSTM in JAX takes float32 only; got {sorted(map(str, dtypes))}"
    if not available():
        return f"cuDNN needs the CUDA backend with jax's cuDNN plugin; running on {jax.default_backend()}"
    return None


def pack(params: Sequence[dict[str, Array]], hidden_size: int) -> Array:
    """cuDNN's flat weights `[n]` from the parameters of each pseudo-layer, in cuDNN's
    order (layer 0 forward, layer 0 backward, layer 1 forward, ...). A cell without
    biases gets zero biases (cuDNN's LSTM always has both)."""
    zeros = jnp.zeros((GATES * hidden_size,), params[0]["w_hh"].dtype)
    matrices = [w for p in params for w in (p["w_ih"].T.ravel(), p["w_hh"].T.ravel())]
    biases = [p.get(name, zeros) for p in params for name in ("b_ih", "b_hh")]
    return jnp.concatenate(matrices + biases)


def unpack(
    weights: Array, input_sizes: Sequence[int], hidden_size: int, bias: bool = True
) -> list[dict[str, Array]]:
    """The inverse of `pack`: one parameter dict per pseudo-layer, the k-th reading
    `input_sizes[k]` features. With `bias=False` the biases must be zero (else a
    ValueError: they would be lost)."""
    g = GATES * hidden_size
    sizes = [g * (d + hidden_size) for d in input_sizes] + [2 * g] * len(input_sizes)
    if jnp.shape(weights) != (sum(sizes),):
        raise ValueError(f"weights must have shape [{sum(sizes)}] for these layers; got {jnp.shape(weights)}")
    parts = jnp.split(jnp.asarray(weights), list(itertools.accumulate(sizes))[:-1])
    out = []
    for k, d in enumerate(input_sizes):
        w_ih, w_hh = jnp.split(parts[k], [g * d])
        b_ih, b_hh = jnp.split(parts[len(input_sizes) + k], 2)
        p = {"w_ih": w_ih.reshape(g, d).T, "w_hh": w_hh.reshape(g, hidden_size).T}
        if bias:
            p |= {"b_ih": b_ih, "b_hh": b_hh}
        elif not isinstance(weights, jax.core.Tracer) and bool(jnp.any(b_ih != 0) | jnp.any(b_hh != 0)):
            raise ValueError("weights hold nonzero biases, which a layer with bias=False would lose")
        out.append(p)
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def lstm(
    x: Array, h0: Array, c0: Array, weights: Array, lengths: Array, input_size: int, hidden_size: int
) -> tuple[Array, Array, Array]:
    """One cuDNN LSTM layer, one direction: `jax.experimental.rnn.lstm` with a batching rule.

    Args:
      x: `[b, t, d]` float32. h0, c0: `[1, b, h]`. weights: `pack` of one pseudo-layer.
      lengths: `[b]` int32 in `[1, t]` (cuDNN refuses 0).
      input_size, hidden_size: d and h.

    Returns:
      `(y [b, t, h], h_n [1, b, h], c_n [1, b, h])`, y zero past each length.
    """
    return _lstm_fwd(x, h0, c0, weights, lengths, input_size, hidden_size)[0]


def _row_major(tree: Any) -> Any:
    """Every array of `tree` in row-major layout. The cuDNN calls of
    `jax.experimental.rnn` declare no layouts, so XLA may otherwise hand them (or
    read from them) a transposed array as a relabelled layout, unmoved: a
    `[t, b, d] -> [b, t, d]` swap then reaches cuDNN as the time-major bytes."""
    return jax.tree.map(lambda x: with_layout_constraint(x, Layout(tuple(range(x.ndim)))), tree)


def _lstm_fwd(x, h0, c0, weights, lengths, input_size, hidden_size):
    def call(*args):
        outputs, residuals = rnn.lstm_fwd(
            *_row_major(args), input_size, hidden_size, 1, 0.0, False, None
        )  # fmt: skip
        return _row_major(outputs), residuals

    return jax.custom_batching.sequential_vmap(call)(x, h0, c0, weights, lengths)


def _lstm_bwd(input_size, hidden_size, residuals, cotangents):
    def call(residuals, cotangents):
        residuals, cotangents = _row_major((residuals, cotangents))
        grads = rnn.lstm_bwd(input_size, hidden_size, 1, 0.0, False, None, residuals, cotangents)[:4]
        return _row_major(grads)

    return (*jax.custom_batching.sequential_vmap(call)(residuals, cotangents), None)


lstm.defvjp(_lstm_fwd, _lstm_bwd)


def run(
    cell: Any,
    params: dict[str, Array],
    carry: LSTMState,
    xs: Array,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = True,
    lstm_fn: Callable[..., tuple[Array, Array, Array]] = lstm,
) -> tuple[LSTMState, Array]:
    """Runs an LSTM cell (`computes(cell)`) over `xs` with cuDNN.

    Args:
      cell, params: the cell and its parameters (`w_ih [d, 4h]`, `w_hh [h, 4h]`, biases).
      carry: `LSTMState(h [b, h], c [b, h])`.
      xs: `[t, b, d]` if `time_major`, else `[b, t, d]`; float32.
      lengths: optional `[b]` valid lengths (0 allowed; above t acts as t).
      reverse: read each sequence from its last valid step to its first.
      time_major: the layout of xs and ys.
      lstm_fn: the layer call, `lstm`'s signature (tests pass a reference).

    Returns:
      `(final carry, ys [t, b, h] (or [b, t, h]))`, ys zero past each length.
    """
    x = jnp.swapaxes(xs, 0, 1) if time_major else xs  # cuDNN reads [b, t, d]
    b, t, d = x.shape
    if lengths is not None:
        lengths = jnp.clip(lengths, 0, t).astype(jnp.int32)
    n = jnp.full((b,), t, jnp.int32) if lengths is None else lengths
    if reverse:
        x = _reverse(x, lengths)
    weights = pack([params], cell.hidden_size)
    y, h_n, c_n = lstm_fn(x, carry.h[None], carry.c[None], weights, jnp.maximum(n, 1), d, cell.hidden_size)
    final = LSTMState(h_n[0], c_n[0])
    if lengths is not None:
        # A sequence of length 0 ran one step of length 1: drop its output, keep its state.
        y = jnp.where((jnp.arange(t) < n[:, None])[..., None], y, 0).astype(y.dtype)
        empty = (n == 0)[:, None]
        final = LSTMState(jnp.where(empty, carry.h, final.h), jnp.where(empty, carry.c, final.c))
    if reverse:
        y = _reverse(y, lengths)
    return final, (jnp.swapaxes(y, 0, 1) if time_major else y)


def _reverse(x: Array, lengths: Array | None) -> Array:
    """`x: [b, t, ...]` reversed within each length."""
    return jnp.swapaxes(reverse_within(jnp.swapaxes(x, 0, 1), lengths), 0, 1)
