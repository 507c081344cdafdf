"""Thin `flax.linen` wrappers, so seqjax cells and layers drop into Flax models.

The parameters stay seqjax's pytree: a cell module stores its cell's parameters
under the name "cell", a layer module its `params[layer][direction]` under
"layer", so `variables["params"]["cell"]` can be passed to the pure functions
and back. The cell modules subclass `nn.RNNCellBase`, so `flax.linen.RNN` (and
anything else built for Flax cells) runs them: `Cell(cell=...)` wraps any seqjax
cell, `RNNCell`, `LSTMCell` and `GRUCell` the built-in ones by their arguments.

`seqjax.interop.nnx` wraps the layers for Flax NNX the same way.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.models.layers import Recurrent as RecurrentLayer
from seqjax.recurrences import cells

Array = jax.Array


class _CellModule(nn.RNNCellBase):
    """Runs one step of a seqjax cell; each subclass says which in `make_cell`."""

    @nn.compact
    def __call__(self, carry: Any, inputs: Array) -> tuple[Any, Array]:
        """carry: as `initialize_carry`; inputs: `[..., d]`. Returns `(carry, [..., h])`."""
        cell = self.make_cell()
        params = self.param("cell", lambda key: cell.init(key, inputs.shape[-1], self.param_dtype))
        return cell.step(params, carry, inputs)

    @nn.nowrap
    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Any:
        """Zeros for inputs of shape `[..., d]`; rng is unused (Flax's signature)."""
        del rng
        return self.make_cell().initial_carry(tuple(input_shape[:-1]), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


class Cell(_CellModule):
    """Any seqjax cell (`seqjax.recurrences.protocol.Cell`) as a Flax cell."""

    cell: Any
    param_dtype: Any = jnp.float32

    def make_cell(self) -> Any:
        return self.cell


class RNNCell(_CellModule):
    """`seqjax.cells.RNNCell` as a Flax cell; the carry is h `[..., h]`."""

    hidden_size: int
    nonlinearity: str = "tanh"
    bias: bool = True
    recurrent_init: str = "uniform"
    param_dtype: Any = jnp.float32

    def make_cell(self) -> cells.RNNCell:
        return cells.RNNCell(
            self.hidden_size, self.nonlinearity, bias=self.bias, recurrent_init=self.recurrent_init
        )


class LSTMCell(_CellModule):
    """`seqjax.cells.LSTMCell` as a Flax cell; the carry is `LSTMState(h, c)`."""

    hidden_size: int
    bias: bool = True
    recurrent_init: str = "uniform"
    forget_bias: float | None = None
    param_dtype: Any = jnp.float32

    def make_cell(self) -> cells.LSTMCell:
        return cells.LSTMCell(
            self.hidden_size, bias=self.bias, recurrent_init=self.recurrent_init, forget_bias=self.forget_bias
        )


class GRUCell(_CellModule):
    """`seqjax.cells.GRUCell` as a Flax cell; the carry is h `[..., h]`."""

    hidden_size: int
    bias: bool = True
    recurrent_init: str = "uniform"
    param_dtype: Any = jnp.float32

    def make_cell(self) -> cells.GRUCell:
        return cells.GRUCell(self.hidden_size, bias=self.bias, recurrent_init=self.recurrent_init)


class Recurrent(nn.Module):
    """Any seqjax layer (`seqjax.Recurrent`, `RNN`, `LSTM`, `GRU`) as a Flax module.

    Dropout between layers draws from the "dropout" RNG stream.

    >>> from seqjax import LSTM
    >>> module = Recurrent(LSTM(input_size=4, hidden_size=8, batch_first=True))
    >>> variables = module.init(jax.random.key(0), jnp.ones((2, 5, 4)))
    >>> outputs, (h_n, c_n) = module.apply(variables, jnp.ones((2, 5, 4)))
    >>> outputs.shape
    (2, 5, 8)
    """

    layer: RecurrentLayer
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        inputs: Array,
        initial_state: Any = None,
        *,
        lengths: Array | None = None,
        deterministic: bool = True,
    ) -> tuple[Array, Any]:
        """As `layer.apply`: inputs `[t, b, d]` (`[b, t, d]` if batch_first)."""
        params = self.param("layer", lambda key: self.layer.init(key, self.param_dtype))
        use_dropout = self.layer.dropout > 0 and not deterministic
        key = self.make_rng("dropout") if use_dropout else None
        return self.layer.apply(
            params, inputs, initial_state, lengths=lengths, key=key, deterministic=deterministic
        )
