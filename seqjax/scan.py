"""Running a cell over time with `jax.lax.scan`, with per-example lengths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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
) -> tuple[Any, Array]:
    """Runs `step` over the leading (time) axis of `xs`.

    Args:
      step: `(params, carry, x_t) -> (carry, y_t)`, e.g. `cell.step` (on projected
        inputs) or `cell.apply` (on raw inputs).
      params: the cell's parameters, closed over by every step.
      carry: initial carry, leaves `[b, ...]`.
      xs: `[t, b, ...]`, time-major.
      lengths: optional `[b]` integers in `[0, t]`: example i is `xs[:lengths[i], i]`
        and the rest is padding. Outputs at padded steps are zero, and the final
        carry is the carry after the last valid step (the initial carry for a
        length of zero).
      reverse: run from the last valid step of each example to its first, so that
        with `lengths` each sequence is reversed within its own length. Outputs
        stay aligned with their inputs (`ys[t]` belongs to `xs[t]`).
      unroll: forwarded to `jax.lax.scan`.

    Returns:
      `(final_carry, ys)` with ys: `[t, b, ...]`.
    """

    if lengths is None:
        return jax.lax.scan(lambda c, x: step(params, c, x), carry, xs, reverse=reverse, unroll=unroll)

    def masked_step(c, inputs):
        t, x = inputs
        new_c, y = step(params, c, x)
        valid = t < lengths
        # In reverse, padding comes first and leaves the carry untouched, so each
        # sequence starts from the initial carry at its own last valid step.
        return _mask(valid, new_c, c), _mask(valid, y, jnp.zeros_like(y))

    steps = jnp.arange(xs.shape[0], dtype=lengths.dtype)
    return jax.lax.scan(masked_step, carry, (steps, xs), reverse=reverse, unroll=unroll)
