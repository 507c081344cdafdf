"""The scan against a plain Python loop over time steps (the reference)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.recurrences import cells, scan

T, B, D, H = 6, 4, 3, 5


@pytest.fixture(scope="module")
def setup():
    cell = cells.LSTMCell(H)
    params = cell.init(jax.random.key(0), D)
    xs = jax.random.normal(jax.random.key(1), (T, B, D))
    return cell, params, xs


def loop_reference(cell, params, xs, lengths, reverse):
    """Each example alone, its valid steps only, in a Python loop."""
    ys = np.zeros((T, B, H), np.float32)
    finals = []
    for b in range(B):
        carry = cell.initial_carry((1,))
        steps = range(int(lengths[b]))
        for t in reversed(steps) if reverse else steps:
            carry, y = cell.step(params, carry, xs[t, b : b + 1])
            ys[t, b] = y[0]
        finals.append(carry)
    return jax.tree.map(lambda *c: jnp.concatenate(c), *finals), ys


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("unroll", [1, 3])
def test_scan_with_lengths_equals_loop(setup, reverse, unroll):
    cell, params, xs = setup
    lengths = jnp.array([6, 3, 1, 0])
    run = jax.jit(
        lambda p, x, n: scan.scan(
            cell.step, p, cell.initial_carry((B,)), x, lengths=n, reverse=reverse, unroll=unroll
        )
    )
    carry, ys = run(params, xs, lengths)
    ref_carry, ref_ys = loop_reference(cell, params, xs, lengths, reverse)
    np.testing.assert_allclose(ys, ref_ys, rtol=1e-5, atol=1e-6)
    for a, b in zip(carry, ref_carry, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_without_lengths_equals_full_lengths(setup, reverse):
    cell, params, xs = setup
    carry0 = cell.initial_carry((B,))
    full = jnp.full((B,), T)
    a = scan.scan(cell.step, params, carry0, xs, reverse=reverse)
    b = scan.scan(cell.step, params, carry0, xs, lengths=full, reverse=reverse)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_projected_step_equals_raw_apply(setup):
    cell, params, xs = setup
    carry0 = cell.initial_carry((B,))
    _, ys_raw = scan.scan(cell.step, params, carry0, xs)
    _, ys_proj = scan.scan(cell.step_projected, params, carry0, cell.project(params, xs))
    np.testing.assert_allclose(ys_proj, ys_raw, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hoist", [True, False])
@pytest.mark.parametrize(
    "make_cell",
    [
        lambda: cells.RNNCell(H),
        lambda: cells.RNNCell(H, "relu", bias=False),
        lambda: cells.LSTMCell(H),
        lambda: cells.GRUCell(H),
    ],
    ids=["rnn_tanh", "rnn_relu_nobias", "lstm", "gru"],
)
def test_scan_cell_values_and_gradients_match_autodiff(make_cell, hoist):
    """The hand-written backward pass against JAX's differentiation of `scan`, in
    float64, both directions, padding (lengths 0 and T included), a non-zero initial
    state, and gradients into params, the state and the inputs."""
    cell = make_cell()
    lengths = jnp.array([T, 3, 0, 1])
    with jax.enable_x64(True):
        params = cell.init(jax.random.key(0), D, jnp.float64)
        xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float64)
        carry0 = jax.tree.map(lambda z: z + 0.3, cell.initial_carry((B,), jnp.float64))
        weights = jax.random.normal(jax.random.key(2), (T, B, H), jnp.float64)

        def loss(params, carry0, xs, fast):
            total = 0.0
            for reverse in (False, True):
                if fast:
                    # Unrolled where hoisted, as GPUs run it by default.
                    carry, ys = scan.scan_cell(
                        cell, params, carry0, xs, lengths=lengths, reverse=reverse, hoist=hoist,
                        unroll=3 if hoist else 1,
                    )  # fmt: skip
                else:
                    carry, ys = scan.scan(cell.step, params, carry0, xs, lengths=lengths, reverse=reverse)
                total += jnp.sum(weights * jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(carry))
            return total

        fast = jax.jit(jax.value_and_grad(lambda *a: loss(*a, True), argnums=(0, 1, 2)))
        reference = jax.jit(jax.value_and_grad(lambda *a: loss(*a, False), argnums=(0, 1, 2)))
        (value, grads), (ref_value, ref_grads) = fast(params, carry0, xs), reference(params, carry0, xs)
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
