"""The diagonal linear recurrence `h_t = a_t * h_{t-1} + b_t`, sequential or parallel over time.

Every gated linear recurrence (minGRU, minLSTM, LRU, RG-LRU, Mamba's selective
scan) reduces to this once its coefficients are computed from the inputs, which
needs no state: so, unlike an RNN, the whole sequence can be computed with a
parallel prefix scan in O(log t) depth (Blelloch 1990; Martin & Cundy 2018).

    hs, h_n = linear_recurrence(a, b, h0, lengths=..., reverse=..., method=...)

Methods (`Method`), all exact to rounding, with the same gradients:

    sequential  `lax.scan`: t steps of O(1) depth; the least memory traffic.
    parallel    `lax.associative_scan`: O(log t) depth, ~2 log2(t) passes over memory.
    chunked     an associative scan within chunks of `chunk_size` steps, `lax.scan`
                across chunks: t / chunk_size sequential steps of O(log chunk) depth.
    fused       one C++ loop over time for XLA:CPU (`kernels/linear_cpu.cc`), columns
                split over the cores; float32/64, complex64/128.
    auto        what `experiments/parallelism.py` measured fastest on the backend:
                fused on CPU (sequential where it cannot be built); elsewhere
                parallel. On an H200 a minGRU layer's train step (b=8, d=h=256) took
                0.52 ms parallel, 0.80 chunked, 45.9 sequential at t=1024, and 2.0,
                7.3 and 803 ms at t=16384 (README, "GPU").

The gradient of every method is a custom VJP: the backward pass of a linear
recurrence is the same recurrence run the other way (`dh_t = g_t + a_{t+1} dh_{t+1}`,
`da_t = dh_t h_{t-1}`, `db_t = dh_t`), by the same method, and it keeps only a, the
states and h0. JAX's own derivative of `associative_scan` is slow (jax#19498); on the
development CPU this VJP of `lax.scan` took 72 ms where JAX's took 90 ms (t=4096,
b=8, h=256). Only reverse mode is defined (`jax.grad`, `jax.vjp`), as for
`seqjax.scan.scan_cell`.

`gated_recurrence` (minGRU, minLSTM) and `selective_scan` (Mamba's S6) go further on
CPU: the loop computes the family's coefficients itself, so they are never written to
memory. `DiagonalLinearCell` turns a family's coefficients into a cell: a `step` for
streaming and the `RunsSequence` capability for layers.
"""

from __future__ import annotations

import enum
import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import validation
from seqjax.recurrences import cpu_kernel
from seqjax.recurrences import scan as scan_lib

Array = jax.Array

_SOURCE = pathlib.Path(__file__).parent / "kernels" / "linear_cpu.cc"
_TARGETS = (
    "SeqjaxLinearForward",
    "SeqjaxLinearBackward",
    "SeqjaxGatedForward",
    "SeqjaxGatedBackward",
    "SeqjaxSelectiveForward",
    "SeqjaxSelectiveBackward",
)
_FUSED_DTYPES = ("float32", "float64", "complex64", "complex128")


class Method(enum.Enum):
    AUTO = "auto"
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"
    CHUNKED = "chunked"
    FUSED = "fused"


def fused_unavailable_reason(dtype: Any = jnp.float32) -> str | None:
    """Why the fused CPU loop cannot run `dtype` here (None if it can)."""
    if jax.default_backend() != "cpu":
        return f"it runs on CPU only; the default backend is {jax.default_backend()}"
    if jnp.dtype(dtype).name not in _FUSED_DTYPES:
        return f"it runs {', '.join(_FUSED_DTYPES)}; got {jnp.dtype(dtype).name}"
    if not cpu_kernel.enabled():
        return "$SEQJAX_CPU_KERNEL is 0"
    return cpu_kernel.load(_SOURCE, _TARGETS)


def complex_dtype(dtype: Any) -> Any:
    """The complex dtype of a real one's precision: float32 -> complex64, float64 -> complex128."""
    return jnp.dtype(jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64)


def _promote(*arrays: Array) -> Any:
    """The dtype a, b and h0 compute in: their real precisions promoted, complex if any is
    (explicitly, so that it holds under strict dtype promotion)."""
    dtypes = [jnp.dtype(x.dtype) for x in arrays]
    if not all(jnp.issubdtype(d, jnp.inexact) for d in dtypes):
        raise TypeError(f"a, b and h0 must be real or complex floating point; got {[d.name for d in dtypes]}")
    real = jnp.result_type(*(jnp.finfo(d).dtype for d in dtypes))
    return complex_dtype(real) if any(jnp.issubdtype(d, jnp.complexfloating) for d in dtypes) else real


def resolve(method: Method | str, dtype: Any = jnp.float32) -> Method:
    """The method that `method` names for arrays of `dtype` on this backend (never AUTO).

    Raises:
      ValueError: an unknown name, or "fused" where it cannot run (with the reason).
    """
    method = validation.as_enum(Method, method, "method")
    if method is Method.AUTO:
        if jax.default_backend() == "cpu":
            return Method.FUSED if fused_unavailable_reason(dtype) is None else Method.SEQUENTIAL
        return Method.PARALLEL
    if method is Method.FUSED and (reason := fused_unavailable_reason(dtype)) is not None:
        raise ValueError(f"method='fused' cannot run here: {reason}")
    return method


# ---------------------------------------------------------------- the methods, on [t, ...]


def _combine(earlier, later):
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def _sequential(a, b, h0, reverse):
    return jax.lax.scan(lambda h, ab: (ab[0] * h + ab[1],) * 2, h0, (a, b), reverse=reverse)[1]


def _parallel(a, b, h0):
    b = b.at[0].add(a[0] * h0)  # h0 folded into the first step
    return jax.lax.associative_scan(_combine, (a, b))[1]


def _chunked(a, b, h0, chunk_size):
    t = a.shape[0]
    c = min(chunk_size, t)
    pad = -t % c
    if pad:  # identity steps: a = 1, b = 0
        a = jnp.concatenate([a, jnp.ones((pad, *a.shape[1:]), a.dtype)])
        b = jnp.concatenate([b, jnp.zeros((pad, *b.shape[1:]), b.dtype)])
    shape = ((t + pad) // c, c, *a.shape[1:])
    a_cum, h_local = jax.lax.associative_scan(_combine, (a.reshape(shape), b.reshape(shape)), axis=1)

    def across(h, chunk):
        a_last, h_last = chunk
        return a_last * h + h_last, h  # the state entering this chunk

    _, h_in = jax.lax.scan(across, h0, (a_cum[:, -1], h_local[:, -1]))
    hs = h_local + a_cum * h_in[:, None]
    return hs.reshape(t + pad, *a.shape[1:])[:t]


def _fused_forward(a, b, h0, reverse):
    call = jax.ffi.ffi_call(
        "SeqjaxLinearForward", jax.ShapeDtypeStruct(a.shape, a.dtype), vmap_method="sequential"
    )
    return call(a, b, h0, reverse=reverse)


def _run(method, reverse, chunk_size, a, b, h0):
    """hs `[t, ...]` of `h_t = a_t h_{t-1} + b_t` (from the end with reverse)."""
    if method is Method.FUSED:
        return _fused_forward(a, b, h0, reverse)
    if method is Method.SEQUENTIAL:
        return _sequential(a, b, h0, reverse)
    if reverse:
        return _run(method, False, chunk_size, a[::-1], b[::-1], h0)[::-1]
    if method is Method.PARALLEL:
        return _parallel(a, b, h0)
    return _chunked(a, b, h0, chunk_size)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _recurrence(method, reverse, chunk_size, a, b, h0):
    return _run(method, reverse, chunk_size, a, b, h0)


def _recurrence_fwd(method, reverse, chunk_size, a, b, h0):
    hs = _run(method, reverse, chunk_size, a, b, h0)
    return hs, (a, hs, h0)


def _recurrence_bwd(method, reverse, chunk_size, residuals, g):
    a, hs, h0 = residuals
    if method is Method.FUSED:
        shape = jax.ShapeDtypeStruct(a.shape, a.dtype)
        call = jax.ffi.ffi_call(
            "SeqjaxLinearBackward",
            (shape, shape, jax.ShapeDtypeStruct(h0.shape, h0.dtype)),
            vmap_method="sequential",
        )
        return call(a, hs, h0, g, reverse=reverse)
    one = jnp.ones_like(a[:1])
    if reverse:  # the step after t (in the recurrence's order) is t - 1
        a_next, h_prev = jnp.concatenate([one, a[:-1]]), jnp.concatenate([hs[1:], h0[None]])
    else:
        a_next, h_prev = jnp.concatenate([a[1:], one]), jnp.concatenate([h0[None], hs[:-1]])
    dh = _run(method, not reverse, chunk_size, a_next, g, jnp.zeros_like(h0))
    first = -1 if reverse else 0
    return dh * h_prev, dh, a[first] * dh[first]


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def linear_recurrence(
    a: Array,
    b: Array,
    h0: Array | None = None,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    method: Method | str = "auto",
    chunk_size: int = 128,
) -> tuple[Array, Array]:
    """Every state of `h_t = a_t * h_{t-1} + b_t`, elementwise, and the final state.

    Args:
      a: `[t, b, ...]` coefficients, time-major (or any shape that broadcasts
        against `b`, such as `[...]` for a time-invariant decay); real or complex.
      b: `[t, b, ...]` inputs, time-major; real or complex.
      h0: `[b, ...]`, the state before the first step; zeros if None.
      lengths: optional `[b]` integers in `[0, t]`: example i is the first
        `lengths[i]` steps. The state stops at each sequence's end (the final state
        is the state after its last valid step, `h0` for a length of 0) and outputs
        past it are zero; padded positions may hold anything, NaN included.
      reverse: run `h_t = a_t * h_{t+1} + b_t` from each sequence's last valid step
        to its first (reversal within each length); outputs stay aligned with their
        inputs.
      method: "sequential", "parallel", "chunked", "fused" or "auto" (see the
        module docstring).
      chunk_size: steps per chunk of the "chunked" method.

    Returns:
      `(hs, h_n)`: hs `[t, b, ...]` every state (zero past each length), h_n
      `[b, ...]` the final state. The dtype is the promotion of a, b and h0.

    >>> a = jnp.full((4, 1), 0.5); b = jnp.ones((4, 1))
    >>> hs, h_n = linear_recurrence(a, b, method="parallel")
    >>> hs[:, 0].tolist(), h_n.tolist()
    ([1.0, 1.5, 1.75, 1.875], [1.875])
    """
    b = jnp.asarray(b)
    if b.ndim < 1:
        raise ValueError(f"b must have shape [time, batch, ...]; got shape {b.shape}")
    a = jnp.asarray(a)
    try:
        a = jnp.broadcast_to(a, b.shape)
    except ValueError:
        raise ValueError(
            f"a must have b's shape [time, batch, ...]={b.shape} or broadcast to it; got shape {a.shape}"
        ) from None
    h0_shape = b.shape[1:]
    if h0 is not None:
        h0 = jnp.asarray(h0)
        if h0.shape != h0_shape:
            raise ValueError(f"h0 must have shape [batch, ...]={h0_shape}; got shape {h0.shape}")
    dtype = _promote(a, b, *([] if h0 is None else [h0]))
    validation.check_bool(reverse, "reverse")
    validation.check_positive_int(chunk_size, "chunk_size")
    method = resolve(method, dtype)
    a, b = a.astype(dtype), b.astype(dtype)
    h0 = jnp.zeros(h0_shape, dtype) if h0 is None else h0.astype(dtype)
    t = b.shape[0]
    if lengths is not None:
        if b.ndim < 2:
            raise ValueError(f"lengths need a batch axis: b must be [time, batch, ...]; got {b.shape}")
        lengths = scan_lib.check_lengths(lengths, b.shape[1], t)
    if b.size == 0:  # no steps, or an empty batch
        return b, h0
    if lengths is not None:
        # Padding steps are identities, so the state stops at each sequence's end (and,
        # in reverse, starts from h0 at its last valid step); NaN there reaches nothing.
        valid = valid_steps(lengths, b)
        a, b = jnp.where(valid, a, 1).astype(dtype), jnp.where(valid, b, 0).astype(dtype)
    hs = _recurrence(method, reverse, chunk_size, a, b, h0)
    h_n = hs[0] if reverse else hs[-1]
    if lengths is not None:
        hs = jnp.where(valid, hs, 0).astype(dtype)
    return hs, h_n


def _loop_lengths(lengths: Array | None, batch: int, t: int) -> Array:
    """Checked `[batch]` int32 lengths for the fused loops (t for every example if None)."""
    lengths = scan_lib.check_lengths(lengths, batch, t)
    return jnp.full((batch,), t, jnp.int32) if lengths is None else jnp.clip(lengths, 0, t).astype(jnp.int32)


_GATED_FORMS = {"mingru": (0, 2), "minlstm": (1, 3)}  # name -> (the C++ form, gates)


def gated_supports(dtype: Any) -> bool:
    """Whether `gated_recurrence` and `selective_scan` run `dtype` here (float32/64 on CPU,
    where the loop builds)."""
    return jnp.dtype(dtype).name in ("float32", "float64") and fused_unavailable_reason(dtype) is None


def _gated_forward(form, reverse, k, bias, h0, lengths):
    shape = jax.ShapeDtypeStruct(h0.shape, h0.dtype)
    call = jax.ffi.ffi_call(
        "SeqjaxGatedForward",
        (jax.ShapeDtypeStruct((*k.shape[:2], h0.shape[-1]), k.dtype), shape),
        vmap_method="sequential",
    )
    return call(k, bias, h0, lengths, form=np.int64(_GATED_FORMS[form][0]), reverse=reverse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _gated(form, reverse, k, bias, h0, lengths):
    return _gated_forward(form, reverse, k, bias, h0, lengths)


def _gated_fwd(form, reverse, k, bias, h0, lengths):
    hs, h_n = _gated_forward(form, reverse, k, bias, h0, lengths)
    return (hs, h_n), (k, bias, hs, h0, lengths)


def _gated_bwd(form, reverse, residuals, cotangents):
    k, bias, hs, h0, lengths = residuals
    g, d_hn = cotangents
    like = (k, bias, h0)
    # dk overwrites k (the loop reads each block before it writes it): no fresh buffer.
    call = jax.ffi.ffi_call(
        "SeqjaxGatedBackward",
        tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in like),
        vmap_method="sequential",
        input_output_aliases={0: 0},
    )
    dk, d_bias, dh0 = call(
        k, bias, hs, h0, lengths, g, d_hn, form=np.int64(_GATED_FORMS[form][0]), reverse=reverse
    )
    return dk, d_bias, dh0, None


_gated.defvjp(_gated_fwd, _gated_bwd)


def gated_recurrence(
    form: str,
    k: Array,
    h0: Array,
    *,
    bias: Array | None = None,
    lengths: Array | None = None,
    reverse: bool = False,
) -> tuple[Array, Array]:
    """A gated linear recurrence in one fused CPU loop, its coefficients computed in it.

    The same values as `linear_recurrence(a, b, h0, ...)` with `(a, b)` the form's
    gates of `k + bias` (`seqjax.recurrences.min_rnn`), without writing or reading
    `k + bias` or the `[t, b, h]` coefficients (the bias's gradient is summed in the
    loop too): "mingru" (`k = [k_z | k_h]`) or "minlstm"
    (`k = [k_f | k_i | k_h]`). The loop has its own float32 exp (relative error ~1e-7).

    Args:
      form: "mingru" or "minlstm".
      k: `[t, b, G*h]` gate pre-activations less their bias, float32 or float64.
      h0: `[b, h]` initial state.
      bias: `[G*h]`, added to every step's k; zero if None.
      lengths, reverse: as `linear_recurrence`.

    Returns:
      `(hs [t, b, h], h_n [b, h])`, hs zero past each length.
    """
    if form not in _GATED_FORMS:
        raise ValueError(f"form must be one of {', '.join(_GATED_FORMS)}; got {form!r}")
    gates = _GATED_FORMS[form][1]
    if k.ndim != 3 or k.shape[-1] % gates or h0.shape != (k.shape[1], k.shape[-1] // gates):
        raise ValueError(
            f"k must be [time, batch, {gates}*hidden] and h0 [batch, hidden]; got {k.shape} and {h0.shape}"
        )
    if not gated_supports(k.dtype):
        raise ValueError(f"gated_recurrence runs float32/float64 on CPU: {fused_unavailable_reason(k.dtype)}")
    t, b = k.shape[:2]
    lengths = _loop_lengths(lengths, b, t)
    if t == 0:
        return jnp.zeros((0, *h0.shape), k.dtype), h0.astype(k.dtype)
    bias = jnp.zeros(k.shape[-1:], k.dtype) if bias is None else jnp.asarray(bias).astype(k.dtype)
    if bias.shape != k.shape[-1:]:
        raise ValueError(f"bias must have shape [{gates}*hidden]={k.shape[-1:]}; got {bias.shape}")
    return _gated(form, reverse, k, bias, h0.astype(k.dtype), lengths)


def _selective_forward(delta, x, a, b, c, h0, lengths):
    call = jax.ffi.ffi_call(
        "SeqjaxSelectiveForward",
        (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(h0.shape, h0.dtype)),
        vmap_method="sequential",
    )
    return call(delta, x, a, b, c, h0, lengths)


@jax.custom_vjp
def _selective(delta, x, a, b, c, h0, lengths):
    return _selective_forward(delta, x, a, b, c, h0, lengths)


def _selective_fwd(delta, x, a, b, c, h0, lengths):
    return _selective_forward(delta, x, a, b, c, h0, lengths), (delta, x, a, b, c, h0, lengths)


def _selective_bwd(residuals, cotangents):
    # The loop recomputes the states: nothing of size [t, b, E, N] is saved.
    call = jax.ffi.ffi_call(
        "SeqjaxSelectiveBackward",
        tuple(jax.ShapeDtypeStruct(r.shape, r.dtype) for r in residuals[:6]),
        vmap_method="sequential",
    )
    return (*call(*residuals, *cotangents), None)


_selective.defvjp(_selective_fwd, _selective_bwd)


def selective_scan(
    delta: Array,
    x: Array,
    a: Array,
    b: Array,
    c: Array,
    h0: Array,
    *,
    lengths: Array | None = None,
) -> tuple[Array, Array]:
    """Mamba's selective scan (S6) in one fused CPU loop, its `[t, b, E, N]` coefficients
    and states never written to memory (the loop's own float32 exp: relative error ~1e-7):

        h_t[e, n] = exp(delta_t[e] a[e, n]) h_{t-1}[e, n] + delta_t[e] x_t[e] b_t[n]
        y_t[e] = sum_n h_t[e, n] c_t[n]

    the same values as `linear_recurrence` of those coefficients followed by the
    contraction with c, and the same gradients (reverse mode; the backward loop
    recomputes the states).

    Args:
      delta: `[t, b, E]` step sizes, float32 or float64.
      x: `[t, b, E]` inputs.
      a: `[E, N]` the (negative) state matrix's diagonal.
      b, c: `[t, b, N]` input and output projections.
      h0: `[b, E, N]` initial state.
      lengths: optional `[b]` integers in `[0, t]`; the state stops at each
        sequence's end and y is zero past it.

    Returns:
      `(ys [t, b, E], h_n [b, E, N])` in delta's dtype.
    """
    arrays = {"delta": delta, "x": x, "a": a, "b": b, "c": c, "h0": h0}
    if delta.ndim != 3 or a.ndim != 2 or a.shape[0] != delta.shape[-1]:
        shapes = None
    else:
        t, batch, e, n = *delta.shape, a.shape[1]
        shapes = [(t, batch, e), (t, batch, e), (e, n), (t, batch, n), (t, batch, n), (batch, e, n)]
    if shapes != [v.shape for v in arrays.values()]:
        raise ValueError(
            "selective_scan needs delta, x [t, b, E], a [E, N], b, c [t, b, N] and h0 [b, E, N]; got "
            + ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
        )
    if not gated_supports(delta.dtype):
        reason = fused_unavailable_reason(delta.dtype)
        raise ValueError(f"selective_scan runs float32/float64 on CPU: {reason}")
    lengths = _loop_lengths(lengths, batch, t)
    if delta.size == 0:
        return jnp.zeros(delta.shape, delta.dtype), h0.astype(delta.dtype)
    return _selective(*(v.astype(delta.dtype) for v in (delta, x, a, b, c, h0)), lengths)


def check_method(method: Any) -> None:
    """Raises a ValueError unless `method` names a `Method`."""
    validation.as_enum(Method, method, "method")


def valid_steps(lengths: Array, xs: Array) -> Array:
    """Booleans `[t, b, 1, ...]` (broadcasting against `xs: [t, b, ...]`): True at the
    steps within each sequence's length."""
    t = xs.shape[0]
    return (jnp.arange(t, dtype=lengths.dtype)[:, None] < lengths).reshape(t, -1, *(1,) * (xs.ndim - 2))


def zero_past(ys: Array, lengths: Array | None) -> Array:
    """`ys: [t, b, ...]` with every step past its sequence's length set to zero."""
    if lengths is None:
        return ys
    return jnp.where(valid_steps(lengths, ys), ys, 0).astype(ys.dtype)


def reverse_within(xs: Array, lengths: Array | None) -> Array:
    """Each sequence of `xs: [t, b, ...]` reversed within its length (padding stays put).

    Its own inverse: `reverse_within(reverse_within(xs, n), n) == xs`.
    """
    if lengths is None:
        return xs[::-1]
    t = xs.shape[0]
    steps = jnp.arange(t, dtype=lengths.dtype)[:, None]
    index = jnp.where(steps < lengths, lengths - 1 - steps, steps)  # [t, b]
    index = index.reshape(t, -1, *(1,) * (xs.ndim - 2))
    return jnp.take_along_axis(xs, jnp.broadcast_to(index, xs.shape), axis=0)


class DiagonalLinearCell:
    """A cell whose state follows `h_t = a_t * h_{t-1} + b_t`, with `(a_t, b_t)` computed
    from `x_t` alone, and whose output reads `h_t` and `x_t`.

    A subclass defines `hidden_size`, `init`, and

        a, b = coefficients(params, x)     x: [..., d] -> a, b: [..., n] (or broadcasting)
        y = readout(params, h, x)          h: [..., n], x: [..., d] -> y: [..., hidden_size]

    and a `method` attribute (how `linear_recurrence` runs by default), and gets
    `initial_carry` (zeros `[..., hidden_size]`; a subclass whose state has
    another width or dtype overrides it), `step`, and the `RunsSequence` capability:
    `run_sequence` computes every coefficient in one batched call and the recurrence
    by `linear_recurrence`'s `method`.
    """

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype: Any = jnp.float32) -> Array:
        """Zeros `[*batch_shape, hidden_size]`."""
        return jnp.zeros((*batch_shape, self.hidden_size), dtype)

    def step(self, params: Any, h: Array, x: Array) -> tuple[Array, Array]:
        """One step: `x: [..., d]`, h `[..., n]` -> `(h, y: [..., hidden_size])`."""
        a, b = self.coefficients(params, x)
        h = (a * h + b).astype(h.dtype)
        return h, self.readout(params, h, x)

    def run_sequence(
        self,
        params: Any,
        h0: Array,
        xs: Array,
        *,
        lengths: Array | None = None,
        reverse: bool = False,
        method: Method | str | None = None,
    ) -> tuple[Array, Array]:
        """`xs: [t, b, d]` -> `(h_n [b, n], ys [t, b, hidden_size])`, ys zero past lengths;
        `method` overrides the cell's own."""
        a, b = self.coefficients(params, xs)
        method = self.method if method is None else method
        hs, h_n = linear_recurrence(a, b, h0, lengths=lengths, reverse=reverse, method=method)
        ys = zero_past(self.readout(params, hs.astype(h0.dtype), xs), lengths)
        return h_n.astype(h0.dtype), ys
