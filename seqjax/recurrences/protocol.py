"""What a recurrent cell is: a minimal protocol, and the optional capabilities of fast paths.

A cell is four things (`Cell`):

    cell.hidden_size                                   h
    params = cell.init(key, input_size, dtype)         any pytree
    carry = cell.initial_carry(batch_shape, dtype)     leaves [*batch_shape, ...]
    carry, y = cell.step(params, carry, x)             x: [..., d] -> y: [..., h]

That is all that `seqjax.Recurrent`, `seqjax.scan.scan`, the registry, the task
models, streaming (`step` of layers and models) and the diagnostics need. Such a
cell runs under `lax.scan` and is differentiated by JAX, on every backend.

Fast paths need more, and a cell offers it by having a capability's attributes
(checked with `offers`, i.e. `isinstance` against these `typing.Protocol`s, before
use); a cell without one takes the plain path, never a failure deep in a trace:

- `ProjectsInput`: the input enters `step` only through `project`, so a layer can
  project every time step in one large matmul before the scan.
- `DenseRecurrence`: the recurrence is one dense matmul `h @ w_hh + b_hh` of a
  part of the carry, followed by parameter-free elementwise work, with
  PyTorch-style parameters. `seqjax.scan.scan_cell` differentiates such a cell
  with a hand-written backward pass.
- A fused CPU loop: a `DenseRecurrence` cell whose `kernel` attribute names one of
  `seqjax.recurrences.cpu_kernel.KINDS` runs as one C++ loop on CPU.
- `RunsSequence`: the cell computes a whole sequence in one call, as the gated
  linear recurrences do with a parallel scan over time
  (`seqjax.recurrences.linear`); layers then call `run_sequence` instead of
  looping over `step`.
- `TrainingNoise`: the cell has noise of its own in training (variational
  dropout, zoneout): layers draw it once per sequence with `draw_noise` and run
  `noisy_step` when not deterministic; `step` is then the deterministic
  (evaluation) step.

A cell whose configuration rules a capability out although its class has the
attributes (an LSTM with peepholes still has `update`, but its update is no
longer parameter-free) lists that capability in a `declines` attribute; `offers`
reads it.

A cell that declares a capability promises that the fast path computes what its
`step` computes; a subclass that changes the maths must drop the capability (set
`kernel = None`, or override `step` in a class that is not a `DenseRecurrence`).

Optional, for the diagnostics: `recurrent_params`, the names of the top-level
parameters that act on the carry (`("w_hh",)` for the built-in cells); the
gradient-flow experiment's "scaled" initialisation multiplies those (every
parameter if the cell does not say).

A complete cell, IndRNN (Li et al. 2018), `h' = relu(x @ w + u * h + b)`:

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class IndRNN:
...     hidden_size: int
...     def init(self, key, input_size, dtype=jnp.float32):
...         h = self.hidden_size
...         w = jax.random.normal(key, (input_size, h), dtype) / input_size**0.5
...         return {"w": w, "u": jnp.full((h,), 0.5, dtype), "b": jnp.zeros((h,), dtype)}
...     def initial_carry(self, batch_shape=(), dtype=jnp.float32):
...         return jnp.zeros((*batch_shape, self.hidden_size), dtype)
...     def step(self, params, h, x):
...         h = jax.nn.relu(x @ params["w"] + params["u"] * h + params["b"])
...         return h, h
>>> isinstance(IndRNN(4), Cell), isinstance(IndRNN(4), DenseRecurrence)
(True, False)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

Array = jax.Array
Params = Any
Carry = Any


@runtime_checkable
class Cell(Protocol):
    """The minimal recurrent cell; see the module docstring."""

    hidden_size: int  # h: the width of every output y (unless the cell has an `output_size`)

    def init(self, key: Array, input_size: int, dtype: Any = jnp.float32) -> Params:
        """Parameters for inputs of `input_size` features."""
        ...

    def initial_carry(self, batch_shape: tuple[int, ...] = (), dtype: Any = jnp.float32) -> Carry:
        """The carry before the first step, leaves `[*batch_shape, ...]` (zeros, usually)."""
        ...

    def step(self, params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
        """One time step on the raw input `x: [..., d]`; returns `(carry, y: [..., h])`."""
        ...


@runtime_checkable
class ProjectsInput(Protocol):
    """Capability: `step(p, c, x) == step_projected(p, c, project(p, x))` for every x."""

    def project(self, params: Params, x: Array) -> Array:
        """`x: [..., d] -> gx: [..., p]` for any number of leading axes."""
        ...

    def step_projected(self, params: Params, carry: Carry, gx: Array) -> tuple[Carry, Array]:
        """One time step given the projected input `gx: [..., p]`."""
        ...


@runtime_checkable
class DenseRecurrence(ProjectsInput, Protocol):
    """Capability: a dense recurrent matmul followed by parameter-free elementwise work.

    The parameters are a dict with `w_ih: [d, g*h]`, `w_hh: [h, g*h]` and,
    optionally, both of `b_ih, b_hh: [g*h]`, and

        project(p, x)           == input_projection(p, x)     # x @ w_ih + b_ih
        step_projected(p, c, gx) == update(c, gx, recurrent_projection(p, hidden(c)))
    """

    num_gates: int  # g

    def hidden(self, carry: Carry) -> Array:
        """The part of the carry that the recurrent matmul reads, `[..., h]`."""
        ...

    def update(self, carry: Carry, gx: Array, gh: Array) -> tuple[Carry, Array]:
        """The elementwise rest of a step, from `gx` and `gh = hidden(carry) @ w_hh + b_hh`."""
        ...


@runtime_checkable
class RunsSequence(Protocol):
    """Capability: `run_sequence` computes what `step`, scanned over time, computes."""

    def run_sequence(
        self,
        params: Params,
        carry: Carry,
        xs: Array,
        *,
        lengths: Array | None = None,
        reverse: bool = False,
        method: Any = None,
    ) -> tuple[Carry, Array]:
        """`seqjax.scan.scan(self.step, params, carry, xs, lengths=..., reverse=...)`.

        xs: `[t, b, d]` time-major; returns `(final_carry, ys: [t, b, h])`, ys zero
        past each length. `method` names how the linear recurrence runs (see
        `seqjax.recurrences.linear.Method`); None is the cell's own choice.
        """
        ...


@runtime_checkable
class TrainingNoise(Protocol):
    """Capability: noise in training, drawn once per sequence and step by the layer."""

    def draw_noise(self, key: Array, xs: Array) -> tuple[Any, Any]:
        """`(sequence_noise, step_noise)` for the time-major inputs `xs: [t, b, d]`:
        step_noise's leaves are `[t, b, ...]` (one slice per step, or None)."""
        ...

    def noisy_step(
        self, params: Params, carry: Carry, x: Array, noise: tuple[Any, Any]
    ) -> tuple[Carry, Array]:
        """A training step on `x: [b, d]`, given `(sequence_noise, this step's slice of step_noise)`."""
        ...


def offers(cell: Any, capability: type) -> bool:
    """Whether `cell` has `capability` (one of this module's protocols): its class has
    the attributes, and its configuration does not decline it (`cell.declines`)."""
    return isinstance(cell, capability) and capability not in getattr(cell, "declines", ())


def output_size(cell: Any) -> int:
    """The width of the cell's outputs y: `cell.output_size` where a cell has one (an
    LSTM with `proj_size`), else `cell.hidden_size`."""
    return getattr(cell, "output_size", cell.hidden_size)


def matmul(x: Array, w: Array) -> Array:
    """`x: [..., d] @ w: [d, n] -> [..., n]`, as one 2-D matmul: XLA:CPU differentiates
    a `[t, b, d] x [d, n]` contraction about 10x slower than the same product
    flattened to `[t*b, d]`."""
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


def input_projection(params: dict[str, Array], x: Array) -> Array:
    """`x @ w_ih + b_ih` of a `DenseRecurrence` cell: `[..., d] -> [..., g*h]`."""
    gx = matmul(x, params["w_ih"])
    return gx + params["b_ih"] if "b_ih" in params else gx


def recurrent_projection(params: dict[str, Array], h: Array) -> Array:
    """`h @ w_hh + b_hh` of a `DenseRecurrence` cell: `[..., h] -> [..., g*h]`."""
    gh = h @ params["w_hh"]
    return gh + params["b_hh"] if "b_hh" in params else gh


def check_cell(cell: Any, name: str = "cell") -> None:
    """Raises a TypeError naming what `cell` lacks of the `Cell` protocol."""
    missing = [m for m in ("hidden_size", "init", "initial_carry", "step") if not hasattr(cell, m)]
    if missing:
        raise TypeError(
            f"{name} must follow seqjax's Cell protocol (hidden_size, init, initial_carry, step); "
            f"{type(cell).__name__} has no {', '.join(missing)}"
        )
    size = cell.hidden_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"{name}.hidden_size must be a positive int; got {size!r}")
