"""Running a cell over time with `jax.lax.scan`, with per-example lengths.

`scan` runs any step function (any cell's `step`) and is differentiated by JAX.
`scan_cell` runs a cell with the `DenseRecurrence` capability
(`seqjax.recurrences.protocol`) on raw inputs with a hand-written backward pass:
the backward scan carries only the state gradient and stacks the gate
gradients, and each weight gradient is one `[k, t*b] x [t*b, g*h]` matmul after
it, instead of a `[k, b] x [b, g*h]` product accumulated at every step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.recurrences.protocol import DenseRecurrence, offers, recurrent_projection

Array = jax.Array


def check_lengths(lengths: Any, batch: int, num_steps: int) -> Array | None:
    """Validates per-example lengths and returns them as an int32 `[b]` array.

    Raises:
      ValueError: lengths are not integers of shape `[batch]`, or (when their
        values are known, i.e. not traced) lie outside `[0, num_steps]`.
    """
    if lengths is None:
        return None
    if not isinstance(lengths, jax.core.Tracer):
        host = np.asarray(lengths)  # on the host, even inside a caller's jit
        if host.shape != (batch,) or not np.issubdtype(host.dtype, np.integer):
            raise ValueError(
                f"lengths must be integers of shape [batch]=({batch},); "
                f"got shape {host.shape} and dtype {host.dtype}"
            )
        if batch and (host.min() < 0 or host.max() > num_steps):
            raise ValueError(
                f"lengths must lie in [0, time={num_steps}]; got values from {host.min()} to {host.max()}"
            )
    elif lengths.shape != (batch,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(
            f"lengths must be integers of shape [batch]=({batch},); "
            f"got shape {lengths.shape} and dtype {lengths.dtype}"
        )
    return jnp.asarray(lengths, jnp.int32)


def _mask(valid: Array, new: Any, old: Any) -> Any:
    """Per example, `new` where valid else `old`; valid: [b], leaves [b, ...]."""

    def pick(n, o):
        return jnp.where(valid.reshape(valid.shape + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


def scan(
    step: Callable[[Any, Any, Array], tuple[Any, Array]],
    params: Any,
    carry: Any,
    xs: Array,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
    remat: int | None = None,
) -> tuple[Any, Array]:
    """Runs `step` over the leading (time) axis of `xs`.

    Args:
      step: `(params, carry, x_t) -> (carry, y_t)`, e.g. a cell's `step` (on raw
        inputs) or `step_projected` (on projected ones).
      params: the cell's parameters, closed over by every step.
      carry: initial carry, leaves `[b, ...]`.
      xs: `[t, b, ...]`, time-major (or a pytree of such arrays, which `step` receives
        one step's slice of).
      lengths: optional `[b]` integers in `[0, t]`: example i is `xs[:lengths[i], i]`
        and the rest is padding. Outputs at padded steps are zero, and the final
        carry is the carry after the last valid step (the initial carry for a
        length of zero).
      reverse: run from the last valid step of each example to its first, so that
        with `lengths` each sequence is reversed within its own length. Outputs
        stay aligned with their inputs (`ys[t]` belongs to `xs[t]`).
      unroll: forwarded to `jax.lax.scan`.
      remat: if given, k: the steps run in chunks of k under `jax.checkpoint`, so
        that differentiation keeps only each chunk's first carry (and the outputs)
        and recomputes a chunk's steps in the backward pass: memory
        `O(t/k + k)` steps' intermediates instead of `O(t)`, for about one more
        forward pass. k = sqrt(t) minimises it.

    Returns:
      `(final_carry, ys)` with ys: `[t, b, ...]`.
    """
    num_steps = jax.tree.leaves(xs)[0].shape[0]
    if remat is not None:
        return _scan_in_chunks(step, params, carry, xs, lengths, reverse, unroll, remat, num_steps)
    if lengths is None:
        return jax.lax.scan(lambda c, x: step(params, c, x), carry, xs, reverse=reverse, unroll=unroll)
    steps = jnp.arange(num_steps, dtype=lengths.dtype)
    return jax.lax.scan(_masked(step, params, lengths), carry, (steps, xs), reverse=reverse, unroll=unroll)


def _masked(step: Callable, params: Any, lengths: Array) -> Callable:
    """The `lax.scan` body of `step` over `(step index, x_t)`, masked past each length."""

    def masked_step(c, inputs):
        t, x = inputs
        new_c, y = step(params, c, x)
        valid = t < lengths
        # In reverse, padding comes first and leaves the carry untouched, so each
        # sequence starts from the initial carry at its own last valid step.
        return _mask(valid, new_c, c), _mask(valid, y, jnp.zeros_like(y))

    return masked_step


def _scan_in_chunks(step, params, carry, xs, lengths, reverse, unroll, chunk, num_steps):
    """`scan` as an outer scan over chunks of `chunk` steps, each chunk's inner scan
    under `jax.checkpoint`. A last partial chunk is padded with masked steps."""
    num_chunks = -(-num_steps // chunk)
    pad = num_chunks * chunk - num_steps
    if pad:
        xs = jax.tree.map(lambda x: jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]), xs)
        batch = jax.tree.leaves(carry)[0].shape[0]
        lengths = jnp.full((batch,), num_steps, jnp.int32) if lengths is None else lengths
    if lengths is None:
        body = lambda c, x: step(params, c, x)  # noqa: E731
        inputs = xs
    else:
        body = _masked(step, params, lengths)
        inputs = (jnp.arange(num_chunks * chunk, dtype=lengths.dtype), xs)
    inputs = jax.tree.map(lambda x: x.reshape(num_chunks, chunk, *x.shape[1:]), inputs)

    @jax.checkpoint
    def run_chunk(c, chunk_inputs):
        return jax.lax.scan(body, c, chunk_inputs, reverse=reverse, unroll=unroll)

    final, ys = jax.lax.scan(run_chunk, carry, inputs, reverse=reverse)
    ys = jax.tree.map(lambda y: y.reshape(num_chunks * chunk, *y.shape[2:])[:num_steps], ys)
    return final, ys


def _mask_steps(lengths: Array | None, num_steps: int) -> Array | None:
    """`[t, b]` booleans, True at valid steps; None without lengths."""
    if lengths is None:
        return None
    return jnp.arange(num_steps, dtype=lengths.dtype)[:, None] < lengths


def _forward(cell, reverse, unroll, hoist, params, carry, xs, lengths, keep_residuals):
    """The forward scan: `(final, ys, gx, residuals)`, gx the scanned inputs (projected
    if `hoist`); with `keep_residuals` it also stacks each step's input carry and
    recurrent projection `gh` for the backward pass."""

    def step(c, inputs):
        x, valid = inputs
        g = x if hoist else cell.project(params, x)
        gh = recurrent_projection(params, cell.hidden(c))
        new, y = cell.update(c, g, gh)
        if valid is not None:
            new, y = _mask(valid, new, c), _mask(valid, y, jnp.zeros_like(y))
        return new, (y, (c, gh) if keep_residuals else None)

    gx = cell.project(params, xs) if hoist else xs
    final, (ys, residuals) = jax.lax.scan(
        step, carry, (gx, _mask_steps(lengths, xs.shape[0])), reverse=reverse, unroll=unroll
    )
    return final, ys, gx, residuals


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _scan_cell(cell, reverse, unroll, hoist, params, carry, xs, lengths):
    final, ys, _, _ = _forward(cell, reverse, unroll, hoist, params, carry, xs, lengths, False)
    return final, ys


def _scan_cell_fwd(cell, reverse, unroll, hoist, params, carry, xs, lengths):
    final, ys, gx, residuals = _forward(cell, reverse, unroll, hoist, params, carry, xs, lengths, True)
    # The hoisted projection is kept rather than recomputed; in the loop, gx is xs itself.
    return (final, ys), (params, xs, gx, lengths, residuals)


def _scan_cell_bwd(cell, reverse, unroll, hoist, saved, cotangents):
    params, xs, gx, lengths, (carries, ghs) = saved
    d_final, d_ys = cotangents
    w_hh_t = params["w_hh"].T

    def step(d_carry, inputs):
        c, x, gh, dy, valid = inputs
        if valid is None:
            d_new, d_skip = d_carry, None
        else:
            zeros = jax.tree.map(jnp.zeros_like, d_carry)
            d_new, d_skip = _mask(valid, d_carry, zeros), _mask(valid, zeros, d_carry)
            dy = _mask(valid, dy, jnp.zeros_like(dy))
        # Recomputing a step's small input projection is cheaper than storing them all.
        g = x if hoist else cell.project(params, x)
        _, update_vjp = jax.vjp(cell.update, c, g, gh)
        d_c, d_g, d_gh = update_vjp((d_new, dy))
        # The state gradient through the recurrent matmul, into the h part of the carry.
        _, hidden_vjp = jax.vjp(cell.hidden, c)
        (d_c_h,) = hidden_vjp(d_gh @ w_hh_t)
        d_c = jax.tree.map(jnp.add, d_c, d_c_h)
        if d_skip is not None:
            d_c = jax.tree.map(jnp.add, d_c, d_skip)
        # Where the cell reads only gx + gh (RNN, LSTM) JAX hands back one array
        # for both; stacking it once saves a [t, b, g*h] buffer.
        return d_c, (None if d_g is d_gh else d_g, d_gh)

    d_carry, (d_gx, d_gh) = jax.lax.scan(
        step,
        d_final,
        (carries, gx, ghs, d_ys, _mask_steps(lengths, xs.shape[0])),
        reverse=not reverse,
        unroll=unroll,
    )
    if d_gx is None:
        d_gx = d_gh
    d_params, d_xs = _input_and_weight_gradients(params, xs, cell.hidden(carries), d_gx, d_gh)
    return d_params, d_carry, d_xs, None


def _input_and_weight_gradients(
    params: dict[str, Array], xs: Array, h_prev: Array, d_gx: Array, d_gh: Array
) -> tuple[dict[str, Array], Array]:
    """Parameter and input gradients of a scanned cell from its gate gradients.

    Every one is a single large matmul over all t*b rows.

    Args:
      params: the cell's parameters.
      xs: `[t, b, d]`, the raw inputs.
      h_prev: `[t, b, h]`, the hidden state each step's recurrent matmul read.
      d_gx, d_gh: `[t, b, g*h]`, gradients of the input projection
        `xs @ w_ih + b_ih` and of the recurrent projection `h_prev @ w_hh + b_hh`.

    Returns:
      `(d_params, d_xs)`, shaped and typed like `params` and `xs`.
    """
    d_gx_2d, d_gh_2d = d_gx.reshape(-1, d_gx.shape[-1]), d_gh.reshape(-1, d_gh.shape[-1])
    d_params = {
        "w_ih": xs.reshape(-1, xs.shape[-1]).T @ d_gx_2d,
        "w_hh": h_prev.reshape(-1, h_prev.shape[-1]).T @ d_gh_2d,
    }
    if "b_ih" in params:
        d_params["b_ih"] = d_gx_2d.sum(0)
        # One pass over the [t*b, g*h] gradients when they are one array (RNN, LSTM).
        d_params["b_hh"] = d_params["b_ih"] if d_gh is d_gx else d_gh_2d.sum(0)
    d_params = {k: d_params[k].astype(v.dtype) for k, v in params.items()}
    d_xs = (d_gx_2d @ params["w_ih"].T).reshape(xs.shape).astype(xs.dtype)
    return d_params, d_xs


_scan_cell.defvjp(_scan_cell_fwd, _scan_cell_bwd)


def scan_cell(
    cell: Any,
    params: dict[str, Array],
    carry: Any,
    xs: Array,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
    hoist: bool = True,
) -> tuple[Any, Array]:
    """`scan(cell.step, params, carry, xs, ...)` with a hand-written backward pass.

    Same arguments and results as `scan` with `step=cell.step` (xs: raw inputs
    `[t, b, d]`), and the same values and gradients to rounding; see the module
    docstring for what differs. Only reverse-mode differentiation is defined
    (`jax.grad`, `jax.vjp`), not forward mode (`jax.jvp`, `jax.jacfwd`): use
    `scan` for those.

    Args:
      cell: a cell with the `DenseRecurrence` capability (`seqjax.recurrences.protocol`).
      params: its parameters (`w_ih`, `w_hh`, and `b_ih`, `b_hh` if it has biases).
      carry, xs, lengths, reverse, unroll: as `scan`.
      hoist: project all steps' inputs in one `[t*b, d] x [d, g*h]` matmul before
        the scan (one large matmul, and a `[t, b, g*h]` buffer), or project each
        step's input inside the loop (no buffer; faster on CPU). The backward pass
        forms the input-weight gradient in one matmul either way.

    Raises:
      TypeError: the cell lacks the `DenseRecurrence` capability (run it with `scan`).
    """
    if not offers(cell, DenseRecurrence):
        raise TypeError(
            f"scan_cell needs a cell with the DenseRecurrence capability (seqjax.recurrences.protocol); "
            f"{type(cell).__name__} has not: run it with scan(cell.step, ...)"
        )
    return _scan_cell(cell, reverse, unroll, hoist, params, carry, xs, lengths)
