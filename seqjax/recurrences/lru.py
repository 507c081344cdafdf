"""LRU (Orvieto et al. 2023) and RG-LRU (De et al. 2024, Griffin): diagonal linear
recurrences with a learned, stable decay. Registered as "lru" and "rglru".

LRU, "Resurrecting Recurrent Neural Networks for Long Sequences": a complex diagonal
state of size N,

    lambda = exp(-exp(nu) + i exp(theta))                  |lambda| < 1 by construction
    h_t = lambda * h_{t-1} + gamma * (B x_t)               gamma = sqrt(1 - |lambda|^2)
    y_t = Re(C h_t) + D x_t

with lambda initialised uniformly on the ring r_min <= |lambda| <= r_max, phase in
[0, max_phase] (the paper's initialisation), and gamma its normalisation, so that
the state's scale does not depend on how close to 1 |lambda| is. B: [d, N] and
C: [N, h] complex, D: [d, h] real (the paper's D is diagonal, with d = h).

RG-LRU, the recurrence of Griffin's recurrent block (google-deepmind/recurrentgemma):

    r_t = sigmoid(W_a x_t + b_a),  i_t = sigmoid(W_i x_t + b_i),  u_t = W_x x_t + b_x
    log a_t = -c r_t softplus(Lambda)                      so a_t = a^(c r_t), a = exp(-softplus(Lambda))
    h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t u_t)

with c = 8 and a = exp(-softplus(Lambda)) initialised so that a is uniform in
[a_min, a_max] (Griffin's 0.9 ... 0.999), as recurrentgemma's `rnn_param_init`. The
output is h. Griffin's block wraps this in a Conv1D and a GeLU gate; here it is the
recurrence alone, its input width d projected to h by W_x.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from seqjax import registry, validation
from seqjax.recurrences import linear
from seqjax.recurrences.protocol import input_projection, matmul

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LRUCell(linear.DiagonalLinearCell):
    """The Linear Recurrent Unit; see the module docstring.

    Args:
      hidden_size: h, the output width.
      state_size: N, the complex state's width (h if None).
      r_min, r_max: the ring |lambda| is drawn from at initialisation.
      max_phase: lambda's phase is drawn from [0, max_phase].
      method: how the recurrence runs over a sequence (`seqjax.recurrences.linear.Method`).

    Parameters: `nu_log, theta_log, gamma_log: [N]`, `B_re, B_im: [d, N]`,
    `C_re, C_im: [N, h]`, `D: [d, h]`. The carry is complex `[..., N]`.

    >>> cell = LRUCell(8, state_size=16)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> h, y = cell.step(params, cell.initial_carry((3,)), jnp.ones((3, 4)))
    >>> h.shape, h.dtype, y.shape, y.dtype
    ((3, 16), dtype('complex64'), (3, 8), dtype('float32'))
    """

    hidden_size: int
    _: dataclasses.KW_ONLY
    state_size: int | None = None
    r_min: float = 0.9
    r_max: float = 0.999
    max_phase: float = 2 * math.pi
    method: str = "auto"

    def __post_init__(self):
        validation.check_positive_int(self.hidden_size, "hidden_size")
        linear.check_method(self.method)
        if self.state_size is not None:
            validation.check_positive_int(self.state_size, "state_size")
        validation.check_real(self.r_min, "r_min", 0.0, 1.0)
        validation.check_real(self.r_max, "r_max", 0.0, 1.0, low_open=True)
        if self.r_min > self.r_max:
            raise ValueError(f"r_min must be <= r_max; got r_min={self.r_min}, r_max={self.r_max}")
        validation.check_real(self.max_phase, "max_phase", 0.0, math.inf, low_open=True)

    @property
    def n(self) -> int:
        """N, the state's width."""
        return self.state_size or self.hidden_size

    def init(self, key: Array, input_size: int, dtype: Any = jnp.float32) -> dict[str, Array]:
        validation.check_positive_int(input_size, "input_size")
        n, h, d = self.n, self.hidden_size, input_size
        k = jax.random.split(key, 7)
        u1, u2 = jax.random.uniform(k[0], (n,), dtype), jax.random.uniform(k[1], (n,), dtype)
        # |lambda|^2 uniform on [r_min^2, r_max^2]: the ring's area measure.
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (self.r_max**2 - self.r_min**2) + self.r_min**2))
        theta_log = jnp.log(self.max_phase * u2)
        gamma_log = 0.5 * jnp.log1p(-jnp.exp(-2 * jnp.exp(nu_log)))  # log sqrt(1 - |lambda|^2)
        return {
            "nu_log": nu_log,
            "theta_log": theta_log,
            "gamma_log": gamma_log,
            "B_re": jax.random.normal(k[2], (d, n), dtype) / math.sqrt(2 * d),
            "B_im": jax.random.normal(k[3], (d, n), dtype) / math.sqrt(2 * d),
            "C_re": jax.random.normal(k[4], (n, h), dtype) / math.sqrt(n),
            "C_im": jax.random.normal(k[5], (n, h), dtype) / math.sqrt(n),
            "D": jax.random.normal(k[6], (d, h), dtype) / math.sqrt(d),
        }

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype: Any = jnp.float32) -> Array:
        """Complex zeros `[*batch_shape, N]` (complex64 for float32 parameters)."""
        return jnp.zeros((*batch_shape, self.n), linear.complex_dtype(dtype))

    def coefficients(self, params: dict[str, Array], x: Array) -> tuple[Array, Array]:
        """`x: [..., d]` -> `(lambda: [N], gamma B x: [..., N])`, complex."""
        lam = jnp.exp(jax.lax.complex(-jnp.exp(params["nu_log"]), jnp.exp(params["theta_log"])))
        bx = jax.lax.complex(matmul(x, params["B_re"]), matmul(x, params["B_im"]))
        return lam, jnp.exp(params["gamma_log"]).astype(bx.dtype) * bx

    def readout(self, params: dict[str, Array], h: Array, x: Array) -> Array:
        """`Re(C h) + D x: [..., h]`."""
        return matmul(h.real, params["C_re"]) - matmul(h.imag, params["C_im"]) + matmul(x, params["D"])


@dataclasses.dataclass(frozen=True)
class RGLRUCell(linear.DiagonalLinearCell):
    """The Real-Gated Linear Recurrent Unit of Griffin; see the module docstring.

    Args:
      hidden_size: h, the state and output width.
      c: the gate's exponent scale (8 in Griffin).
      a_min, a_max: the range a = exp(-softplus(Lambda)) is drawn from at initialisation.
      bias: biases on the three projections.
      method: how the recurrence runs over a sequence (`seqjax.recurrences.linear.Method`).

    Parameters: `w_ih: [d, 3h]` (u, r, i), `b_ih: [3h]`, `a_param: [h]` (Lambda).

    >>> cell = RGLRUCell(8)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> h, y = cell.step(params, cell.initial_carry((3,)), jnp.ones((3, 4)))
    >>> y.shape, params["w_ih"].shape
    ((3, 8), (4, 24))
    """

    hidden_size: int
    _: dataclasses.KW_ONLY
    c: float = 8.0
    a_min: float = 0.9
    a_max: float = 0.999
    bias: bool = True
    method: str = "auto"

    def __post_init__(self):
        validation.check_positive_int(self.hidden_size, "hidden_size")
        linear.check_method(self.method)
        validation.check_real(self.c, "c", 0.0, math.inf, low_open=True)
        validation.check_real(self.a_min, "a_min", 0.0, 1.0, low_open=True)
        validation.check_real(self.a_max, "a_max", 0.0, 1.0, low_open=True)
        if self.a_min > self.a_max:
            raise ValueError(f"a_min must be <= a_max; got a_min={self.a_min}, a_max={self.a_max}")
        validation.check_bool(self.bias, "bias")

    def init(self, key: Array, input_size: int, dtype: Any = jnp.float32) -> dict[str, Array]:
        validation.check_positive_int(input_size, "input_size")
        h = self.hidden_size
        k_w, k_b, k_a = jax.random.split(key, 3)
        bound = input_size**-0.5
        # a^2 uniform on [a_min^2, a_max^2]; softplus(Lambda) = -log a.
        a = jnp.sqrt(jax.random.uniform(k_a, (h,), dtype, self.a_min**2, self.a_max**2))
        params = {
            "w_ih": jax.random.uniform(k_w, (input_size, 3 * h), dtype, -bound, bound),
            "a_param": jnp.log(jnp.expm1(-jnp.log(a))),  # softplus^-1(-log a)
        }
        if self.bias:
            params["b_ih"] = jax.random.uniform(k_b, (3 * h,), dtype, -bound, bound)
        return params

    def coefficients(self, params: dict[str, Array], x: Array) -> tuple[Array, Array]:
        """`x: [..., d]` -> `(a_t, sqrt(1 - a_t^2) i_t u_t)`, each `[..., h]`."""
        u, k_r, k_i = jnp.split(input_projection(params, x), 3, axis=-1)
        log_a = -self.c * jax.nn.sigmoid(k_r) * jax.nn.softplus(params["a_param"])
        # sqrt(1 - a^2) = sqrt(-expm1(2 log a)): exact as a -> 1.
        scale = jnp.sqrt(-jnp.expm1(2 * log_a))
        return jnp.exp(log_a), scale * jax.nn.sigmoid(k_i) * u

    def readout(self, params: dict[str, Array], h: Array, x: Array) -> Array:
        return h


registry.register_cell("lru", LRUCell)
registry.register_cell("rglru", RGLRUCell)
