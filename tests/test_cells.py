"""Cells against Flax's own cells and a NumPy reference; gradients against finite differences."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.recurrences import cells
from tests.helpers import check_grads_by_finite_differences, numpy_step

B, D, H = 3, 4, 5
CELLS = {
    "rnn_tanh": lambda **kw: cells.RNNCell(H, "tanh", **kw),
    "rnn_relu": lambda **kw: cells.RNNCell(H, "relu", **kw),
    "lstm": lambda **kw: cells.LSTMCell(H, **kw),
    "gru": lambda **kw: cells.GRUCell(H, **kw),
}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode", CELLS)
def test_step_matches_numpy(mode, bias, key):
    cell = CELLS[mode](bias=bias)
    params = cell.init(key, D)
    assert ("b_ih" in params) == bias
    kx, kh, kc = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(kx, (B, D))
    h = jax.random.normal(kh, (B, H))
    carry = cells.LSTMState(h, jax.random.normal(kc, (B, H))) if mode == "lstm" else h
    new_carry, y = jax.jit(cell.step)(params, carry, x)
    ref_carry, ref_y = numpy_step(mode, params, jax.tree.map(np.asarray, carry), np.asarray(x, np.float64))
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(new_carry), jax.tree.leaves(ref_carry), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def flax_params(mode, p):
    """Our parameters in the names of Flax's cells (Flax sums b_ih + b_hh where it can)."""
    split = lambda w: np.split(np.asarray(w), w.shape[-1] // H, axis=-1)  # noqa: E731
    b = split(p["b_ih"] + p["b_hh"])
    wi, wh = split(p["w_ih"]), split(p["w_hh"])
    if mode.startswith("rnn"):
        return {"i": {"kernel": wi[0], "bias": b[0]}, "h": {"kernel": wh[0]}}
    if mode == "lstm":
        out = {f"i{g}": {"kernel": wi[k]} for k, g in enumerate("ifgo")}
        out.update({f"h{g}": {"kernel": wh[k], "bias": b[k]} for k, g in enumerate("ifgo")})
        return out
    b_ih, b_hh = split(p["b_ih"]), split(p["b_hh"])
    return {
        "ir": {"kernel": wi[0], "bias": b[0]},
        "iz": {"kernel": wi[1], "bias": b[1]},
        "in": {"kernel": wi[2], "bias": b_ih[2]},
        "hr": {"kernel": wh[0]},
        "hz": {"kernel": wh[1]},
        "hn": {"kernel": wh[2], "bias": b_hh[2]},
    }


FLAX_CELLS = [
    ("rnn_tanh", lambda: nn.SimpleCell(H, activation_fn=jnp.tanh)),
    ("rnn_relu", lambda: nn.SimpleCell(H, activation_fn=jax.nn.relu)),
    ("lstm", lambda: nn.LSTMCell(H)),
    ("lstm", lambda: nn.OptimizedLSTMCell(H)),
    ("gru", lambda: nn.GRUCell(H)),
]


@pytest.mark.parametrize(
    ("mode", "make_flax"), FLAX_CELLS, ids=[m for m, _ in FLAX_CELLS[:3]] + ["lstm_opt", "gru"]
)
def test_matches_flax_cells_over_a_sequence(mode, make_flax, key):
    cell, flax_cell = CELLS[mode](), make_flax()
    params = cell.init(key, D)
    xs = jax.random.normal(jax.random.key(2), (6, B, D))
    variables = {"params": flax_params(mode, params)}
    ours, theirs = cell.initial_carry((B,)), flax_cell.initialize_carry(key, (B, D))
    for x in xs:  # a plain loop: the reference runs step by step
        ours, y = cell.step(params, ours, x)
        theirs, y_ref = flax_cell.apply(variables, theirs, x)
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    if mode == "lstm":  # Flax orders the LSTM carry (c, h)
        np.testing.assert_allclose(ours.c, theirs[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", CELLS)
def test_gradients_match_finite_differences(mode, key):
    cell = CELLS[mode]()
    with jax.enable_x64(True):
        params = cell.init(key, D, jnp.float64)
        xs = jax.random.normal(jax.random.key(3), (4, B, D), jnp.float64)

        def loss(params, xs):
            carry = cell.initial_carry((B,), jnp.float64)
            total = 0.0
            for x in xs:
                carry, y = cell.step(params, carry, x)
                total = total + jnp.sum(jnp.sin(y))
            return total

        check_grads_by_finite_differences(jax.jit(loss), (params, xs))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("mode", CELLS)
def test_dtypes_flow_through(mode, dtype, key):
    cell = CELLS[mode]()
    params = cell.init(key, D, dtype)
    carry, y = jax.jit(cell.step)(params, cell.initial_carry((B,), dtype), jnp.ones((B, D), dtype))
    assert y.dtype == dtype
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves((params, carry)))


def test_float64_flows_through(key):
    cell = cells.LSTMCell(H)
    with jax.enable_x64(True):
        params = cell.init(key, D, jnp.float64)
        _, y = cell.step(params, cell.initial_carry((B,), jnp.float64), jnp.ones((B, D), jnp.float64))
        assert y.dtype == jnp.float64


def test_default_init_is_pytorch_uniform(key):
    params = cells.LSTMCell(64).init(key, 32)
    bound = 1 / np.sqrt(64)
    for name, shape in [("w_ih", (32, 256)), ("w_hh", (64, 256)), ("b_ih", (256,)), ("b_hh", (256,))]:
        w = np.asarray(params[name])
        assert w.shape == shape
        assert np.abs(w).max() <= bound
        # U(-k, k) has variance k^2 / 3.
        np.testing.assert_allclose(w.var(), bound**2 / 3, rtol=0.15)


def test_orthogonal_recurrent_init_and_forget_bias(key):
    params = cells.LSTMCell(8, recurrent_init="orthogonal", forget_bias=1.0).init(key, 3)
    blocks = np.split(np.asarray(params["w_hh"]), 4, axis=1)
    for block in blocks:
        np.testing.assert_allclose(block.T @ block, np.eye(8), atol=1e-5)
    total = np.asarray(params["b_ih"] + params["b_hh"])
    np.testing.assert_array_equal(total[8:16], 1.0)
    assert not np.allclose(total[:8], 1.0)


def test_vmap_over_parameter_sets(key):
    cell = cells.GRUCell(H)
    params = jax.vmap(lambda k: cell.init(k, D))(jax.random.split(key, 3))
    x = jnp.ones((B, D))
    _, ys = jax.vmap(cell.step, in_axes=(0, None, None))(params, cell.initial_carry((B,)), x)
    for i in range(3):
        _, y = cell.step(jax.tree.map(lambda p, i=i: p[i], params), cell.initial_carry((B,)), x)
        np.testing.assert_allclose(ys[i], y, rtol=1e-6)


def test_bad_options_raise():
    with pytest.raises(
        ValueError, match="nonlinearity must be one of 'tanh', 'relu', 'identity'; got 'sigmoid'"
    ):
        cells.RNNCell(4, "sigmoid")
    with pytest.raises(ValueError, match="recurrent_init must be one of"):
        cells.GRUCell(4, recurrent_init="glorot")
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        cells.LSTMCell(0)
    with pytest.raises(ValueError, match="input_size must be a positive int"):
        cells.LSTMCell(4).init(jax.random.key(0), -1)
    with pytest.raises(ValueError, match="forget_bias needs bias=True"):
        cells.LSTMCell(4, bias=False, forget_bias=1.0)
