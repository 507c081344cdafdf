"""Pure recurrent cells: vanilla RNN (tanh or relu), LSTM and GRU.

A cell is a `Cell`: a few pure functions over a plain dict of parameters, in the
spirit of optax's `(init, update)` pair. Nothing is hidden in objects; every
function works under `jit`, `vmap` and `grad`.

The input projection is kept apart from the recurrence, so that a layer can
project every time step in one large matmul before scanning:

    gx = cell.project(params, xs)            # xs: [..., d] -> gx: [..., g*h]
    carry, y = cell.step(params, carry, gx_t)  # one time step

`cell.apply(params, carry, x)` is the two composed, for one step. The step
itself is the recurrent matmul followed by parameter-free elementwise work,
exposed apart so that a layer can write its own backward pass
(`seqjax.scan.scan_cell`):

    gh = cell.hidden_projection(params, cell.hidden(carry))  # [..., g*h]
    carry, y = cell.update(carry, gx_t, gh)

Parameters follow PyTorch's equations and gate order, stored `[in, out]` so that
a projection is `x @ w`:

    w_ih: [d, g*h]   w_hh: [h, g*h]   b_ih: [g*h]   b_hh: [g*h]

with g = 1 (RNN), 4 (LSTM gates i, f, g, o) or 3 (GRU gates r, z, n). Both biases
are kept, as in PyTorch, so that weights round-trip exactly; with `bias=False`
the two bias entries are absent.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Params = dict[str, Array]
Carry = Any  # Array [..., h] for RNN and GRU; LSTMState for the LSTM.


class Nonlinearity(enum.Enum):
    """Activation of the vanilla RNN, as PyTorch's `nonlinearity` argument; IDENTITY
    (a linear RNN, for analysis) is seqjax's own and has no PyTorch counterpart."""

    TANH = "tanh"
    RELU = "relu"
    IDENTITY = "identity"


class RecurrentInit(enum.Enum):
    """Initialiser of the recurrent weights `w_hh`.

    UNIFORM is PyTorch's default U(-1/sqrt(h), 1/sqrt(h)); ORTHOGONAL draws an
    orthogonal [h, h] block per gate (Saxe et al. 2014), which keeps the
    recurrent Jacobian's singular values near one at initialisation.
    """

    UNIFORM = "uniform"
    ORTHOGONAL = "orthogonal"


def as_enum(enum_type: type[enum.Enum], value: Any, name: str) -> Any:
    """Returns `value` as a member of `enum_type`, or raises a ValueError naming `name`."""
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in enum_type)
        raise ValueError(f"{name} must be one of {choices}; got {value!r}") from None


class LSTMState(NamedTuple):
    """Carry of the LSTM; a tuple `(h, c)` in PyTorch's order."""

    h: Array  # [..., h]
    c: Array  # [..., h]


class Cell(NamedTuple):
    """A recurrent cell as pure functions; see the module docstring.

    Attributes:
      hidden_size: h.
      num_gates: g, the number of [h]-wide blocks in the fused projections.
      init: `(key, input_size, dtype=float32) -> params`.
      initial_carry: `(batch_shape, dtype=float32) -> carry` of zeros, leaves
        `[*batch_shape, h]`.
      project: `(params, x) -> gx`, x: `[..., d]`, gx: `[..., g*h]`, the
        input projection `x @ w_ih + b_ih`, for any number of leading axes.
      step: `(params, carry, gx_t) -> (carry, y_t)`, the recurrence given an
        already projected input; gx_t: `[..., g*h]`, y_t: `[..., h]`.
      apply: `(params, carry, x_t) -> (carry, y_t)`, project then step.
      hidden: `carry -> h`, the part of the carry that the recurrent matmul reads.
      hidden_projection: `(params, h) -> gh`, `h @ w_hh + b_hh`: `[..., g*h]`.
      update: `(carry, gx_t, gh_t) -> (carry, y_t)`, the elementwise rest of
        `step`: `step(params, c, gx) == update(c, gx, hidden_projection(params, hidden(c)))`.
      kernel: which of `seqjax.cpu_kernel`'s fused loops computes this cell
        ("rnn_tanh", "rnn_relu", "rnn_identity", "lstm", "gru"); None for a cell
        it does not know.
    """

    hidden_size: int
    num_gates: int
    init: Callable[..., Params]
    initial_carry: Callable[..., Carry]
    project: Callable[[Params, Array], Array]
    step: Callable[[Params, Carry, Array], tuple[Carry, Array]]
    apply: Callable[[Params, Carry, Array], tuple[Carry, Array]]
    hidden: Callable[[Carry], Array]
    hidden_projection: Callable[[Params, Array], Array]
    update: Callable[[Carry, Array, Array], tuple[Carry, Array]]
    kernel: str | None = None


def _check_size(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


def _make_init(
    hidden_size: int,
    num_gates: int,
    bias: bool,
    recurrent_init: RecurrentInit,
    forget_gate: int | None = None,
    forget_bias: float | None = None,
) -> Callable[..., Params]:
    gh = num_gates * hidden_size
    bound = 1.0 / math.sqrt(hidden_size)

    def init(key: Array, input_size: int, dtype: Any = jnp.float32) -> Params:
        """Draws parameters; values are drawn in float32 and cast, so every dtype
        sees the same (rounded) initial weights for a given key."""
        _check_size(input_size, "input_size")
        k_ih, k_hh, k_bi, k_bh = jax.random.split(key, 4)

        def uniform(k, shape):
            return jax.random.uniform(k, shape, jnp.float32, -bound, bound)

        params = {"w_ih": uniform(k_ih, (input_size, gh))}
        if recurrent_init is RecurrentInit.ORTHOGONAL:
            orth = jax.nn.initializers.orthogonal()
            blocks = jax.vmap(lambda k: orth(k, (hidden_size, hidden_size)))(
                jax.random.split(k_hh, num_gates)
            )  # [g, h, h]
            params["w_hh"] = blocks.transpose(1, 0, 2).reshape(hidden_size, gh)
        else:
            params["w_hh"] = uniform(k_hh, (hidden_size, gh))
        if bias:
            params["b_ih"] = uniform(k_bi, (gh,))
            params["b_hh"] = uniform(k_bh, (gh,))
            if forget_bias is not None:
                # The whole forget bias sits in b_ih so that b_ih + b_hh equals it.
                f = slice(forget_gate * hidden_size, (forget_gate + 1) * hidden_size)
                params["b_ih"] = params["b_ih"].at[f].set(forget_bias)
                params["b_hh"] = params["b_hh"].at[f].set(0.0)
        return jax.tree.map(lambda p: p.astype(dtype), params)

    return init


def _project(params: Params, x: Array) -> Array:
    # As one 2-D matmul: XLA:CPU differentiates a [t, b, d] x [d, g*h] contraction
    # about 10x slower than the same product flattened to [t*b, d].
    w = params["w_ih"]
    gx = (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])
    return gx + params["b_ih"] if "b_ih" in params else gx


def _hidden_projection(params: Params, h: Array) -> Array:
    gh = h @ params["w_hh"]
    return gh + params["b_hh"] if "b_hh" in params else gh


def _make_cell(hidden_size, num_gates, init, initial_carry, update, kernel, hidden=lambda h: h) -> Cell:
    def step(params: Params, carry: Carry, gx: Array) -> tuple[Carry, Array]:
        return update(carry, gx, _hidden_projection(params, hidden(carry)))

    def apply(params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
        return step(params, carry, _project(params, x))

    return Cell(
        hidden_size,
        num_gates,
        init,
        initial_carry,
        _project,
        step,
        apply,
        hidden,
        _hidden_projection,
        update,
        kernel,
    )


def _zeros_carry(hidden_size: int) -> Callable[..., Array]:
    def initial_carry(batch_shape: tuple[int, ...] = (), dtype: Any = jnp.float32) -> Array:
        return jnp.zeros((*batch_shape, hidden_size), dtype)

    return initial_carry


def rnn(
    hidden_size: int,
    nonlinearity: Nonlinearity | str = Nonlinearity.TANH,
    *,
    bias: bool = True,
    recurrent_init: RecurrentInit | str = RecurrentInit.UNIFORM,
) -> Cell:
    """Elman RNN cell, as PyTorch's `nn.RNNCell`.

        h' = act(x @ w_ih + b_ih + h @ w_hh + b_hh),   act = tanh, relu (or identity)

    The carry is h: `[..., h]`; the output is h'.

    Args:
      hidden_size: h.
      nonlinearity: "tanh" or "relu", or "identity" for a linear RNN (or a `Nonlinearity`).
      bias: whether to use `b_ih` and `b_hh`.
      recurrent_init: initialiser of `w_hh`; see `RecurrentInit`.

    Returns:
      A `Cell` with g = 1.

    >>> cell = rnn(3)
    >>> params = cell.init(jax.random.key(0), input_size=2)
    >>> carry, y = cell.apply(params, cell.initial_carry((5,)), jnp.ones((5, 2)))
    >>> y.shape
    (5, 3)
    """
    _check_size(hidden_size, "hidden_size")
    nonlinearity = as_enum(Nonlinearity, nonlinearity, "nonlinearity")
    act = {Nonlinearity.TANH: jnp.tanh, Nonlinearity.RELU: jax.nn.relu, Nonlinearity.IDENTITY: lambda x: x}[
        nonlinearity
    ]
    init = _make_init(hidden_size, 1, bias, as_enum(RecurrentInit, recurrent_init, "recurrent_init"))

    def update(h: Array, gx: Array, gh: Array) -> tuple[Array, Array]:
        h = act(gx + gh)
        return h, h

    return _make_cell(hidden_size, 1, init, _zeros_carry(hidden_size), update, f"rnn_{nonlinearity.value}")


def lstm(
    hidden_size: int,
    *,
    bias: bool = True,
    recurrent_init: RecurrentInit | str = RecurrentInit.UNIFORM,
    forget_bias: float | None = None,
) -> Cell:
    """Long short-term memory cell (Hochreiter & Schmidhuber 1997; with the forget
    gate of Gers et al. 2000), as PyTorch's `nn.LSTMCell`.

        i, f, g, o = split(x @ w_ih + b_ih + h @ w_hh + b_hh, 4)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')

    The carry is `LSTMState(h, c)`, both `[..., h]`; the output is h'.

    Args:
      hidden_size: h.
      bias: whether to use `b_ih` and `b_hh`.
      recurrent_init: initialiser of `w_hh`; see `RecurrentInit`.
      forget_bias: if given, the forget gate's total bias starts at this value
        (1.0 is the common choice, Jozefowicz et al. 2015) instead of PyTorch's
        uniform draw. Requires `bias=True`.

    Returns:
      A `Cell` with g = 4.
    """
    _check_size(hidden_size, "hidden_size")
    if forget_bias is not None and not bias:
        raise ValueError("forget_bias needs bias=True")
    init = _make_init(
        hidden_size,
        4,
        bias,
        as_enum(RecurrentInit, recurrent_init, "recurrent_init"),
        forget_gate=1,
        forget_bias=forget_bias,
    )

    def initial_carry(batch_shape: tuple[int, ...] = (), dtype: Any = jnp.float32) -> LSTMState:
        zeros = jnp.zeros((*batch_shape, hidden_size), dtype)
        return LSTMState(zeros, zeros)

    def update(carry: LSTMState, gx: Array, gh: Array) -> tuple[LSTMState, Array]:
        gates = gx + gh
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return LSTMState(h, c), h

    return _make_cell(hidden_size, 4, init, initial_carry, update, "lstm", hidden=lambda carry: carry.h)


def gru(
    hidden_size: int,
    *,
    bias: bool = True,
    recurrent_init: RecurrentInit | str = RecurrentInit.UNIFORM,
) -> Cell:
    """Gated recurrent unit (Cho et al. 2014), as PyTorch's `nn.GRUCell` and cuDNN.

        r = sigmoid(x_r + h_r),  z = sigmoid(x_z + h_z)
        n = tanh(x_n + r * h_n)
        h' = (1 - z) * n + z * h

    where `x_* = x @ w_ih + b_ih` and `h_* = h @ w_hh + b_hh`, split into the
    gates r, z, n. The reset gate multiplies `h @ w_hn + b_hn` (bias included),
    which is what keeps `b_hn` apart from `b_in`.

    The carry is h: `[..., h]`; the output is h'.

    Args:
      hidden_size: h.
      bias: whether to use `b_ih` and `b_hh`.
      recurrent_init: initialiser of `w_hh`; see `RecurrentInit`.

    Returns:
      A `Cell` with g = 3.
    """
    _check_size(hidden_size, "hidden_size")
    init = _make_init(hidden_size, 3, bias, as_enum(RecurrentInit, recurrent_init, "recurrent_init"))

    def update(h: Array, gx: Array, gh: Array) -> tuple[Array, Array]:
        x_r, x_z, x_n = jnp.split(gx, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        h = (1 - z) * n + z * h
        return h, h

    return _make_cell(hidden_size, 3, init, _zeros_carry(hidden_size), update, "gru")
