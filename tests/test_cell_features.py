"""The cells' options (LayerNorm, peepholes, projections, variational dropout, zoneout)
against float64 NumPy written from the papers' equations, finite differences, and
the behaviour the papers define for their noise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax
from seqjax.recurrences import cells
from tests.helpers import check_grads_by_finite_differences, sigmoid

B, D, H, P, T = 3, 4, 5, 2, 6


def layer_norm(v):
    mean = v.mean(-1, keepdims=True)
    return (v - mean) / np.sqrt(((v - mean) ** 2).mean(-1, keepdims=True) + 1e-5)


def reference_step(cell, p, carry, x):
    """One deterministic step of RNN/LSTM/GRU with every option, in float64 NumPy:
    Ba et al. (2016) for LayerNorm, Gers & Schmidhuber (2000) for peepholes, Sak et
    al. (2014) / PyTorch for the projection, Krueger et al. (2017) for zoneout's
    expectation at evaluation."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    gx, gh = x @ p["w_ih"], carry[0] @ p["w_hh"]
    if cell.layer_norm:
        gx, gh = layer_norm(gx) * p["ln_ih_scale"], layer_norm(gh) * p["ln_hh_scale"]
    gx, gh = gx + p.get("b_ih", 0.0), gh + p.get("b_hh", 0.0)
    rates = np.broadcast_to(cell.zoneout, (len(carry),))
    if isinstance(cell, cells.LSTMCell):
        h, c = carry
        i, f, g, o = np.split(gx + gh, 4, axis=-1)
        if cell.peepholes:
            i, f = i + p["w_ci"] * c, f + p["w_cf"] * c
        c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        if cell.peepholes:
            o = o + p["w_co"] * c_new
        shown = layer_norm(c_new) * p["ln_c_scale"] + p["ln_c_bias"] if cell.layer_norm else c_new
        h_new = sigmoid(o) * np.tanh(shown)
        if cell.proj_size:
            h_new = h_new @ p["w_hr"]
        new = (h_new, c_new)
    elif isinstance(cell, cells.GRUCell):
        (h,) = carry
        r = sigmoid(gx[:, :H] + gh[:, :H])
        z = sigmoid(gx[:, H : 2 * H] + gh[:, H : 2 * H])
        new = ((1 - z) * np.tanh(gx[:, 2 * H :] + r * gh[:, 2 * H :]) + z * h,)
    else:
        new = (np.tanh(gx + gh),)
    return tuple(z * old + (1 - z) * n for z, old, n in zip(rates, carry, new, strict=True))


OPTIONED = {
    "lstm_ln": cells.LSTMCell(H, layer_norm=True),
    "lstm_peep": cells.LSTMCell(H, peepholes=True),
    "lstm_proj": cells.LSTMCell(H, proj_size=P),
    "lstm_zoneout": cells.LSTMCell(H, zoneout=(0.2, 0.6)),
    "lstm_all": cells.LSTMCell(H, layer_norm=True, peepholes=True, proj_size=P, zoneout=0.3, bias=False),
    "gru_ln_zoneout": cells.GRUCell(H, layer_norm=True, zoneout=0.25),
    "rnn_ln": cells.RNNCell(H, layer_norm=True),
}


def randomised(params, key):
    """Parameters with every option's weights away from their initial ones and zeros
    (LayerNorm gains start at one and biases at zero, which would hide a misplacement)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [
            leaf + 0.5 * jax.random.normal(k, leaf.shape, leaf.dtype)
            for k, leaf in zip(keys, leaves, strict=True)
        ],
    )


def carry_of(cell, key, batch):
    leaves, treedef = jax.tree.flatten(cell.initial_carry((batch,)))
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef, [jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    )


@pytest.mark.parametrize("name", OPTIONED)
def test_step_matches_numpy(name, key):
    cell = OPTIONED[name]
    params = randomised(cell.init(key, D), jax.random.key(1))
    carry = carry_of(cell, jax.random.key(2), B)
    x = jax.random.normal(jax.random.key(3), (B, D))
    new, y = jax.jit(cell.step)(params, carry, x)
    ref = reference_step(cell, params, tuple(np.asarray(c, np.float64) for c in jax.tree.leaves(carry)), x)
    for got, want in zip(jax.tree.leaves(new), ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(y, ref[0], rtol=2e-5, atol=2e-6)


def test_layer_with_options_matches_numpy_loop(key):
    """A deep bidirectional projected LSTM with every option, padded batch: each
    sequence alone through the NumPy step, forwards and backwards within its length."""
    cell = OPTIONED["lstm_all"]
    layer = seqjax.Recurrent(cell, D, num_layers=2, bidirectional=True)
    params = randomised(layer.init(key), jax.random.key(1))
    xs = np.asarray(jax.random.normal(jax.random.key(2), (T, B, D)), np.float64)
    lengths = np.array([T, 3, 1])
    outputs, (h_n, c_n) = layer.apply(params, xs.astype(np.float32), lengths=jnp.asarray(lengths))
    assert outputs.shape == (T, B, 2 * P) and h_n.shape == (4, B, P) and c_n.shape == (4, B, H)
    for b, n in enumerate(lengths):
        inputs = xs[:n, b : b + 1]
        for l in range(2):
            ys = []
            for d in range(2):
                carry = (np.zeros((1, P)), np.zeros((1, H)))
                out = [None] * n
                for t in reversed(range(n)) if d else range(n):
                    carry = reference_step(cell, params[l][d], carry, inputs[t])
                    out[t] = carry[0]
                np.testing.assert_allclose(h_n[2 * l + d, b], carry[0][0], rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(c_n[2 * l + d, b], carry[1][0], rtol=1e-4, atol=1e-5)
                ys.append(np.stack(out))
            inputs = np.concatenate(ys, -1)
        np.testing.assert_allclose(outputs[:n, b], inputs[:, 0], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(outputs[n:, b], 0)


@pytest.mark.parametrize(
    "cell, training",
    [
        (cells.LSTMCell(H, layer_norm=True, peepholes=True, proj_size=P, zoneout=(0.1, 0.4)), False),
        (cells.GRUCell(H, layer_norm=True, zoneout=0.3), False),
        (cells.LSTMCell(H, input_dropout=0.3, recurrent_dropout=0.4, zoneout=0.2), True),
    ],
    ids=["lstm_eval", "gru_eval", "lstm_training_noise"],
)
def test_gradients_match_finite_differences(cell, training, key):
    """Evaluation, and training with the noise of one fixed key (then a constant)."""
    layer = seqjax.Recurrent(cell, D, bidirectional=True)
    lengths = jnp.array([T, 4, 1])
    with jax.enable_x64(True):
        params = randomised(layer.init(key, jnp.float64), jax.random.key(1))
        xs = jax.random.normal(jax.random.key(2), (T, B, D), jnp.float64)

        @jax.jit
        def loss(params, xs):
            outputs, state = layer.apply(
                params, xs, lengths=lengths, key=jax.random.key(7), deterministic=not training
            )
            return jnp.sum(jnp.sin(outputs)) + sum(jnp.sum(s**2) for s in jax.tree.leaves(state))

        check_grads_by_finite_differences(loss, (params, xs))


def identity_rnn(**options):
    """A linear RNN with w_ih = I and w_hh = I (no bias): h_t = x_t + h_{t-1}, so the
    noise can be read off the outputs."""
    cell = cells.RNNCell(H, "identity", bias=False, **options)
    return seqjax.Recurrent(cell, H), (({"w_ih": jnp.eye(H), "w_hh": jnp.eye(H)},),)


def test_variational_dropout_masks_are_per_sequence(key):
    rate, batch = 0.5, 64
    scale = 1 / (1 - rate)
    ones = jnp.ones((T, batch, H))
    # Input dropout alone: h_t = m * x_t + h_{t-1} with x = 1, so h_t = t * m.
    layer, params = identity_rnn(input_dropout=rate)
    ys, _ = layer.apply(params, ones, key=key, deterministic=False)
    m = np.asarray(ys[0])
    assert set(np.unique(m)) == {0.0, scale}
    np.testing.assert_allclose(ys, np.arange(1, T + 1)[:, None, None] * m, rtol=1e-6)  # one mask for all t
    assert len({tuple(row) for row in m}) > 16  # sequences differ (of 2**5 masks, 64 draws: ~28)
    assert abs((m == 0).mean() - rate) < 0.1
    # Recurrent dropout alone: h_t = 1 + m * h_{t-1}, m read from h_2 = 1 + m.
    layer, params = identity_rnn(recurrent_dropout=rate)
    ys, _ = layer.apply(params, ones, key=key, deterministic=False)
    m = np.asarray(ys[1] - 1)
    assert set(np.unique(m)) == {0.0, scale}
    expected = [np.ones((batch, H))]
    for _ in range(T - 1):
        expected.append(1 + m * expected[-1])
    np.testing.assert_allclose(ys, np.stack(expected), rtol=1e-6)
    assert len({tuple(row) for row in m}) > 16
    # Evaluation is the plain cell (inverted dropout: no rescaling left to do).
    plain, _ = identity_rnn()[0].apply(params, ones)
    np.testing.assert_array_equal(layer.apply(params, ones)[0], plain)


def test_zoneout_keeps_units_per_step(key):
    rate, batch = 0.4, 64
    layer, params = identity_rnn(zoneout=rate)
    params = (({"w_ih": jnp.eye(H), "w_hh": jnp.zeros((H, H))},),)  # h~_t = x_t
    xs = jnp.broadcast_to(jnp.arange(1.0, T + 1)[:, None, None], (T, batch, H))
    ys = np.asarray(layer.apply(params, xs, key=key, deterministic=False)[0])
    previous = np.concatenate([np.zeros((1, batch, H)), ys[:-1]])
    kept = ys == previous
    assert np.all(kept | (ys == np.asarray(xs)))  # each unit: its old value or the new one
    assert abs(kept[1:].mean() - rate) < 0.05
    assert not np.all(kept[2:] == kept[1])  # a fresh mask at each step
    # Evaluation is the expectation: h_t = z h_{t-1} + (1 - z) x_t.
    expected, h = [], np.zeros((batch, H))
    for t in range(T):
        h = rate * h + (1 - rate) * np.asarray(xs[t])
        expected.append(h)
    np.testing.assert_allclose(layer.apply(params, xs)[0], np.stack(expected), rtol=1e-6)


def test_paths_follow_the_options(key):
    """Options that keep a dense elementwise update keep the fast paths; the others
    fall back, and the plain configuration still runs the fused loop on CPU."""
    on_cpu = jax.default_backend() == "cpu"
    expected = {
        (): "kernel" if on_cpu else "scan_cell",
        (("recurrent_dropout", 0.3),): "kernel" if on_cpu else "scan_cell",  # evaluation is the plain cell
        (("zoneout", 0.3),): "scan_cell",
        (("layer_norm", True),): "plain" if on_cpu else "hoisted",
        (("proj_size", 2),): "plain" if on_cpu else "hoisted",
    }
    for options, path in expected.items():
        layer = seqjax.LSTM(D, H, **dict(options))
        assert layer.path(layer.init(key)) == path, options
        noisy = any(name.endswith(("dropout", "zoneout")) for name, _ in options)
        assert layer.path(layer.init(key), deterministic=False) == ("noise" if noisy else path)


def test_option_errors(key):
    with pytest.raises(ValueError, match=r"proj_size must be in \[0, hidden_size=5\)"):
        seqjax.LSTM(D, H, proj_size=H)
    with pytest.raises(ValueError, match="GRU takes no option 'proj_size'"):
        seqjax.GRU(D, H, proj_size=2)
    with pytest.raises(ValueError, match="RNN takes no option 'peepholes'"):
        seqjax.RNN(D, H, peepholes=True)
    for name in ("input_dropout", "recurrent_dropout", "zoneout"):
        for bad in (-0.1, 1.0, True):
            with pytest.raises(ValueError, match=rf"{name} must be a number in \[0, 1\)"):
                seqjax.GRU(D, H, **{name: bad})
    with pytest.raises(ValueError, match="zoneout must be one rate or a tuple of 2"):
        seqjax.LSTM(D, H, zoneout=(0.1, 0.2, 0.3))
    layer = seqjax.LSTM(D, H, zoneout=0.1)
    with pytest.raises(ValueError, match="key is required with the cell's training noise"):
        layer.apply(layer.init(key), jnp.ones((T, B, D)), deterministic=False)
    with pytest.raises(ValueError, match="family 'gru' takes no option 'proj_size'"):
        seqjax.SequenceModel("gru", output_size=2, hidden_size=H, input_size=D, options={"proj_size": 2})


def test_projected_model_readouts(key):
    """A bidirectional projected LSTM's `last` readout is the head on PyTorch's h_n."""
    model = seqjax.SequenceModel(
        "lstm", output_size=3, hidden_size=H, input_size=D, bidirectional=True, readout="last",
        options={"proj_size": P},
    )  # fmt: skip
    params = model.init(key)
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    lengths = jnp.array([T, 2, 4])
    _, (h_n, _) = model.backbone.apply(params["backbone"], xs, lengths=lengths)
    want = jnp.concatenate([h_n[0], h_n[1]], -1) @ params["head"]["w"] + params["head"]["b"]
    np.testing.assert_allclose(model.apply(params, xs, lengths=lengths), want, rtol=1e-5, atol=1e-6)


def test_remat_matches_finite_differences_and_the_plain_scan(key):
    """Chunks that do not divide t (7 = 3 + 3 + 1 padded), lengths, both directions."""
    layer = seqjax.LSTM(D, H, bidirectional=True, remat=3, recurrent_dropout=0.2)
    plain = seqjax.LSTM(D, H, bidirectional=True, recurrent_dropout=0.2)
    lengths = jnp.array([7, 4, 1])
    with jax.enable_x64(True):
        params = layer.init(key, jnp.float64)
        xs = jax.random.normal(jax.random.key(2), (7, B, D), jnp.float64)

        def loss_of(layer, deterministic):
            def loss(params, xs):
                outputs, state = layer.apply(
                    params, xs, lengths=lengths, key=jax.random.key(7), deterministic=deterministic
                )
                return jnp.sum(jnp.sin(outputs)) + sum(jnp.sum(s**2) for s in jax.tree.leaves(state))

            return jax.jit(loss)

        for deterministic in (True, False):  # the plain path, and the noise path
            check_grads_by_finite_differences(loss_of(layer, deterministic), (params, xs))
            np.testing.assert_allclose(
                loss_of(layer, deterministic)(params, xs),
                loss_of(plain, deterministic)(params, xs),
                rtol=1e-12,
            )


def test_remat_errors():
    with pytest.raises(ValueError, match="remat needs JAX's differentiation of the scan; cpu_kernel=True"):
        seqjax.LSTM(D, H, remat=True, cpu_kernel=True)
    with pytest.raises(ValueError, match="remat must be a positive int"):
        seqjax.GRU(D, H, remat=0)
    with pytest.raises(ValueError, match="remat chunks a scan of steps; MinGRUCell runs whole sequences"):
        seqjax.MinGRU(D, H, remat=True)
