"""A thin `flax.nnx` wrapper of any seqjax layer.

Each array of the layer's parameter pytree (`params[layer][direction]`) is an
`nnx.Param`, so NNX's transforms and optimisers see them; `module.params_tree()`
returns the plain pytree that the pure functions take.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from seqjax.models.layers import Recurrent as RecurrentLayer

Array = jax.Array


class Recurrent(nnx.Module):
    """Any seqjax layer (`seqjax.Recurrent`, `RNN`, `LSTM`, `GRU`) as an NNX module.

    >>> from seqjax import GRU
    >>> module = Recurrent(GRU(input_size=4, hidden_size=8, batch_first=True), rngs=nnx.Rngs(0))
    >>> outputs, h_n = module(jax.numpy.ones((2, 5, 4)))
    >>> outputs.shape, h_n.shape
    ((2, 5, 8), (1, 2, 8))
    """

    def __init__(self, layer: RecurrentLayer, *, rngs: nnx.Rngs, dtype: Any = jax.numpy.float32):
        self.layer = layer
        self.params = nnx.data(jax.tree.map(nnx.Param, layer.init(rngs.params(), dtype)))

    def params_tree(self) -> Any:
        """The parameters as the plain pytree of `seqjax.models.layers`."""
        return jax.tree.map(lambda p: p[...], self.params, is_leaf=lambda x: isinstance(x, nnx.Param))

    def __call__(
        self,
        inputs: Array,
        initial_state: Any = None,
        *,
        lengths: Array | None = None,
        key: Array | None = None,
        deterministic: bool = True,
    ) -> tuple[Array, Any]:
        """As `layer.apply`: inputs `[t, b, d]` (`[b, t, d]` if batch_first)."""
        return self.layer.apply(
            self.params_tree(), inputs, initial_state, lengths=lengths, key=key, deterministic=deterministic
        )
