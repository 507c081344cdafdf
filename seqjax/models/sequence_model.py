"""Task models: an input encoding, a backbone of any registered family, a linear readout.

Every family, the Transformer included, is a `Backbone`; `SequenceModel(family,
...)` puts one between the task's inputs and a per-step readout:

    model = SequenceModel("lstm", output_size=o, hidden_size=h, vocab_size=v)
    params = model.init(key)
    outputs = model.apply(params, inputs, lengths=None, key=None, deterministic=True)
    state = model.initial_state(batch_size)
    state, y_t = model.step(params, state, x_t)          # online: one step; equals apply
    state, ys = model.stream(params, state, chunk)       # a chunk of any size; equals apply
    tokens = model.generate(params, key, prompt, n)      # [b, n], one compiled lax.scan
    future = model.forecast(params, context, n)          # [b, n, d], predictions fed back

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
import inspect
import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import registry, validation
from seqjax.models.decoding import check_sampling, rollout, sample
from seqjax.models.layers import Recurrent
from seqjax.recurrences.scan import check_lengths
from seqjax.validation import check_positive_int

Array = jax.Array

READOUTS = ("steps", "last", "mean")


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
        what `step` carries, taken at each sequence's length.

        A backbone whose `apply` also takes `initial_state=` (a state as `step`
        carries it) continues from it, which `SequenceModel.stream` then uses;
        without it, streams run `step` by step."""
        ...

    def initial_state(self, batch_size: int, dtype: Any = jnp.float32) -> Any:
        """The state before the first step (causal backbones)."""
        ...

    def step(self, params: Any, state: Any, x: Array) -> tuple[Any, Array]:
        """One causal time step: `x [b, ...] -> (state, y [b, f])`; equals `apply`."""
        ...


def _distinct_buffers(state: Any) -> Any:
    """`state` with no buffer twice (an initial carry may reuse one zero array), as donation needs."""
    seen: set[int] = set()

    def distinct(leaf):
        if id(leaf) in seen:
            return jnp.array(leaf, copy=True)
        seen.add(id(leaf))
        return leaf

    return jax.tree.map(distinct, state)


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
      bidirectional: cell families: a second stack direction reads each sequence
        backwards (2h features per step). Backbone families have their own option
        (the Transformer's `causal=False`).
      readout: "steps": outputs `[b, t, o]`, one per step; or one output `[b, o]`
        per sequence (a classifier's): "last", the features at each sequence's
        last valid step (bidirectional: the forward direction's there, the
        backward direction's at step 0, each having read the whole sequence,
        as PyTorch's `h_n`); "mean", their mean over the valid steps (pooling).
        Only "steps" models step, stream, generate and forecast.

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
    bidirectional: bool = False
    readout: str = "steps"

    def __post_init__(self):
        family = registry.get(self.family)
        validation.check_bool(self.bidirectional, "bidirectional")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {', '.join(map(repr, READOUTS))}; got {self.readout!r}")
        if self.bidirectional and family.make_cell is None:
            raise ValueError(
                f"bidirectional=True needs a cell family; {self.family!r} builds its own backbone "
                "(a bidirectional one through its options, e.g. causal=False)"
            )
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
            return Recurrent(
                cell,
                input_size,
                self.num_layers,
                batch_first=True,
                dropout=self.dropout,
                bidirectional=self.bidirectional,
            )
        return family.make_backbone(
            self.hidden_size,
            self.num_layers,
            vocab_size=self.vocab_size,
            input_size=self.input_size,
            dropout=self.dropout,
            **options,
        )

    @property
    def _width(self) -> int:
        """The backbone's output width per direction (a projected LSTM's proj_size)."""
        return getattr(self.backbone, "output_size", self.hidden_size)

    @property
    def _features(self) -> int:
        return self._width * (2 if self.bidirectional else 1)

    def init(self, key: Array, dtype: Any = jnp.float32) -> dict[str, Any]:
        """Parameters `{"backbone": ..., "head": {"w": [f, o], "b": [o]}}`, f = h (2h
        bidirectional; the projected width for an LSTM with `proj_size`)."""
        k_backbone, k_head = jax.random.split(key)
        w = jax.nn.initializers.lecun_normal()(k_head, (self._features, self.output_size), dtype)
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

    def _pool(self, features: Array, lengths: Array | None) -> Array:
        """`[b, t, f] -> [b, f]` by `readout` ("last" or "mean"), over the valid steps."""
        b, t, _ = features.shape
        lengths = jnp.full((b,), t, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
        if self.readout == "mean":  # where, not a product: padding may hold anything, NaN too
            valid = (jnp.arange(t) < lengths[:, None])[:, :, None]
            total = jnp.sum(jnp.where(valid, features, 0), axis=1)
            return total / jnp.maximum(lengths, 1)[:, None].astype(features.dtype)
        last = jnp.take_along_axis(features, jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)[:, 0]
        if not self.bidirectional:
            return last
        return jnp.concatenate([last[:, : self._width], features[:, 0, self._width :]], axis=-1)

    def _check_steps(self, what: str) -> None:
        if self.readout != "steps":
            raise ValueError(
                f"{what} needs readout='steps' (an output per step); this model has readout={self.readout!r}"
            )

    def apply(
        self,
        params: dict[str, Any],
        inputs: Array,
        *,
        lengths: Array | None = None,
        key: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """inputs `[b, t]` tokens or `[b, t, d]` features -> outputs `[b, t, o]`
        (`[b, o]` with readout "last" or "mean").

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
        if self.readout != "steps":
            features = self._pool(features, lengths)
        return self._readout(params, features)

    def initial_state(self, batch_size: int, dtype: Any = jnp.float32, *, max_len: int | None = None) -> Any:
        """The backbone's state before the first step: the recurrent carry (fixed
        size), or the Transformer's empty KV cache with room for `max_len` steps (its
        own `max_len` by default; a fixed-size state ignores it)."""
        check_positive_int(batch_size, "batch_size")
        if max_len is not None and "max_len" in inspect.signature(self.backbone.initial_state).parameters:
            return self.backbone.initial_state(batch_size, dtype, max_len=max_len)
        return self.backbone.initial_state(batch_size, dtype)

    def step(
        self, params: dict[str, Any], state: Any, x: Array, *, donate_state: bool = False
    ) -> tuple[Any, Array]:
        """One causal time step: x `[b]` tokens or `[b, d]` features -> `(state, y [b, o])`.

        Stepping over a sequence from `initial_state` gives `apply`'s outputs. For an
        online loop outside `jit`: one compiled call per step, the state kept by the
        caller. `donate_state=True` lets XLA write the new state over the old one
        (the old one is then unusable): a KV cache is then updated in place instead
        of copied at every step.
        """
        self._check_steps("step")
        x = self._check_inputs(
            x, validation.check_params(self, params, "init() of this model"), None, one_step=True
        )
        validation.check_bool(donate_state, "donate_state")
        if not donate_state:
            return self._step(params, state, x)
        return self._step_in_place(params, _distinct_buffers(state), x)

    def _step_impl(self, params: dict[str, Any], state: Any, x: Array) -> tuple[Any, Array]:
        state, features = self.backbone.step(params["backbone"], state, self._encode(params, x))
        return state, self._readout(params, features)

    @functools.partial(jax.jit, static_argnums=0)
    def _step(self, params: dict[str, Any], state: Any, x: Array) -> tuple[Any, Array]:
        return self._step_impl(params, state, x)

    @functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
    def _step_in_place(self, params: dict[str, Any], state: Any, x: Array) -> tuple[Any, Array]:
        return self._step_impl(params, state, x)

    def stream(
        self,
        params: dict[str, Any],
        state: Any,
        inputs: Array,
        *,
        lengths: Array | None = None,
        key: Array | None = None,
        deterministic: bool = True,
    ) -> tuple[Any, Array]:
        """Continues each sequence from `state` by a chunk of any length.

        Feeding a stream chunk by chunk, the state carried, gives the outputs of one
        pass over the whole stream (and of `step` at every position).

        Args:
          params: from `init`.
          state: from `initial_state`, `step`, or a previous `stream`.
          inputs: `[b, t]` tokens or `[b, t, d]` features, the chunk.
          lengths: optional `[b]` valid lengths within the chunk; each sequence's
            state stops at its own length.
          key, deterministic: dropout, as in `apply` (training on windows: truncated BPTT).

        Returns:
          `(state, outputs)`: the state after each sequence's chunk, outputs `[b, t, o]`
          (zero past a length).
        """
        self._check_steps("stream")
        dtype = validation.check_params(self, params, "init() of this model")
        inputs = self._check_inputs(inputs, dtype, lengths, one_step=False)
        if not self._continues_state and self.dropout > 0 and not deterministic:
            raise ValueError(
                f"the {self.family!r} backbone's apply takes no initial_state, so streams run "
                "step by step, without dropout: pass deterministic=True"
            )
        return self._stream(params, state, inputs, lengths, key, deterministic)

    @functools.cached_property
    def _continues_state(self) -> bool:
        return "initial_state" in inspect.signature(self.backbone.apply).parameters

    def _stream(self, params, state, inputs, lengths, key=None, deterministic=True):
        encoded = self._encode(params, inputs)
        if self._continues_state:
            features, state = self.backbone.apply(
                params["backbone"],
                encoded,
                initial_state=state,
                lengths=lengths,
                key=key,
                deterministic=deterministic,
            )
            return state, self._readout(params, features)

        def one(state, step_input):  # the fallback: step by step, the state frozen past a length
            t, x = step_input
            new, y = self.backbone.step(params["backbone"], state, x)
            if lengths is None:
                return new, y
            valid = t < lengths
            new = jax.tree.map(
                lambda n, o: jnp.where(valid.reshape(-1, *(1,) * (n.ndim - 1)), n, o), new, state
            )
            return new, jnp.where(valid[:, None], y, 0).astype(y.dtype)

        steps = jnp.arange(encoded.shape[1])
        state, features = jax.lax.scan(one, state, (steps, jnp.swapaxes(encoded, 0, 1)))
        return state, self._readout(params, jnp.swapaxes(features, 0, 1))

    def generate(
        self,
        params: dict[str, Any],
        key: Array,
        prompt: Array,
        num_steps: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        lengths: Array | None = None,
    ) -> Array:
        """Samples a continuation of each prompt, the whole loop one compiled `lax.scan`.

        The model reads the prompt (its fast path: a parallel scan or attention
        over the chunk), then samples a token from its last outputs and feeds it
        back, `num_steps` times. Needs token inputs and outputs over the same
        vocabulary (`output_size == vocab_size`) and a causal backbone.

        Args:
          params: from `init`.
          key: PRNG key of the draws (unused when greedy).
          prompt: `[b, t]` tokens.
          num_steps: n, tokens to sample.
          temperature: logits are divided by it; 0 is greedy (the argmax).
          top_k: sample among each step's k most likely tokens only; None: all.
          lengths: optional `[b]` prompt lengths in [1, t]: each sequence continues
            after its own.

        Returns:
          `[b, n]` int32 tokens. Greedy, they are the argmax continuation that
          re-running `apply` on the growing sequence gives.
        """
        if self.vocab_size is None or self.output_size != self.vocab_size:
            raise ValueError(
                "generate needs token inputs and outputs over the same vocabulary (vocab_size == "
                f"output_size); this model has vocab_size={self.vocab_size}, output_size={self.output_size}"
                + ("; for feature inputs use forecast" if self.vocab_size is None else "")
            )
        self._check_steps("generate")
        check_sampling(temperature, top_k, self.vocab_size)
        validation.check_key(key)
        dtype = validation.check_params(self, params, "init() of this model")
        prompt = self._check_prompt(prompt, dtype, lengths, num_steps)
        state = self.initial_state(prompt.shape[0], dtype, max_len=prompt.shape[1] + num_steps)
        return self._generate(
            params, state, key, prompt, lengths, num_steps, temperature, top_k, temperature == 0
        )

    @functools.partial(jax.jit, static_argnums=(0, 6, 8, 9))
    def _generate(self, params, state, key, prompt, lengths, num_steps, temperature, top_k, greedy):
        return rollout(
            lambda state, xs, lengths: self._stream(params, state, xs, lengths),
            lambda state, x: self._step(params, state, x),
            lambda key, logits: sample(key, logits, temperature, top_k, greedy),
            state,
            prompt,
            lengths,
            num_steps,
            key,
        )

    def forecast(
        self, params: dict[str, Any], context: Array, num_steps: int, *, lengths: Array | None = None
    ) -> Array:
        """Rolls a regression model forward: each prediction becomes the next input.

        The model reads the context, then its output at the last step is taken as
        the next observation and fed back, `num_steps` times, in one compiled
        `lax.scan`. Needs feature inputs and outputs of the same size
        (`output_size == input_size`: the model predicts its next input).

        Args:
          params: from `init`.
          context: `[b, t, d]` observations.
          num_steps: n, steps to forecast.
          lengths: optional `[b]` context lengths in [1, t].

        Returns:
          `[b, n, d]`: the forecasts of steps t+1 ... t+n (of each length + 1 ...).
        """
        if self.input_size is None or self.output_size != self.input_size:
            raise ValueError(
                "forecast needs feature inputs and outputs of the same size (input_size == "
                f"output_size); this model has input_size={self.input_size}, output_size={self.output_size}"
                + ("; for tokens use generate" if self.input_size is None else "")
            )
        self._check_steps("forecast")
        dtype = validation.check_params(self, params, "init() of this model")
        context = self._check_prompt(context, dtype, lengths, num_steps)
        state = self.initial_state(context.shape[0], dtype, max_len=context.shape[1] + num_steps)
        return self._forecast(params, state, context, lengths, num_steps)

    @functools.partial(jax.jit, static_argnums=(0, 5))
    def _forecast(self, params, state, context, lengths, num_steps):
        return rollout(
            lambda state, xs, lengths: self._stream(params, state, xs, lengths),
            lambda state, x: self._step(params, state, x),
            lambda _, y: y,
            state,
            context,
            lengths,
            num_steps,
            jax.random.key(0),  # unused: the rollout is deterministic
        )

    def _check_prompt(self, prompt: Any, dtype: Any, lengths: Any, num_steps: Any) -> Array:
        check_positive_int(num_steps, "num_steps")
        prompt = self._check_inputs(prompt, dtype, lengths, one_step=False)
        layout = "[batch, time]" if self.vocab_size is not None else f"[batch, time, {self.input_size}]"
        if prompt.ndim != (2 if self.vocab_size is not None else 3) or prompt.shape[1] == 0:
            raise ValueError(f"the prompt must have shape {layout} with time >= 1; got {prompt.shape}")
        if lengths is not None and validation.is_concrete(lengths) and np.asarray(lengths).size:
            if np.asarray(lengths).min() < 1:
                raise ValueError(
                    f"lengths must be >= 1 (a continuation starts from a prompt's last step); got {lengths}"
                )
        return prompt
