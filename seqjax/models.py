"""Sequence models for the tasks: input encoding, a backbone, a linear readout.

Every model maps a batch-first input to per-step outputs with one interface:

    params = model.init(key)
    outputs = model.apply(params, inputs, lengths=None, key=None, deterministic=True)

inputs: `[b, t]` int tokens (with `vocab_size`) or `[b, t, d]` features (with
`input_size`); outputs: `[b, t, o]` (`output_size` logits or regression values).
Recurrent backbones read tokens one-hot, so their input weights act as the
embedding; the Transformer has its own embedding and positions.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from seqjax.cells import as_enum
from seqjax.layers import GRU, LSTM, RNN
from seqjax.transformer import Transformer

Array = jax.Array


class Kind(enum.Enum):
    """The backbones an experiment can compare."""

    RNN = "rnn"
    LSTM = "lstm"
    GRU = "gru"
    TRANSFORMER = "transformer"


def count_params(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


@dataclasses.dataclass(frozen=True)
class SequenceModel:
    """A backbone between an input encoding and a per-step linear readout.

    Args:
      kind: "rnn" (tanh), "lstm", "gru" or "transformer" (or a `Kind`).
      output_size: o, outputs per step.
      hidden_size: h of the recurrent layers; d_model of the Transformer.
      vocab_size: token inputs `[b, t]` in [0, v); or
      input_size: feature inputs `[b, t, d]`. Exactly one of the two.
      num_layers: layers of the backbone.
      num_heads: attention heads (Transformer only).
      causal: Transformer attends to the past only (the recurrent layers are
        always causal: they run forward in time).
      positional: the Transformer's positions; see `seqjax.transformer.Positional`.
      dropout: between recurrent layers / inside the Transformer.
      nonlinearity: of the vanilla RNN, "tanh" or "relu".
      forget_bias: initial forget-gate bias of the LSTM (1.0, as Gers et al. 2000
        and Jozefowicz et al. 2015 advise, so that memory is kept from the start);
        None keeps PyTorch's uniform draw.
    """

    kind: Kind | str
    output_size: int
    hidden_size: int
    vocab_size: int | None = None
    input_size: int | None = None
    num_layers: int = 1
    num_heads: int = 4
    causal: bool = True
    positional: str = "rope"
    dropout: float = 0.0
    forget_bias: float | None = 1.0
    nonlinearity: str = "tanh"

    def __post_init__(self):
        if (self.vocab_size is None) == (self.input_size is None):
            raise ValueError("give exactly one of vocab_size (token inputs) and input_size (features)")
        self.backbone  # noqa: B018 -- validates the backbone's options now

    @functools.cached_property
    def kind_enum(self) -> Kind:
        return as_enum(Kind, self.kind, "kind")

    @functools.cached_property
    def backbone(self) -> RNN | LSTM | GRU | Transformer:
        if self.kind_enum is Kind.TRANSFORMER:
            return Transformer(
                self.hidden_size,
                self.num_heads,
                self.num_layers,
                vocab_size=self.vocab_size,
                input_size=self.input_size,
                dropout=self.dropout,
                causal=self.causal,
                positional=self.positional,
            )
        layer = {Kind.RNN: RNN, Kind.LSTM: LSTM, Kind.GRU: GRU}[self.kind_enum]
        options = {
            Kind.RNN: {"nonlinearity": self.nonlinearity},
            Kind.LSTM: {"forget_bias": self.forget_bias},
            Kind.GRU: {},
        }[self.kind_enum]
        return layer(
            self.vocab_size or self.input_size,
            self.hidden_size,
            self.num_layers,
            batch_first=True,
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

    def apply(
        self,
        params: dict[str, Any],
        inputs: Array,
        *,
        lengths: Array | None = None,
        key: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """inputs `[b, t]` tokens or `[b, t, d]` features -> outputs `[b, t, o]`."""
        if self.kind_enum is Kind.TRANSFORMER:
            features = self.backbone.apply(
                params["backbone"], inputs, lengths=lengths, key=key, deterministic=deterministic
            )
        else:
            if self.vocab_size is not None:
                inputs = jax.nn.one_hot(inputs, self.vocab_size, dtype=params["head"]["w"].dtype)
            features, _ = self.backbone.apply(
                params["backbone"], inputs, lengths=lengths, key=key, deterministic=deterministic
            )
        return features @ params["head"]["w"] + params["head"]["b"]
