"""Gradient-flow diagnostics against analytic values and a NumPy finite-difference loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.analysis import diagnostics
from seqjax.models.transformer import Transformer
from seqjax.recurrences import cells
from tests.helpers import numpy_step


def orthogonal(n, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return q


@pytest.mark.parametrize("a", [0.5, 0.9, 1.25])
def test_linear_rnn_decays_at_log_a_per_step(a):
    cell = cells.RNNCell(6, "identity")
    params = cell.init(jax.random.key(0), 3)
    params["w_hh"] = jnp.asarray(a * orthogonal(6, 1), jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (30, 4, 3))
    v = jax.random.normal(jax.random.key(2), (4, 6))
    _, grads = diagnostics.hidden_state_gradients(cell, params, xs, lambda ys: jnp.sum(ys[-1] * v))
    norms = diagnostics.profile(grads)
    # dL/dh_t = ((a Q)^T)^(T-t) v for the state step t reads: the norm shrinks by exactly |a| per step.
    np.testing.assert_allclose(norms[:-1] / norms[1:], a, rtol=1e-4)
    np.testing.assert_allclose(diagnostics.decay_rate(norms), np.log(a), rtol=1e-4, atol=1e-5)
    spectrum = diagnostics.jacobian_spectrum(cell, params, xs)
    np.testing.assert_allclose(spectrum.spectral_radius, a, rtol=1e-4)
    np.testing.assert_allclose(spectrum.max_singular_value, a, rtol=1e-4)


def numpy_hidden_gradients(mode, params, xs, v, eps=1e-6):
    """dL/ds_t by central differences of a NumPy loop, L = v . h_T (float64), s_t the
    state that step t reads: h, or h and c concatenated for the LSTM."""
    hidden = params["w_hh"].shape[0]
    size = 2 * hidden if mode == "lstm" else hidden

    def loss(t, i, shift):
        h = np.zeros((1, hidden))
        state = np.concatenate([h, h], -1) if mode == "lstm" else h
        for s in range(len(xs)):
            if s == t:
                state = state + np.eye(size)[i] * shift
            carry = (state[:, :hidden], state[:, hidden:]) if mode == "lstm" else state
            carry, _ = numpy_step(mode, params, carry, xs[s][None])
            state = np.concatenate(carry, -1) if mode == "lstm" else carry
        return float(v @ state[0, :hidden])

    return np.array(
        [[(loss(t, i, eps) - loss(t, i, -eps)) / (2 * eps) for i in range(size)] for t in range(len(xs))]
    )


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_hidden_gradients_match_finite_differences(mode):
    cell = {"rnn_tanh": cells.RNNCell(4), "lstm": cells.LSTMCell(4), "gru": cells.GRUCell(4)}[mode]
    with jax.enable_x64(True):
        params = cell.init(jax.random.key(0), 3, jnp.float64)
        xs = jax.random.normal(jax.random.key(1), (6, 1, 3), jnp.float64)
        v = jax.random.normal(jax.random.key(2), (4,), jnp.float64)
        _, grads = diagnostics.hidden_state_gradients(cell, params, xs, lambda ys: jnp.sum(ys[-1, 0] * v))
        reference = numpy_hidden_gradients(mode, params, np.asarray(xs[:, 0]), np.asarray(v))
    np.testing.assert_allclose(grads[:, 0], reference, rtol=1e-6, atol=1e-9)


def test_tanh_rnn_gradient_vanishes_faster_than_lstm():
    rates = {}
    for name, cell in {"rnn": cells.RNNCell(32), "lstm": cells.LSTMCell(32)}.items():
        params = cell.init(jax.random.key(0), 8)
        xs = jax.random.normal(jax.random.key(1), (100, 16, 8))
        _, grads = diagnostics.hidden_state_gradients(cell, params, xs, lambda ys: jnp.sum(ys[-1] ** 2))
        rates[name] = float(diagnostics.decay_rate(diagnostics.profile(grads)))
    assert rates["rnn"] < rates["lstm"] < 0, rates


def test_input_gradients_of_a_causal_transformer_stop_at_the_loss():
    model = Transformer(16, 2, 2, input_size=3)
    params = model.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, 10, 3))
    grads = diagnostics.input_gradients(lambda x: model.apply(params, x)[0], xs, lambda y: jnp.sum(y[:, 6]))
    norms = diagnostics.profile(grads, time_axis=1)
    assert norms.shape == (10,)
    assert (norms[:7] > 0).all() and (norms[7:] == 0).all()
    assert float(diagnostics.decay_rate(norms, loss_step=6)) == pytest.approx(
        np.polyfit(6 - np.arange(7), np.log(np.asarray(norms[:7])), 1)[0], rel=1e-5
    )
