"""The cuDNN path of the LSTM (`seqjax.recurrences.cudnn`).

On every machine: the flat-weight conversion against `jax.experimental.rnn`'s own
unpacking and PyTorch's state_dict, the layer against JAX's reference LSTM of
cuDNN's semantics (`jax.experimental.rnn.lstm_ref`), the path's wrapper (lengths
of 0, reversal, layouts) around that reference against the scan, and the
dispatch. On a CUDA GPU (`tests/test_gpu.py`): the cuDNN calls themselves.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

import seqjax
from seqjax.recurrences import cudnn, scan

D, H, B, T = 3, 5, 4, 6


def reference_lstm(x, h0, c0, weights, lengths, input_size, hidden_size):
    """`cudnn.lstm`'s contract computed by JAX's reference of cuDNN's LSTM."""
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, input_size, hidden_size, 1, False)
    return rnn.lstm_ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, input_size, hidden_size, 1, 0.0, False)


@pytest.mark.parametrize(
    "num_layers, bidirectional, bias", [(1, False, True), (3, True, True), (2, True, False)]
)
def test_flat_weights_match_jax_layout_and_round_trip(num_layers, bidirectional, bias, key):
    layer = seqjax.LSTM(D, H, num_layers, bias, bidirectional=bidirectional)
    params = layer.init(key)
    flat = layer.params_to_cudnn(params)
    assert flat.shape == (rnn.get_num_params_in_lstm(D, H, num_layers, bidirectional),)
    # jax's unpacking against PyTorch's names, which seqjax converts independently.
    torch_sd = layer.params_to_torch(params)
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(flat, D, H, num_layers, bidirectional)
    for k in range(num_layers * layer.num_directions):
        suffix = f"_l{k // layer.num_directions}" + ("_reverse" if k % layer.num_directions else "")
        np.testing.assert_array_equal(w_ih[k], torch_sd["weight_ih" + suffix])
        np.testing.assert_array_equal(w_hh[k], torch_sd["weight_hh" + suffix])
        for got, name in ((b_ih[k], "bias_ih"), (b_hh[k], "bias_hh")):
            np.testing.assert_array_equal(got, torch_sd.get(name + suffix, np.zeros(4 * H, np.float32)))
    back = layer.params_from_cudnn(flat)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, back, params)


def test_flat_weights_errors(key):
    layer = seqjax.LSTM(D, H, 2, bias=False)
    flat = layer.params_to_cudnn(layer.init(key))
    with pytest.raises(ValueError, match=r"weights must have shape \[440\]"):
        layer.params_from_cudnn(flat[:-1])
    with pytest.raises(ValueError, match="nonzero biases"):
        layer.params_from_cudnn(flat.at[-1].set(1.0))


def test_layer_matches_jax_reference_lstm(key):
    """seqjax's LSTM (every layer, both directions, ragged lengths) equals JAX's
    reference of cuDNN's multi-layer bidirectional LSTM on the same flat weights."""
    layer = seqjax.LSTM(D, H, 2, bidirectional=True, batch_first=True)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = layer.init(k1)
    x = jax.random.normal(k2, (B, T, D))
    h0, c0 = (jax.random.normal(k, (4, B, H)) for k in (k3, k4))
    lengths = jnp.array([T, 1, 4, 2], jnp.int32)
    ys, (h_n, c_n) = layer.apply(params, x, (h0, c0), lengths=lengths)
    weights = rnn.unpack_lstm_weights(layer.params_to_cudnn(params), D, H, 2, True)
    ref = rnn.lstm_ref(x, h0, c0, *weights, lengths, D, H, 2, 0.0, True)
    for got, want in zip((ys, h_n, c_n), ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("reverse, time_major", [(False, True), (True, False)])
def test_path_wrapper_matches_scan(reverse, time_major, key):
    """The path's handling of lengths (0 and above t included), reversal and layouts,
    around the reference LSTM, against `scan.scan` of the cell: values and gradients."""
    cell = seqjax.cells.LSTMCell(H)
    k1, k2, k3 = jax.random.split(key, 3)
    params = cell.init(k1, D)
    xs = jax.random.normal(k2, (T, B, D))
    carry = seqjax.cells.LSTMState(*jax.random.normal(k3, (2, B, H)))
    lengths = jnp.array([T, 0, 3, T + 2])

    def via_path(params, carry, xs):
        x = xs if time_major else jnp.swapaxes(xs, 0, 1)
        final, ys = cudnn.run(
            cell, params, carry, x, lengths=lengths, reverse=reverse, time_major=time_major,
            lstm_fn=reference_lstm,
        )  # fmt: skip
        return final, ys if time_major else jnp.swapaxes(ys, 0, 1)

    def via_scan(params, carry, xs):
        return scan.scan(cell.step, params, carry, xs, lengths=lengths, reverse=reverse)

    def loss(run, params, carry, xs):
        (h, c), ys = run(params, carry, xs)
        return jnp.sum(ys * jnp.cos(ys)) + jnp.sum(h * c)

    for got, want in zip(via_path(params, carry, xs), via_scan(params, carry, xs), strict=True):
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6), got, want)
    grads = [jax.grad(loss, argnums=(1, 2, 3))(run, params, carry, xs) for run in (via_path, via_scan)]
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5), *grads)


def test_dispatch_off_gpu(key):
    """Without a CUDA GPU the LSTM keeps its scan paths; asking for cuDNN says why not."""
    if cudnn.available():
        pytest.skip("a CUDA GPU is present: tests/test_gpu.py checks the dispatch there")
    layer = seqjax.LSTM(D, H)
    assert layer.path(layer.init(key)) in ("kernel", "scan_cell")
    assert seqjax.LSTM(D, H, custom_backward=False).path(layer.init(key)) == "plain"
    forced = seqjax.LSTM(D, H, cudnn=True)
    with pytest.raises(ValueError, match="cudnn=True: cuDNN needs the CUDA backend"):
        forced.apply(forced.init(key), jnp.ones((T, B, D)))
    with pytest.raises(ValueError, match="cudnn=True: cuDNN computes only the LSTM"):
        seqjax.GRU(D, H, cudnn=True)
    with pytest.raises(TypeError, match="cudnn must be True or False"):
        seqjax.LSTM(D, H, cudnn="yes")
