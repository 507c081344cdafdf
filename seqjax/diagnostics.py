"""Gradient-flow diagnostics: how much of a loss's gradient reaches each time step.

Backpropagation through time multiplies the gradient by the recurrent Jacobian
`J_t = dh_t / dh_{t-1}` once per step, so in a vanilla RNN it shrinks or grows
geometrically with the distance from the loss (Bengio et al. 1994; Pascanu et
al. 2013); the LSTM's additive cell state and the GRU's interpolation keep paths
on which it does not. These functions measure that with JAX's autodiff through
the very code used in training (`cell.step` under `seqjax.scan.scan`, or any
model's `apply`), never a re-implementation.

Shapes: t = time, b = batch, d = input features, h = hidden, s = state size
(h, or 2h for the LSTM's (h, c)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp

from seqjax import scan
from seqjax.cells import Cell, LSTMState

Array = jax.Array


def _perturb(carry: Any, delta: Array) -> Any:
    """Adds delta to the hidden state h of a carry (h itself, or LSTMState.h)."""
    if isinstance(carry, LSTMState):
        return carry._replace(h=carry.h + delta)
    return carry + delta


def hidden_state_gradients(
    cell: Cell,
    params: dict[str, Array],
    xs: Array,
    loss_fn: Callable[[Array], Array],
    initial_carry: Any = None,
) -> tuple[Array, Array]:
    """`dL/dh_t` for every step of a cell run over `xs`.

    The scan adds a perturbation `delta_t` (zero in value) to each step's hidden
    state, and the gradient with respect to it is `dL/dh_t`: the gradient that
    reaches step t, through everything after it.

    Args:
      cell: a `seqjax.cells` cell.
      params: its parameters.
      xs: `[t, b, d]` inputs, time-major.
      loss_fn: `ys [t, b, h] -> scalar`, the loss of the hidden states.
      initial_carry: leaves `[b, h]`; zeros if None.

    Returns:
      `(loss, grads)`, grads: `[t, b, h]`.
    """
    carry = cell.initial_carry(xs.shape[1:2], xs.dtype) if initial_carry is None else initial_carry
    gx = cell.project(params, xs)  # [t, b, g*h]

    def step(p, c, inputs):
        g, delta = inputs
        c, _ = cell.step(p, c, g)
        c = _perturb(c, delta)
        return c, (c.h if isinstance(c, LSTMState) else c)

    def loss_of(deltas):
        _, ys = scan.scan(step, params, carry, (gx, deltas))
        return loss_fn(ys)

    deltas = jnp.zeros((*xs.shape[:2], cell.hidden_size), xs.dtype)
    return jax.value_and_grad(loss_of)(deltas)


def input_gradients(
    apply_fn: Callable[[Array], Array], inputs: Array, loss_fn: Callable[[Array], Array]
) -> Array:
    """`dL/dx_t` for any model: the gradient that reaches each input step.

    Args:
      apply_fn: `inputs [b, t, d] -> outputs`, e.g. `partial(model.apply, params)`.
      inputs: `[b, t, d]` features.
      loss_fn: `outputs -> scalar`.

    Returns:
      `[b, t, d]`.
    """
    return jax.grad(lambda x: loss_fn(apply_fn(x)))(inputs)


def profile(grads: Array, time_axis: int = 0) -> Array:
    """Per-step gradient norm: the L2 norm over features (the last axis), averaged
    over every other axis; returns `[t]`."""
    norms = jnp.linalg.norm(grads, axis=-1)
    return jnp.moveaxis(norms, time_axis, 0).reshape(norms.shape[time_axis], -1).mean(axis=1)


def decay_rate(norms: Array, loss_step: int | None = None) -> Array:
    """Least-squares slope of `log norms[t]` against the distance `loss_step - t`.

    Negative: the gradient vanishes by a factor `exp(rate)` per step of distance;
    positive: it explodes. Steps after `loss_step` (default: the last) are left
    out, and so are norms that underflowed to zero (or to subnormals), which a
    long vanishing profile reaches in float32.

    Args:
      norms: `[t]` gradient norms, e.g. from `profile`.
      loss_step: the step whose output the loss reads.

    Returns:
      The rate, a scalar (natural log per step).
    """
    last = norms.shape[0] - 1 if loss_step is None else loss_step
    norms = norms[: last + 1]
    distance = (last - jnp.arange(last + 1)).astype(norms.dtype)
    valid = (norms > jnp.finfo(norms.dtype).tiny).astype(norms.dtype)
    logs = jnp.log(jnp.where(valid > 0, norms, 1.0))
    x_mean = jnp.sum(valid * distance) / jnp.sum(valid)
    y_mean = jnp.sum(valid * logs) / jnp.sum(valid)
    return jnp.sum(valid * (distance - x_mean) * (logs - y_mean)) / jnp.sum(valid * (distance - x_mean) ** 2)


class JacobianSpectrum(NamedTuple):
    """Spectrum of `J_t = d state_t / d state_{t-1}` along a trajectory."""

    spectral_radius: Array  # [t, b]: max |eigenvalue|
    max_singular_value: Array  # [t, b]: the largest singular value (the operator norm)


def jacobian_spectrum(cell: Cell, params: dict[str, Array], xs: Array) -> JacobianSpectrum:
    """The recurrent Jacobian's spectral radius and largest singular value at every step.

    The state is the whole carry (h, or (h, c) for the LSTM, flattened to s);
    `J_t` is `[s, s]`, taken by `jax.jacfwd` of `cell.step` at the carry the
    trajectory reached. Eigenvalues need the CPU (`jnp.linalg.eigvals`).

    Args:
      cell: a `seqjax.cells` cell.
      params: its parameters.
      xs: `[t, b, d]` inputs, time-major.

    Returns:
      A `JacobianSpectrum` of `[t, b]` arrays.
    """
    carry0 = cell.initial_carry(xs.shape[1:2], xs.dtype)
    gx = cell.project(params, xs)

    def step_keep_carry(p, c, g):
        c, _ = cell.step(p, c, g)
        return c, c

    _, carries = scan.scan(step_keep_carry, params, carry0, gx)  # leaves [t, b, h]
    previous = jax.tree.map(lambda c0, cs: jnp.concatenate([c0[None], cs[:-1]]), carry0, carries)

    def one(prev, g):  # unbatched: prev leaves [h], g [g*h]
        flat, unflatten = jax.flatten_util.ravel_pytree(prev)

        def next_state(v):
            return jax.flatten_util.ravel_pytree(cell.step(params, unflatten(v), g)[0])[0]

        jac = jax.jacfwd(next_state)(flat)  # [s, s]
        radius = jnp.max(jnp.abs(jnp.linalg.eigvals(jac)))
        return radius.astype(flat.dtype), jnp.linalg.svd(jac, compute_uv=False)[0]

    radius, sigma = jax.vmap(jax.vmap(one))(previous, gx)
    return JacobianSpectrum(radius, sigma)
