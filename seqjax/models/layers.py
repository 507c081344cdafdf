"""Deep and bidirectional recurrent layers over any cell, with PyTorch's conventions.

`Recurrent(cell, input_size, num_layers)` runs any cell that follows
`seqjax.recurrences.protocol.Cell`; `RNN`, `LSTM` and `GRU` are `Recurrent` with
the built-in cells, PyTorch's arguments in PyTorch's order, and exact
`state_dict` conversion; `MinGRU`, `MinLSTM`, `LRU`, `RGLRU` and `Mamba` are
`Recurrent` over the parallel (linear) recurrences, with the same layer arguments.
Layers are frozen dataclasses of static configuration (hashable, picklable);
their parameters are a plain pytree made by `init` and passed to `apply`:

    params[layer][direction] -> cell parameters

a tuple over `num_layers` of tuples over directions (forward, then backward).
The fastest algorithm that the cell's capabilities allow runs each layer and
direction (`seqjax.recurrences.paths`).

Shapes: t = time, b = batch, d = `input_size`, h = `hidden_size`,
L = `num_layers`, n = 2 if `bidirectional` else 1.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import validation
from seqjax.interop import torch_weights
from seqjax.recurrences import cells, cudnn, lru, mamba, min_rnn, paths, scan
from seqjax.recurrences.cells import Nonlinearity, RecurrentInit
from seqjax.recurrences.protocol import Cell, TrainingNoise, check_cell, offers, output_size
from seqjax.validation import check_positive_int

Array = jax.Array
Params = tuple[tuple[Any, ...], ...]


def _hashable(value: Any) -> Any:
    """`value`, or its identity if it cannot be hashed (a cell that is a plain dataclass)."""
    try:
        hash(value)
    except TypeError:
        return id(value)
    return value


@dataclasses.dataclass(frozen=True)
class Recurrent:
    """A deep, optionally bidirectional stack of one cell, as PyTorch's recurrent layers.

    Args:
      cell: any cell following `seqjax.recurrences.protocol.Cell`; every layer and
        direction runs it (with its own parameters).
      input_size: d, the features of the first layer's input.
      num_layers: L.
      bidirectional: add a direction that reads each sequence backwards (within
        its length); outputs concatenate the two.
      batch_first: inputs and outputs are `[b, t, *]` instead of `[t, b, *]`.
      dropout: rate between layers (not after the last), in training only.
      unroll, hoist_projection, custom_backward, cpu_kernel, method, cudnn, remat:
        how the time loop runs; see `seqjax.recurrences.paths.Switches` (`remat`:
        recompute chunks of steps in the backward pass instead of storing them).
        None picks what was measured fastest on the backend among the paths the
        cell allows (`path` says which); True for a capability the cell lacks
        raises a ValueError here.

    >>> layer = Recurrent(cells.GRUCell(8), input_size=4, num_layers=2, bidirectional=True)
    >>> params = layer.init(jax.random.key(0))
    >>> outputs, h_n = layer.apply(params, jnp.ones((5, 3, 4)), lengths=jnp.array([5, 2, 0]))
    >>> outputs.shape, h_n.shape
    ((5, 3, 16), (4, 3, 8))
    """

    cell: Cell
    input_size: int
    num_layers: int = 1
    _: dataclasses.KW_ONLY
    bidirectional: bool = False
    batch_first: bool = False
    dropout: float = 0.0
    unroll: int | None = None
    hoist_projection: bool | None = None
    custom_backward: bool | None = None
    cpu_kernel: bool | None = None
    method: str | None = None
    cudnn: bool = False
    remat: int | bool = False

    def __post_init__(self):
        check_cell(self.cell)
        for name in ("input_size", "num_layers"):
            check_positive_int(getattr(self, name), name)
        for name in ("bidirectional", "batch_first"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool; got {getattr(self, name)!r}")
        if isinstance(self.dropout, bool) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")
        self.switches.check(self.cell)

    def __hash__(self):
        return hash(tuple(_hashable(getattr(self, f.name)) for f in dataclasses.fields(self)))

    @property
    def hidden_size(self) -> int:
        return self.cell.hidden_size

    @property
    def output_size(self) -> int:
        """The width of each direction's outputs: the cell's (`proj_size` for a projected
        LSTM), else h."""
        return output_size(self.cell)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def switches(self) -> paths.Switches:
        return paths.Switches(
            self.hoist_projection,
            self.custom_backward,
            self.cpu_kernel,
            self.unroll,
            self.method,
            self.cudnn,
            self.remat,
        )

    def layer_input_size(self, layer: int) -> int:
        """Feature size that layer `layer` (0-based) reads."""
        return self.input_size if layer == 0 else self.output_size * self.num_directions

    def init(self, key: Array, dtype: Any = jnp.float32) -> Params:
        """Draws parameters: `params[layer][direction]` as in the module docstring."""
        keys = jax.random.split(key, (self.num_layers, self.num_directions))
        return tuple(
            tuple(
                self.cell.init(keys[l, d], self.layer_input_size(l), dtype)
                for d in range(self.num_directions)
            )
            for l in range(self.num_layers)
        )

    def initial_state(self, batch_size: int, dtype: Any = jnp.float32) -> Any:
        """The cell's initial carry for every layer and direction: leaves `[L*n, b, ...]`
        (`[L*n, b, h]` for the built-in cells, a pair of them for the LSTM)."""
        return self.cell.initial_carry((self.num_layers * self.num_directions, batch_size), dtype)

    def apply(
        self,
        params: Params,
        inputs: Array,
        initial_state: Any = None,
        *,
        lengths: Array | None = None,
        key: Array | None = None,
        deterministic: bool = True,
    ) -> tuple[Array, Any]:
        """Runs the layer over a (padded) batch of sequences.

        Args:
          params: from `init` (or `params_from_torch`).
          inputs: `[t, b, d]`, or `[b, t, d]` if `batch_first`, or `[t, d]` for
            one unbatched sequence.
          initial_state: like `initial_state(b)`: leaves `[L*n, b, ...]` (`[L*n, ...]`
            unbatched; for the LSTM a pair `(h0, c0)`); the cell's initial carry if None.
          lengths: optional `[b]` integers in `[0, t]`, the valid length of each
            sequence, as PyTorch's packed sequences. Outputs past a length are
            zero and the final state is taken at each sequence's last valid step;
            the backward direction reads each sequence reversed within its length.
            Padded positions may hold anything (NaN included): they are never read.
            Inside `jit` the values are not checked; a length above t acts as t,
            one below 0 as 0.
          key: PRNG key for dropout between layers and the cell's own training noise
            (`seqjax.recurrences.protocol.TrainingNoise`: variational dropout,
            zoneout); needed for either when not `deterministic`.
          deterministic: if True, no dropout and no noise: the cell's evaluation step.

        Returns:
          `(outputs, final_state)`: outputs `[t, b, n*h]` (`[b, t, n*h]` if
          `batch_first`, `[t, n*h]` unbatched), the last layer's outputs with
          directions concatenated; final_state like `initial_state`, ordered
          `layer0_forward, layer0_backward, layer1_forward, ...`.
        """
        dtype = validation.check_params(self, params, "init() of this layer")
        inputs = validation.as_floats(inputs, dtype, "inputs")
        if inputs.ndim not in (2, 3):
            layout = "[batch, time, input_size]" if self.batch_first else "[time, batch, input_size]"
            raise ValueError(
                f"inputs must have shape {layout} or [time, input_size]; got shape {inputs.shape}"
            )
        if inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"inputs last axis must be input_size={self.input_size}; got shape {inputs.shape}"
            )
        unbatched = inputs.ndim == 2
        xs = inputs[:, None] if unbatched else inputs
        time_major = unbatched or not self.batch_first
        num_steps, batch = xs.shape[:2] if time_major else xs.shape[1::-1]
        if num_steps == 0:
            raise ValueError(
                f"inputs must have at least one time step (as PyTorch requires); got shape {inputs.shape}"
            )
        if unbatched and lengths is not None:
            lengths = jnp.reshape(lengths, (-1,))
        lengths = scan.check_lengths(lengths, batch, num_steps)
        state = self._check_state(initial_state, batch, dtype, unbatched)
        validation.check_bool(deterministic, "deterministic")
        use_dropout = self.dropout > 0 and not deterministic and self.num_layers > 1
        noisy = not deterministic and offers(self.cell, TrainingNoise)
        if use_dropout or noisy:
            if key is None:
                what = (
                    "dropout > 0"
                    if use_dropout
                    else f"the cell's training noise ({type(self.cell).__name__})"
                )
                raise ValueError(f"key is required with {what} and deterministic=False")
            validation.check_key(key)

        outputs, final_state = self._run(
            params, xs, state, lengths, key if use_dropout or noisy else None, use_dropout, noisy, time_major
        )
        if unbatched:
            return outputs[:, 0], jax.tree.map(lambda s: s[:, 0], final_state)
        return outputs, final_state

    def path(self, params: Params, dtype: Any = None, *, deterministic: bool = True) -> str:
        """The name of the path (`seqjax.recurrences.paths.Path`) that `apply` takes on
        this backend for these parameters and inputs and state of `dtype` (the
        parameters' dtype if None): "kernel", "cudnn", "hoisted", ...; with
        `deterministic=False`, "noise" for a cell with training noise."""
        dtype = validation.check_params(self, params, "init() of this layer") if dtype is None else dtype
        if not deterministic and offers(self.cell, TrainingNoise):
            return paths.Path.NOISE.value
        carry = jax.eval_shape(lambda: self.cell.initial_carry((1,), dtype))
        inputs = jax.ShapeDtypeStruct((1, 1, self.input_size), dtype)
        return paths.choose(self.cell, self.switches, params, carry, inputs).value

    def step(self, params: Params, state: Any, x: Array) -> tuple[Any, Array]:
        """One time step of a unidirectional layer, for streaming and decoding.

        `step` over a sequence, the state carried, gives `apply`'s outputs and final
        state (dropout is not applied: this is inference).

        Args:
          params: from `init`.
          state: like `initial_state(b)`, leaves `[L, b, ...]` (`[L, ...]` unbatched);
            the initial state if None.
          x: `[b, d]` (or `[d]` unbatched), this step's input.

        Returns:
          `(state, y)`: the next state, and y `[b, h]` (`[h]`), the last layer's output.
        """
        if self.bidirectional:
            raise ValueError("step needs a unidirectional layer: a bidirectional one reads the future")
        dtype = validation.check_params(self, params, "init() of this layer")
        x = validation.as_floats(x, dtype, "x")
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"x must have shape [batch, input_size={self.input_size}]; got {x.shape}")
        unbatched = x.ndim == 1
        state = self._check_state(state, 1 if unbatched else x.shape[0], dtype, unbatched)
        state, y = self._step(params, state, x[None] if unbatched else x)
        if unbatched:
            return jax.tree.map(lambda s: s[:, 0], state), y[0]
        return state, y

    # Compiled once per configuration (the layer is hashable), also when called eagerly.
    @functools.partial(jax.jit, static_argnums=0)
    def _step(self, params, state, x):
        finals = []
        for layer_params, carry in zip(params, self._carries(state), strict=True):
            carry, x = self.cell.step(layer_params[0], carry, x)
            finals.append(carry)
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *finals), x

    @functools.partial(jax.jit, static_argnums=(0, 6, 7, 8))
    def _run(self, params, xs, state, lengths, key, use_dropout, noisy, time_major):
        """xs: [t, b, d] ([b, t, d] if not time_major), state [L*n, b, ...] -> (outputs
        [t, b, n*h] (or [b, t, n*h]), final state [L*n, b, ...])."""
        carries = self._carries(state)
        path = paths.Path.NOISE if noisy else paths.choose(self.cell, self.switches, params, carries, xs)
        # The kernel and cuDNN read batch-major arrays as they are; the scans need time-major.
        transpose = not time_major and path not in paths.BATCH_MAJOR
        if transpose:
            xs = jnp.swapaxes(xs, 0, 1)
            time_major = True
        num_steps, batch = xs.shape[:2] if time_major else xs.shape[1::-1]
        if lengths is not None:
            # Padding is never read: zeroed, a NaN there reaches no output and no gradient
            # (a masked step's gradient is 0 * its Jacobian, and 0 * NaN is NaN).
            valid = jnp.arange(num_steps, dtype=lengths.dtype)[:, None] < lengths  # [t, b]
            xs = jnp.where((valid if time_major else valid.T)[..., None], xs, 0).astype(xs.dtype)
        finals = []
        for l, layer_params in enumerate(params):
            ys = []
            for d, p in enumerate(layer_params):
                noise = None
                if noisy:
                    key, sub = jax.random.split(key)
                    noise = self.cell.draw_noise(sub, xs)
                carry, y = paths.run(
                    path,
                    self.cell,
                    p,
                    carries[l * self.num_directions + d],
                    xs,
                    switches=self.switches,
                    lengths=lengths,
                    reverse=d == 1,
                    time_major=time_major,
                    noise=noise,
                )
                finals.append(carry)
                ys.append(y)
            xs = jnp.concatenate(ys, axis=-1) if len(ys) > 1 else ys[0]  # [t, b, n*h] or [b, t, n*h]
            if use_dropout and l < self.num_layers - 1:
                key, sub = jax.random.split(key)
                # Drawn time-major in every layout, so batch_first never changes which units drop.
                keep = jax.random.bernoulli(sub, 1.0 - self.dropout, (num_steps, batch, xs.shape[-1]))
                keep = keep if time_major else jnp.swapaxes(keep, 0, 1)
                xs = jnp.where(keep, xs / (1.0 - self.dropout), 0).astype(xs.dtype)

        final_state = jax.tree.map(lambda *leaves: jnp.stack(leaves), *finals)  # [L*n, b, ...]
        return (jnp.swapaxes(xs, 0, 1) if transpose else xs), final_state

    def _check_state(self, state: Any, batch: int, dtype: Any, unbatched: bool) -> Any:
        """The state as `initial_state(batch, dtype)` structures it, leaves `[L*n, b, ...]`
        in its dtypes (cast from any real dtype)."""
        if state is None:
            return self.initial_state(batch, dtype)
        treedef, wants = _state_structure(self, batch, jnp.dtype(dtype))
        got = jax.tree.leaves(state)
        if len(got) != len(wants):
            name = "an array" if len(wants) == 1 else f"{treedef.node_data()[0].__name__}"
            raise ValueError(
                f"initial_state must be {name} of {len(wants)} array(s), as initial_state() makes it "
                f"(a pair (h0, c0) for an LSTM); got {len(got)}"
            )
        leaves = []
        for leaf, want in zip(got, wants, strict=True):
            leaf = validation.as_floats(leaf, want.dtype, "initial_state")
            shape = want.shape[:1] + want.shape[2:] if unbatched else want.shape
            if leaf.shape != shape:
                raise ValueError(
                    f"initial_state must have shape [num_layers*num_directions, batch, hidden_size]="
                    f"{shape}; got {leaf.shape}"
                )
            leaves.append(leaf[:, None] if unbatched else leaf)
        return jax.tree.unflatten(treedef, leaves)

    def _carries(self, state: Any) -> list[Any]:
        """One carry per layer and direction (leaves `[b, ...]`) from a stacked state."""
        return [
            jax.tree.map(lambda s, i=i: s[i], state) for i in range(self.num_layers * self.num_directions)
        ]


@functools.lru_cache(maxsize=256)
def _state_structure(
    layer: Recurrent, batch: int, dtype: Any
) -> tuple[Any, tuple[jax.ShapeDtypeStruct, ...]]:
    """The tree structure and leaves of `layer.initial_state(batch, dtype)`."""
    leaves, treedef = jax.tree.flatten(jax.eval_shape(lambda: layer.initial_state(batch, dtype)))
    return treedef, tuple(leaves)


class _CellLayer(Recurrent):
    """A layer of one cell type with PyTorch's layer arguments: `input_size,
    hidden_size, num_layers`, then keyword-only `batch_first, dropout,
    bidirectional`, the cell's own options, and the switches of `Recurrent`."""

    _cell_type: ClassVar[type]
    _SWITCHES: ClassVar[tuple[str, ...]] = (
        "unroll", "hoist_projection", "custom_backward", "cpu_kernel", "method", "cudnn", "remat",
    )  # fmt: skip

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        **options: Any,
    ):
        switches = {name: options.pop(name) for name in self._SWITCHES if name in options}
        known = {f.name for f in dataclasses.fields(self._cell_type) if f.init} - {"hidden_size"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"{type(self).__name__} takes no option {', '.join(map(repr, unknown))}; its cell's options "
                f"are {', '.join(sorted(known))}, and the switches {', '.join(self._SWITCHES)}"
            )
        super().__init__(
            self._cell_type(hidden_size, **options), input_size, num_layers, bidirectional=bidirectional,
            batch_first=batch_first, dropout=dropout, **switches,
        )  # fmt: skip


class MinGRU(_CellLayer):
    """Multi-layer minGRU (`seqjax.recurrences.min_rnn.MinGRUCell`), parallel over time.

    >>> layer = MinGRU(input_size=4, hidden_size=8, num_layers=2, method="parallel")
    >>> outputs, h_n = layer.apply(layer.init(jax.random.key(0)), jnp.ones((5, 3, 4)))
    >>> outputs.shape, h_n.shape
    ((5, 3, 8), (2, 3, 8))
    """

    _cell_type = min_rnn.MinGRUCell


class MinLSTM(_CellLayer):
    """Multi-layer minLSTM (`seqjax.recurrences.min_rnn.MinLSTMCell`), parallel over time."""

    _cell_type = min_rnn.MinLSTMCell


class LRU(_CellLayer):
    """Multi-layer LRU (`seqjax.recurrences.lru.LRUCell`); the state is complex `[L*n, b, N]`."""

    _cell_type = lru.LRUCell


class RGLRU(_CellLayer):
    """Multi-layer RG-LRU (`seqjax.recurrences.lru.RGLRUCell`), Griffin's recurrence."""

    _cell_type = lru.RGLRUCell


class Mamba(_CellLayer):
    """Multi-layer Mamba mixers (`seqjax.recurrences.mamba.MambaCell`); the state is a
    `MambaState(conv [L*n, b, K-1, E], ssm [L*n, b, E, N])`."""

    _cell_type = mamba.MambaCell


class _TorchLayer(_CellLayer):
    """A built-in cell's layer: PyTorch's arguments in PyTorch's order (`bias` the
    fourth), exact `state_dict` conversion. Keyword-only: the cell's own options
    (`recurrent_init`, and the LSTM's `forget_bias`) and the switches of `Recurrent`."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        **options: Any,
    ):
        super().__init__(
            input_size, hidden_size, num_layers, batch_first=batch_first, dropout=dropout,
            bidirectional=bidirectional, bias=bias, **options,
        )  # fmt: skip

    @property
    def bias(self) -> bool:
        return self.cell.bias

    @property
    def recurrent_init(self) -> RecurrentInit:
        return self.cell.recurrent_init

    def params_from_torch(self, state_dict: dict[str, Any]) -> Params:
        """Parameters from a PyTorch `state_dict` of NumPy arrays (exact)."""
        return torch_weights.params_from_torch(self, state_dict)

    def params_to_torch(self, params: Params) -> dict[str, np.ndarray]:
        """A PyTorch `state_dict` (NumPy arrays) from parameters (exact); the parameters
        are checked against what `init` makes first."""
        validation.check_params(self, params, "init() of this layer")
        return torch_weights.params_to_torch(self, params)


class RNN(_TorchLayer):
    """Multi-layer Elman RNN with tanh or relu, as PyTorch's `nn.RNN`: `Recurrent`
    over `seqjax.cells.RNNCell`.

    Arguments as PyTorch's, in PyTorch's order: input_size, hidden_size,
    num_layers, nonlinearity ("tanh" or "relu"), bias, batch_first, dropout
    (between layers, not after the last), bidirectional. Keyword-only:
    recurrent_init (see `seqjax.cells.RecurrentInit`), and the switches of
    `Recurrent` (unroll, hoist_projection, custom_backward, cpu_kernel; on CPU in
    float32 each layer and direction runs as one fused C++ loop by default).

    >>> layer = RNN(input_size=4, hidden_size=8, num_layers=2, batch_first=True)
    >>> params = layer.init(jax.random.key(0))
    >>> outputs, h_n = layer.apply(params, jnp.ones((3, 5, 4)))
    >>> outputs.shape, h_n.shape
    ((3, 5, 8), (2, 3, 8))
    """

    _cell_type = cells.RNNCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: Nonlinearity | str = Nonlinearity.TANH,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        **options: Any,
    ):
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            nonlinearity=nonlinearity, **options,
        )  # fmt: skip

    @property
    def nonlinearity(self) -> Nonlinearity:
        return self.cell.nonlinearity


class LSTM(_TorchLayer):
    """Multi-layer LSTM, as PyTorch's `nn.LSTM`: `Recurrent` over
    `seqjax.cells.LSTMCell`. The state is a pair `(h, c)`: h `[L*n, b, p]` (p =
    proj_size, else h) and c `[L*n, b, h]`; outputs `[t, b, n*p]`.

    Arguments as PyTorch's, in PyTorch's order: input_size, hidden_size,
    num_layers, bias, batch_first, dropout, bidirectional, then keyword-only
    proj_size (`weight_hr_l{k}` in the state_dict). Keyword-only: the cell's
    options (recurrent_init, forget_bias, peepholes, layer_norm, input_dropout,
    recurrent_dropout, zoneout; see `seqjax.cells.LSTMCell`), and the switches of
    `Recurrent` (`cudnn=True` runs
    cuDNN's LSTM on a CUDA GPU, `seqjax.recurrences.cudnn`; `params_to_cudnn` and
    `params_from_cudnn` convert to and from its flat weights).

    >>> layer = LSTM(input_size=4, hidden_size=8, bidirectional=True)
    >>> params = layer.init(jax.random.key(0))
    >>> outputs, (h_n, c_n) = layer.apply(params, jnp.ones((5, 3, 4)))
    >>> outputs.shape, h_n.shape, c_n.shape
    ((5, 3, 16), (2, 3, 8), (2, 3, 8))
    """

    _cell_type = cells.LSTMCell

    @property
    def forget_bias(self) -> float | None:
        return self.cell.forget_bias

    @property
    def proj_size(self) -> int:
        return self.cell.proj_size

    def params_to_cudnn(self, params: Params) -> Array:
        """cuDNN's flat weights `[n]` (the vector `jax.experimental.rnn.lstm` takes,
        laid out as `jax.experimental.rnn.unpack_lstm_weights` reads it), exact;
        zero biases where `bias=False`."""
        validation.check_params(self, params, "init() of this layer")
        return cudnn.pack([p for layer in params for p in layer], self.hidden_size)

    def params_from_cudnn(self, weights: Array) -> Params:
        """Parameters from cuDNN's flat weights (the inverse of `params_to_cudnn`, exact)."""
        sizes = [self.layer_input_size(l) for l in range(self.num_layers) for _ in range(self.num_directions)]
        flat = cudnn.unpack(weights, sizes, self.hidden_size, self.bias)
        n = self.num_directions
        return tuple(tuple(flat[l * n : (l + 1) * n]) for l in range(self.num_layers))


class GRU(_TorchLayer):
    """Multi-layer GRU, as PyTorch's `nn.GRU`: `Recurrent` over `seqjax.cells.GRUCell`.

    Arguments as PyTorch's, in PyTorch's order: input_size, hidden_size,
    num_layers, bias, batch_first, dropout, bidirectional. Keyword-only:
    recurrent_init, and the switches of `Recurrent`.

    >>> layer = GRU(input_size=4, hidden_size=8, num_layers=3)
    >>> params = layer.init(jax.random.key(0))
    >>> outputs, h_n = layer.apply(params, jnp.ones((5, 3, 4)), lengths=jnp.array([5, 2, 0]))
    >>> outputs.shape, h_n.shape
    ((5, 3, 8), (3, 3, 8))
    """

    _cell_type = cells.GRUCell
