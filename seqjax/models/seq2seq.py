"""Encoder-decoder models: a source sequence in, a target sequence out, as in translation.

    model = seq2seq.build("gru", vocab_size=v, hidden_size=h, source_steps=S, target_steps=T)
    params = model.init(key)
    logits = model.apply(params, inputs)                 # teacher forcing: [b, S + T, v]
    tokens = seq2seq.greedy(model, params, source)       # [b, T]
    tokens, scores = seq2seq.beam_search(model, params, source, width=4)
    weights = model.attention(params, source, tokens)    # [b, T, S] (cross-attention)

Token ids: `PAD` (0) fills sequences past their end, `BOS` (1) starts the decoder's
input, `EOS` (2) ends a target. A batch's `inputs` `[b, S + T]` int32 pack the
source, left-aligned and padded to S, then the decoder's inputs, BOS and the
target shifted right, padded to T; `apply`'s logits at position S + i predict
target token i (those at the source positions are zeros), so a
`seqjax.data.datasets.Dataset` whose mask scores only the target positions trains
an encoder-decoder with `seqjax.train` as it trains any model.

Every model has `start(params, source) -> state` and `decode_step(params, state,
token [b]) -> (state, logits [b, v], weights [b, S])`, which decoding calls:

- `RecurrentEncoderDecoder` (any cell family): a bidirectional encoder and a
  decoder cell whose input at each step is the previous token's embedding and a
  context: with `attention=True` Bahdanau et al. (2015)'s additive attention over
  the encoder's outputs, queried by the decoder's previous output; with
  `attention=False` the fixed summary of the source, the two directions' final
  outputs, as the only bridge (Cho et al. 2014's RNN encoder-decoder).
- `TransformerEncoderDecoder` (Vaswani et al. 2017, pre-LayerNorm, sinusoidal
  positions): encoder blocks, then decoder blocks of causal self-attention,
  cross-attention and MLP. Its decoding step reruns the decoder over the tokens
  so far (T is short in these tasks).

`build(family, ...)` picks the recurrent model for a cell family and the model
registered with `register` otherwise ("transformer").
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from seqjax import registry
from seqjax.models.layers import Recurrent
from seqjax.models.transformer import Transformer, attention, layer_norm, sinusoidal
from seqjax.recurrences import protocol
from seqjax.validation import check_positive_int

Array = jax.Array
Params = Any

PAD, BOS, EOS = 0, 1, 2


def source_lengths(source: Array) -> Array:
    """`[b]` int32: the tokens before each source's first PAD (`source: [b, S]`)."""
    return jnp.sum(jnp.cumprod(source != PAD, axis=1), axis=1).astype(jnp.int32)


def _dense(key: Array, shape: tuple[int, int], dtype: Any) -> Array:
    return jax.nn.initializers.lecun_normal()(key, shape, dtype)


class _EncoderDecoder:
    """The packed-input checks and the teacher-forced `apply` every model shares."""

    vocab_size: int
    source_steps: int
    target_steps: int

    @property
    def output_size(self) -> int:
        return self.vocab_size

    input_size = None

    def _check_tokens(self, tokens: Any, steps: int, name: str) -> Array:
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] != steps or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"{name} must be [b, {steps}] int tokens; got {tokens.shape} {tokens.dtype}")
        return tokens

    def apply(
        self,
        params: Params,
        inputs: Array,
        *,
        lengths: Array | None = None,
        key: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """Teacher forcing: `inputs [b, S + T]` (source, then BOS and the shifted target)
        -> logits `[b, S + T, v]`, zeros at the S source positions. `lengths`, `key`
        and `deterministic` are accepted for `seqjax.train` and unused (no dropout)."""
        inputs = self._check_tokens(inputs, self.source_steps + self.target_steps, "inputs")
        source, decoder_inputs = inputs[:, : self.source_steps], inputs[:, self.source_steps :]
        logits, _ = self._teacher_forced(params, source, decoder_inputs)
        zeros = jnp.zeros((logits.shape[0], self.source_steps, logits.shape[2]), logits.dtype)
        return jnp.concatenate([zeros, logits], axis=1)

    def attention(self, params: Params, source: Array, targets: Array) -> Array:
        """`[b, T, S]` cross-attention weights while reading `targets [b, T]` (the
        decoder's inputs are BOS and `targets[:, :-1]`); each row sums to 1 over the
        source's valid positions (the recurrent model without attention: zeros)."""
        source = self._check_tokens(source, self.source_steps, "source")
        targets = self._check_tokens(targets, self.target_steps, "targets")
        decoder_inputs = jnp.concatenate([jnp.full_like(targets[:, :1], BOS), targets[:, :-1]], axis=1)
        return self._teacher_forced(params, source, decoder_inputs)[1]


class _RecurrentState(NamedTuple):
    carry: Any  # the decoder cell's carry
    previous: Array  # [b, h] the decoder's last output (the attention's query)
    memory: Array  # [b, S, 2h] the encoder's outputs
    keys: Array  # [b, S, a] memory @ w_k, computed once
    lengths: Array  # [b]
    summary: Array  # [b, 2h]


@dataclasses.dataclass(frozen=True)
class RecurrentEncoderDecoder(_EncoderDecoder):
    """A bidirectional recurrent encoder and a recurrent decoder, with or without
    additive attention (see the module docstring).

    Args:
      family: a registered cell family ("rnn", "lstm", "gru", ...).
      vocab_size: v, one vocabulary for source and target (PAD, BOS, EOS included).
      hidden_size: h, the width of each encoder direction, the decoder, the
        embeddings and the attention.
      source_steps, target_steps: S and T, the packed inputs' widths.
      attention: Bahdanau's attention (True) or the fixed summary (False).
      options: the cell family's options, as sorted `(name, value)` pairs.
    """

    family: str
    vocab_size: int
    hidden_size: int
    source_steps: int
    target_steps: int
    use_attention: bool = True
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "source_steps", "target_steps"):
            check_positive_int(getattr(self, name), name)
        if registry.get(self.family).make_cell is None:
            raise ValueError(f"family {self.family!r} is not a cell family; use build()")

    @functools.cached_property
    def cell(self) -> Any:
        return registry.get(self.family).make_cell(self.hidden_size, **dict(self.options))

    @functools.cached_property
    def encoder(self) -> Recurrent:
        return Recurrent(self.cell, self.hidden_size, bidirectional=True, batch_first=True)

    @property
    def _width(self) -> int:
        return protocol.output_size(self.cell)

    def init(self, key: Array, dtype: Any = jnp.float32) -> Params:
        """Embeddings `[v, h]`, encoder, decoder cell (input h + 2w, w the cell's
        output width), attention with `use_attention` (`w_q [w, h]`, `w_k [2w, h]`, `v [h]`), the first
        query from the summary (`w_init [2w, w]`) and the readout from the decoder's
        output, the context and the embedding (`w_out [3w + h, v]`)."""
        h, w, v = self.hidden_size, self._width, self.vocab_size
        keys = jax.random.split(key, 8)
        params = {
            "embed": jax.random.normal(keys[0], (v, h), dtype),
            "encoder": self.encoder.init(keys[1], dtype),
            "decoder": self.cell.init(keys[2], h + 2 * w, dtype),
            "w_init": _dense(keys[6], (2 * w, w), dtype),
            "b_init": jnp.zeros((w,), dtype),
            "w_out": _dense(keys[7], (3 * w + h, v), dtype),
            "b_out": jnp.zeros((v,), dtype),
        }
        if self.use_attention:
            params["attention"] = {
                "w_q": _dense(keys[3], (w, h), dtype),
                "w_k": _dense(keys[4], (2 * w, h), dtype),
                "b": jnp.zeros((h,), dtype),
                "v": _dense(keys[5], (h, 1), dtype)[:, 0],
            }
        return params

    def start(self, params: Params, source: Array) -> _RecurrentState:
        """Encodes `source [b, S]` (PAD after each length) into the decoder's first state."""
        lengths = source_lengths(source)
        memory, _ = self.encoder.apply(params["encoder"], params["embed"][source], lengths=lengths)
        w = self._width
        last = jnp.take_along_axis(memory[..., :w], jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)[:, 0]
        summary = jnp.concatenate([last, memory[:, 0, w:]], axis=-1)  # each direction's final output
        previous = jnp.tanh(summary @ params["w_init"] + params["b_init"])
        keys = memory @ params["attention"]["w_k"] if self.use_attention else memory[..., :0]
        carry = self.cell.initial_carry((source.shape[0],), memory.dtype)
        return _RecurrentState(carry, previous, memory, keys, lengths, summary)

    def decode_step(
        self, params: Params, state: _RecurrentState, token: Array
    ) -> tuple[_RecurrentState, Array, Array]:
        """Reads `token [b]` (the previous output token, BOS first): `(state, logits
        [b, v], attention weights [b, S])`."""
        embedded = params["embed"][token]
        if self.use_attention:
            a = params["attention"]
            scores = jnp.tanh(state.keys + (state.previous @ a["w_q"] + a["b"])[:, None]) @ a["v"]  # [b, S]
            valid = jnp.arange(self.source_steps) < state.lengths[:, None]
            weights = jax.nn.softmax(jnp.where(valid, scores, -jnp.inf), axis=-1)
            context = jnp.einsum("bs,bsf->bf", weights, state.memory)
        else:
            weights, context = jnp.zeros(state.memory.shape[:2], state.memory.dtype), state.summary
        carry, y = self.cell.step(params["decoder"], state.carry, jnp.concatenate([embedded, context], -1))
        logits = jnp.concatenate([y, context, embedded], -1) @ params["w_out"] + params["b_out"]
        return state._replace(carry=carry, previous=y), logits, weights

    @functools.partial(jax.jit, static_argnums=0)
    def _teacher_forced(self, params: Params, source: Array, decoder_inputs: Array) -> tuple[Array, Array]:
        def step(state, token):
            state, logits, weights = self.decode_step(params, state, token)
            return state, (logits, weights)

        _, (logits, weights) = jax.lax.scan(step, self.start(params, source), decoder_inputs.T)
        return jnp.swapaxes(logits, 0, 1), jnp.swapaxes(weights, 0, 1)


class _TransformerState(NamedTuple):
    memory: Array  # [b, S, m]
    lengths: Array  # [b]
    tokens: Array  # [b, T] the decoder's inputs so far
    position: Array  # [] int32, the next one


@dataclasses.dataclass(frozen=True)
class TransformerEncoderDecoder(_EncoderDecoder):
    """Vaswani et al. (2017)'s encoder-decoder, pre-LayerNorm (see the module docstring).

    Args:
      vocab_size, source_steps, target_steps: as `RecurrentEncoderDecoder`'s.
      hidden_size: m, d_model.
      num_layers: encoder blocks, and as many decoder blocks.
      num_heads: attention heads; must divide m.
      mlp_dim: the MLP's width (4m if None).
    """

    vocab_size: int
    hidden_size: int
    source_steps: int
    target_steps: int
    num_layers: int = 2
    num_heads: int = 4
    mlp_dim: int | None = None

    def __post_init__(self):
        for name in ("vocab_size", "source_steps", "target_steps"):
            check_positive_int(getattr(self, name), name)
        self.encoder  # noqa: B018 - its checks (widths, heads) run now

    @functools.cached_property
    def encoder(self) -> Transformer:
        return Transformer(
            self.hidden_size,
            self.num_heads,
            self.num_layers,
            vocab_size=self.vocab_size,
            mlp_dim=self.mlp_dim,
            causal=False,
            positional="sinusoidal",
        )

    def init(self, key: Array, dtype: Any = jnp.float32) -> Params:
        """The encoder (`Transformer.init`), decoder blocks (self- and cross-attention
        `[m, n, k]` projections, MLP, three LayerNorms each) and the readout `[m, v]`."""
        m, n = self.hidden_size, self.num_heads
        k, f = m // n, self.mlp_dim or 4 * m
        key_enc, key_out, *block_keys = jax.random.split(key, 2 + self.num_layers)
        heads = jax.nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
        merge = jax.nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)

        def norm():
            return {"scale": jnp.ones((m,), dtype), "bias": jnp.zeros((m,), dtype)}

        def attention_params(key):
            keys = jax.random.split(key, 4)
            p = {f"w{c}": heads(kc, (m, n, k), dtype) for c, kc in zip("qkv", keys, strict=False)}
            return p | {"wo": merge(keys[3], (n, k, m), dtype)}

        def block(key):
            ks, kc, k1, k2 = jax.random.split(key, 4)
            return {
                "ln1": norm(),
                "self": attention_params(ks),
                "ln2": norm(),
                "cross": attention_params(kc),
                "ln3": norm(),
                "w1": _dense(k1, (m, f), dtype),
                "b1": jnp.zeros((f,), dtype),
                "w2": _dense(k2, (f, m), dtype),
                "b2": jnp.zeros((m,), dtype),
            }

        return {
            "encoder": self.encoder.init(key_enc, dtype),
            "blocks": [block(bk) for bk in block_keys],
            "ln_f": norm(),
            "w_out": _dense(key_out, (m, self.vocab_size), dtype),
            "b_out": jnp.zeros((self.vocab_size,), dtype),
        }

    def _decode(self, params: Params, memory: Array, lengths: Array, tokens: Array) -> tuple[Array, Array]:
        """The decoder over `tokens [b, T]`: logits `[b, T, v]` and the last block's
        cross-attention weights `[b, T, S]`, averaged over heads."""
        x = params["encoder"]["embed"]["tokens"][tokens]
        x = x + sinusoidal(jnp.arange(tokens.shape[1]), self.hidden_size, x.dtype)
        valid = jnp.arange(self.source_steps) < lengths[:, None]  # [b, S]
        weights = None
        for p in params["blocks"]:
            h = layer_norm(p["ln1"], x)
            q, k, v = (jnp.einsum("btm,mnk->btnk", h, p["self"][f"w{c}"]) for c in "qkv")
            x = x + jnp.einsum("btnk,nkm->btm", attention(q, k, v, is_causal=True), p["self"]["wo"])
            h = layer_norm(p["ln2"], x)
            q = jnp.einsum("btm,mnk->btnk", h, p["cross"]["wq"])
            k, v = (jnp.einsum("bsm,mnk->bsnk", memory, p["cross"][f"w{c}"]) for c in "kv")
            scores = jnp.einsum("btnk,bsnk->bnts", q, k) / math.sqrt(q.shape[-1])
            weights = jax.nn.softmax(jnp.where(valid[:, None, None], scores, -jnp.inf), axis=-1)
            x = x + jnp.einsum("bnts,bsnk,nkm->btm", weights, v, p["cross"]["wo"])
            h = jax.nn.gelu(layer_norm(p["ln3"], x) @ p["w1"] + p["b1"])
            x = x + h @ p["w2"] + p["b2"]
        logits = layer_norm(params["ln_f"], x) @ params["w_out"] + params["b_out"]
        return logits, weights.mean(axis=1)

    def _encode(self, params: Params, source: Array) -> tuple[Array, Array]:
        lengths = source_lengths(source)
        return self.encoder.apply(params["encoder"], source, lengths=lengths)[0], lengths

    @functools.partial(jax.jit, static_argnums=0)
    def _teacher_forced(self, params: Params, source: Array, decoder_inputs: Array) -> tuple[Array, Array]:
        return self._decode(params, *self._encode(params, source), decoder_inputs)

    def start(self, params: Params, source: Array) -> _TransformerState:
        """Encodes `source [b, S]`; the decoder's buffer starts empty (PAD)."""
        memory, lengths = self._encode(params, source)
        tokens = jnp.full((source.shape[0], self.target_steps), PAD, source.dtype)
        return _TransformerState(memory, lengths, tokens, jnp.zeros((), jnp.int32))

    def decode_step(
        self, params: Params, state: _TransformerState, token: Array
    ) -> tuple[_TransformerState, Array, Array]:
        """Appends `token [b]` and reruns the decoder (causal: the earlier positions'
        outputs are unchanged): `(state, logits [b, v], weights [b, S])`."""
        tokens = jax.lax.dynamic_update_index_in_dim(
            state.tokens, token.astype(state.tokens.dtype), state.position, 1
        )
        logits, weights = self._decode(params, state.memory, state.lengths, tokens)
        at = functools.partial(jax.lax.dynamic_index_in_dim, index=state.position, axis=1, keepdims=False)
        return state._replace(tokens=tokens, position=state.position + 1), at(logits), at(weights)


_ENCODER_DECODERS: dict[str, Callable[..., Any]] = {}


def register(family: str, build_model: Callable[..., Any]) -> Callable[..., Any]:
    """Registers the encoder-decoder that `build` makes for a backbone family:
    `(vocab_size, hidden_size, source_steps, target_steps, **options) -> model`."""
    _ENCODER_DECODERS[family] = build_model
    return build_model


register("transformer", TransformerEncoderDecoder)


def build(
    family: str, *, vocab_size: int, hidden_size: int, source_steps: int, target_steps: int, **options: Any
) -> Any:
    """The encoder-decoder of `family`: `RecurrentEncoderDecoder` for a cell family
    (option `attention`, default True, and the cell's own options), else the model
    registered with `register`; a ValueError names an unknown family or option."""
    sizes = dict(
        vocab_size=vocab_size, hidden_size=hidden_size, source_steps=source_steps, target_steps=target_steps
    )
    if registry.get(family).make_cell is not None:
        attend = options.pop("attention", True)
        model = RecurrentEncoderDecoder(
            family, **sizes, use_attention=attend, options=tuple(sorted(options.items()))
        )
        model.cell  # noqa: B018 - unknown cell options fail here
        return model
    if family not in _ENCODER_DECODERS:
        raise ValueError(
            f"no encoder-decoder is registered for family {family!r}; cell families and "
            f"{', '.join(_ENCODER_DECODERS)} have one"
        )
    try:
        return _ENCODER_DECODERS[family](**sizes, **options)
    except TypeError as error:
        raise ValueError(f"{family}: {error}") from None


@functools.partial(jax.jit, static_argnums=(0,))
def _greedy(model: Any, params: Params, source: Array) -> Array:
    def step(carry, _):
        state, token, done = carry
        state, logits, _ = model.decode_step(params, state, token)
        token = jnp.where(done, PAD, jnp.argmax(logits, -1).astype(token.dtype))
        return (state, token, done | (token == EOS)), token

    b = source.shape[0]
    first = (model.start(params, source), jnp.full((b,), BOS, source.dtype), jnp.zeros((b,), bool))
    return jax.lax.scan(step, first, None, length=model.target_steps)[1].T


def greedy(model: Any, params: Params, source: Array) -> Array:
    """`[b, T]` int: each step's most probable token, fed back; PAD after EOS.

    Args:
      model: an encoder-decoder (`start`, `decode_step`, `source_steps`, `target_steps`).
      source: `[b, S]` int tokens, PAD after each length.
    """
    return _greedy(model, params, model._check_tokens(source, model.source_steps, "source"))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _beam_search(model: Any, params: Params, source: Array, width: int) -> tuple[Array, Array]:
    b, v, steps = source.shape[0], model.vocab_size, model.target_steps
    state = jax.tree.map(lambda x: jnp.repeat(x, width, axis=0) if x.ndim else x, model.start(params, source))
    scores = jnp.tile(jnp.where(jnp.arange(width) == 0, 0.0, -jnp.inf), (b, 1))  # one live beam at first
    # A finished beam continues with PAD at no cost, so that it keeps its score.
    after_end = jnp.where(jnp.arange(v) == PAD, 0.0, -jnp.inf)

    def step(carry, i):
        state, token, scores, done, tokens = carry
        state, logits, _ = model.decode_step(params, state, token)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1).reshape(b, width, v)
        logp = jnp.where(done[..., None], after_end, logp)
        scores, index = jax.lax.top_k((scores[..., None] + logp).reshape(b, width * v), width)
        beam, token = index // v, (index % v).astype(source.dtype)
        rows = (jnp.arange(b)[:, None] * width + beam).reshape(-1)
        state = jax.tree.map(lambda x: x[rows] if x.ndim else x, state)
        tokens = jnp.take_along_axis(tokens, beam[..., None], axis=1).at[:, :, i].set(token)
        done = jnp.take_along_axis(done, beam, axis=1) | (token == EOS)
        return (state, token.reshape(-1), scores, done, tokens), None

    first = (
        state,
        jnp.full((b * width,), BOS, source.dtype),
        scores,
        jnp.zeros((b, width), bool),
        jnp.full((b, width, steps), PAD, source.dtype),
    )
    (_, _, scores, _, tokens), _ = jax.lax.scan(step, first, jnp.arange(steps))
    return tokens[:, 0], scores[:, 0]


def beam_search(model: Any, params: Params, source: Array, width: int = 4) -> tuple[Array, Array]:
    """The `width` most probable continuations kept at each step; the best at the end.

    Scores are sums of log-probabilities (no length penalty: a finished beam keeps
    its score, continuing with PAD at no cost). Width 1 is greedy decoding.

    Args:
      model: an encoder-decoder (see `greedy`).
      source: `[b, S]` int tokens, PAD after each length.
      width: k >= 1 beams per example.

    Returns:
      `(tokens [b, T], scores [b])`: the best beam, PAD after EOS, and its log-probability.
    """
    check_positive_int(width, "width")
    return _beam_search(model, params, model._check_tokens(source, model.source_steps, "source"), width)
