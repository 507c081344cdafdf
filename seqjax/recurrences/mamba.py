"""A selective state-space layer: the mixer of Mamba (Gu & Dao 2023), registered as "mamba".

The S6 recurrence has input-dependent step size and projections, so (unlike S4's
time-invariant kernel) it cannot be computed as a convolution, but it is still a
diagonal linear recurrence over an `[E, N]` state per example, computed by
`seqjax.recurrences.linear.linear_recurrence`:

    x_t, z_t = split(W_in u_t)                            E = expand * h channels each
    x_t = silu(causal depthwise conv_K(x)_t + conv_b)     kernel width K
    Delta_t = softplus(W_dt (W_x x_t)[:R] + b_dt)         [E], R = dt_rank
    B_t, C_t = (W_x x_t)[R:R+N], (W_x x_t)[R+N:]           [N] each
    A = -exp(A_log)                                       [E, N], S4D-real init: A_log[e, n] = log(n + 1)
    h_t = exp(Delta_t A) * h_{t-1} + (Delta_t x_t) B_t    [E, N]  (zero-order hold on A, Euler on B)
    y_t = W_out ((h_t C_t + D * x_t) * silu(z_t))         [h]

as the paper's reference implementation (mamba_simple.py): no bias on W_in, W_x
and W_out, `b_dt` initialised so that Delta starts log-uniform in [dt_min, dt_max].
The carry is `MambaState(conv, ssm)`: the last K-1 conv inputs `[..., K-1, E]` and
the SSM state `[..., E, N]`. A Mamba network adds a residual and a norm around each
layer; `seqjax.Recurrent` stacks the mixers as they are.

Memory: on CPU the sequence path runs the S6 recurrence in one fused loop
(`linear.selective_scan`) that keeps each block of channels' states in cache, as
Mamba's CUDA kernel keeps them in SRAM; the other methods materialise `[t, b, E, N]`
coefficients and states, 2 * expand * N times the size of the outputs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from seqjax import registry, validation
from seqjax.recurrences import linear
from seqjax.recurrences.protocol import matmul

Array = jax.Array


def _state_matrix(params: dict[str, Array]) -> Array:
    """A = -exp(A_log): `[E, N]`, the diagonal of the state matrix (negative: a decay)."""
    return -jnp.exp(params["A_log"])


class MambaState(NamedTuple):
    conv: Array  # [..., K-1, E]: the last K-1 inputs of the causal convolution
    ssm: Array  # [..., E, N]


@dataclasses.dataclass(frozen=True)
class MambaCell:
    """Mamba's selective SSM mixer; see the module docstring.

    Args:
      hidden_size: h, the output width.
      state_size: N, the SSM state per channel (16 in the paper).
      expand: E = expand * h channels.
      conv_width: K, the causal convolution's width.
      dt_rank: R, the rank of Delta's projection (ceil(h / 16) if None).
      dt_min, dt_max: the range Delta is initialised in.
      method: how the S6 recurrence runs over a sequence (`seqjax.recurrences.linear.Method`).

    >>> cell = MambaCell(8, state_size=4)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> state, y = cell.step(params, cell.initial_carry((3,)), jnp.ones((3, 4)))
    >>> y.shape, state.conv.shape, state.ssm.shape
    ((3, 8), (3, 3, 16), (3, 16, 4))
    """

    hidden_size: int
    _: dataclasses.KW_ONLY
    state_size: int = 16
    expand: int = 2
    conv_width: int = 4
    dt_rank: int | None = None
    dt_min: float = 0.001
    dt_max: float = 0.1
    method: str = "auto"

    def __post_init__(self):
        for name in ("hidden_size", "state_size", "expand", "conv_width"):
            validation.check_positive_int(getattr(self, name), name)
        if self.dt_rank is not None:
            validation.check_positive_int(self.dt_rank, "dt_rank")
        validation.check_real(self.dt_min, "dt_min", 0.0, math.inf, low_open=True)
        validation.check_real(self.dt_max, "dt_max", 0.0, math.inf, low_open=True)
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min must be <= dt_max; got dt_min={self.dt_min}, dt_max={self.dt_max}")
        linear.check_method(self.method)

    @property
    def channels(self) -> int:
        """E = expand * h."""
        return self.expand * self.hidden_size

    @property
    def rank(self) -> int:
        """R, the rank of Delta's projection."""
        return self.dt_rank or math.ceil(self.hidden_size / 16)

    def init(self, key: Array, input_size: int, dtype: Any = jnp.float32) -> dict[str, Array]:
        """`w_in: [d, 2E]`, `conv_w: [K, E]`, `conv_b: [E]`, `w_x: [E, R+2N]`, `w_dt: [R, E]`,
        `b_dt: [E]`, `A_log: [E, N]`, `D: [E]`, `w_out: [E, h]`."""
        validation.check_positive_int(input_size, "input_size")
        e, n, r, k_w = self.channels, self.state_size, self.rank, self.conv_width
        keys = jax.random.split(key, 6)

        def uniform(key, shape, fan_in):
            bound = fan_in**-0.5
            return jax.random.uniform(key, shape, dtype, -bound, bound)

        # Delta = softplus(b_dt) log-uniform in [dt_min, dt_max] at initialisation.
        dt = jnp.exp(
            jax.random.uniform(keys[4], (e,), dtype) * (math.log(self.dt_max) - math.log(self.dt_min))
            + math.log(self.dt_min)
        )
        return {
            "w_in": uniform(keys[0], (input_size, 2 * e), input_size),
            "conv_w": uniform(keys[1], (k_w, e), k_w),
            "conv_b": jnp.zeros((e,), dtype),
            "w_x": uniform(keys[2], (e, r + 2 * n), e),
            "w_dt": jax.random.uniform(keys[3], (r, e), dtype, -(r**-0.5), r**-0.5),
            "b_dt": dt + jnp.log(-jnp.expm1(-dt)),  # softplus^-1(dt)
            "A_log": jnp.log(jnp.broadcast_to(jnp.arange(1, n + 1, dtype=dtype), (e, n))),
            "D": jnp.ones((e,), dtype),
            "w_out": uniform(keys[5], (e, self.hidden_size), e),
        }

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype: Any = jnp.float32) -> MambaState:
        """Zeros: conv `[*batch_shape, K-1, E]`, ssm `[*batch_shape, E, N]`."""
        e = self.channels
        return MambaState(
            jnp.zeros((*batch_shape, self.conv_width - 1, e), dtype),
            jnp.zeros((*batch_shape, e, self.state_size), dtype),
        )

    def _projections(self, params: dict[str, Array], x: Array) -> tuple[Array, Array, Array]:
        """Conv output `x: [..., E]` -> `(Delta: [..., E], B: [..., N], C: [..., N])`."""
        r, n = self.rank, self.state_size
        dbc = matmul(x, params["w_x"])
        delta = jax.nn.softplus(matmul(dbc[..., :r], params["w_dt"]) + params["b_dt"])
        return delta, dbc[..., r : r + n], dbc[..., r + n :]

    def _coefficients(
        self, params: dict[str, Array], delta: Array, x: Array, b: Array
    ) -> tuple[Array, Array]:
        """The recurrence's `(exp(Delta A), Delta x B)`: `[..., E, N]` each."""
        a = jnp.exp(delta[..., None] * _state_matrix(params))
        return a, (delta * x)[..., None] * b[..., None, :]

    def _output(self, params: dict[str, Array], hc: Array, x: Array, z: Array) -> Array:
        """`(h C + D x) * silu(z)` from `hc = h C: [..., E]`, projected: `[..., h]`."""
        return matmul((hc + params["D"] * x) * jax.nn.silu(z), params["w_out"])

    def step(self, params: dict[str, Array], carry: MambaState, u: Array) -> tuple[MambaState, Array]:
        """One step: `u: [..., d]` -> `(carry, y: [..., h])`."""
        x, z = jnp.split(matmul(u, params["w_in"]), 2, axis=-1)
        window = jnp.concatenate([carry.conv, x[..., None, :]], axis=-2)  # [..., K, E]
        x = jax.nn.silu(jnp.sum(window * params["conv_w"], axis=-2) + params["conv_b"])
        delta, b, c = self._projections(params, x)
        a, b = self._coefficients(params, delta, x, b)
        h = (a * carry.ssm + b).astype(carry.ssm.dtype)
        hc = jnp.einsum("...en,...n->...e", h, c)
        return MambaState(window[..., 1:, :], h), self._output(params, hc, x, z)

    def run_sequence(
        self,
        params: dict[str, Array],
        carry: MambaState,
        us: Array,
        *,
        lengths: Array | None = None,
        reverse: bool = False,
        method: linear.Method | str | None = None,
    ) -> tuple[MambaState, Array]:
        """`us: [t, b, d]` -> `(final carry, ys: [t, b, h])`, ys zero past each length.

        The convolution is K shifted products over the whole sequence; the S6
        recurrence one `linear.selective_scan` with the "fused" method (the CPU
        default: no `[t, b, E, N]` array is formed), else one `linear_recurrence`.
        Reversal reverses each sequence within its length, runs forward and reverses back.
        """
        if reverse:
            final, ys = self.run_sequence(
                params, carry, linear.reverse_within(us, lengths), lengths=lengths, method=method
            )
            return final, linear.reverse_within(ys, lengths)
        t, k_w = us.shape[0], self.conv_width
        x, z = jnp.split(matmul(us, params["w_in"]), 2, axis=-1)  # [t, b, E]
        padded = jnp.concatenate([jnp.swapaxes(carry.conv, 0, 1), x])  # [K-1+t, b, E]
        conv = sum(padded[i : i + t] * params["conv_w"][i] for i in range(k_w)) + params["conv_b"]
        x = jax.nn.silu(conv)
        delta, b, c = self._projections(params, x)
        method = self.method if method is None else method
        dtype = jnp.promote_types(x.dtype, carry.ssm.dtype)
        if linear.resolve(method, dtype) is linear.Method.FUSED:
            a = _state_matrix(params)
            hc, h_n = linear.selective_scan(delta.astype(dtype), x, a, b, c, carry.ssm, lengths=lengths)
        else:
            a, b = self._coefficients(params, delta, x, b)
            hs, h_n = linear.linear_recurrence(a, b, carry.ssm, lengths=lengths, method=method)
            hc = jnp.einsum("tben,tbn->tbe", hs.astype(carry.ssm.dtype), c)
        ys = self._output(params, hc.astype(carry.ssm.dtype), x, z)
        # The conv state: the K-1 inputs before each sequence's end, from the padded sequence.
        ends = jnp.full(us.shape[1:2], t) if lengths is None else lengths
        index = ends[None, :] + jnp.arange(k_w - 1, dtype=ends.dtype)[:, None]  # [K-1, b] in padded time
        window = jnp.take_along_axis(padded, index[..., None], axis=0)
        return MambaState(jnp.swapaxes(window, 0, 1), h_n.astype(carry.ssm.dtype)), linear.zero_past(
            ys, lengths
        )


registry.register_cell("mamba", MambaCell)
