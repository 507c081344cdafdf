"""Flax wrappers: same parameters as the pure functions, and they run inside flax.linen.RNN."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax
from seqjax.interop import linen

T, B, D, H = 6, 3, 4, 5


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        (linen.RNNCell(H, nonlinearity="relu"), seqjax.RNN(D, H, nonlinearity="relu", batch_first=True)),
        (linen.LSTMCell(H), seqjax.LSTM(D, H, batch_first=True)),
        (linen.GRUCell(H), seqjax.GRU(D, H, batch_first=True)),
    ],
)
def test_cells_inside_flax_rnn_equal_the_layer(module, layer, key):
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    lengths = jnp.array([6, 2, 4])
    rnn = nn.RNN(module, return_carry=True)
    variables = rnn.init(key, xs)
    cell_params = variables["params"]["cell"]["cell"]
    assert jax.tree.structure(cell_params) == jax.tree.structure(layer.init(key)[0][0])
    carry, ys = rnn.apply(variables, xs, seq_lengths=lengths)
    outputs, final = layer.apply(((cell_params,),), xs, lengths=lengths)
    # Flax's RNN leaves padded outputs as they come; seqjax zeroes them.
    mask = (jnp.arange(T)[None, :] < lengths[:, None])[..., None]
    np.testing.assert_allclose(jnp.where(mask, ys, 0), outputs, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(final), strict=True):
        np.testing.assert_allclose(a, b[0], rtol=1e-5, atol=1e-6)


def test_recurrent_module_equals_layer_and_uses_dropout_stream(key):
    layer = seqjax.LSTM(D, H, num_layers=2, bidirectional=True, dropout=0.3)
    module = linen.Recurrent(layer)
    xs = jax.random.normal(jax.random.key(1), (T, B, D))
    variables = module.init(key, xs)
    outputs, (_, c) = module.apply(variables, xs)
    ref, (_, c_ref) = layer.apply(variables["params"]["layer"], xs)
    np.testing.assert_array_equal(outputs, ref)
    np.testing.assert_array_equal(c, c_ref)
    dropped, _ = module.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(dropped, outputs)


def test_nnx_module_equals_layer_and_differentiates(key):
    from flax import nnx

    from seqjax.interop.nnx import Recurrent

    layer = seqjax.GRU(D, H, num_layers=2, batch_first=True)
    module = Recurrent(layer, rngs=nnx.Rngs(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    params = module.params_tree()
    assert jax.tree.structure(params) == jax.tree.structure(layer.init(key))
    outputs, h_n = nnx.jit(lambda m, x: m(x, lengths=jnp.array([6, 3, 1])))(module, xs)
    ref, h_ref = layer.apply(params, xs, lengths=jnp.array([6, 3, 1]))
    np.testing.assert_array_equal(outputs, ref)
    np.testing.assert_array_equal(h_n, h_ref)
    grads = nnx.grad(lambda m: jnp.sum(m(xs)[0] ** 2))(module)
    ref_grads = jax.grad(lambda p: jnp.sum(layer.apply(p, xs)[0] ** 2))(params)
    flat = jax.tree.leaves(grads)
    for a, b in zip(flat, jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
