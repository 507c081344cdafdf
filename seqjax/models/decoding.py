"""Online inference: sampling a token from logits, and the compiled loops that feed a
model's outputs back as its next inputs (token generation, regression rollouts).

The loops are pure functions of a model with `stream` (read a chunk from a state)
and `step` (one causal step), the whole rollout one `lax.scan` under one `jit`:

    state, outputs = model.stream(params, state, prompt, lengths)     # prefill
    for i in range(num_steps):                                        # inside lax.scan
        x_i = choose(key_i, last outputs)          # a sampled token, or the prediction
        state, outputs = model.step(params, state, x_i)

Shapes: b = batch, t = prompt time, v = vocabulary (= output_size), o = outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import validation

Array = jax.Array


def check_sampling(temperature: Any, top_k: Any, vocab_size: int) -> None:
    """Raises a ValueError unless temperature is a finite number >= 0 and top_k is None
    or an int in [1, vocab_size]."""
    validation.check_real(temperature, "temperature (0: greedy)", 0.0, math.inf)
    if top_k is not None and (
        not isinstance(top_k, int | np.integer) or isinstance(top_k, bool) or not 1 <= top_k <= vocab_size
    ):
        raise ValueError(f"top_k must be None or an int in [1, vocab_size={vocab_size}]; got {top_k!r}")


def sample(key: Array, logits: Array, temperature: Array | float, top_k: int | None, greedy: bool) -> Array:
    """Draws one token per row.

    Args:
      key: a PRNG key (unused when greedy).
      logits: `[b, v]`.
      temperature: scalar > 0; logits are divided by it (ignored when greedy).
      top_k: keep only the k largest logits of each row (ties at the k-th kept); None: all.
      greedy: the argmax instead of a draw (temperature 0).

    Returns:
      `[b]` int32 tokens.
    """
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def last_valid(outputs: Array, lengths: Array | None) -> Array:
    """`outputs [b, t, o]` at each sequence's last valid step (`lengths - 1`) -> `[b, o]`."""
    if lengths is None:
        return outputs[:, -1]
    return jnp.take_along_axis(outputs, (lengths - 1)[:, None, None].astype(jnp.int32), axis=1)[:, 0]


def rollout(
    stream: Callable[[Any, Array, Array | None], tuple[Any, Array]],
    step: Callable[[Any, Array], tuple[Any, Array]],
    choose: Callable[[Array, Array], Array],
    state: Any,
    prompt: Array,
    lengths: Array | None,
    num_steps: int,
    key: Array,
) -> Array:
    """Prefills from `prompt`, then takes `num_steps` steps, each input chosen from
    the previous outputs; traceable (call it under `jit`).

    Args:
      stream: `(state, chunk [b, t, ...], lengths) -> (state, outputs [b, t, o])`.
      step: `(state, x [b, ...]) -> (state, outputs [b, o])`.
      choose: `(key, outputs [b, o]) -> x [b, ...]`, the next input (and what is emitted).
      state: the state before the prompt.
      prompt: `[b, t, ...]`; lengths: its `[b]` valid lengths (>= 1), or None.
      num_steps: how many inputs to choose.
      key: split once per step for `choose`.

    Returns:
      `[b, num_steps, ...]`: the chosen inputs, in order.
    """
    state, outputs = stream(state, prompt, lengths)

    def one(carry, key):
        state, last = carry
        x = choose(key, last)
        state, last = step(state, x)
        return (state, last), x

    _, chosen = jax.lax.scan(one, (state, last_valid(outputs, lengths)), jax.random.split(key, num_steps))
    return jnp.swapaxes(chosen, 0, 1)
