"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs all we needed?", arXiv 2410.01201).

The GRU and LSTM with their gates' dependence on h_{t-1} removed: every gate reads
only x_t, so the state update is the linear recurrence `h_t = a_t h_{t-1} + b_t`
and a whole sequence runs as a parallel (or fused) scan over time
(`seqjax.recurrences.linear`). Registered as the families "mingru" and "minlstm".

With g(x) = x + 1/2 for x >= 0 and sigmoid(x) otherwise (the paper's activation,
which keeps every state positive):

    minGRU:   z_t = sigmoid(W_z x_t + b_z),  h~_t = g(W_h x_t + b_h)
              h_t = (1 - z_t) h_{t-1} + z_t h~_t
    minLSTM:  f_t = sigmoid(W_f x_t + b_f),  i_t = sigmoid(W_i x_t + b_i),  h~_t = g(W_h x_t + b_h)
              f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
              h_t = f'_t h_{t-1} + i'_t h~_t

The minLSTM's normalisation is computed in log space, as the paper's stable form:
f'_t = sigmoid(log f_t - log i_t) with `log f = log_sigmoid(k_f)`, so it neither
overflows nor divides 0 by 0 for any pre-activation.

Parameters (PyTorch-style, one fused projection): `w_ih: [d, G*h]`, `b_ih: [G*h]`
(if `bias`), G = 2 (z, h~) or 3 (f, i, h~), initialised as `nn.Linear`
(uniform in +-1/sqrt(d)). The carry and the output are h `[..., h]`. `method`: how
the recurrence runs over a sequence (`seqjax.recurrences.linear.Method`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from seqjax import registry, validation
from seqjax.recurrences import linear
from seqjax.recurrences.protocol import input_projection, matmul

Array = jax.Array


def g(x: Array) -> Array:
    """The paper's activation: x + 1/2 for x >= 0, sigmoid(x) below (positive, continuous)."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


@dataclasses.dataclass(frozen=True)
class _MinCell(linear.DiagonalLinearCell):
    """What minGRU and minLSTM share: one input projection, gates from it alone."""

    hidden_size: int
    _: dataclasses.KW_ONLY
    bias: bool = True
    method: str = "auto"

    num_gates: ClassVar[int]
    form: ClassVar[str]  # the gated form of the fused CPU loop

    def __post_init__(self):
        validation.check_positive_int(self.hidden_size, "hidden_size")
        validation.check_bool(self.bias, "bias")
        linear.check_method(self.method)

    def init(self, key: Array, input_size: int, dtype: Any = jnp.float32) -> dict[str, Array]:
        """`w_ih: [d, G*h]` and `b_ih: [G*h]`, uniform in +-1/sqrt(d) (as `nn.Linear`)."""
        validation.check_positive_int(input_size, "input_size")
        bound = input_size**-0.5
        k_w, k_b = jax.random.split(key)
        shape = (input_size, self.num_gates * self.hidden_size)
        params = {"w_ih": jax.random.uniform(k_w, shape, dtype, -bound, bound)}
        if self.bias:
            params["b_ih"] = jax.random.uniform(k_b, shape[1:], dtype, -bound, bound)
        return params

    def project(self, params: dict[str, Array], x: Array) -> Array:
        """Gate pre-activations `k: [..., G*h]` of inputs `x: [..., d]`."""
        return input_projection(params, x)

    def coefficients(self, params: dict[str, Array], x: Array) -> tuple[Array, Array]:
        return self.gates(self.project(params, x))

    def step_projected(self, params: dict[str, Array], h: Array, k: Array) -> tuple[Array, Array]:
        a, b = self.gates(k)
        h = (a * h + b).astype(h.dtype)
        return h, h

    def readout(self, params: dict[str, Array], h: Array, x: Array) -> Array:
        return h

    def run_sequence(
        self,
        params: dict[str, Array],
        h0: Array,
        xs: Array,
        *,
        lengths: Array | None = None,
        reverse: bool = False,
        method: linear.Method | str | None = None,
    ) -> tuple[Array, Array]:
        """`xs: [t, b, d]` -> `(h_n: [b, h], hs: [t, b, h])`, hs zero past each length.

        The projection is one matmul over every step; with the "fused" method the
        gates are computed inside the CPU loop (`linear.gated_recurrence`).
        """
        method = self.method if method is None else method
        dtype = params["w_ih"].dtype
        if linear.resolve(method, dtype) is linear.Method.FUSED and linear.gated_supports(dtype):
            k = matmul(xs, params["w_ih"])  # the loop adds the bias
            hs, h_n = linear.gated_recurrence(
                self.form, k, h0, bias=params.get("b_ih"), lengths=lengths, reverse=reverse
            )
        else:
            a, b = self.gates(self.project(params, xs))
            hs, h_n = linear.linear_recurrence(a, b, h0, lengths=lengths, reverse=reverse, method=method)
        return h_n.astype(h0.dtype), hs.astype(h0.dtype)


@dataclasses.dataclass(frozen=True)
class MinGRUCell(_MinCell):
    """minGRU: `h_t = (1 - z_t) h_{t-1} + z_t g(W_h x_t + b_h)`, `z_t = sigmoid(W_z x_t + b_z)`.

    >>> cell = MinGRUCell(8)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> h, y = cell.step(params, cell.initial_carry((3,)), jnp.ones((3, 4)))
    >>> y.shape, params["w_ih"].shape
    ((3, 8), (4, 16))
    """

    num_gates: ClassVar[int] = 2
    form: ClassVar[str] = "mingru"

    def gates(self, k: Array) -> tuple[Array, Array]:
        """`k = [k_z | k_h]: [..., 2h]` -> `(a, b)`: `a = 1 - z`, `b = z g(k_h)`."""
        k_z, k_h = jnp.split(k, 2, axis=-1)
        z = jax.nn.sigmoid(k_z)
        return 1 - z, z * g(k_h)


@dataclasses.dataclass(frozen=True)
class MinLSTMCell(_MinCell):
    """minLSTM: `h_t = f'_t h_{t-1} + i'_t g(W_h x_t + b_h)` with normalised gates.

    >>> cell = MinLSTMCell(8)
    >>> params = cell.init(jax.random.key(0), input_size=4)
    >>> hs = cell.run_sequence(params, cell.initial_carry((3,)), jnp.ones((5, 3, 4)))[1]
    >>> hs.shape, params["w_ih"].shape
    ((5, 3, 8), (4, 24))
    """

    num_gates: ClassVar[int] = 3
    form: ClassVar[str] = "minlstm"

    def gates(self, k: Array) -> tuple[Array, Array]:
        """`k = [k_f | k_i | k_h]: [..., 3h]` -> `(a, b)`: `a = f'`, `b = i' g(k_h)`."""
        k_f, k_i, k_h = jnp.split(k, 3, axis=-1)
        log_ratio = jax.nn.log_sigmoid(k_f) - jax.nn.log_sigmoid(k_i)  # log f - log i
        return jax.nn.sigmoid(log_ratio), jax.nn.sigmoid(-log_ratio) * g(k_h)


registry.register_cell("mingru", MinGRUCell)
registry.register_cell("minlstm", MinLSTMCell)
