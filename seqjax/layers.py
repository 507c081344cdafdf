"""Deep and bidirectional recurrent layers with PyTorch's arguments and conventions.

`RNN`, `LSTM` and `GRU` are frozen dataclasses of static configuration; their
parameters are a plain pytree made by `init` and passed to `apply`:

    params[layer][direction] -> cell parameters (see `seqjax.cells`)

a tuple over `num_layers` of tuples over directions (forward, then backward).

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

from seqjax import cells, cpu_kernel, scan, torch_weights
from seqjax.cells import LSTMState, Nonlinearity, RecurrentInit

Array = jax.Array
Params = tuple[tuple[dict[str, Array], ...], ...]


@dataclasses.dataclass(frozen=True)
class _Recurrent:
    """Shared machinery of RNN, LSTM and GRU; see their docstrings.

    Each subclass defines `cell`, the pure cell that every layer and direction runs.
    """

    _paired_state: ClassVar[bool] = False  # the LSTM's state is (h, c)

    input_size: int
    hidden_size: int
    num_layers: int = 1
    _: dataclasses.KW_ONLY
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    recurrent_init: RecurrentInit | str = RecurrentInit.UNIFORM
    unroll: int = 1
    hoist_projection: bool | None = None
    custom_backward: bool | None = None
    cpu_kernel: bool | None = None

    def __post_init__(self):
        for name in ("input_size", "hidden_size", "num_layers", "unroll"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")
        self.cell  # noqa: B018 -- builds the cell now so that bad options fail here.

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def layer_input_size(self, layer: int) -> int:
        """Feature size that layer `layer` (0-based) reads."""
        return self.input_size if layer == 0 else self.hidden_size * self.num_directions

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
        """Zeros shaped like `final_state`: `[L*n, b, h]` (a pair for the LSTM)."""
        return self.cell.initial_carry((self.num_layers * self.num_directions, batch_size), dtype)

    def params_from_torch(self, state_dict: dict[str, Any]) -> Params:
        """Parameters from a PyTorch `state_dict` of NumPy arrays (exact)."""
        return torch_weights.params_from_torch(self, state_dict)

    def params_to_torch(self, params: Params) -> dict[str, np.ndarray]:
        """A PyTorch `state_dict` (NumPy arrays) from parameters (exact)."""
        return torch_weights.params_to_torch(self, params)

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
          params: from `init` or `params_from_torch`.
          inputs: `[t, b, d]`, or `[b, t, d]` if `batch_first`, or `[t, d]` for
            one unbatched sequence.
          initial_state: `[L*n, b, h]` (`[L*n, h]` unbatched), a pair `(h0, c0)` of
            those for the LSTM; zeros if None.
          lengths: optional `[b]` integers in `[0, t]`, the valid length of each
            sequence, as PyTorch's packed sequences. Outputs past a length are
            zero and the final state is taken at each sequence's last valid step;
            the backward direction reads each sequence reversed within its length.
          key: PRNG key for dropout between layers; needed when `dropout > 0` and
            not `deterministic`.
          deterministic: if True, no dropout.

        Returns:
          `(outputs, final_state)`: outputs `[t, b, n*h]` (`[b, t, n*h]` if
          `batch_first`, `[t, n*h]` unbatched), the last layer's hidden states with
          directions concatenated; final_state like `initial_state`, ordered
          `layer0_forward, layer0_backward, layer1_forward, ...`.
        """
        inputs = jnp.asarray(inputs)
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
        if unbatched and lengths is not None:
            lengths = jnp.reshape(lengths, (-1,))
        lengths = scan.check_lengths(lengths, batch, num_steps)
        carries = self._check_state(initial_state, batch, xs.dtype, unbatched)
        if len(params) != self.num_layers or any(len(p) != self.num_directions for p in params):
            raise ValueError(
                f"params must hold {self.num_layers} layers of {self.num_directions} direction(s); "
                "make them with init() or params_from_torch()"
            )
        use_dropout = self.dropout > 0 and not deterministic and self.num_layers > 1
        if use_dropout and key is None:
            raise ValueError("key is required when dropout > 0 and deterministic=False")

        outputs, final_state = self._run(params, xs, carries, lengths, key, use_dropout, time_major)
        if unbatched:
            return outputs[:, 0], jax.tree.map(lambda s: s[:, 0], final_state)
        return outputs, final_state

    # Compiled once per configuration (the layer is hashable), also when called eagerly.
    @functools.partial(jax.jit, static_argnums=(0, 6, 7))
    def _run(self, params, xs, carries, lengths, key, use_dropout, time_major):
        """xs: [t, b, d] ([b, t, d] if not time_major) -> (outputs [t, b, n*h] (or
        [b, t, n*h]), final state [L*n, b, h])."""
        # None: what experiments/throughput.py measured faster on CPU; elsewhere the
        # hoisted projection and JAX's own differentiation.
        on_cpu = jax.default_backend() == "cpu"
        hoist = not on_cpu if self.hoist_projection is None else self.hoist_projection
        custom_backward = on_cpu if self.custom_backward is None else self.custom_backward
        use_kernel = self.cpu_kernel
        if use_kernel is None:
            use_kernel = (
                on_cpu
                and custom_backward
                and cpu_kernel.enabled()
                and cpu_kernel.supports(self.cell, params, carries, xs)
                and cpu_kernel.available()
            )
        # The kernel reads and writes batch-major arrays in place; the scans need time-major.
        transpose = not time_major and not use_kernel
        if transpose:
            xs = jnp.swapaxes(xs, 0, 1)
            time_major = True
        num_steps, batch = xs.shape[:2] if time_major else xs.shape[1::-1]
        finals = []
        for l, layer_params in enumerate(params):
            ys = []
            for d, p in enumerate(layer_params):
                carry0 = carries[l * self.num_directions + d]
                options = dict(lengths=lengths, reverse=d == 1, unroll=self.unroll)
                if use_kernel:
                    carry, y = cpu_kernel.scan_kernel(
                        self.cell, p, carry0, xs, lengths=lengths, reverse=d == 1, time_major=time_major
                    )
                elif custom_backward:
                    carry, y = scan.scan_cell(self.cell, p, carry0, xs, hoist=hoist, **options)
                elif hoist:
                    carry, y = scan.scan(self.cell.step, p, carry0, self.cell.project(p, xs), **options)
                else:
                    carry, y = scan.scan(self.cell.apply, p, carry0, xs, **options)
                finals.append(carry)
                ys.append(y)
            xs = jnp.concatenate(ys, axis=-1) if len(ys) > 1 else ys[0]  # [t, b, n*h] or [b, t, n*h]
            if use_dropout and l < self.num_layers - 1:
                key, sub = jax.random.split(key)
                # Drawn time-major in every layout, so batch_first never changes which units drop.
                keep = jax.random.bernoulli(sub, 1.0 - self.dropout, (num_steps, batch, xs.shape[-1]))
                keep = keep if time_major else jnp.swapaxes(keep, 0, 1)
                xs = jnp.where(keep, xs / (1.0 - self.dropout), 0).astype(xs.dtype)

        final_state = jax.tree.map(lambda *leaves: jnp.stack(leaves), *finals)  # [L*n, b, h]
        return (jnp.swapaxes(xs, 0, 1) if transpose else xs), final_state

    def _check_state(self, state, batch, dtype, unbatched):
        """Returns a list of L*n carries, each with leaves [b, h]."""
        if state is None:
            state = self.initial_state(batch, dtype)
        else:
            expected = (
                (self.num_layers * self.num_directions,)
                + (() if unbatched else (batch,))
                + (self.hidden_size,)
            )
            leaves = state if self._paired_state else (state,)
            if self._paired_state and (not isinstance(state, tuple) or len(state) != 2):
                raise ValueError("initial_state of an LSTM must be a pair (h0, c0)")
            for leaf in leaves:
                if jnp.shape(leaf) != expected:
                    raise ValueError(
                        f"initial_state must have shape [num_layers*num_directions, batch, hidden_size]="
                        f"{expected}; got {jnp.shape(leaf)}"
                    )
            leaves = [jnp.asarray(x) for x in leaves]
            if unbatched:
                leaves = [x[:, None] for x in leaves]
            state = LSTMState(*leaves) if self._paired_state else leaves[0]
        return [
            jax.tree.map(lambda s, i=i: s[i], state) for i in range(self.num_layers * self.num_directions)
        ]


@dataclasses.dataclass(frozen=True)
class RNN(_Recurrent):
    """Multi-layer Elman RNN with tanh or relu, as PyTorch's `nn.RNN`.

    Args (as PyTorch): input_size, hidden_size, num_layers, and keyword-only
    nonlinearity ("tanh" or "relu"), bias, batch_first, dropout (between layers,
    not after the last), bidirectional. seqjax extras: recurrent_init (see
    `seqjax.cells.RecurrentInit`), unroll (forwarded to `lax.scan`) and
    hoist_projection: project every step's input in one matmul before the scan
    (True) or inside it (False); None picks what measured faster on the backend
    (inside on CPU, before elsewhere); custom_backward: differentiate with
    `seqjax.scan.scan_cell`'s hand-written backward pass (reverse mode only), or,
    if False, let JAX differentiate the scan (forward mode too: `jax.jvp`); None
    picks the hand-written pass on CPU and JAX's elsewhere; cpu_kernel: run each
    layer and direction as one call of `seqjax.cpu_kernel`'s fused loop (CPU,
    float32; reverse mode only), or not; None uses it on CPU whenever it applies
    (and custom_backward is not False, and `$SEQJAX_CPU_KERNEL` is not "0") and
    it could be built, which is what experiments/throughput.py measured fastest.

    >>> layer = RNN(input_size=4, hidden_size=8, num_layers=2, batch_first=True)
    >>> params = layer.init(jax.random.key(0))
    >>> outputs, h_n = layer.apply(params, jnp.ones((3, 5, 4)))
    >>> outputs.shape, h_n.shape
    ((3, 5, 8), (2, 3, 8))
    """

    nonlinearity: Nonlinearity | str = Nonlinearity.TANH

    @functools.cached_property
    def cell(self) -> cells.Cell:
        return cells.rnn(
            self.hidden_size, self.nonlinearity, bias=self.bias, recurrent_init=self.recurrent_init
        )


@dataclasses.dataclass(frozen=True)
class LSTM(_Recurrent):
    """Multi-layer LSTM, as PyTorch's `nn.LSTM` (without `proj_size`).

    Arguments as `RNN` (no nonlinearity), plus `forget_bias`: if set, the forget
    gate's total bias starts at this value (see `seqjax.cells.lstm`). The state is
    a pair `(h, c)`.

    >>> layer = LSTM(input_size=4, hidden_size=8, bidirectional=True)
    >>> params = layer.init(jax.random.key(0))
    >>> outputs, (h_n, c_n) = layer.apply(params, jnp.ones((5, 3, 4)))
    >>> outputs.shape, h_n.shape, c_n.shape
    ((5, 3, 16), (2, 3, 8), (2, 3, 8))
    """

    forget_bias: float | None = None
    _paired_state: ClassVar[bool] = True

    @functools.cached_property
    def cell(self) -> cells.Cell:
        return cells.lstm(
            self.hidden_size,
            bias=self.bias,
            recurrent_init=self.recurrent_init,
            forget_bias=self.forget_bias,
        )


@dataclasses.dataclass(frozen=True)
class GRU(_Recurrent):
    """Multi-layer GRU, as PyTorch's `nn.GRU`; arguments as `RNN` (no nonlinearity).

    >>> layer = GRU(input_size=4, hidden_size=8, num_layers=3)
    >>> params = layer.init(jax.random.key(0))
    >>> outputs, h_n = layer.apply(params, jnp.ones((5, 3, 4)), lengths=jnp.array([5, 2, 0]))
    >>> outputs.shape, h_n.shape
    ((5, 3, 8), (3, 3, 8))
    """

    @functools.cached_property
    def cell(self) -> cells.Cell:
        return cells.gru(self.hidden_size, bias=self.bias, recurrent_init=self.recurrent_init)
