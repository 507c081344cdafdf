"""The Transformer against Flax's attention and LayerNorm, and its invariances."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.models import transformer
from seqjax.models.transformer import Transformer, attention, rope, sinusoidal
from tests.helpers import check_grads_by_finite_differences

B, T, V, M = 3, 9, 11, 16


def tokens(seed=1, shape=(B, T)):
    return jax.random.randint(jax.random.key(seed), shape, 0, V)


class FlaxReference(nn.Module):
    """The same architecture written with Flax's layers, for a weight-for-weight check."""

    model: Transformer

    @nn.compact
    def __call__(self, inputs, mask):
        m = self.model
        x = nn.Embed(V, m.d_model, name="embed")(inputs)
        if m.positional == "sinusoidal":
            x = x + sinusoidal(jnp.arange(inputs.shape[1]), m.d_model)
        for i in range(m.num_layers):
            h = nn.LayerNorm(epsilon=1e-6, name=f"ln1_{i}")(x)
            x = x + nn.MultiHeadDotProductAttention(m.num_heads, name=f"attn_{i}")(h, h, mask=mask)
            h = nn.LayerNorm(epsilon=1e-6, name=f"ln2_{i}")(x)
            h = nn.Dense(m.hidden_dim, name=f"mlp1_{i}")(h)
            x = x + nn.Dense(m.d_model, name=f"mlp2_{i}")(nn.gelu(h))
        return nn.LayerNorm(epsilon=1e-6, name="ln_f")(x)


def to_flax(params):
    out = {"embed": {"embedding": params["embed"]["tokens"]}, "ln_f": params["ln_f"]}
    for i, p in enumerate(params["blocks"]):
        a = p["attn"]
        out[f"attn_{i}"] = {
            "query": {"kernel": a["wq"], "bias": a["bq"]},
            "key": {"kernel": a["wk"], "bias": a["bk"]},
            "value": {"kernel": a["wv"], "bias": a["bv"]},
            "out": {"kernel": a["wo"], "bias": a["bo"]},
        }
        out[f"ln1_{i}"], out[f"ln2_{i}"] = p["ln1"], p["ln2"]
        out[f"mlp1_{i}"] = {"kernel": p["mlp"]["w1"], "bias": p["mlp"]["b1"]}
        out[f"mlp2_{i}"] = {"kernel": p["mlp"]["w2"], "bias": p["mlp"]["b2"]}
    return out


@pytest.mark.parametrize(("causal", "positional"), [(True, "sinusoidal"), (False, "none")])
def test_matches_flax_layers(causal, positional, key):
    model = Transformer(M, 4, 2, vocab_size=V, causal=causal, positional=positional)
    params = model.init(key)
    # Random biases and norms, so that every parameter is checked.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    params = jax.tree.unflatten(
        tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )
    x = tokens()
    lengths = jnp.array([9, 5, 1])
    valid = jnp.arange(T)[None, :] < lengths[:, None]
    mask = nn.make_attention_mask(jnp.ones((B, T)), valid.astype(jnp.float32))
    if causal:
        mask = nn.combine_masks(mask, nn.make_causal_mask(x))
    ref = jax.jit(FlaxReference(model).apply)({"params": to_flax(params)}, x, mask)
    ours, _ = model.apply(params, x, lengths=lengths)
    np.testing.assert_allclose(jnp.where(valid[..., None], ref, 0), ours, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rope", "none"])
def test_causality_and_padding(positional, key):
    model = Transformer(M, 2, 2, vocab_size=V, positional=positional)
    params = model.init(key)
    apply = jax.jit(lambda p, x: model.apply(p, x)[0])
    x = tokens()
    changed = x.at[:, 5:].set((x[:, 5:] + 1) % V)
    a, b = apply(params, x), apply(params, changed)
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[:, 5:], b[:, 5:])
    # Padding, in the bidirectional mode where every valid position could see it.
    encoder = Transformer(M, 2, 2, vocab_size=V, causal=False, positional=positional)
    lengths = jnp.array([5, 5, 5])
    a, b = encoder.apply(params, x, lengths=lengths)[0], encoder.apply(params, changed, lengths=lengths)[0]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(a[:, 5:], 0)
    assert not np.allclose(encoder.apply(params, x)[0][:, :5], encoder.apply(params, changed)[0][:, :5])


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rope", "none"])
def test_cached_decoding_equals_full_forward(positional, key):
    model = Transformer(M, 4, 2, input_size=5, positional=positional)
    params = model.init(key)
    xs = jax.random.normal(jax.random.key(1), (B, T, 5))
    full, full_cache = model.apply(params, xs)
    cache = model.initial_state(B, max_len=12)
    for t in range(T):
        cache, y = model.step(params, cache, xs[:, t])
        np.testing.assert_allclose(y, full[:, t], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cache.position, T)
    # apply's cache holds the same keys and values, with room up to max_len.
    assert len(full_cache.k) == 2 and full_cache.k[0].shape == (B, 4, model.max_len, M // 4)
    for got, want in zip(full_cache.k + full_cache.v, cache.k + cache.v, strict=True):
        np.testing.assert_allclose(got[:, :, :T], want[:, :, :T], rtol=1e-5, atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    q = jax.random.normal(jax.random.key(0), (1, T, 2, 8))
    k = jax.random.normal(jax.random.key(1), (1, T, 2, 8))
    positions = jnp.arange(T)

    def scores(shift):
        return jnp.einsum("btnk,bsnk->bnts", rope(q, positions + shift), rope(k, positions + shift))

    np.testing.assert_allclose(scores(0), scores(37), rtol=1e-4, atol=1e-4)
    assert not np.allclose(scores(0), jnp.einsum("btnk,bsnk->bnts", q, k), atol=1e-3)
    # Reference: a complex rotation of (x_i, x_{i+k/2}) by p * 10000^(-i/(k/2)).
    z = np.asarray(q[..., :4]) + 1j * np.asarray(q[..., 4:])
    theta = np.arange(T)[None, :, None, None] * 10000.0 ** (-np.arange(4) / 4)
    rotated = z * np.exp(1j * theta)
    np.testing.assert_allclose(
        rope(q, positions), np.concatenate([rotated.real, rotated.imag], -1), atol=1e-5
    )


def test_sinusoidal_matches_formula():
    table = np.asarray(sinusoidal(jnp.arange(50), 8))
    pos, i = np.arange(50)[:, None], np.arange(4)[None, :]
    np.testing.assert_allclose(table[:, 0::2], np.sin(pos / 10000 ** (2 * i / 8)), atol=1e-5)
    np.testing.assert_allclose(table[:, 1::2], np.cos(pos / 10000 ** (2 * i / 8)), atol=1e-5)


def test_vmap_over_parameter_sets(key):
    model = Transformer(M, 2, 1, vocab_size=V)
    params = jax.vmap(model.init)(jax.random.split(key, 3))
    x = tokens()
    ys, _ = jax.jit(jax.vmap(model.apply, in_axes=(0, None)))(params, x)
    np.testing.assert_allclose(
        ys[1], model.apply(jax.tree.map(lambda p: p[1], params), x)[0], rtol=1e-5, atol=1e-5
    )


def softmax_attention(q, k, v, is_causal=False, key_value_seq_lengths=None):
    """Plain softmax attention in the inputs' dtype: the float64 reference."""
    scores = jnp.einsum("btnk,bsnk->bnts", q, k) / np.sqrt(q.shape[-1])
    t, s = scores.shape[-2:]
    allowed = jnp.ones((q.shape[0], 1, t, s), bool)
    if is_causal:
        allowed &= jnp.tril(jnp.ones((t, s), bool))
    if key_value_seq_lengths is not None:
        allowed &= (jnp.arange(s) < key_value_seq_lengths[:, None])[:, None, None, :]
    return jnp.einsum("bnts,bsnk->btnk", jax.nn.softmax(jnp.where(allowed, scores, -1e30), -1), v)


@pytest.mark.parametrize("causal, tile_scores", [(True, 2**18), (False, 2**18), (True, 50)])
def test_tiled_attention_matches_plain_softmax(causal, tile_scores, key, monkeypatch):
    """The CPU attention's tiles (blocks of 4 queries over t=11: a ragged last block;
    3 x 2 (batch, head) pairs: one tile of 6, or with room for 50 scores a block, six
    tiles of one) against plain softmax attention in float64, values and gradients,
    with key lengths 0 and below t. A query with no visible key (the length-0
    sequence) is left out: its value is arbitrary in both."""
    monkeypatch.setattr(transformer, "TILE_SCORES", tile_scores)
    with jax.enable_x64(True):
        lengths = jnp.array([11, 0, 5])
        q, k, v = jax.random.normal(key, (3, 3, 11, 2, 4), jnp.float64)
        weights = jnp.ones((3, 1, 1, 1)).at[1].set(0.0)

        def loss(fn, q, k, v):
            out = fn(q, k, v, is_causal=causal, key_value_seq_lengths=lengths)
            return jnp.sum(weights * jnp.sin(out)), out * weights

        blocks_of_4 = functools.partial(attention, block_size=4)
        tiled = jax.value_and_grad(lambda *a: loss(blocks_of_4, *a), (0, 1, 2), has_aux=True)
        plain = jax.value_and_grad(lambda *a: loss(softmax_attention, *a), (0, 1, 2), has_aux=True)
        (_, got), got_grads = jax.jit(tiled)(q, k, v)
        (_, want), want_grads = plain(q, k, v)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        for a, b in zip(got_grads, want_grads, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


KERNEL_REASON = transformer.kernel_unavailable_reason(*(jax.ShapeDtypeStruct((1,), "float32"),) * 3)


@pytest.mark.skipif(KERNEL_REASON is not None, reason=f"no C++ attention here: {KERNEL_REASON}")
def test_attention_kernel_matches_plain_softmax(key, monkeypatch):
    """The C++ flash attention (forward and its backward) against plain softmax attention
    in float64 to 1e-12, values and gradients, on 3 threads (pairs split unevenly): causal
    t=70 (32-row steps and 64-key steps with ragged ends; head size 13: one 64-, one
    32-byte vector and a scalar column in float64, 32 and 16 bytes and one in float32)
    and non-causal s != t (head size 34: pairs of 64-byte vectors and the rest), key
    lengths 0, 1 and below s. The length-0 sequence sees no key: the mean of all values, as a softmax
    over scores that are all masked (the reference) gives. float32 against the same
    reference; vmap against a loop."""
    monkeypatch.setenv("SEQJAX_CPU_THREADS", "3")
    cases = [(True, (4, 70, 70, 2, 13), [70, 0, 5, 1]), (False, (3, 40, 75, 2, 34), [75, 0, 30])]
    for causal, (b, t, s, n, d), lengths in cases:
        keys = jax.random.split(jax.random.fold_in(key, t), 4)
        with jax.enable_x64(True):
            q = jax.random.normal(keys[0], (b, t, n, d), jnp.float64)
            k, v = (jax.random.normal(kk, (b, s, n, d), jnp.float64) for kk in keys[1:3])
            cos = jnp.cos(jax.random.normal(keys[3], (b, t, n, d), jnp.float64))
            lengths = jnp.array(lengths)

            def run(fn, *qkv, causal=causal, lengths=lengths, cos=cos):
                out, pull = jax.vjp(lambda *a: fn(*a, is_causal=causal, key_value_seq_lengths=lengths), *qkv)
                return (out, *pull(cos.astype(out.dtype)))

            want = run(softmax_attention, q, k, v)
            got = jax.jit(functools.partial(run, attention))(q, k, v)
            low = jax.jit(functools.partial(run, attention))(*(x.astype(jnp.float32) for x in (q, k, v)))
        for name, g, lo, w in zip(("out", "dq", "dk", "dv"), got, low, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=name)
            assert lo.dtype == jnp.float32
            np.testing.assert_allclose(lo, w, rtol=2e-5, atol=2e-5, err_msg=name)
    qs = jax.random.normal(key, (3, 2, 40, 2, 8))
    batched = jax.vmap(functools.partial(attention, is_causal=True))(qs, qs, qs)
    looped = jnp.stack([attention(x, x, x, is_causal=True) for x in qs])
    np.testing.assert_array_equal(batched, looped)


def test_tiled_attention_in_bfloat16(key):
    """bfloat16 inputs: the tiles' scores, softmax and gradient sums run in float32
    (the hand-written backward casts by itself), so against a float32 reference they
    are as close as `jax.nn.dot_product_attention` in bfloat16 is."""
    lengths = jnp.array([40, 17])
    q, k, v = jax.random.normal(key, (3, 2, 40, 2, 8))
    tiled = functools.partial(attention, is_causal=True, key_value_seq_lengths=lengths, block_size=16)
    fused = functools.partial(jax.nn.dot_product_attention, is_causal=True, key_value_seq_lengths=lengths)

    def value_and_grads(fn, *args):
        out, pull = jax.vjp(fn, *args)
        return (out, *pull(jnp.cos(out.astype(jnp.float32)).astype(out.dtype)))

    want = value_and_grads(fused, q, k, v)
    low = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    got = jax.jit(lambda *a: value_and_grads(tiled, *a))(*low)
    with jax.numpy_dtype_promotion("standard"):  # jax.nn's own bfloat16 path needs it
        base = value_and_grads(fused, *low)
    for g, b_, w in zip(got, base, want, strict=True):
        assert g.dtype == jnp.bfloat16
        error, base_error = (float(jnp.abs(x.astype(jnp.float32) - w).max()) for x in (g, b_))
        assert error <= 1.5 * base_error + 1e-3, (error, base_error)


def test_gradients_match_finite_differences(key):
    fused_model = Transformer(8, 2, 2, input_size=3, positional="rope")
    exact_model = Transformer(8, 2, 2, input_size=3, positional="rope", attention_fn=softmax_attention)
    lengths = jnp.array([5, 3])

    def loss(p, xs, model=exact_model):
        return jnp.sum(jnp.sin(model.apply(p, xs, lengths=lengths)[0]))

    # jax.nn.dot_product_attention takes its softmax through float32 even for float64
    # inputs, which leaves finite differences no digits to compare; so the model's
    # gradient is checked with a float64 attention, and jax.nn's against that.
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        p = exact_model.init(key, jnp.float64)
        xs = jax.random.normal(jax.random.key(2), (2, 5, 3), jnp.float64)
        fused = jax.jit(jax.grad(lambda p, xs: loss(p, xs, fused_model), argnums=(0, 1)))(p, xs)
        check_grads_by_finite_differences(jax.jit(loss), (p, xs))
        exact = jax.jit(jax.grad(loss, argnums=(0, 1)))(p, xs)
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(exact), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_dropout_and_errors(key):
    model = Transformer(M, 2, 2, vocab_size=V, dropout=0.2, positional="learned", max_len=T)
    params = model.init(key)
    x = tokens()
    a, _ = model.apply(params, x, key=jax.random.key(1), deterministic=False)
    assert not np.allclose(a, model.apply(params, x)[0])
    with pytest.raises(ValueError, match="key is required"):
        model.apply(params, x, deterministic=False)
    with pytest.raises(ValueError, match="learned positions stop at max_len=9"):
        model.apply(params, tokens(shape=(B, T + 1)))
    with pytest.raises(TypeError, match=r"inputs must be integer tokens in \[0, vocab_size=11\)"):
        model.apply(params, jnp.ones((B, T, 2)))
    with pytest.raises(ValueError, match="num_heads=3 must divide d_model=16"):
        Transformer(M, 3, 1, vocab_size=V)
    with pytest.raises(ValueError, match="give exactly one of vocab_size"):
        Transformer(M, 2, 1)
    with pytest.raises(ValueError, match="positional must be one of"):
        Transformer(M, 2, 1, vocab_size=V, positional="alibi")
    with pytest.raises(ValueError, match="decoding needs causal=True"):
        Transformer(M, 2, 1, vocab_size=V, causal=False).initial_state(B)
