"""Parallel recurrences: `linear_recurrence` against a NumPy loop and finite differences for
every method; minGRU, minLSTM, LRU, RG-LRU and Mamba against their papers' equations
written in NumPy (each sequence alone), every method against the step-by-step scan, and
the checks on their arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax
from seqjax.analysis import diagnostics
from seqjax.recurrences import linear, lru, mamba, min_rnn, paths, scan
from seqjax.recurrences.linear import linear_recurrence
from tests.helpers import check_grads_by_finite_differences, numpy_linear_recurrence, numpy_stack, sigmoid

T, B, D, H = 7, 4, 3, 5
LENGTHS = np.array([7, 3, 0, 1], np.int32)
METHODS = ("sequential", "parallel", "chunked", "fused", "auto")
CHUNK = 3  # does not divide T: the chunked method pads


def _coefficients(rng, complex_a):
    a = rng.uniform(-1, 1, (T, B, 2))
    b = rng.normal(size=(T, B, 2))
    if complex_a:
        a = a * np.exp(1j * rng.uniform(0, 2 * np.pi, a.shape))
        b = b + 1j * rng.normal(size=b.shape)
    h0 = rng.normal(size=(B, 2)) + (1j * rng.normal(size=(B, 2)) if complex_a else 0)
    return a, b, h0


@pytest.mark.parametrize("method", METHODS)
def test_linear_recurrence_matches_numpy_loop(method):
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        for complex_a in (False, True):
            a, b, h0 = _coefficients(rng, complex_a)
            for lengths in (None, LENGTHS):
                for reverse in (False, True):
                    hs, h_n = linear_recurrence(
                        a, b, h0, lengths=lengths, reverse=reverse, method=method, chunk_size=CHUNK
                    )
                    want_hs, want_n = numpy_linear_recurrence(a, b, h0, lengths, reverse)
                    np.testing.assert_allclose(hs, want_hs, rtol=1e-10, atol=1e-12)
                    np.testing.assert_allclose(h_n, want_n, rtol=1e-10, atol=1e-12)
        # A time-invariant a broadcasts; without h0 the state starts at zero.
        hs, _ = linear_recurrence(0.5, np.ones((3, 1)), method=method)
        np.testing.assert_allclose(hs[:, 0], [1.0, 1.5, 1.75])


@pytest.mark.parametrize("method", METHODS)
def test_linear_recurrence_gradients_match_finite_differences(method):
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        weights = jnp.asarray(rng.normal(size=(T, B, 2)))
        for complex_a in (False, True):
            a, b, h0 = _coefficients(rng, complex_a)
            # Complex inputs as real and imaginary parts: the loss is a real function of reals.
            parts = (a.real, a.imag, b.real, b.imag, h0.real, h0.imag)

            def loss(ar, ai, br, bi, hr, hi, complex_a=complex_a):
                total = 0.0
                for lengths, reverse in ((None, False), (LENGTHS, True), (LENGTHS, False)):
                    hs, h_n = linear_recurrence(
                        jax.lax.complex(ar, ai) if complex_a else ar,
                        jax.lax.complex(br, bi) if complex_a else br,
                        jax.lax.complex(hr, hi) if complex_a else hr,
                        lengths=lengths,
                        reverse=reverse,
                        method=method,
                        chunk_size=CHUNK,
                    )
                    total += jnp.sum(weights * jnp.abs(hs) ** 2) + jnp.sum(jnp.real(h_n) ** 3)
                return total

            args = tuple(jnp.asarray(p) for p in parts)
            check_grads_by_finite_differences(jax.jit(loss), args, rtol=1e-6)


def test_linear_recurrence_checks_its_arguments():
    a = np.ones((T, B, 2))
    for call, error, match in [
        (lambda: linear_recurrence(np.ones((T, B, 3)), a), ValueError, r"a must have b's shape"),
        (lambda: linear_recurrence(a, a, np.ones((B, 3))), ValueError, r"h0 must have shape \[batch, ...\]"),
        (lambda: linear_recurrence(a, a, method="magic"), ValueError, "method must be one of"),
        (lambda: linear_recurrence(a, a, lengths=np.ones(B + 1, int)), ValueError, "lengths"),
        (lambda: linear_recurrence(np.ones((T, B), int), np.ones((T, B), int)), TypeError, "floating point"),
        (lambda: linear_recurrence(a, a, chunk_size=0), ValueError, "chunk_size must be a positive int"),
        (
            lambda: linear_recurrence(a.astype(np.float16), a.astype(np.float16), method="fused"),
            ValueError,
            "method='fused' cannot run here: it runs float32, float64",
        ),
        (lambda: seqjax.GRU(D, H, method="parallel"), ValueError, "needs a cell with the RunsSequence"),
        (lambda: seqjax.MinGRU(D, H, method="magic"), ValueError, "method must be one of"),
        (lambda: seqjax.LRU(D, H, r_min=0.99, r_max=0.9), ValueError, "r_min must be <= r_max"),
        (lambda: seqjax.RGLRU(D, H, a_max=1.0), ValueError, "a_max must be a finite number in"),
        (lambda: seqjax.Mamba(D, H, state_size=0), ValueError, "state_size must be a positive int"),
    ]:
        with pytest.raises(error, match=match):
            call()


# ---------------------------------------------------------------- the families' equations in NumPy


def _g(x):
    return np.where(x >= 0, x + 0.5, sigmoid(x))


def numpy_mingru(p, h, x):
    k = x @ p["w_ih"] + p["b_ih"]
    z = sigmoid(k[:H])
    h = (1 - z) * h + z * _g(k[H:])
    return h, h


def numpy_minlstm(p, h, x):
    k = x @ p["w_ih"] + p["b_ih"]
    f, i = sigmoid(k[:H]), sigmoid(k[H : 2 * H])
    h = f / (f + i) * h + i / (f + i) * _g(k[2 * H :])
    return h, h


def numpy_rglru(p, h, x, c=8.0):
    k = x @ p["w_ih"] + p["b_ih"]
    u, r, i = k[:H], sigmoid(k[H : 2 * H]), sigmoid(k[2 * H :])
    a = sigmoid(-p["a_param"]) ** (c * r)  # exp(-softplus(Lambda)) ** (c r)
    h = a * h + np.sqrt(1 - a**2) * (i * u)
    return h, h


def numpy_lru(p, h, x):
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    h = lam * h + np.exp(p["gamma_log"]) * (x @ (p["B_re"] + 1j * p["B_im"]))
    return h, (h @ (p["C_re"] + 1j * p["C_im"])).real + x @ p["D"]


@pytest.mark.parametrize(
    "layer_type, numpy_step",
    [
        (seqjax.MinGRU, numpy_mingru),
        (seqjax.MinLSTM, numpy_minlstm),
        (seqjax.RGLRU, numpy_rglru),
        (seqjax.LRU, numpy_lru),
    ],
)
def test_deep_bidirectional_layers_match_the_papers_equations(layer_type, numpy_step):
    # Each sequence of a padded batch alone, in NumPy: padding changes nothing.
    layer = layer_type(D, H, 2, bidirectional=True, batch_first=True)
    with jax.enable_x64(True):
        params = layer.init(jax.random.key(0), jnp.float64)
        xs = jax.random.normal(jax.random.key(1), (B, T, D), jnp.float64)
        h0 = layer.initial_state(B, jnp.float64)
        h0 = h0 + jax.random.uniform(jax.random.key(2), h0.shape, jnp.float64).astype(h0.dtype)
        outputs, final = layer.apply(params, xs, h0, lengths=LENGTHS)
    want_outputs, want_final = numpy_stack(numpy_step, params, np.swapaxes(xs, 0, 1), LENGTHS, h0)
    np.testing.assert_allclose(outputs, np.swapaxes(want_outputs, 0, 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(final, want_final, rtol=1e-10, atol=1e-12)


def numpy_mamba(p, carry, u, cell):
    r, n = cell.rank, cell.state_size
    conv, ssm = carry
    x, z = np.split(u @ p["w_in"], 2)
    window = np.concatenate([conv, x[None]])
    x = (window * p["conv_w"]).sum(0) + p["conv_b"]
    x = x * sigmoid(x)
    dbc = x @ p["w_x"]
    delta = np.logaddexp(0, dbc[:r] @ p["w_dt"] + p["b_dt"])
    b, c = dbc[r : r + n], dbc[r + n :]
    ssm = np.exp(delta[:, None] * -np.exp(p["A_log"])) * ssm + (delta * x)[:, None] * b[None]
    y = (ssm @ c + p["D"] * x) * z * sigmoid(z)
    return (window[1:], ssm), y @ p["w_out"]


def test_mamba_matches_its_equations_per_sequence_in_both_directions():
    layer = seqjax.Mamba(D, H, bidirectional=True, state_size=3, conv_width=3)
    with jax.enable_x64(True):
        params = layer.init(jax.random.key(0), jnp.float64)
        xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float64)
        state = layer.initial_state(B, jnp.float64)
        state = jax.tree.map(lambda s: s + jax.random.normal(jax.random.key(3), s.shape, s.dtype), state)
        outputs, final = layer.apply(params, xs, state, lengths=LENGTHS)
    params = jax.tree.map(np.asarray, params)
    for i, n in enumerate(LENGTHS):
        for d in range(2):
            carry = (np.asarray(state.conv[d, i]), np.asarray(state.ssm[d, i]))
            for t in reversed(range(n)) if d else range(n):
                carry, y = numpy_mamba(params[0][d], carry, np.asarray(xs[t, i]), layer.cell)
                np.testing.assert_allclose(outputs[t, i, d * H : (d + 1) * H], y, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(final.conv[d, i], carry[0], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(final.ssm[d, i], carry[1], rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(outputs[n:, i], 0.0)


# ---------------------------------------------------------------- methods against the step-by-step scan

CELLS = {
    "mingru": min_rnn.MinGRUCell(H),
    "minlstm": min_rnn.MinLSTMCell(H),
    "lru": lru.LRUCell(H, state_size=4),
    "rglru": lru.RGLRUCell(H),
    "mamba": mamba.MambaCell(H, state_size=3, expand=1),
}


def _outputs_and_gradients(run, params, carry, xs):
    def loss(params, carry, xs):
        final, ys = run(params, carry, xs)
        leaves = jax.tree.leaves((final, ys))
        return sum(jnp.sum(jnp.sin(jnp.real(leaf)) * (k + 1)) for k, leaf in enumerate(leaves))

    return jax.jit(lambda *args: (run(*args), jax.grad(loss, argnums=(0, 1, 2))(*args)))(params, carry, xs)


@pytest.mark.parametrize("family", CELLS)
def test_every_method_equals_the_step_by_step_scan(family):
    # float64 with reversal: every method's algorithm; float32 forward: the associative
    # scan's rounding, and the fused loops' own exp against XLA's.
    cell = CELLS[family]
    for dtype, reverse, methods, tolerance in (
        (jnp.float64, True, METHODS[:4], 1e-10),
        (jnp.float32, False, ("parallel", "fused"), 2e-5),
    ):
        with jax.enable_x64(dtype == jnp.float64):
            params = cell.init(jax.random.key(0), D, dtype)
            xs = 2 * jax.random.normal(jax.random.key(1), (T, B, D), dtype)
            carry = jax.tree.map(
                lambda c: c + jax.random.uniform(jax.random.key(2), c.shape).astype(c.dtype),
                cell.initial_carry((B,), dtype),
            )
            want = _outputs_and_gradients(
                lambda p, c, x, reverse=reverse: scan.scan(
                    cell.step, p, c, x, lengths=LENGTHS, reverse=reverse
                ),
                params,
                carry,
                xs,
            )
            for method in methods:
                got = _outputs_and_gradients(
                    lambda p, c, x, m=method, reverse=reverse: cell.run_sequence(
                        p, c, x, lengths=LENGTHS, reverse=reverse, method=m
                    ),
                    params,
                    carry,
                    xs,
                )
                for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                    scale = float(jnp.max(jnp.abs(w))) + 1.0
                    np.testing.assert_allclose(g, w, rtol=tolerance, atol=tolerance * scale)


def test_selective_scan_equals_the_recurrence_it_fuses_and_finite_differences(monkeypatch):
    # Examples split over 3 threads (A's gradient summed over them), channels in two full
    # blocks and a partial one, lengths with 0 and t; against linear_recurrence and an
    # einsum, values and gradients in float64, then finite differences, then vmap.
    if not linear.gated_supports(jnp.float64):
        pytest.skip(f"the fused loop cannot run here: {linear.fused_unavailable_reason()}")
    monkeypatch.setenv("SEQJAX_CPU_THREADS", "3")
    t, b, e, n = 40, 8, 40, 16
    lengths = jnp.array([40, 0, 17, 1, 39, 40, 5, 23], jnp.int32)
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        args = (
            jnp.asarray(np.log1p(np.exp(rng.normal(size=(t, b, e))))),  # delta > 0
            jnp.asarray(rng.normal(size=(t, b, e))),
            jnp.asarray(-np.exp(rng.normal(size=(e, n)))),
            jnp.asarray(rng.normal(size=(t, b, n))),
            jnp.asarray(rng.normal(size=(t, b, n))),
            jnp.asarray(rng.normal(size=(b, e, n))),
        )

        def unfused(delta, x, a, bm, c, h0):
            coefficients = jnp.exp(delta[..., None] * a), (delta * x)[..., None] * bm[..., None, :]
            hs, h_n = linear_recurrence(*coefficients, h0, lengths=lengths, method="sequential")
            return jnp.einsum("tben,tbn->tbe", hs, c), h_n

        def fused(*args):
            return linear.selective_scan(*args, lengths=lengths)

        cotangents = (jnp.asarray(rng.normal(size=(t, b, e))), jnp.asarray(rng.normal(size=(b, e, n))))
        for name, want, got in (
            ("values", *(f(*args) for f in (unfused, fused))),
            ("gradients", *(jax.vjp(f, *args)[1](cotangents) for f in (unfused, fused))),
        ):
            for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
                np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10, err_msg=name)

        def loss(*args):
            ys, h_n = fused(*args)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(jnp.cos(h_n))

        check_grads_by_finite_differences(loss, args)
        batched = jax.vmap(fused)(*(jnp.stack([v, 2 * v]) for v in args))
        for i in range(2):
            for w, g in zip(fused(*(v * (i + 1) for v in args)), batched, strict=True):
                np.testing.assert_allclose(g[i], w, rtol=1e-12, atol=1e-12)
    with pytest.raises(
        ValueError, match=r"a \[E, N\], b, c \[t, b, N\] and h0 \[b, E, N\]; got .*c \(40, 8, 15\)"
    ):
        linear.selective_scan(*args[:4], args[4][..., 1:], args[5])
    with pytest.raises(ValueError, match="lengths"):
        linear.selective_scan(*args, lengths=jnp.zeros(3, jnp.int32))


def test_layers_take_the_sequence_path_and_the_method_switch():
    layer = seqjax.MinGRU(D, H, method="parallel")
    params = layer.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (T, B, D))
    assert paths.choose(layer.cell, layer.switches, params, xs) is paths.Path.SEQUENCE
    # The layer's switch overrides the cell's own method; both give the same values.
    cell_method = seqjax.Recurrent(min_rnn.MinGRUCell(H, method="sequential"), D)
    np.testing.assert_allclose(
        layer.apply(params, xs)[0], cell_method.apply(params, xs)[0], rtol=1e-5, atol=1e-6
    )
    assert linear.resolve("auto", jnp.float32) is (
        linear.Method.FUSED if linear.fused_unavailable_reason() is None else linear.Method.SEQUENTIAL
    )


def test_lru_recurrent_jacobian_has_the_moduli_of_its_eigenvalues():
    # The complex state is differentiated as real and imaginary parts: J is block-diagonal
    # with 2x2 rotation-scalings, whose spectral radius and norm are max |lambda|.
    cell = lru.LRUCell(H, state_size=4)
    params = cell.init(jax.random.key(0), D)
    spectrum = diagnostics.jacobian_spectrum(cell, params, jax.random.normal(jax.random.key(1), (3, 2, D)))
    modulus = np.exp(-np.exp(np.asarray(params["nu_log"], np.float64))).max()
    np.testing.assert_allclose(spectrum.spectral_radius, modulus, rtol=1e-5)
    np.testing.assert_allclose(spectrum.max_singular_value, modulus, rtol=1e-5)
