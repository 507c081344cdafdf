"""Task models: an input encoding, a backbone of any registered family, a linear readout.

Every family, the Transformer included, is a `Backbone`; `SequenceModel(family,
...)` puts one between the task's inputs and a per-step readout:

    model = SequenceModel("lstm", output_size=o, hidden_size=h, vocab_size=v)
    params = model.init(key)
    outputs = model.apply(params, inputs, lengths=None, key=None, deterministic=True)
    state = model.initial_state(batch_size)
    state, y_t = model.step(params, state, x_t)          # streaming; equals apply

inputs: `[b, t]` int tokens (with `vocab_size`) or `[b, t, d]` features (with
`input_size`); outputs: `[b, t, o]` (`output_size` logits or regression
values); x_t: `[b]` tokens or `[b, d]` features; y_t: `[b, o]`. Cell families
run as a causal `seqjax.Recurrent` stack and read tokens one-hot, so their input
weights act as the embedding; backbone families (the Transformer) embed tokens
themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from seqjax import registry, validation
from seqjax.models.layers import Recurrent
from seqjax.recurrences.scan import check_lengths
from seqjax.validation import check_positive_int

Array = jax.Array


@runtime_checkable
class Backbone(Protocol):
    """What every family's backbone does (batch-first; f = its output features).

    `Recurrent` layers (batch_first) and the `Transformer` are backbones; a
    family registered with `seqjax.register_backbone` builds one.
    """

    def init(self, key: Array, dtype: Any = jnp.float32) -> Any:
        """Parameters."""
        ...

    def apply(
        self,
        params: Any,
        inputs: Array,
        *,
        lengths: Array | None = None,
        key: Array | None = None,
        deterministic: bool = True,
    ) -> tuple[Array, Any]:
        """`inputs [b, t, ...] -> (outputs [b, t, f], final_state)`; the final state is
        what `step` carries, taken at each sequence's length."""
        ...

    def initial_state(self, batch_size: int, dtype: Any = jnp.float32) -> Any:
        """The state before the first step (causal backbones)."""
        ...

    def step(self, params: Any, state: Any, x: Array) -> tuple[Any, Array]:
        """One causal time step: `x [b, ...] -> (state, y [b, f])`; equals `apply`."""
        ...


def count_params(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


@dataclasses.dataclass(frozen=True)
class SequenceModel:
    """A backbone between an input encoding and a per-step linear readout.

    Args:
      family: a registered family (`seqjax.registry.names()`): "rnn", "lstm",
        "gru", "transformer", or one a user registered.
      output_size: o, outputs per step.
      hidden_size: h, the backbone's width (d_model of the Transformer).
      vocab_size: token inputs `[b, t]` in [0, v); or
      input_size: feature inputs `[b, t, d]`. Exactly one of the two.
      num_layers: layers of the backbone.
      dropout: between recurrent layers / inside the Transformer.
      options: the family's own options, the keyword arguments of its factory:
        `{"nonlinearity": "relu"}` (rnn), `{"forget_bias": None}` (lstm, whose
        forget gate starts at 1.0 otherwise), `{"num_heads": 2, "positional":
        "learned", "causal": False}` (transformer). A mapping, kept as sorted
        pairs (so that models are hashable); unknown options raise here.

    >>> model = SequenceModel("gru", output_size=3, hidden_size=8, vocab_size=5)
    >>> params = model.init(jax.random.key(0))
    >>> model.apply(params, jnp.zeros((2, 7), jnp.int32)).shape
    (2, 7, 3)
    """

    family: str
    output_size: int
    hidden_size: int
    vocab_size: int | None = None
    input_size: int | None = None
    num_layers: int = 1
    dropout: float = 0.0
    options: Mapping[str, Any] | tuple[tuple[str, Any], ...] | None = ()

    def __post_init__(self):
        family = registry.get(self.family)
        options = dict(self.options or ())
        family.check_options(options)
        for name, value in options.items():
            try:
                hash(value)
            except TypeError:
                raise TypeError(
                    f"option {name!r} must be hashable (a tuple, not a list); got {value!r}"
                ) from None
        object.__setattr__(self, "options", tuple(sorted(options.items())))
        for name in ("output_size", "hidden_size", "num_layers"):
            check_positive_int(getattr(self, name), name)
        if (self.vocab_size is None) == (self.input_size is None):
            raise ValueError("give exactly one of vocab_size (token inputs) and input_size (features)")
        name = "input_size" if self.vocab_size is None else "vocab_size"
        check_positive_int(getattr(self, name), name)
        self.backbone  # noqa: B018 -- validates the family's options now

    @property
    def _reads_one_hot(self) -> bool:
        # A cell family's Recurrent stack reads features; tokens become one-hot vectors.
        return self.vocab_size is not None and registry.get(self.family).make_cell is not None

    @functools.cached_property
    def backbone(self) -> Backbone:
        family, options = registry.get(self.family), dict(self.options)
        if family.make_cell is not None:
            cell = family.make_cell(self.hidden_size, **options)
            input_size = self.vocab_size or self.input_size
            return Recurrent(cell, input_size, self.num_layers, batch_first=True, dropout=self.dropout)
        return family.make_backbone(
            self.hidden_size,
            self.num_layers,
            vocab_size=self.vocab_size,
            input_size=self.input_size,
            dropout=self.dropout,
            **options,
        )

    def init(self, key: Array, dtype: Any = jnp.float32) -> dict[str, Any]:
        """Parameters `{"backbone": ..., "head": {"w": [h, o], "b": [o]}}`."""
        k_backbone, k_head = jax.random.split(key)
        w = jax.nn.initializers.lecun_normal()(k_head, (self.hidden_size, self.output_size), dtype)
        return {
            "backbone": self.backbone.init(k_backbone, dtype),
            "head": {"w": w, "b": jnp.zeros((self.output_size,), dtype)},
        }

    def _check_inputs(self, inputs: Any, dtype: Any, lengths: Any, *, one_step: bool) -> Array:
        """Tokens (integers in [0, vocab_size) where valid) or features (cast to `dtype`)."""
        if self.vocab_size is None:
            return validation.as_floats(inputs, dtype, "inputs")
        tokens = validation.check_tokens(inputs, self.vocab_size, values=False)
        if not one_step and tokens.ndim == 2:
            lengths = check_lengths(lengths, *tokens.shape)
        return validation.check_tokens(tokens, self.vocab_size, None if one_step else lengths)

    def _encode(self, params: dict[str, Any], inputs: Array) -> Array:
        if self._reads_one_hot:
            return jax.nn.one_hot(inputs, self.vocab_size, dtype=params["head"]["w"].dtype)
        return inputs

    def _readout(self, params: dict[str, Any], features: Array) -> Array:
        return features @ params["head"]["w"] + params["head"]["b"]

    def apply(
        self,
        params: dict[str, Any],
        inputs: Array,
        *,
        lengths: Array | None = None,
        key: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """inputs `[b, t]` tokens or `[b, t, d]` features -> outputs `[b, t, o]`.

        Padded positions (past `lengths`) may hold anything: they reach no valid
        output and no gradient. Inside `jit` token values are not checked (an
        out-of-range token reads as a zero vector for cell families).
        """
        inputs = self._check_inputs(
            inputs, validation.check_params(self, params, "init() of this model"), lengths, one_step=False
        )
        features, _ = self.backbone.apply(
            params["backbone"],
            self._encode(params, inputs),
            lengths=lengths,
            key=key,
            deterministic=deterministic,
        )
        return self._readout(params, features)

    def initial_state(self, batch_size: int, dtype: Any = jnp.float32) -> Any:
        """The backbone's state before the first step (the recurrent carry, or the
        Transformer's empty KV cache)."""
        return self.backbone.initial_state(batch_size, dtype)

    def step(self, params: dict[str, Any], state: Any, x: Array) -> tuple[Any, Array]:
        """One causal time step: x `[b]` tokens or `[b, d]` features -> `(state, y [b, o])`.

        Stepping over a sequence from `initial_state` gives `apply`'s outputs.
        """
        x = self._check_inputs(
            x, validation.check_params(self, params, "init() of this model"), None, one_step=True
        )
        return self._step(params, state, x)

    @functools.partial(jax.jit, static_argnums=0)
    def _step(self, params: dict[str, Any], state: Any, x: Array) -> tuple[Any, Array]:
        state, features = self.backbone.step(params["backbone"], state, self._encode(params, x))
        return state, self._readout(params, features)
