"""A small pre-LayerNorm Transformer, as pure functions over a plain pytree.

It has the backbone interface of every family (`seqjax.models.sequence_model.Backbone`),
with batch-first inputs, so that the same model code and training loop run all of them:

    params = model.init(key)
    features, cache = model.apply(params, inputs, lengths=None, key=None, deterministic=True)
    cache = model.initial_state(batch_size)          # an empty KV cache
    cache, y_t = model.step(params, cache, x_t)       # one causal step; equals apply

The state that `step` carries is the KV cache; `apply` returns the cache of the
sequences it read, so `step` continues each sequence after its own length.
It is registered as the family "transformer" (`seqjax.registry`).

Shapes: b = batch, t = time, d = `input_size` (continuous inputs), v =
`vocab_size` (token inputs), m = `d_model`, n = `num_heads`, k = m // n (head
size), f = `mlp_dim`, s = `max_len` (cache or learned-position length).

    x = embed(inputs) (+ positions)                       # [b, t, m]
    for each block:
        x = x + dropout(attention(layer_norm(x)))         # pre-LN (Xiong et al. 2020)
        x = x + dropout(mlp(layer_norm(x)))               # gelu MLP
    y = layer_norm(x)                                     # [b, t, m]

Attention goes through `attention`: flash attention in one C++ call per pass on
CPU, and `jax.nn.dot_product_attention` (fused kernels where the platform has them)
elsewhere; padding comes from per-example lengths.
Attention weights are stored as Flax's `MultiHeadDotProductAttention` stores
them: `wq, wk, wv: [m, n, k]`, `bq, bk, bv: [n, k]`, `wo: [n, k, m]`, `bo: [m]`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import pathlib
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import registry, validation
from seqjax.recurrences import cpu_kernel
from seqjax.recurrences.scan import check_lengths
from seqjax.validation import as_enum, check_positive_int

Array = jax.Array
Params = dict[str, Any]


class Positional(enum.Enum):
    """How positions enter the model.

    LEARNED: a trained [s, m] table added to the embeddings (no extrapolation
    past `max_len`). SINUSOIDAL: the fixed table of Vaswani et al. 2017, added.
    ROPE: rotary embeddings of queries and keys (Su et al. 2021), so attention
    scores depend only on relative positions. NONE: no positional information
    (a causal model can still infer position).
    """

    LEARNED = "learned"
    SINUSOIDAL = "sinusoidal"
    ROPE = "rope"
    NONE = "none"


class KVCache(NamedTuple):
    """Keys and values of past steps, for step-by-step decoding.

    One array per layer, heads before positions: a decoding step writes each layer's
    cache in place (when donated) and reads it without a transpose.
    """

    k: tuple[Array, ...]  # L x [b, n, s, k]
    v: tuple[Array, ...]  # L x [b, n, s, k]
    position: Array  # [b], int32: per sequence, the next position to write


def sinusoidal(positions: Array, d_model: int, dtype: Any = jnp.float32) -> Array:
    """The fixed position code of Vaswani et al. 2017, sin and cos interleaved.

    Args:
      positions: integer positions of any shape `[...]`.
      d_model: m, even.
      dtype: of the result.

    Returns:
      `[..., m]`: feature 2i is sin(p / 10000^(2i/m)), feature 2i+1 its cos.
    """
    rates = jnp.exp(-math.log(10000.0) * jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model)
    angles = positions.astype(jnp.float32)[..., None] * rates  # [..., m/2]
    table = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # [..., m/2, 2]
    return table.reshape(*positions.shape, d_model).astype(dtype)


def _at_least_float32(dtype: Any) -> Any:
    return dtype if jnp.finfo(dtype).bits >= 32 else jnp.float32


def rope(x: Array, positions: Array, base: float = 10000.0) -> Array:
    """Rotary position embedding (Su et al. 2021), half-split layout.

    Args:
      x: `[b, t, n, k]` queries or keys, k even.
      positions: `[t]` or `[b, t]` integer positions.
      base: frequency base.

    Returns:
      `x` with each pair (x[..., i], x[..., i + k/2]) rotated by `positions * base^(-2i/k)`.
    """
    half = x.shape[-1] // 2
    # Angles grow with position: compute them in at least float32.
    dtype = _at_least_float32(x.dtype)
    freqs = base ** (-jnp.arange(half, dtype=dtype) / half)  # [k/2]
    angles = positions.astype(dtype)[..., None] * freqs  # [(b,) t, k/2]
    angles = jnp.broadcast_to(angles, (*x.shape[:2], half))[:, :, None, :]  # [b, t, 1, k/2]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    x1, x2 = x[..., :half].astype(dtype), x[..., half:].astype(dtype)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def layer_norm(p: Params, x: Array, eps: float = 1e-6) -> Array:
    """LayerNorm over the last axis of `x [..., m]` with `p["scale"]`, `p["bias"]` `[m]`."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _dropout(x: Array, rate: float, key: Array | None) -> Array:
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


SMALL_SCORES = 2**18  # b * n * t * s at or below which the tiles do not pay (measured on CPU)
TILE_SCORES = 2**18  # scores per block of queries, at most: 1 MiB of float32, kept in cache


def attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    is_causal: bool = False,
    key_value_seq_lengths: Array | None = None,
    block_size: int | None = None,
) -> Array:
    """Softmax attention over whole sequences: `jax.nn.dot_product_attention`'s
    arguments and results, fused on CPU.

    On CPU, XLA writes `jax.nn.dot_product_attention`'s `[b, n, t, s]` scores to
    memory (64 MB a layer at b=64, n=4, t=256), and with a head size of 32 that
    traffic, not arithmetic, sets the time. Flash attention (Dao et al. 2022) keeps
    them in cache: each block of queries attends to the keys it can see (a causal
    block skips every later key: half the work) with a running softmax, the forward
    pass keeps each query's log-sum-exp, and the backward pass recomputes each
    block's probabilities from it and forms the gradients block by block. It runs:

    - float32 and float64 on CPU: as one C++ call per pass
      (`seqjax/recurrences/kernels/attention_cpu.cc`), each (batch, head) pair on
      one thread, reading the `[b, t, n, k]` layout in place (no head transposes);
      `kernel_unavailable_reason` says where it cannot;
    - otherwise on CPU (bfloat16, no C++ compiler, or `block_size` given): as XLA
      ops, a `lax.map` over tiles of a few (batch, head) pairs whose blocks' scores
      stay in cache (at most `TILE_SCORES`), every backward product a plain matmul
      (XLA:CPU hands a transposed left operand to a slower kernel); below 2^18
      scores the tiles' loop costs more than it saves (3.5 against 2.3 ms at b=64,
      t=24, n=4) and `jax.nn.dot_product_attention` runs instead;
    - on other backends, which have fused kernels: `jax.nn.dot_product_attention`.

    Measured against `jax.nn.dot_product_attention` and PyTorch's
    `scaled_dot_product_attention` in one process: see the README's "The
    Transformer on CPU".

    Differentiable in reverse mode (`jax.grad`, `jax.vjp`) only, as fused attention
    kernels are; for forward mode (`jax.jvp`, `jax.jacfwd`) give the model
    `attention_fn=jax.nn.dot_product_attention`.

    Args:
      q: `[b, t, n, k]`; k, v: `[b, s, n, k]` (`s == t` when causal).
      is_causal: query i sees keys 0..i.
      key_value_seq_lengths: optional `[b]`: keys at or past it are masked.
      block_size: queries per block of the XLA tiles, which it selects on CPU; None:
        t/8, at least 64 (at most 8 blocks, which bounds the compile time).

    Returns:
      `[b, t, n, k]`. Softmax in at least float32, scaled by 1/sqrt(k); a query with
      no visible key gets the mean of the values, as `jax.nn.dot_product_attention`.
    """
    like_q = k.ndim == 4 and (k.shape[0], *k.shape[2:]) == (q.shape[0], *q.shape[2:])
    if q.ndim != 4 or not like_q or k.shape != v.shape:
        raise ValueError(
            f"attention needs q [b, t, n, k] and k, v [b, s, n, k]; got q {q.shape}, k {k.shape}, v {v.shape}"
        )
    b, t, n, d = q.shape
    s = k.shape[1]
    if key_value_seq_lengths is not None and jnp.shape(key_value_seq_lengths) != (b,):
        raise ValueError(
            f"key_value_seq_lengths must be [b]=[{b}]; got shape {jnp.shape(key_value_seq_lengths)}"
        )
    if block_size is None and min(t, s) > 0 and kernel_unavailable_reason(q, k, v) is None:
        lengths = jnp.full((b,), s, jnp.int32) if key_value_seq_lengths is None else key_value_seq_lengths
        return _fused(is_causal, q, k, v, lengths.astype(jnp.int32))
    if block_size is None and (jax.default_backend() != "cpu" or b * n * t * s <= SMALL_SCORES):
        return jax.nn.dot_product_attention(
            q, k, v, is_causal=is_causal, key_value_seq_lengths=key_value_seq_lengths
        )
    block = block_size or max(64, -(-t // 8))
    pairs = b * n
    # (batch, head) pairs per tile: up to 8 (fewer loop steps) while a block's scores fit.
    group = max(g for g in range(1, 9) if pairs % g == 0 and (g == 1 or g * min(block, t) * s <= TILE_SCORES))
    lengths = jnp.full((b,), s, jnp.int32) if key_value_seq_lengths is None else key_value_seq_lengths
    lengths = jnp.repeat(lengths, n).reshape(-1, group, 1, 1)

    def heads(x):  # [b, t, n, d] -> [pairs / group, group, t, d]
        return jnp.swapaxes(x, 1, 2).reshape(-1, group, x.shape[1], d)

    out = _tiles(is_causal, block, heads(q) / math.sqrt(d), heads(k), heads(v), lengths)
    return jnp.swapaxes(out.reshape(b, n, t, d), 1, 2)


_KERNEL_SOURCE = pathlib.Path(cpu_kernel.__file__).parent / "kernels" / "attention_cpu.cc"


def kernel_unavailable_reason(q: Array, k: Array, v: Array) -> str | None:
    """Why `attention` cannot run as one C++ call (kernels/attention_cpu.cc) on these
    arrays here (None if it can): it runs float32 and float64 on CPU, q, k and v of one
    dtype, unless `$SEQJAX_CPU_KERNEL` is 0 or no C++ compiler builds it."""
    if jax.default_backend() != "cpu":
        return f"it runs on CPU only; the default backend is {jax.default_backend()}"
    dtypes = {jnp.dtype(x.dtype) for x in (q, k, v)}
    if len(dtypes) > 1 or not dtypes <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)}:
        return f"it runs float32 or float64 q, k, v of one dtype; got {sorted(d.name for d in dtypes)}"
    if not cpu_kernel.enabled():
        return "$SEQJAX_CPU_KERNEL is 0"
    return cpu_kernel.load(_KERNEL_SOURCE, ("SeqjaxAttentionForward", "SeqjaxAttentionBackward"))


def _kernel_call(name: str, is_causal: bool, outputs: tuple, *args: Array) -> tuple[Array, ...]:
    # broadcast_all: under vmap every argument gains the leading axis, which the kernel
    # takes as more batch.
    call = jax.ffi.ffi_call(name, outputs, vmap_method="broadcast_all")
    return call(*args, causal=is_causal, scale=np.float64(1 / math.sqrt(args[0].shape[-1])))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(is_causal: bool, q: Array, k: Array, v: Array, lengths: Array) -> Array:
    """q `[b, t, n, k]`, k, v `[b, s, n, k]`, lengths `[b]` int32 -> `[b, t, n, k]`,
    each (batch, head) pair's forward and backward pass in one C++ loop."""
    return _fused_forward(is_causal, q, k, v, lengths)[0]


def _fused_forward(is_causal, q, k, v, lengths):
    b, t, n, _ = q.shape
    shapes = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, n, t), q.dtype))
    out, lse = _kernel_call("SeqjaxAttentionForward", is_causal, shapes, q, k, v, lengths)
    return out, (q, k, v, lengths, out, lse)


def _fused_backward(is_causal, residuals, d_out):
    shapes = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in residuals[:3])
    dq, dk, dv = _kernel_call("SeqjaxAttentionBackward", is_causal, shapes, *residuals, d_out)
    return dq, dk, dv, None


_fused.defvjp(_fused_forward, _fused_backward)


class _Span(NamedTuple):
    start: int  # the block's first query
    stop: int  # past its last query
    keys: int  # the keys any of its queries can see: 0 .. keys - 1


def _spans(is_causal: bool, block: int, t: int, s: int) -> list[_Span]:
    return [_Span(a, min(a + block, t), min(a + block, t, s) if is_causal else s) for a in range(0, t, block)]


def _block_scores(is_causal: bool, span: _Span, q: Array, k: Array, visible: Array) -> tuple[Array, Array]:
    """q: `[g, t, d]` (scaled), k: `[g, s, d]`, visible: `[g, 1, 1]` key lengths ->
    the block's scores `[g, stop - start, keys]`, hidden ones at a large negative
    finite value (so a query that sees no key averages them all), and the mask."""
    dtype = _at_least_float32(q.dtype)
    scores = jnp.matmul(
        q[:, span.start : span.stop], jnp.swapaxes(k[:, : span.keys], -1, -2), preferred_element_type=dtype
    )
    seen = jnp.arange(span.keys, dtype=visible.dtype) < visible  # [g, 1, keys]
    if is_causal:
        seen = seen & (jnp.arange(span.keys)[None, :] <= jnp.arange(span.start, span.stop)[:, None])
    return jnp.where(seen, scores, -0.7 * jnp.finfo(dtype).max), seen


def _tile_forward(is_causal: bool, block: int, args: tuple[Array, ...]) -> tuple[Array, Array]:
    """One tile of pairs: q `[g, t, d]` (scaled), k, v `[g, s, d]`, visible `[g, 1, 1]`
    -> out `[g, t, d]` and each query's log-sum-exp of scores `[g, t, 1]`."""
    q, k, v, visible = args
    outs, lses = [], []
    for span in _spans(is_causal, block, q.shape[1], k.shape[1]):
        scores, _ = _block_scores(is_causal, span, q, k, visible)
        top = scores.max(-1, keepdims=True)
        p = jnp.exp(scores - top)
        total = p.sum(-1, keepdims=True)
        pv = jnp.matmul(p.astype(v.dtype), v[:, : span.keys], preferred_element_type=p.dtype)
        outs.append((pv / total).astype(q.dtype))
        lses.append(top + jnp.log(total))
    return jnp.concatenate(outs, 1), jnp.concatenate(lses, 1)


def _tile_backward(is_causal: bool, block: int, args: tuple[Array, ...]) -> tuple[Array, Array, Array]:
    """One tile's gradients from flash attention's recurrences: with P = exp(S - lse),
    dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)), dQ = dS K, dK = dS^T Q.

    args: q, k, v, visible, out, lse as in `_tile_forward`; d_out `[g, t, d]`; and
    q, d_out transposed, `[g, d, t]`, so that dK^T = Q^T dS and dV^T = dO^T P are
    plain matmuls (transposes hoisted out of the loop, where XLA cannot fold them)."""
    q, k, v, visible, out, lse, d_out, q_t, d_out_t = args
    dtype = _at_least_float32(q.dtype)
    delta = jnp.sum(d_out.astype(dtype) * out.astype(dtype), -1, keepdims=True)  # [g, t, 1]
    g, s, d = k.shape
    dq, dk_t, dv_t = [], jnp.zeros((g, d, s), dtype), jnp.zeros((g, d, s), dtype)
    for span in _spans(is_causal, block, q.shape[1], s):
        rows, keys = slice(span.start, span.stop), slice(0, span.keys)
        scores, seen = _block_scores(is_causal, span, q, k, visible)
        p = jnp.exp(scores - lse[:, rows])
        dv_t = dv_t.at[:, :, keys].add(
            jnp.matmul(d_out_t[:, :, rows], p.astype(v.dtype), preferred_element_type=dtype)
        )
        dp = jnp.matmul(d_out[:, rows], jnp.swapaxes(v[:, keys], -1, -2), preferred_element_type=dtype)
        ds = jnp.where(seen, p * (dp - delta[:, rows]), 0).astype(q.dtype)  # hidden scores get none
        dq.append(jnp.matmul(ds, k[:, keys], preferred_element_type=dtype))
        dk_t = dk_t.at[:, :, keys].add(jnp.matmul(q_t[:, :, rows], ds, preferred_element_type=dtype))
    return (
        jnp.concatenate(dq, 1).astype(q.dtype),
        jnp.swapaxes(dk_t, -1, -2).astype(k.dtype),
        jnp.swapaxes(dv_t, -1, -2).astype(v.dtype),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _tiles(is_causal: bool, block: int, q: Array, k: Array, v: Array, lengths: Array) -> Array:
    """q `[tiles, g, t, d]` (scaled by 1/sqrt(d)), k, v `[tiles, g, s, d]`, lengths
    `[tiles, g, 1, 1]` -> softmax attention `[tiles, g, t, d]`."""
    return _tiles_forward(is_causal, block, q, k, v, lengths)[0]


def _tiles_forward(is_causal, block, q, k, v, lengths):
    out, lse = jax.lax.map(functools.partial(_tile_forward, is_causal, block), (q, k, v, lengths))
    return out, (q, k, v, lengths, out, lse)


def _tiles_backward(is_causal, block, residuals, d_out):
    q = residuals[0]
    transposed = (jnp.swapaxes(q, -1, -2), jnp.swapaxes(d_out, -1, -2))
    dq, dk, dv = jax.lax.map(
        functools.partial(_tile_backward, is_causal, block), (*residuals, d_out, *transposed)
    )
    return dq, dk, dv, None


_tiles.defvjp(_tiles_forward, _tiles_backward)


def _cached_attention(
    q: Array, k: Array, v: Array, cache_k: Array, cache_v: Array, positions: Array
) -> tuple[Array, tuple[Array, Array]]:
    """Writes a chunk's keys and values into a layer's cache and attends over it.

    Args:
      q, k, v: `[b, t, n, k]`, the chunk's (RoPE already applied).
      cache_k, cache_v: `[b, n, s, k]`.
      positions: `[b, t]`, where each query and key goes; query i of sequence b sees
        the cache's positions `0 .. positions[b, i]`.

    Returns:
      `(out [b, t, n, k], (cache_k, cache_v))`. Softmax in float32, scaled by
      1/sqrt(k), as `jax.nn.dot_product_attention`; writes past the cache's end are
      dropped (scatter's default mode).
    """
    b, _, n, _ = q.shape
    index = (jnp.arange(b)[:, None, None], jnp.arange(n)[None, :, None], positions[:, None, :])  # [b, n, t]
    cache_k = cache_k.at[index].set(jnp.swapaxes(k, 1, 2).astype(cache_k.dtype))
    cache_v = cache_v.at[index].set(jnp.swapaxes(v, 1, 2).astype(cache_v.dtype))
    scores = jnp.einsum("btnk,bnsk->bnts", q, cache_k).astype(jnp.float32) / math.sqrt(q.shape[-1])
    seen = jnp.arange(cache_k.shape[2])[None, None, None, :] <= positions[:, None, :, None]  # [b, 1, t, s]
    weights = jax.nn.softmax(jnp.where(seen, scores, -jnp.inf), axis=-1).astype(q.dtype)
    return jnp.einsum("bnts,bnsk->btnk", weights, cache_v), (cache_k, cache_v)


@dataclasses.dataclass(frozen=True)
class Transformer:
    """Pre-LayerNorm Transformer encoder (bidirectional) or decoder-only (causal).

    Args:
      d_model: m, the width.
      num_heads: n; must divide d_model.
      num_layers: number of blocks.
      vocab_size: token inputs `[b, t]` of ints in [0, v); or
      input_size: continuous inputs `[b, t, d]`. Exactly one of the two.
      mlp_dim: f, the MLP's hidden width; 4 * d_model if None.
      dropout: rate on embeddings, attention and MLP outputs (training only).
      causal: decoder-only if True (position t sees positions <= t).
      positional: see `Positional`.
      max_len: s, the number of learned positions (LEARNED only).
      attention_fn: `(q, k, v, *, is_causal, key_value_seq_lengths) -> out` on
        `[b, t, n, k]` arrays, over whole sequences: `attention` (blocked on CPU,
        `jax.nn.dot_product_attention` elsewhere) unless replaced, e.g. by a
        reference implementation. Continuing from a KV cache (`step`, `apply(initial_state=)`)
        attends by plain masked softmax over the cache, in its own layout.

    >>> model = Transformer(d_model=16, num_heads=2, num_layers=2, vocab_size=10)
    >>> params = model.init(jax.random.key(0))
    >>> features, cache = model.apply(params, jnp.zeros((3, 7), jnp.int32))
    >>> features.shape, len(cache.k), cache.k[0].shape
    ((3, 7, 16), 2, (3, 2, 512, 8))
    """

    d_model: int
    num_heads: int
    num_layers: int
    vocab_size: int | None = None
    input_size: int | None = None
    mlp_dim: int | None = None
    dropout: float = 0.0
    causal: bool = True
    positional: Positional | str = Positional.ROPE
    max_len: int = 512
    attention_fn: Callable[..., Array] = attention

    # What carries information across positions; the gradient-flow diagnostics'
    # "scaled" initialisation multiplies these.
    recurrent_params: ClassVar[tuple[str, ...]] = ("blocks",)

    def __post_init__(self):
        for name in ("d_model", "num_heads", "num_layers", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide d_model={self.d_model}")
        if (self.vocab_size is None) == (self.input_size is None):
            raise ValueError("give exactly one of vocab_size (token inputs) and input_size (features)")
        if self.positional_kind is Positional.ROPE and self.head_dim % 2:
            raise ValueError(f"rope needs an even head size d_model // num_heads; got {self.head_dim}")
        if self.positional_kind is Positional.SINUSOIDAL and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model; got {self.d_model}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")

    @functools.cached_property
    def positional_kind(self) -> Positional:
        return as_enum(Positional, self.positional, "positional")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def hidden_dim(self) -> int:
        return self.mlp_dim or 4 * self.d_model

    def init(self, key: Array, dtype: Any = jnp.float32) -> Params:
        """Draws parameters (LeCun-normal dense weights, zero biases, unit LayerNorms)."""
        m, n, k, f = self.d_model, self.num_heads, self.head_dim, self.hidden_dim
        dense = jax.nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
        dense_out = jax.nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
        lecun = jax.nn.initializers.lecun_normal()
        zeros, ones = jnp.zeros, jnp.ones
        key_embed, key_pos, *block_keys = jax.random.split(key, 2 + self.num_layers)

        def norm():
            return {"scale": ones((m,), dtype), "bias": zeros((m,), dtype)}

        def block(key):
            kq, kk, kv, ko, k1, k2 = jax.random.split(key, 6)
            attn = {f"w{c}": dense(kc, (m, n, k), dtype) for c, kc in zip("qkv", (kq, kk, kv), strict=True)}
            attn |= {f"b{c}": zeros((n, k), dtype) for c in "qkv"}
            attn |= {"wo": dense_out(ko, (n, k, m), dtype), "bo": zeros((m,), dtype)}
            mlp = {"w1": lecun(k1, (m, f), dtype), "b1": zeros((f,), dtype)}
            mlp |= {"w2": lecun(k2, (f, m), dtype), "b2": zeros((m,), dtype)}
            return {"ln1": norm(), "attn": attn, "ln2": norm(), "mlp": mlp}

        if self.vocab_size is not None:
            # Flax's nn.Embed default: unit variance per feature.
            embed = {"tokens": jax.random.normal(key_embed, (self.vocab_size, m), dtype)}
        else:
            embed = {"w": lecun(key_embed, (self.input_size, m), dtype), "b": zeros((m,), dtype)}
        params = {"embed": embed, "blocks": [block(bk) for bk in block_keys], "ln_f": norm()}
        if self.positional_kind is Positional.LEARNED:
            params["positions"] = 0.02 * jax.random.normal(key_pos, (self.max_len, m), dtype)
        return params

    def _embed(self, params: Params, inputs: Array, positions: Array) -> Array:
        """inputs: [b, t] tokens or [b, t, d]; positions: [t] or [b, t] ints -> [b, t, m]."""
        if self.vocab_size is not None:
            x = params["embed"]["tokens"][inputs]
        else:
            x = inputs @ params["embed"]["w"] + params["embed"]["b"]
        kind = self.positional_kind
        if kind is Positional.LEARNED:
            x = x + params["positions"][positions]
        elif kind is Positional.SINUSOIDAL:
            x = x + sinusoidal(positions, self.d_model, x.dtype)
        return x

    def _block(self, p, x, positions, lengths, key, cache_kv=None):
        """One pre-LN block. x: [b, t, m], positions: [t] or [b, t]; returns x and this
        block's keys and values `[b, t, n, k]`. With a cache (a [b, n, s, k] pair),
        writes them at `positions` (`[b, t]`), attends over the cache up to each
        query's own position, and returns the cache instead."""
        keys = jax.random.split(key, 2) if key is not None else (None, None)
        a = p["attn"]
        h = layer_norm(p["ln1"], x)
        q, k, v = (jnp.einsum("btm,mnk->btnk", h, a[f"w{c}"]) + a[f"b{c}"] for c in "qkv")
        if self.positional_kind is Positional.ROPE:
            q, k = rope(q, positions), rope(k, positions)
        if cache_kv is None:
            out = self.attention_fn(q, k, v, is_causal=self.causal, key_value_seq_lengths=lengths)
            new_kv = (k, v)
        else:
            out, new_kv = _cached_attention(q, k, v, *cache_kv, positions)
        x = x + _dropout(jnp.einsum("btnk,nkm->btm", out, a["wo"]) + a["bo"], self.dropout, keys[0])
        mlp = p["mlp"]
        h = jax.nn.gelu(layer_norm(p["ln2"], x) @ mlp["w1"] + mlp["b1"])
        x = x + _dropout(h @ mlp["w2"] + mlp["b2"], self.dropout, keys[1])
        return x, new_kv

    def _check_inputs(self, inputs: Any, dtype: Any, lengths: Any = None, *, one_step: bool = False) -> Any:
        """inputs `[b, t]` tokens or `[b, t, d]` features (`[b]` or `[b, d]` for one step),
        checked, features cast to `dtype`; returns them and the checked lengths."""
        time = () if one_step else ("time",)
        if self.vocab_size is not None:
            inputs = validation.check_tokens(inputs, self.vocab_size, values=one_step)
            if inputs.ndim != 1 + len(time):
                raise ValueError(
                    f"inputs must be tokens [{', '.join(('batch', *time))}]; got shape {inputs.shape}"
                )
        else:
            inputs = validation.as_floats(inputs, dtype, "inputs")
            if inputs.ndim != 2 + len(time) or inputs.shape[-1] != self.input_size:
                layout = ", ".join(("batch", *time, f"input_size={self.input_size}"))
                raise ValueError(f"inputs must have shape [{layout}]; got {inputs.shape}")
        if one_step:
            return inputs, None
        b, t = inputs.shape[:2]
        if t == 0:
            raise ValueError(f"inputs must have at least one time step; got shape {inputs.shape}")
        if self.positional_kind is Positional.LEARNED and t > self.max_len:
            raise ValueError(f"inputs have {t} steps; learned positions stop at max_len={self.max_len}")
        lengths = check_lengths(lengths, b, t)
        if self.vocab_size is not None:
            validation.check_tokens(inputs, self.vocab_size, lengths)  # values, where valid
        return inputs, lengths

    def apply(
        self,
        params: Params,
        inputs: Array,
        *,
        initial_state: KVCache | None = None,
        lengths: Array | None = None,
        key: Array | None = None,
        deterministic: bool = True,
    ) -> tuple[Array, KVCache]:
        """Runs the Transformer over a batch, or continues cached sequences by a chunk.

        Args:
          params: from `init`.
          inputs: `[b, t]` int tokens in [0, vocab_size), or `[b, t, d]` features (cast
            to the parameters' dtype). Inside `jit` token values are not checked: an
            out-of-range token reads the nearest row of the embedding (JAX's gather
            clamps).
          initial_state: a `KVCache` (from `initial_state`, `apply` or `step`; causal
            models): the chunk continues each sequence at its `position`, attending
            over the cache, as `t` calls of `step` would. None: fresh sequences.
          lengths: optional `[b]` valid lengths; keys past a length are masked
            and outputs past it are zero. Padded positions may hold anything.
          key: PRNG key for dropout; needed when `dropout > 0` and not deterministic.
          deterministic: if True, no dropout.

        Returns:
          `(features, cache)`: `[b, t, m]` features after the final LayerNorm, and
          the `KVCache` of the sequences read, each sequence's next position after
          its length (`t` without lengths). A fresh cache has room for `max(t,
          max_len)` positions; a continued one keeps its size, and positions past it
          are refused where known (NaN outputs inside `jit`). Under `jit` an unused
          cache costs nothing.
        """
        dtype = validation.check_params(self, params, "init() of this Transformer")
        inputs, lengths = self._check_inputs(inputs, dtype, lengths)
        validation.check_bool(deterministic, "deterministic")
        if self.dropout > 0 and not deterministic:
            if key is None:
                raise ValueError("key is required when dropout > 0 and deterministic=False")
            validation.check_key(key)
        if deterministic or self.dropout == 0:
            key = None
        if initial_state is not None:
            initial_state = self._check_state(initial_state, inputs.shape[0], dtype, inputs.shape[1], lengths)
        return self._run(params, inputs, lengths, key, initial_state)

    # Compiled once per configuration (the model is hashable), also when called eagerly.
    @functools.partial(jax.jit, static_argnums=0)
    def _run(
        self, params: Params, inputs: Array, lengths: Array | None, key: Array | None, cache: KVCache | None
    ) -> tuple[Array, KVCache]:
        b, t = inputs.shape[:2]
        steps = jnp.arange(t)
        valid = None if lengths is None else steps[None, :] < lengths[:, None]  # [b, t]
        if valid is not None:
            # Padding is never read: zeroed (token 0), a NaN there reaches no valid output,
            # no key or value, and no gradient.
            inputs = jnp.where(valid.reshape(b, t, *(1,) * (inputs.ndim - 2)), inputs, 0).astype(inputs.dtype)
        positions = steps if cache is None else cache.position[:, None] + steps  # [t] or [b, t]
        x = self._embed(params, inputs, positions)
        if key is not None:
            key, sub = jax.random.split(key)
            x = _dropout(x, self.dropout, sub)
        ks, vs = [], []
        for i, p in enumerate(params["blocks"]):
            x, (k, v) = self._block(
                p,
                x,
                positions,
                lengths,
                None if key is None else jax.random.fold_in(key, i),
                None if cache is None else (cache.k[i], cache.v[i]),
            )
            ks.append(k)
            vs.append(v)
        y = layer_norm(params["ln_f"], x)
        if valid is not None:
            y = jnp.where(valid[..., None], y, 0).astype(y.dtype)
        advance = jnp.full((b,), t, jnp.int32) if lengths is None else lengths.astype(jnp.int32)
        if cache is not None:
            # A full cache has nowhere to write (the scatter drops the write): say so with NaN.
            y = jnp.where((positions < cache.k[0].shape[2])[..., None], y, jnp.nan).astype(y.dtype)
            return y, KVCache(tuple(ks), tuple(vs), cache.position + advance)
        room = ((0, 0), (0, 0), (0, max(self.max_len - t, 0)), (0, 0))

        def cache_of(x):  # [b, t, n, k] -> [b, n, s, k]
            return jnp.pad(jnp.swapaxes(x, 1, 2), room)

        return y, KVCache(tuple(map(cache_of, ks)), tuple(map(cache_of, vs)), advance)

    def initial_state(
        self, batch_size: int, dtype: Any = jnp.float32, *, max_len: int | None = None
    ) -> KVCache:
        """An empty cache for decoding up to `max_len` (default: the model's
        `max_len`) steps of each of `batch_size` sequences."""
        if not self.causal:
            raise ValueError("step-by-step decoding needs causal=True")
        max_len = self.max_len if max_len is None else max_len
        check_positive_int(max_len, "max_len")
        if self.positional_kind is Positional.LEARNED and max_len > self.max_len:
            raise ValueError(f"max_len={max_len} exceeds the {self.max_len} learned positions")
        shape = (batch_size, self.num_heads, max_len, self.head_dim)
        # Separate buffers: a donated step writes each in place.
        k, v = (tuple(jnp.zeros(shape, dtype) for _ in range(self.num_layers)) for _ in range(2))
        return KVCache(k, v, jnp.zeros((batch_size,), jnp.int32))

    def step(self, params: Params, state: KVCache, inputs: Array) -> tuple[KVCache, Array]:
        """One step of causal decoding; equals `apply` at each sequence's position.

        Args:
          params: from `init`.
          state: from `initial_state`, `apply` or the previous step.
          inputs: `[b]` tokens or `[b, d]` features, each sequence's step at its
            `state.position`.

        Returns:
          `(state, y)`, y: `[b, m]`. A sequence whose cache is full (its position at
          the cache's size) is refused where the positions are known; inside `jit`
          its output is NaN and its cache is left as it was.
        """
        dtype = validation.check_params(self, params, "init() of this Transformer")
        inputs, _ = self._check_inputs(inputs, dtype, one_step=True)
        state = self._check_state(state, inputs.shape[0], dtype, 1)
        y, state = self._run(params, inputs[:, None], None, None, state)
        return state, y[:, 0]

    def _check_state(self, state: Any, batch: int, dtype: Any, steps: int, lengths: Any = None) -> KVCache:
        """A cache for `batch` sequences with room for `steps` more (`lengths` where given)."""
        if not self.causal:
            raise ValueError("decoding from a cache needs causal=True")
        if not isinstance(state, tuple) or len(state) != 3:
            raise TypeError(f"state must be a KVCache (k, v, position); got {type(state).__name__}")
        k, v = (
            tuple(jnp.asarray(x) for x in part) if isinstance(part, tuple | list) else ()
            for part in state[:2]
        )
        position = jnp.asarray(state[2])
        size = k[0].shape[2] if k and k[0].ndim == 4 else None
        shape = (batch, self.num_heads, size, self.head_dim)
        if len(k) != self.num_layers or len(v) != self.num_layers or any(x.shape != shape for x in k + v):
            raise ValueError(
                f"state.k and state.v must be {self.num_layers} arrays (one per layer) of shape "
                f"[batch, num_heads, max_len, head_dim]={shape}; got "
                f"{[x.shape for x in k]} and {[x.shape for x in v]}"
            )
        if position.shape != (batch,) or not jnp.issubdtype(position.dtype, jnp.integer):
            raise ValueError(
                f"state.position must be integers of shape [batch]=({batch},); "
                f"got {position.dtype}{position.shape}"
            )
        known = validation.is_concrete(position) and (lengths is None or validation.is_concrete(lengths))
        if known and batch:
            start = np.asarray(position)
            end = start + (steps if lengths is None else np.asarray(lengths))
            if start.min() < 0 or end.max() > size:
                raise ValueError(
                    f"state.position must lie in [0, max_len={size}) with room for {steps} more step(s) "
                    f"(the cache is full at max_len); got positions {start.min()}..{start.max()}, which "
                    f"would reach {end.max()} (make a larger one: initial_state(batch, max_len=...))"
                )
        return KVCache(
            tuple(x.astype(dtype) for x in k), tuple(x.astype(dtype) for x in v), position.astype(jnp.int32)
        )


def make_transformer(
    hidden_size: int,
    num_layers: int,
    *,
    vocab_size: int | None = None,
    input_size: int | None = None,
    dropout: float = 0.0,
    num_heads: int = 4,
    causal: bool = True,
    positional: Positional | str = Positional.ROPE,
    mlp_dim: int | None = None,
    max_len: int = 512,
) -> Transformer:
    """The "transformer" family's backbone factory: `d_model = hidden_size`; the
    options are the Transformer's own arguments."""
    return Transformer(
        hidden_size,
        num_heads,
        num_layers,
        vocab_size=vocab_size,
        input_size=input_size,
        mlp_dim=mlp_dim,
        dropout=dropout,
        causal=causal,
        positional=positional,
        max_len=max_len,
    )


registry.register_backbone("transformer", make_transformer)
