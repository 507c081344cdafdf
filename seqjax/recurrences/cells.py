"""The built-in cells: vanilla RNN (tanh or relu), LSTM and GRU, as PyTorch defines them.

Each is a frozen dataclass of static configuration whose methods are pure
functions over a plain dict of parameters (so cells are hashable, picklable and
compared by value), following `seqjax.recurrences.protocol.Cell`:

    cell = LSTMCell(hidden_size=32)
    params = cell.init(key, input_size=8)              # {"w_ih": [8, 128], ...}
    carry, y = cell.step(params, carry, x_t)           # x_t: [..., d] -> y: [..., h]

They also have every fast-path capability (`DenseRecurrence`, and a fused CPU
loop): the step is the input projection, the recurrent matmul, then
parameter-free elementwise work,

    gx = cell.project(params, xs)                       # [..., d] -> [..., g*h], any leading axes
    gh = recurrent_projection(params, cell.hidden(carry))  # h @ w_hh + b_hh
    carry, y = cell.update(carry, gx_t, gh)

Parameters follow PyTorch's equations and gate order, stored `[in, out]` so that
a projection is `x @ w`:

    w_ih: [d, g*h]   w_hh: [h, g*h]   b_ih: [g*h]   b_hh: [g*h]

with g = 1 (RNN), 4 (LSTM gates i, f, g, o) or 3 (GRU gates r, z, n). Both biases
are kept, as in PyTorch, so that weights round-trip exactly; with `bias=False`
the two bias entries are absent.

The families "rnn", "lstm" and "gru" of `seqjax.registry` are these cells; the
registered "lstm" starts its forget gate's bias at 1.0 (`forget_bias`), as task
models do, where `LSTMCell` itself keeps PyTorch's uniform draw.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from seqjax import registry
from seqjax.recurrences.protocol import Cell, input_projection, recurrent_projection
from seqjax.validation import as_enum, check_positive_int

Array = jax.Array
Params = dict[str, Array]
Carry = Any  # Array [..., h] for RNN and GRU; LSTMState for the LSTM.

__all__ = [
    "Cell",
    "GRUCell",
    "LSTMCell",
    "LSTMState",
    "Nonlinearity",
    "RNNCell",
    "RecurrentInit",
    "gru",
    "lstm",
    "rnn",
]


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


class LSTMState(NamedTuple):
    """Carry of the LSTM; a tuple `(h, c)` in PyTorch's order."""

    h: Array  # [..., h]
    c: Array  # [..., h]


@dataclasses.dataclass(frozen=True)
class _DenseGatedCell:
    """What the built-in cells share: PyTorch's parameters and initialisation, the
    projection, and the step composed of `update(carry, gx, gh) -> (carry, y)`,
    which each subclass defines with `num_gates` and `kernel` (and `hidden` and
    `initial_carry` if the carry is not h)."""

    hidden_size: int
    _: dataclasses.KW_ONLY
    bias: bool = True
    recurrent_init: RecurrentInit | str = RecurrentInit.UNIFORM

    num_gates: ClassVar[int]
    kernel: ClassVar[str | None] = None  # which of seqjax.recurrences.cpu_kernel's loops computes it
    recurrent_params: ClassVar[tuple[str, ...]] = ("w_hh",)

    def __post_init__(self):
        check_positive_int(self.hidden_size, "hidden_size")
        if not isinstance(self.bias, bool):
            raise TypeError(f"bias must be a bool; got {self.bias!r}")
        object.__setattr__(
            self, "recurrent_init", as_enum(RecurrentInit, self.recurrent_init, "recurrent_init")
        )

    def _gate_biases(self, b_ih: Array, b_hh: Array) -> tuple[Array, Array]:
        return b_ih, b_hh

    def init(self, key: Array, input_size: int, dtype: Any = jnp.float32) -> Params:
        """Draws parameters; values are drawn in float32 and cast, so every dtype
        sees the same (rounded) initial weights for a given key."""
        check_positive_int(input_size, "input_size")
        h, gh = self.hidden_size, self.num_gates * self.hidden_size
        bound = 1.0 / math.sqrt(h)
        k_ih, k_hh, k_bi, k_bh = jax.random.split(key, 4)

        def uniform(k, shape):
            return jax.random.uniform(k, shape, jnp.float32, -bound, bound)

        params = {"w_ih": uniform(k_ih, (input_size, gh))}
        if self.recurrent_init is RecurrentInit.ORTHOGONAL:
            orth = jax.nn.initializers.orthogonal()
            blocks = jax.vmap(lambda k: orth(k, (h, h)))(jax.random.split(k_hh, self.num_gates))  # [g, h, h]
            params["w_hh"] = blocks.transpose(1, 0, 2).reshape(h, gh)
        else:
            params["w_hh"] = uniform(k_hh, (h, gh))
        if self.bias:
            params["b_ih"], params["b_hh"] = self._gate_biases(uniform(k_bi, (gh,)), uniform(k_bh, (gh,)))
        return jax.tree.map(lambda p: p.astype(dtype), params)

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype: Any = jnp.float32) -> Carry:
        """Zeros, `[*batch_shape, h]`."""
        return jnp.zeros((*batch_shape, self.hidden_size), dtype)

    def hidden(self, carry: Carry) -> Array:
        return carry

    def _check_keys(self, params: Params) -> None:
        # A misspelt or missing bias would otherwise be skipped without a word.
        keys = {"w_ih", "w_hh", "b_ih", "b_hh"} if self.bias else {"w_ih", "w_hh"}
        if not isinstance(params, dict) or set(params) != keys:
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(
                f"params of {type(self).__name__}(bias={self.bias}) must have keys {sorted(keys)}; got {got}"
            )

    def project(self, params: Params, x: Array) -> Array:
        """`x @ w_ih + b_ih`: `[..., d] -> [..., g*h]`."""
        self._check_keys(params)
        return input_projection(params, x)

    def step_projected(self, params: Params, carry: Carry, gx: Array) -> tuple[Carry, Array]:
        self._check_keys(params)
        return self.update(carry, gx, recurrent_projection(params, self.hidden(carry)))

    def step(self, params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
        """One time step: x `[..., d]` -> `(carry, y [..., h])`."""
        return self.step_projected(params, carry, self.project(params, x))


_ACTIVATIONS = {
    Nonlinearity.TANH: jnp.tanh,
    Nonlinearity.RELU: jax.nn.relu,
    Nonlinearity.IDENTITY: lambda x: x,
}


@dataclasses.dataclass(frozen=True)
class RNNCell(_DenseGatedCell):
    """Elman RNN cell, as PyTorch's `nn.RNNCell`.

        h' = act(x @ w_ih + b_ih + h @ w_hh + b_hh),   act = tanh, relu (or identity)

    The carry is h: `[..., h]`; the output is h'.

    Args:
      hidden_size: h.
      nonlinearity: "tanh" or "relu", or "identity" for a linear RNN (or a `Nonlinearity`).
      bias: whether to use `b_ih` and `b_hh`.
      recurrent_init: initialiser of `w_hh`; see `RecurrentInit`.

    >>> cell = RNNCell(3)
    >>> params = cell.init(jax.random.key(0), input_size=2)
    >>> carry, y = cell.step(params, cell.initial_carry((5,)), jnp.ones((5, 2)))
    >>> y.shape
    (5, 3)
    """

    nonlinearity: Nonlinearity | str = Nonlinearity.TANH
    num_gates: ClassVar[int] = 1

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "nonlinearity", as_enum(Nonlinearity, self.nonlinearity, "nonlinearity"))

    @property
    def kernel(self) -> str:
        return f"rnn_{self.nonlinearity.value}"

    def update(self, carry: Array, gx: Array, gh: Array) -> tuple[Array, Array]:
        h = _ACTIVATIONS[self.nonlinearity](gx + gh)
        return h, h


@dataclasses.dataclass(frozen=True)
class LSTMCell(_DenseGatedCell):
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
        uniform draw; the whole of it sits in `b_ih`. Requires `bias=True`.
    """

    forget_bias: float | None = None
    num_gates: ClassVar[int] = 4
    kernel: ClassVar[str] = "lstm"

    def __post_init__(self):
        super().__post_init__()
        if self.forget_bias is not None and not self.bias:
            raise ValueError("forget_bias needs bias=True")

    def _gate_biases(self, b_ih: Array, b_hh: Array) -> tuple[Array, Array]:
        if self.forget_bias is None:
            return b_ih, b_hh
        f = slice(self.hidden_size, 2 * self.hidden_size)  # gate order i, f, g, o
        return b_ih.at[f].set(self.forget_bias), b_hh.at[f].set(0.0)

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype: Any = jnp.float32) -> LSTMState:
        """Zeros, `LSTMState(h, c)` with both `[*batch_shape, h]`."""
        zeros = jnp.zeros((*batch_shape, self.hidden_size), dtype)
        return LSTMState(zeros, zeros)

    def hidden(self, carry: LSTMState) -> Array:
        return carry.h

    def update(self, carry: LSTMState, gx: Array, gh: Array) -> tuple[LSTMState, Array]:
        i, f, g, o = jnp.split(gx + gh, 4, axis=-1)
        c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return LSTMState(h, c), h


@dataclasses.dataclass(frozen=True)
class GRUCell(_DenseGatedCell):
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
    """

    num_gates: ClassVar[int] = 3
    kernel: ClassVar[str] = "gru"

    def update(self, carry: Array, gx: Array, gh: Array) -> tuple[Array, Array]:
        x_r, x_z, x_n = jnp.split(gx, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        h = (1 - z) * n + z * carry
        return h, h


# The lower-case spellings of seqjax 0.1: `cells.LSTMCell(32, forget_bias=1.0)`.
rnn, lstm, gru = RNNCell, LSTMCell, GRUCell

registry.register_cell("rnn", RNNCell)
registry.register_cell("lstm", functools.partial(LSTMCell, forget_bias=1.0))
registry.register_cell("gru", GRUCell)
