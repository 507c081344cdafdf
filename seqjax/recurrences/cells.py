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

Options (`layer_norm`, `input_dropout`, `recurrent_dropout`, `zoneout`; the LSTM's
`proj_size` and `peepholes`) change the step; an option that puts parameters into
the elementwise part declines `DenseRecurrence` and the fused loop (`declines`,
`kernel`), and the noisy ones add `TrainingNoise` (see `_DenseGatedCell`).

The families "rnn", "lstm" and "gru" of `seqjax.registry` are these cells; the
registered "lstm" starts its forget gate's bias at 1.0 (`forget_bias`), as task
models do, where `LSTMCell` itself keeps PyTorch's uniform draw.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import functools
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from seqjax import registry
from seqjax.recurrences.protocol import (
    Cell,
    DenseRecurrence,
    TrainingNoise,
    input_projection,
    matmul,
    recurrent_projection,
)
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


def _check_rate(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}")


def _normalise(x: Array, eps: float = 1e-5) -> Array:
    """Layer normalisation without gain or bias over the last axis; its statistics in
    float32 at least (a bfloat16 variance loses the small deviations LayerNorm divides by)."""
    x32 = x.astype(jnp.float32) if jnp.finfo(x.dtype).bits < 32 else x
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class _Noise(NamedTuple):
    """A training pass's noise for one layer and direction (see `draw_noise`)."""

    input: Array | None  # [b, d], inverted-dropout mask on x_t, shared by all steps
    recurrent: Array | None  # [b, h_out], on h_{t-1} where the recurrent matmul reads it


@dataclasses.dataclass(frozen=True)
class _DenseGatedCell(abc.ABC):
    """What the built-in cells share: PyTorch's parameters and initialisation, the
    projection, the options every one of them takes, and the step composed of
    `advance(params, carry, gx, gh) -> carry`, which each subclass defines with
    `num_gates` and `_loop` (and `hidden` and `initial_carry` if the carry is not h).

    Options (all off by default, which is PyTorch's cell):
      layer_norm: Ba et al. (2016): the input and recurrent pre-activations are
        normalised separately, each over its whole `[g*h]` vector, with a gain
        (`ln_ih_scale`, `ln_hh_scale`, ones at init) before its bias,
        `gx = LN(x @ w_ih) * ln_ih_scale + b_ih`, `gh = LN(h @ w_hh) * ln_hh_scale + b_hh`
        (Ba et al.'s LN shifts are the biases); epsilon 1e-5, statistics in float32.
      input_dropout, recurrent_dropout: variational dropout (Gal & Ghahramani 2016)
        of the input x_t and of h_{t-1} where the recurrent matmul reads it: one
        mask per sequence, the same at every step, scaled by 1/(1 - rate) in
        training; evaluation is the plain cell. One mask serves all gates.
      zoneout: Krueger et al. (2017): in training each unit of the carry keeps its
        previous value with this probability, at each step (a fresh mask); at
        evaluation the carry is the expectation `z * old + (1 - z) * new`. A tuple
        gives one rate per leaf of the carry (the LSTM's `(h, c)`). The output is
        the new (zoned) h.
    """

    hidden_size: int
    _: dataclasses.KW_ONLY
    bias: bool = True
    recurrent_init: RecurrentInit | str = RecurrentInit.UNIFORM
    layer_norm: bool = False
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float | tuple[float, ...] = 0.0

    num_gates: ClassVar[int]
    _carry_leaves: ClassVar[int] = 1
    _loop: ClassVar[str]  # which of seqjax.recurrences.cpu_kernel's loops computes the plain cell
    recurrent_params: ClassVar[tuple[str, ...]] = ("w_hh",)

    def __post_init__(self):
        check_positive_int(self.hidden_size, "hidden_size")
        for name in ("bias", "layer_norm"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool; got {getattr(self, name)!r}")
        object.__setattr__(
            self, "recurrent_init", as_enum(RecurrentInit, self.recurrent_init, "recurrent_init")
        )
        for name in ("input_dropout", "recurrent_dropout"):
            _check_rate(getattr(self, name), name)
        leaves = self._carry_leaves
        rates = self.zoneout if isinstance(self.zoneout, tuple) else (self.zoneout,) * leaves
        if len(rates) != leaves:
            raise ValueError(
                f"zoneout must be one rate or a tuple of {leaves} (one per leaf of the carry); "
                f"got {self.zoneout!r}"
            )
        for rate in rates:
            _check_rate(rate, "zoneout")
        object.__setattr__(self, "zoneout", rates[0] if len(set(rates)) == 1 else rates)

    # -- configuration: which capabilities hold ------------------------------------------

    def _parametric_update(self) -> bool:
        """Whether the elementwise part of a step reads parameters (no `DenseRecurrence`)."""
        return self.layer_norm

    @property
    def _zoneout_rates(self) -> tuple[float, ...]:
        return self.zoneout if isinstance(self.zoneout, tuple) else (self.zoneout,) * self._carry_leaves

    @property
    def declines(self) -> tuple[type, ...]:
        """The capabilities of `seqjax.recurrences.protocol` this configuration rules out."""
        out = []
        if self._parametric_update():
            out.append(DenseRecurrence)
        if not (self.input_dropout or self.recurrent_dropout or any(self._zoneout_rates)):
            out.append(TrainingNoise)
        return tuple(out)

    @property
    def kernel(self) -> str | None:
        """The fused CPU loop that computes this cell: the plain cell's, else None."""
        plain = not self._parametric_update() and not any(self._zoneout_rates)
        return self._loop if plain else None

    # -- parameters ------------------------------------------------------------------------

    def _gate_biases(self, b_ih: Array, b_hh: Array) -> tuple[Array, Array]:
        return b_ih, b_hh

    @property
    def _recurrent_size(self) -> int:
        """The width of `hidden(carry)`, which the recurrent matmul reads."""
        return self.hidden_size

    def _extra_params(self, key: Array, bound: float) -> Params:
        """The options' parameters, float32."""
        gh = self.num_gates * self.hidden_size
        if not self.layer_norm:
            return {}
        return {"ln_ih_scale": jnp.ones((gh,)), "ln_hh_scale": jnp.ones((gh,))}

    def init(self, key: Array, input_size: int, dtype: Any = jnp.float32) -> Params:
        """Draws parameters; values are drawn in float32 and cast, so every dtype
        sees the same (rounded) initial weights for a given key."""
        check_positive_int(input_size, "input_size")
        h, gh, r = self.hidden_size, self.num_gates * self.hidden_size, self._recurrent_size
        bound = 1.0 / math.sqrt(h)
        k_ih, k_hh, k_bi, k_bh = jax.random.split(key, 4)

        def uniform(k, shape):
            return jax.random.uniform(k, shape, jnp.float32, -bound, bound)

        params = {"w_ih": uniform(k_ih, (input_size, gh))}
        if self.recurrent_init is RecurrentInit.ORTHOGONAL:
            orth = jax.nn.initializers.orthogonal()
            blocks = jax.vmap(lambda k: orth(k, (r, h)))(jax.random.split(k_hh, self.num_gates))  # [g, r, h]
            params["w_hh"] = blocks.transpose(1, 0, 2).reshape(r, gh)
        else:
            params["w_hh"] = uniform(k_hh, (r, gh))
        if self.bias:
            params["b_ih"], params["b_hh"] = self._gate_biases(uniform(k_bi, (gh,)), uniform(k_bh, (gh,)))
        # The options' draws come from a key of their own: the plain cell's stay as they were.
        params |= self._extra_params(jax.random.fold_in(key, 1), bound)
        return jax.tree.map(lambda p: p.astype(dtype), params)

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype: Any = jnp.float32) -> Carry:
        """Zeros, `[*batch_shape, h]`."""
        return jnp.zeros((*batch_shape, self.hidden_size), dtype)

    def hidden(self, carry: Carry) -> Array:
        return carry

    @functools.cached_property
    def _param_names(self) -> frozenset[str]:
        """The keys `init` makes (worked out once per cell, not at every traced step)."""
        options = jax.eval_shape(lambda: self._extra_params(jax.random.key(0), 1.0))
        return frozenset({"w_ih", "w_hh"} | ({"b_ih", "b_hh"} if self.bias else set()) | set(options))

    def _check_keys(self, params: Params) -> None:
        # A misspelt or missing bias would otherwise be skipped without a word.
        keys = self._param_names
        if not isinstance(params, dict) or set(params) != keys:
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            # The options that shape the parameters; the rest would only lengthen the message.
            shaping = [f"bias={self.bias}"] + [
                f"{name}={getattr(self, name)!r}"
                for name in ("layer_norm", "peepholes", "proj_size")
                if getattr(self, name, False)
            ]
            name = f"{type(self).__name__}({', '.join(shaping)})"
            raise ValueError(f"params of {name} must have keys {sorted(keys)}; got {got}")

    # -- the step ------------------------------------------------------------------------------

    def project(self, params: Params, x: Array) -> Array:
        """`x @ w_ih + b_ih` (LayerNorm'd before the bias with `layer_norm`): `[..., d] -> [..., g*h]`."""
        self._check_keys(params)
        if not self.layer_norm:
            return input_projection(params, x)
        gx = _normalise(matmul(x, params["w_ih"])) * params["ln_ih_scale"]
        return gx + params["b_ih"] if self.bias else gx

    def _recurrent(self, params: Params, h: Array) -> Array:
        """`h @ w_hh + b_hh`, LayerNorm'd before the bias with `layer_norm`: `[..., r] -> [..., g*h]`."""
        if not self.layer_norm:
            return recurrent_projection(params, h)
        gh = _normalise(h @ params["w_hh"]) * params["ln_hh_scale"]
        return gh + params["b_hh"] if self.bias else gh

    @abc.abstractmethod
    def advance(self, params: Params, carry: Carry, gx: Array, gh: Array) -> Carry:
        """The new carry from the projected input and recurrent pre-activations."""

    def _expected_zoneout(self, old: Carry, new: Carry) -> Carry:
        """Zoneout at evaluation: `z * old + (1 - z) * new`, leaf by leaf."""
        leaves = [
            (z * o + (1 - z) * n).astype(o.dtype) if z else n
            for z, o, n in zip(self._zoneout_rates, jax.tree.leaves(old), jax.tree.leaves(new), strict=True)
        ]
        return jax.tree.unflatten(jax.tree.structure(new), leaves)

    def update(self, carry: Carry, gx: Array, gh: Array) -> tuple[Carry, Array]:
        """`DenseRecurrence`: the elementwise rest of a step (no parameters are read
        unless `declines` names `DenseRecurrence`)."""
        new = self._expected_zoneout(carry, self.advance({}, carry, gx, gh))
        return new, self.hidden(new)

    def step_projected(self, params: Params, carry: Carry, gx: Array) -> tuple[Carry, Array]:
        self._check_keys(params)
        new = self.advance(params, carry, gx, self._recurrent(params, self.hidden(carry)))
        new = self._expected_zoneout(carry, new)
        return new, self.hidden(new)

    def step(self, params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
        """One deterministic (evaluation) time step: x `[..., d]` -> `(carry, y [..., h])`."""
        return self.step_projected(params, carry, self.project(params, x))

    # -- training noise (`TrainingNoise`) ------------------------------------------------------

    def draw_noise(self, key: Array, xs: Array) -> tuple[_Noise, Any]:
        """Masks for one training pass over `xs: [t, b, d]`: `(_Noise(input [b, d],
        recurrent [b, r]) (None where off), zoneout's keep masks, leaves [t, b, ...]
        like the carry's, or None)`."""
        t, b, d = xs.shape
        k_in, k_rec, k_zone = jax.random.split(key, 3)

        def mask(k, rate, shape):
            if not rate:
                return None
            return jax.random.bernoulli(k, 1.0 - rate, shape).astype(xs.dtype) / (1.0 - rate)

        sequence = _Noise(
            mask(k_in, self.input_dropout, (b, d)),
            mask(k_rec, self.recurrent_dropout, (b, self._recurrent_size)),
        )
        if not any(self._zoneout_rates):
            return sequence, None
        carry = jax.eval_shape(lambda: self.initial_carry((b,)))
        leaves = jax.tree.leaves(carry)
        keys = jax.random.split(k_zone, len(leaves))
        keeps = [
            jax.random.bernoulli(k, z, (t, *leaf.shape)) if z else None
            for k, z, leaf in zip(keys, self._zoneout_rates, leaves, strict=True)
        ]
        return sequence, keeps

    def noisy_step(
        self, params: Params, carry: Carry, x: Array, noise: tuple[_Noise, Any]
    ) -> tuple[Carry, Array]:
        """A training step on `x: [b, d]`; noise is `(draw_noise's sequence masks, this
        step's zoneout masks)`."""
        masks, keeps = noise
        if masks.input is not None:
            x = x * masks.input
        h = self.hidden(carry)
        if masks.recurrent is not None:
            h = h * masks.recurrent
        new = self.advance(params, carry, self.project(params, x), self._recurrent(params, h))
        if keeps is not None:
            old_leaves, new_leaves = jax.tree.leaves(carry), jax.tree.leaves(new)
            mixed = [
                n if k is None else jnp.where(k, o, n)
                for k, o, n in zip(keeps, old_leaves, new_leaves, strict=True)
            ]
            new = jax.tree.unflatten(jax.tree.structure(new), mixed)
        return new, self.hidden(new)


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
      layer_norm, input_dropout, recurrent_dropout, zoneout: see `_DenseGatedCell`.

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
    def _loop(self) -> str:
        return f"rnn_{self.nonlinearity.value}"

    def advance(self, params: Params, carry: Array, gx: Array, gh: Array) -> Array:
        return _ACTIVATIONS[self.nonlinearity](gx + gh)


@dataclasses.dataclass(frozen=True)
class LSTMCell(_DenseGatedCell):
    """Long short-term memory cell (Hochreiter & Schmidhuber 1997; with the forget
    gate of Gers et al. 2000), as PyTorch's `nn.LSTMCell` and `nn.LSTM`:

        i, f, g, o = split(x @ w_ih + b_ih + h @ w_hh + b_hh, 4)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')          (then h' @ w_hr with proj_size)

    The carry is `LSTMState(h, c)`, h `[..., p]` (p = proj_size, else h) and c
    `[..., h]`; the output is h'.

    Args:
      hidden_size: h.
      bias: whether to use `b_ih` and `b_hh`.
      recurrent_init: initialiser of `w_hh`; see `RecurrentInit`.
      forget_bias: if given, the forget gate's total bias starts at this value
        (1.0 is the common choice, Jozefowicz et al. 2015) instead of PyTorch's
        uniform draw; the whole of it sits in `b_ih`. Requires `bias=True`.
      proj_size: p in [1, h): Sak et al. (2014), as PyTorch's `proj_size`; h' is
        projected by `w_hr: [h, p]` (PyTorch's `weight_hr`), which the recurrent
        matmul then reads (`w_hh: [p, 4h]`). 0 (the default) is no projection.
      peepholes: Gers & Schmidhuber (2000): diagonal weights from the cell state to
        the gates, `w_ci, w_cf, w_co: [h]`; i and f read c, o reads c'.
      layer_norm: as `_DenseGatedCell`, and the cell state is normalised where it
        reaches the output, `h' = sigmoid(o) * tanh(LN(c') * ln_c_scale + ln_c_bias)`
        (Ba et al. 2016, eq. 20-22); c' itself is carried unnormalised.
      input_dropout, recurrent_dropout, zoneout: see `_DenseGatedCell`; zoneout may be
        a pair `(z_h, z_c)` (Krueger et al. found a larger rate on c best).
    """

    forget_bias: float | None = None
    proj_size: int = 0
    peepholes: bool = False
    num_gates: ClassVar[int] = 4
    _carry_leaves: ClassVar[int] = 2
    _loop: ClassVar[str] = "lstm"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.proj_size, bool) or not isinstance(self.proj_size, int):
            raise TypeError(f"proj_size must be an int; got {self.proj_size!r}")
        if not 0 <= self.proj_size < self.hidden_size:
            raise ValueError(
                f"proj_size must be in [0, hidden_size={self.hidden_size}) (0: no projection); "
                f"got {self.proj_size}"
            )
        if not isinstance(self.peepholes, bool):
            raise TypeError(f"peepholes must be a bool; got {self.peepholes!r}")
        if self.forget_bias is not None and not self.bias:
            raise ValueError("forget_bias needs bias=True")

    def _parametric_update(self) -> bool:
        return self.layer_norm or self.peepholes or self.proj_size > 0

    @property
    def output_size(self) -> int:
        """The width of h and of the outputs: proj_size, or hidden_size without one."""
        return self.proj_size or self.hidden_size

    @property
    def _recurrent_size(self) -> int:
        return self.output_size

    def _gate_biases(self, b_ih: Array, b_hh: Array) -> tuple[Array, Array]:
        if self.forget_bias is None:
            return b_ih, b_hh
        f = slice(self.hidden_size, 2 * self.hidden_size)  # gate order i, f, g, o
        return b_ih.at[f].set(self.forget_bias), b_hh.at[f].set(0.0)

    def _extra_params(self, key: Array, bound: float) -> Params:
        h = self.hidden_size
        params = super()._extra_params(key, bound)
        k_peep, k_proj = jax.random.split(key)
        if self.layer_norm:
            params |= {"ln_c_scale": jnp.ones((h,)), "ln_c_bias": jnp.zeros((h,))}
        if self.peepholes:
            w = jax.random.uniform(k_peep, (3, h), jnp.float32, -bound, bound)
            params |= {"w_ci": w[0], "w_cf": w[1], "w_co": w[2]}
        if self.proj_size:
            params["w_hr"] = jax.random.uniform(k_proj, (h, self.proj_size), jnp.float32, -bound, bound)
        return params

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype: Any = jnp.float32) -> LSTMState:
        """Zeros, `LSTMState(h [*batch_shape, p], c [*batch_shape, h])` (p = h without proj_size)."""
        return LSTMState(
            jnp.zeros((*batch_shape, self.output_size), dtype),
            jnp.zeros((*batch_shape, self.hidden_size), dtype),
        )

    def hidden(self, carry: LSTMState) -> Array:
        return carry.h

    def advance(self, params: Params, carry: LSTMState, gx: Array, gh: Array) -> LSTMState:
        i, f, g, o = jnp.split(gx + gh, 4, axis=-1)
        if self.peepholes:
            i, f = i + params["w_ci"] * carry.c, f + params["w_cf"] * carry.c
        c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        if self.peepholes:
            o = o + params["w_co"] * c
        shown = _normalise(c) * params["ln_c_scale"] + params["ln_c_bias"] if self.layer_norm else c
        h = jax.nn.sigmoid(o) * jnp.tanh(shown)
        if self.proj_size:
            h = h @ params["w_hr"]
        return LSTMState(h, c)


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
      layer_norm, input_dropout, recurrent_dropout, zoneout: see `_DenseGatedCell`
        (with `recurrent_dropout`, the mask reaches h only through `h @ w_hh`: the
        interpolation `z * h` keeps the whole h, as Gal & Ghahramani's GRU).
    """

    num_gates: ClassVar[int] = 3
    _loop: ClassVar[str] = "gru"

    def advance(self, params: Params, carry: Array, gx: Array, gh: Array) -> Array:
        x_r, x_z, x_n = jnp.split(gx, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        return (1 - z) * n + z * carry


# The lower-case spellings of seqjax 0.1: `cells.LSTMCell(32, forget_bias=1.0)`.
rnn, lstm, gru = RNNCell, LSTMCell, GRUCell

registry.register_cell("rnn", RNNCell)
registry.register_cell("lstm", functools.partial(LSTMCell, forget_bias=1.0))
registry.register_cell("gru", GRUCell)
