"""Gradient-flow diagnostics: how much of a loss's gradient reaches each time step.

Backpropagation through time multiplies the gradient by the recurrent Jacobian
`J_t = dh_t / dh_{t-1}` once per step, so in a vanilla RNN it shrinks or grows
geometrically with the distance from the loss (Bengio et al. 1994; Pascanu et
al. 2013); the LSTM's additive cell state and the GRU's interpolation keep paths
on which it does not. These functions measure that with JAX's autodiff through
the very code used in training (any cell's `step` under `seqjax.scan.scan`, or
any model's `apply`), never a re-implementation.

Shapes: t = time, b = batch, d = input features, h = hidden, s = state size
(the carry's leaves flattened: h, or 2h for the LSTM's (h, c)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp

from seqjax.recurrences import scan
from seqjax.recurrences.protocol import Cell

Array = jax.Array


def _flat_state(carry: Any) -> Array:
    """A batched carry (leaves `[b, ...]`) as one `[b, s]` array."""
    return jnp.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in jax.tree.leaves(carry)], axis=-1)


def hidden_state_gradients(
    cell: Cell,
    params: Any,
    xs: Array,
    loss_fn: Callable[[Array], Array],
    initial_carry: Any = None,
) -> tuple[Array, Array]:
    """`dL/ds_t` for every step of any cell run over `xs`, s_t the state step t reads.

    The scan adds a perturbation `delta_t` (zero in value) to the carry that step t
    reads, and the gradient with respect to it is `dL/ds_t`: the gradient that
    reaches step t's state, through everything from step t on (`grads[0]` is the
    initial carry's). The state is the whole carry (h for the RNN and GRU, h and c
    for the LSTM), flattened.

    Args:
      cell: any cell (`seqjax.recurrences.protocol.Cell`).
      params: its parameters.
      xs: `[t, b, d]` inputs, time-major.
      loss_fn: `ys [t, b, h] -> scalar`, the loss of the cell's outputs.
      initial_carry: leaves `[b, ...]`; the cell's own if None.

    Returns:
      `(loss, grads)`, grads: `[t, b, s]`.
    """
    carry = cell.initial_carry(xs.shape[1:2], xs.dtype) if initial_carry is None else initial_carry

    def step(p, c, inputs):
        x, delta = inputs
        return cell.step(p, jax.tree.map(jnp.add, c, delta), x)

    def loss_of(deltas):
        _, ys = scan.scan(step, params, carry, (xs, deltas))
        return loss_fn(ys)

    deltas = jax.tree.map(lambda leaf: jnp.zeros((xs.shape[0], *leaf.shape), leaf.dtype), carry)
    loss, grads = jax.value_and_grad(loss_of)(deltas)
    return loss, jax.vmap(_flat_state)(grads)


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


def jacobian_spectrum(cell: Cell, params: Any, xs: Array) -> JacobianSpectrum:
    """The recurrent Jacobian's spectral radius and largest singular value at every step.

    The state is the whole carry (h, or (h, c) for the LSTM, flattened to s; a
    complex state counts its real and imaginary parts, so the LRU's J has the
    moduli of its eigenvalues as theirs); `J_t` is `[s, s]`, taken by `jax.jacfwd`
    of `cell.step` at the carry the trajectory reached. Eigenvalues need the CPU (`jnp.linalg.eigvals`).

    Args:
      cell: any cell (`seqjax.recurrences.protocol.Cell`).
      params: its parameters.
      xs: `[t, b, d]` inputs, time-major.

    Returns:
      A `JacobianSpectrum` of `[t, b]` arrays.
    """
    carry0 = cell.initial_carry(xs.shape[1:2], xs.dtype)

    def step_keep_carry(p, c, x):
        c, _ = cell.step(p, c, x)
        return c, c

    _, carries = scan.scan(step_keep_carry, params, carry0, xs)  # leaves [t, b, ...]
    previous = jax.tree.map(lambda c0, cs: jnp.concatenate([c0[None], cs[:-1]]), carry0, carries)

    def one(prev, x):  # unbatched: prev leaves [...], x [d]
        flat, unflatten = _real_view(prev)

        def next_state(v):
            return _real_view(cell.step(params, unflatten(v), x)[0])[0]

        jac = jax.jacfwd(next_state)(flat)  # [s, s]
        radius = jnp.max(jnp.abs(jnp.linalg.eigvals(jac)))
        return radius.astype(flat.dtype), jnp.linalg.svd(jac, compute_uv=False)[0]

    radius, sigma = jax.vmap(jax.vmap(one))(previous, xs)
    return JacobianSpectrum(radius, sigma)


def _real_view(tree: Any) -> tuple[Array, Any]:
    """`tree` flattened to one real vector (complex leaves as real and imaginary parts),
    and the function that rebuilds it."""
    leaves, treedef = jax.tree.flatten(tree)
    parts = [jnp.stack([x.real, x.imag], -1) if jnp.iscomplexobj(x) else x for x in leaves]
    flat, unravel = jax.flatten_util.ravel_pytree(parts)

    def unflatten(v):
        rebuilt = [
            jax.lax.complex(p[..., 0], p[..., 1]) if jnp.iscomplexobj(x) else p
            for p, x in zip(unravel(v), leaves, strict=True)
        ]
        return jax.tree.unflatten(treedef, rebuilt)

    return flat, unflatten
