"""The fused CPU loops against JAX differentiating `lax.scan` in float64 (the reference)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.models import layers
from seqjax.recurrences import cells, cpu_kernel, scan

# h = 21 and 40: a partial 16-unit chunk, and chunks split between threads;
# b = 9: row tiles of 6 and 3.
T, B, D = 7, 9, 3
LENGTHS = np.array([7, 3, 1, 0, 7, 5, 2, 6, 4])

CELLS = {
    "rnn_tanh": lambda h: cells.RNNCell(h),
    "rnn_relu_nobias": lambda h: cells.RNNCell(h, "relu", bias=False),
    "rnn_identity": lambda h: cells.RNNCell(h, "identity"),
    "lstm": lambda h: cells.LSTMCell(h),
    "lstm_nobias": lambda h: cells.LSTMCell(h, bias=False),
    "gru": lambda h: cells.GRUCell(h),
}


class _NoKernelLSTM(cells.LSTMCell):
    """An LSTM cell that declares no fused loop (as a subclass that changes the maths must)."""

    kernel = None


def _problem(name, hidden, t=T, b=B, d=D):
    cell = CELLS[name](hidden)
    params = cell.init(jax.random.key(0), d)
    keys = jax.random.split(jax.random.key(1), 3)
    xs = jax.random.normal(keys[0], (t, b, d))
    leaves, treedef = jax.tree.flatten(cell.initial_carry((b,)))
    carry_keys = jax.random.split(keys[1], len(leaves))
    carry = jax.tree.unflatten(
        treedef, [0.5 * jax.random.normal(k, leaf.shape) for k, leaf in zip(carry_keys, leaves, strict=True)]
    )
    # Weights on every output and final state, so every cotangent path is used.
    w_ys = jax.random.normal(keys[2], (t, b, hidden))
    return cell, params, carry, xs, w_ys


def _loss(run, cell, w_ys, lengths, reverse):
    def loss(params, carry, xs):
        final, ys = run(cell, params, carry, xs, lengths=lengths, reverse=reverse)
        return (ys * w_ys).sum() + sum((0.5 + leaf).prod(-1).sum() for leaf in jax.tree.leaves(final))

    return loss


# Every cell forward with lengths and in reverse with lengths (the hard paths), on
# the two hidden sizes; the plain scan for the gated cells.
CASES = [(name, 21, False, LENGTHS) for name in CELLS]
CASES += [(name, 40, True, LENGTHS) for name in CELLS]
CASES += [("lstm", 40, False, None), ("gru", 21, True, None)]


def _check_against_float64_autodiff(problem, lengths, reverse, run=cpu_kernel.scan_kernel):
    cell, params, carry, xs, w_ys = problem
    as64 = lambda tree: jax.tree.map(lambda x: np.asarray(x, np.float64), tree)  # noqa: E731

    def reference(cell, params, carry, xs, *, lengths, reverse):
        return scan.scan(cell.step, params, carry, xs, lengths=lengths, reverse=reverse)

    loss = _loss(run, cell, w_ys, lengths, reverse)
    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(params, carry, xs)
    with jax.enable_x64():
        ref_loss = _loss(reference, cell, as64(w_ys), lengths, reverse)
        ref_value, ref_grads = jax.jit(jax.value_and_grad(ref_loss, argnums=(0, 1, 2)))(
            as64(params), as64(carry), as64(xs)
        )
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        got, want = np.asarray(got, np.float64), np.asarray(want)
        scale = np.abs(want).max() + 1e-6
        np.testing.assert_allclose(got / scale, want / scale, atol=2e-6)


@pytest.mark.skipif(not cpu_kernel.available(), reason="no C++ compiler")
@pytest.mark.parametrize(
    "name, hidden, reverse, lengths",
    CASES,
    ids=[f"{n}-h{h}-{'rev' if r else 'fwd'}-{'len' if l is not None else 'full'}" for n, h, r, l in CASES],
)
def test_values_and_gradients_match_float64_autodiff(name, hidden, reverse, lengths):
    _check_against_float64_autodiff(_problem(name, hidden), lengths, reverse)


@pytest.mark.skipif(not cpu_kernel.available(), reason="no C++ compiler")
@pytest.mark.parametrize("name, reverse", [("lstm", False), ("gru", True)])
def test_gradients_over_several_weight_blocks_and_input_chunks(name, reverse):
    # b = 33: the weight gradients are taken every 4 steps (128 rows), so t = 10
    # ends on a partial block; d = 20: two 16-input chunks of d_xs, one partial.
    lengths = np.random.default_rng(0).integers(0, 11, 33)
    _check_against_float64_autodiff(_problem(name, 40, t=10, b=33, d=20), lengths, reverse)


@pytest.mark.skipif(not cpu_kernel.available(), reason="no C++ compiler")
@pytest.mark.parametrize("name, reverse", [("rnn_tanh", False), ("lstm", True), ("gru", False)])
def test_batch_major_layout_matches_float64_autodiff(name, reverse):
    def batch_major(cell, params, carry, xs, *, lengths, reverse):
        final, ys = cpu_kernel.scan_kernel(
            cell, params, carry, jnp.swapaxes(xs, 0, 1), lengths=lengths, reverse=reverse, time_major=False
        )
        return final, jnp.swapaxes(ys, 0, 1)

    lengths = np.random.default_rng(1).integers(0, 11, 33)
    _check_against_float64_autodiff(_problem(name, 21, t=10, b=33, d=20), lengths, reverse, run=batch_major)


@pytest.mark.skipif(not cpu_kernel.available(), reason="no C++ compiler")
def test_outputs_and_final_state_match_float64():
    cell, params, carry, xs, _ = _problem("lstm", 40)
    final, ys = cpu_kernel.scan_kernel(cell, params, carry, xs, lengths=LENGTHS, reverse=True)
    with jax.enable_x64():
        as64 = lambda tree: jax.tree.map(lambda x: np.asarray(x, np.float64), tree)  # noqa: E731
        ref_final, ref_ys = scan.scan(
            cell.step, as64(params), as64(carry), as64(xs), lengths=LENGTHS, reverse=True
        )
    np.testing.assert_allclose(ys, ref_ys, atol=3e-7)
    for got, want in zip(final, ref_final, strict=True):
        np.testing.assert_allclose(got, want, atol=3e-7)
    assert np.all(np.asarray(ys)[7:] == 0) and np.all(np.asarray(ys)[:, 3] == 0)  # padding is exactly zero


@pytest.mark.skipif(not cpu_kernel.available(), reason="no C++ compiler")
def test_thread_count_does_not_change_results(monkeypatch):
    cell, params, carry, xs, w_ys = _problem("gru", 40)
    grad = jax.grad(_loss(cpu_kernel.scan_kernel, cell, w_ys, LENGTHS, False), argnums=(0, 1, 2))
    results = []
    for threads in ("1", "3"):
        monkeypatch.setenv("SEQJAX_CPU_THREADS", threads)  # read by every call
        results.append(grad(params, carry, xs))
    for a, b in zip(*map(jax.tree.leaves, results), strict=True):
        np.testing.assert_array_equal(a, b)  # each unit's arithmetic is the same on any thread


@pytest.mark.skipif(not cpu_kernel.available(), reason="no C++ compiler")
def test_vmap_equals_each_problem_alone():
    cell = cells.LSTMCell(21)
    params = jax.vmap(lambda k: cell.init(k, D))(jax.random.split(jax.random.key(0), 3))
    xs = jax.random.normal(jax.random.key(1), (3, T, B, D))
    carry = cell.initial_carry((B,))

    def loss(p, x):
        return cpu_kernel.scan_kernel(cell, p, carry, x, lengths=LENGTHS)[1].sum()

    batched = jax.jit(jax.vmap(jax.value_and_grad(loss)))(params, xs)
    for i in range(3):
        one = jax.value_and_grad(loss)(jax.tree.map(lambda p, i=i: p[i], params), xs[i])
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(batched), strict=True):
            np.testing.assert_allclose(a, b[i], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not cpu_kernel.available(), reason="no C++ compiler")
def test_layers_default_to_the_kernel_unless_switched_off(monkeypatch):
    def calls_kernel(layer):
        jaxpr = jax.make_jaxpr(lambda p: layer.apply(p, jnp.ones((4, 2, 3))))(layer.init(jax.random.key(0)))
        return "SeqjaxRnnForward" in str(jaxpr)

    # Distinct layers: the environment is read when a layer is traced.
    assert calls_kernel(layers.GRU(3, 6))
    assert not calls_kernel(layers.GRU(3, 7, cpu_kernel=False))
    assert not calls_kernel(layers.GRU(3, 8, custom_backward=False))  # forward mode stays available
    monkeypatch.setenv("SEQJAX_CPU_KERNEL", "0")
    assert not calls_kernel(layers.GRU(3, 9))


def test_layers_use_the_kernel_only_where_it_applies():
    x32 = jnp.ones((4, 2, 3))
    assert cpu_kernel.supports(cells.LSTMCell(5), {"w": x32}, x32)
    with jax.enable_x64():
        assert not cpu_kernel.supports(cells.LSTMCell(5), x32.astype(jnp.float64))
    custom = _NoKernelLSTM(5)
    assert not cpu_kernel.supports(custom, x32)
    # float64 layers fall back to the scan (which the kernel cannot run) and still work.
    with jax.enable_x64():
        layer = layers.GRU(3, 5)
        params = layer.init(jax.random.key(0), jnp.float64)
        out, _ = layer.apply(params, jnp.ones((4, 2, 3), jnp.float64))
        assert out.dtype == jnp.float64


@pytest.mark.skipif(not cpu_kernel.available(), reason="no C++ compiler")
def test_bad_input_raises():
    cell = cells.LSTMCell(5)
    params = cell.init(jax.random.key(0), 3)
    carry = cell.initial_carry((2,))
    xs = jnp.ones((4, 2, 3))
    with pytest.raises(ValueError, match="float32"):
        cpu_kernel.scan_kernel(cell, params, carry, xs.astype(jnp.bfloat16))
    with pytest.raises(ValueError, match=r"xs must be \[time, batch, input_size\]"):
        cpu_kernel.scan_kernel(cell, params, carry, xs[0])
    with pytest.raises(ValueError, match=r"params\['w_ih'\] must have shape \(4, 20\); got \(3, 20\)"):
        cpu_kernel.scan_kernel(cell, params, carry, jnp.ones((4, 2, 4)))
    with pytest.raises(ValueError, match=r"carry leaves must have shape \[batch, hidden\]=\(2, 5\)"):
        cpu_kernel.scan_kernel(cell, params, cell.initial_carry((3,)), xs)
    with pytest.raises(ValueError, match="lengths must lie in"):
        cpu_kernel.scan_kernel(cell, params, carry, xs, lengths=np.array([5, 1]))
    with jax.enable_x64(), pytest.raises(ValueError, match="float32"):
        layer = layers.LSTM(3, 5, cpu_kernel=True)
        layer.apply(layer.init(jax.random.key(0), jnp.float64), jnp.ones((4, 2, 3), jnp.float64))
