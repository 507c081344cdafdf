"""Layers: variable lengths, transformations, dropout, and errors for bad input.

PyTorch parity of the layers is in test_torch_weights.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax
from tests.helpers import check_grads_by_finite_differences

T, B, D, H = 7, 4, 3, 5
LAYERS = [seqjax.RNN, seqjax.LSTM, seqjax.GRU]


def random_state(layer, key, batch):
    shape = (layer.num_layers * layer.num_directions, batch, layer.hidden_size)
    k1, k2 = jax.random.split(key)
    if layer.cell.num_gates == 4:
        return (jax.random.normal(k1, shape), jax.random.normal(k2, shape))
    return jax.random.normal(k1, shape)


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_padded_batch_equals_each_sequence_alone(layer_cls, key):
    layer = layer_cls(D, H, num_layers=2, bidirectional=True, batch_first=True)
    params = layer.init(key)
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    state = random_state(layer, jax.random.key(2), B)
    lengths = jnp.array([7, 4, 1, 0])
    outputs, final = layer.apply(params, xs, state, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        state_b = jax.tree.map(lambda s, b=b: s[:, b : b + 1], state)
        if n == 0:  # nothing to run: zero outputs, the initial state comes back
            np.testing.assert_array_equal(outputs[b], 0)
            for f, s in zip(jax.tree.leaves(final), jax.tree.leaves(state_b), strict=True):
                np.testing.assert_array_equal(f[:, b], s[:, 0])
            continue
        alone, final_alone = layer.apply(params, xs[b : b + 1, :n], state_b)
        np.testing.assert_allclose(outputs[b, :n], alone[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(outputs[b, n:], 0)
        for f, g in zip(jax.tree.leaves(final), jax.tree.leaves(final_alone), strict=True):
            np.testing.assert_allclose(f[:, b], g[:, 0], rtol=1e-5, atol=1e-6)


def test_layouts_and_unbatched_agree(key):
    time_major = seqjax.GRU(D, H, num_layers=2, bidirectional=True)
    batch_first = seqjax.GRU(D, H, num_layers=2, bidirectional=True, batch_first=True)
    params = time_major.init(key)
    xs = jax.random.normal(jax.random.key(1), (T, B, D))
    out_tm, h_tm = time_major.apply(params, xs)
    out_bf, h_bf = batch_first.apply(params, jnp.swapaxes(xs, 0, 1))
    np.testing.assert_allclose(out_bf, jnp.swapaxes(out_tm, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(h_bf, h_tm, rtol=1e-6)
    out_one, h_one = time_major.apply(params, xs[:, 0])
    assert out_one.shape == (T, 2 * H) and h_one.shape == (4, H)
    np.testing.assert_allclose(out_one, out_tm[:, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "layer",
    [
        seqjax.LSTM(D, H, num_layers=2, bidirectional=True),
        seqjax.GRU(D, H, num_layers=2, bidirectional=True, hoist_projection=True, custom_backward=True),
        seqjax.RNN(D, H, num_layers=2, hoist_projection=False, custom_backward=True),
        seqjax.LSTM(D, H, bidirectional=True, custom_backward=False),
    ],
    ids=["lstm_default", "gru_hoisted", "rnn_in_loop", "lstm_autodiff"],
)
def test_gradients_match_finite_differences(key, layer):
    lengths = jnp.array([7, 5, 2, 1])
    with jax.enable_x64(True):
        params = layer.init(key, jnp.float64)
        xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float64)

        @jax.jit
        def loss(params, xs):
            outputs, state = layer.apply(params, xs, lengths=lengths)
            return jnp.sum(jnp.sin(outputs)) + sum(jnp.sum(s**2) for s in jax.tree.leaves(state))

        check_grads_by_finite_differences(loss, (params, xs))


def test_vmap_over_seeds_and_no_retrace(key):
    layer = seqjax.RNN(D, H, num_layers=2, nonlinearity="relu")
    params = jax.vmap(layer.init)(jax.random.split(key, 3))
    traces = []

    @jax.jit
    def run(params, xs):
        traces.append(None)
        return jax.vmap(lambda p: layer.apply(p, xs))(params)

    xs = jax.random.normal(jax.random.key(1), (T, B, D))
    outputs, h_n = run(params, xs)
    run(jax.tree.map(lambda p: p * 0.5, params), xs + 1.0)  # new values, same shapes
    assert len(traces) == 1
    for i in range(3):
        single, h_single = layer.apply(jax.tree.map(lambda p, i=i: p[i], params), xs)
        np.testing.assert_allclose(outputs[i], single, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h_n[i], h_single, rtol=1e-5, atol=1e-6)


def test_dropout_between_layers(key):
    layer = seqjax.LSTM(D, H, num_layers=2, dropout=0.5)
    params = layer.init(key)
    xs = jax.random.normal(jax.random.key(1), (T, B, D))
    plain, _ = layer.apply(params, xs)
    same, _ = layer.apply(params, xs, key=jax.random.key(5), deterministic=True)
    np.testing.assert_array_equal(plain, same)
    a, _ = layer.apply(params, xs, key=jax.random.key(5), deterministic=False)
    b, _ = layer.apply(params, xs, key=jax.random.key(5), deterministic=False)
    c, _ = layer.apply(params, xs, key=jax.random.key(6), deterministic=False)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, plain) and not np.allclose(a, c)
    # The same units drop in either layout.
    batch_first = seqjax.LSTM(D, H, num_layers=2, dropout=0.5, batch_first=True)
    a_bf, _ = batch_first.apply(params, jnp.swapaxes(xs, 0, 1), key=jax.random.key(5), deterministic=False)
    np.testing.assert_allclose(a_bf, jnp.swapaxes(a, 0, 1), rtol=1e-6, atol=1e-7)
    # The first layer sees no dropout: a one-layer LSTM with layer 0's weights agrees on h_n[0].
    first = seqjax.LSTM(D, H)
    _, (h0, _) = first.apply(params[:1], xs)
    _, (h_drop, _) = layer.apply(params, xs, key=jax.random.key(5), deterministic=False)
    np.testing.assert_allclose(h_drop[0], h0[0], rtol=1e-6)
    with pytest.raises(ValueError, match="key is required"):
        layer.apply(params, xs, deterministic=False)


def test_dtypes(key):
    layer = seqjax.GRU(D, H, num_layers=2, bidirectional=True)
    params = layer.init(key, jnp.bfloat16)
    outputs, h_n = layer.apply(params, jnp.ones((T, B, D), jnp.bfloat16))
    assert outputs.dtype == h_n.dtype == jnp.bfloat16
