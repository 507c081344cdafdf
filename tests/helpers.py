"""Independent references shared by the tests."""

import jax
import jax.numpy as jnp
import numpy as np


def check_grads_by_finite_differences(loss, args, *, eps=1e-6, rtol=1e-6, directions=3):
    """Checks `jax.grad(loss)` against central differences along random directions.

    Run inside `jax.enable_x64(True)` with float64 `args` (a tuple of pytrees).
    """
    grads = jax.grad(loss, argnums=tuple(range(len(args))))(*args)
    rng = np.random.default_rng(0)
    for _ in range(directions):
        v = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), args)
        plus = jax.tree.map(lambda a, d: a + eps * d, args, v)
        minus = jax.tree.map(lambda a, d: a - eps * d, args, v)
        fd = (loss(*plus) - loss(*minus)) / (2 * eps)
        analytic = sum(
            jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(v), strict=True)
        )
        np.testing.assert_allclose(analytic, fd, rtol=rtol)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_step(mode, p, carry, x):
    """PyTorch's documented equations, written out gate by gate in float64 NumPy.

    mode: rnn_tanh, rnn_relu, lstm or gru; carry: h, or (h, c) for the LSTM."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    H = p["w_hh"].shape[0]
    b_ih, b_hh = p.get("b_ih", 0.0), p.get("b_hh", 0.0)
    gi = x @ p["w_ih"] + b_ih
    if mode == "lstm":
        h, c = carry
        gh = h @ p["w_hh"] + b_hh
        i, f, g, o = (sigmoid((gi + gh)[:, k * H : (k + 1) * H]) for k in range(4))
        g = np.tanh((gi + gh)[:, 2 * H : 3 * H])
        c = f * c + i * g
        h = o * np.tanh(c)
        return (h, c), h
    h = carry
    gh = h @ p["w_hh"] + b_hh
    if mode == "gru":
        r = sigmoid(gi[:, :H] + gh[:, :H])
        z = sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        h = (1 - z) * n + z * h
    else:
        h = np.tanh(gi + gh) if mode == "rnn_tanh" else np.maximum(gi + gh, 0)
    return h, h


def numpy_stack(step, params, xs, lengths, h0):
    """A deep, bidirectional recurrent stack in float64 NumPy, each sequence alone and
    only its valid steps: the reference for `seqjax.Recurrent` over a one-array carry.

    step: `(p, h [h], x [d]) -> (h, y [h])` on NumPy arrays; params[layer][direction];
    xs: `[t, b, d]`; lengths: `[b]`; h0: `[L*n, b, h]` (real or complex). Returns outputs
    `[t, b, n*h]` (zero past each length) and final states `[L*n, b, h]`.
    """
    params = [[{k: np.asarray(v, np.float64) for k, v in p.items()} for p in layer] for layer in params]
    xs, h0 = np.asarray(xs, np.float64), np.asarray(h0)
    h0 = h0.astype(np.result_type(h0, np.float64))  # complex stays complex (the LRU's state)
    n = len(params[0])
    num_steps, batch = xs.shape[:2]
    outputs, finals = None, np.zeros(h0.shape, h0.dtype)
    for b in range(batch):
        valid = range(int(lengths[b]))
        inputs = xs[:, b]
        for l, layer in enumerate(params):
            ys = []
            for d, p in enumerate(layer):
                h, y_d = h0[l * n + d, b], np.zeros((num_steps, h0.shape[-1]))
                for t in reversed(valid) if d else valid:
                    h, y_d[t] = step(p, h, inputs[t])
                finals[l * n + d, b] = h
                ys.append(y_d)
            inputs = np.concatenate(ys, axis=-1)
        if outputs is None:
            outputs = np.zeros((num_steps, batch, inputs.shape[-1]))
        outputs[:, b] = inputs
    return outputs, finals


def numpy_linear_recurrence(a, b, h0, lengths=None, reverse=False) -> tuple[np.ndarray, np.ndarray]:
    """`h_t = a_t h_{t-1} + b_t` as a float64/complex128 NumPy loop, each sequence alone:
    a, b `[t, b, ...]` (a may broadcast), h0 `[b, ...]`; returns hs `[t, b, ...]`, zero
    past each length, and the final states `[b, ...]`."""
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    dtype = np.result_type(a, b, h0, np.float64)
    hs, finals = np.zeros(b.shape, dtype), np.array(h0, dtype)
    t = b.shape[0]
    for i in range(b.shape[1]):
        steps = range(t if lengths is None else int(lengths[i]))
        for s in reversed(steps) if reverse else steps:
            finals[i] = a[s, i] * finals[i] + b[s, i]
            hs[s, i] = finals[i]
    return hs, finals
