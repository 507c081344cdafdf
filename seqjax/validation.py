"""Argument checks shared by every public boundary: each error names the argument,
what it must be, and what was given, before anything compiles.

Values are checked where they are known: inside `jit` an array is a tracer,
whose shape and dtype are checked but whose values are not (the docstrings
say what then happens).
"""

from __future__ import annotations

import enum
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def as_enum(enum_type: type[enum.Enum], value: Any, name: str) -> Any:
    """Returns `value` as a member of `enum_type`, or raises a ValueError naming `name`."""
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(value)
    except (ValueError, TypeError):
        choices = ", ".join(repr(m.value) for m in enum_type)
        raise ValueError(f"{name} must be one of {choices}; got {value!r}") from None


def check_positive_int(value: Any, name: str) -> None:
    """Raises a ValueError unless `value` is an int >= 1 (bools are refused)."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


def check_bool(value: Any, name: str) -> None:
    """Raises a TypeError unless `value` is a bool (a string "False" is not one)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool; got {value!r}")


def check_real(value: Any, name: str, low: float, high: float, *, low_open: bool = False) -> None:
    """Raises a ValueError unless `value` is a finite real number in [low, high)
    (or (low, high) with `low_open`); bools are refused."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > low if low_open else value >= low) and value < high
    if not ok:
        if math.isinf(high):
            interval = f"{'>' if low_open else '>='} {low:g}"
        else:
            interval = f"in {'(' if low_open else '['}{low}, {high})"
        raise ValueError(f"{name} must be a finite number {interval}; got {value!r}")


def is_concrete(x: Any) -> bool:
    """Whether `x`'s values are known here (not a tracer inside `jit`, `grad` or `vmap`)."""
    return not isinstance(x, jax.core.Tracer)


def param_dtype(params: Any, name: str = "params") -> Any:
    """The dtype the parameters compute in: that of their first real floating leaf."""
    for leaf in jax.tree.leaves(params):
        dtype = _shape_dtype(leaf)[1]
        if jnp.issubdtype(dtype, jnp.floating):
            return dtype
    raise ValueError(f"{name} must hold floating arrays; got {jax.tree.map(jnp.result_type, params)}")


def _shape_dtype(leaf: Any) -> tuple[tuple[int, ...], Any]:
    # Arrays carry both; asking jnp costs microseconds per leaf, on every streaming step.
    if isinstance(leaf, jax.Array | np.ndarray):
        return leaf.shape, leaf.dtype
    return jnp.shape(leaf), jnp.result_type(leaf)


def check_tree(got: Any, expected: Any, name: str, made_by: str = "init()") -> None:
    """Raises a ValueError unless `got` has the key paths, shapes and dtypes of `expected`
    (a pytree of `jax.ShapeDtypeStruct`s, e.g. from `jax.eval_shape`), naming the first
    difference by its path."""
    got_flat, got_def = jax.tree.flatten(got)
    want_flat, want_def = jax.tree.flatten(expected)
    if got_def == want_def and all(
        _shape_dtype(leaf) == (want.shape, want.dtype) for leaf, want in zip(got_flat, want_flat, strict=True)
    ):
        return
    got_leaves = dict(jax.tree_util.tree_flatten_with_path(got)[0])
    want_leaves = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    missing = [jax.tree_util.keystr(k) for k in want_leaves if k not in got_leaves]
    unexpected = [jax.tree_util.keystr(k) for k in got_leaves if k not in want_leaves]
    if missing or unexpected:
        parts = [f"missing {', '.join(name + k for k in missing)}" if missing else ""]
        parts += [f"unexpected {', '.join(name + k for k in unexpected)}" if unexpected else ""]
        raise ValueError(f"{name} do not match what {made_by} makes: {'; '.join(p for p in parts if p)}")
    for path, want in want_leaves.items():
        leaf = got_leaves[path]
        shape, dtype = _shape_dtype(leaf)
        if shape != want.shape or dtype != want.dtype:
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} must have shape {want.shape} and dtype "
                f"{want.dtype.name}, as {made_by} makes it; got {shape} {dtype.name}"
            )


@functools.lru_cache(maxsize=256)
def _init_structure(model: Any, dtype: Any) -> Any:
    return jax.eval_shape(lambda key: model.init(key, dtype), jax.random.key(0))


@functools.lru_cache(maxsize=256)
def _flat_init_structure(model: Any, dtype: Any) -> tuple[Any, tuple[tuple[tuple[int, ...], Any], ...]]:
    leaves, treedef = jax.tree.flatten(_init_structure(model, dtype))
    return treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves)


def check_params(model: Any, params: Any, made_by: str) -> Any:
    """Checks `params` against what `model.init(key, dtype)` makes (the structure is
    traced once per hashable model and dtype); returns the dtype they compute in."""
    leaves, treedef = jax.tree.flatten(params)
    if leaves and all(isinstance(leaf, jax.Array) for leaf in leaves):
        # The common case in a few microseconds: a streaming loop checks at every step.
        dtype = next((leaf.dtype for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.floating)), None)
        if dtype is not None and _flat_init_structure(model, dtype) == (
            treedef,
            tuple((leaf.shape, leaf.dtype) for leaf in leaves),
        ):
            return dtype
    dtype = param_dtype(params)
    check_tree(params, _init_structure(model, dtype), "params", made_by)
    return dtype


def as_floats(x: Any, dtype: Any, name: str) -> jax.Array:
    """`x` as an array of `dtype`: integer, bool and floating arrays are cast; complex
    ones only to a complex `dtype` (a complex state); anything else is refused."""
    try:
        x = jnp.asarray(x)
    except TypeError:
        raise TypeError(f"{name} must be an array of numbers; got {type(x).__name__}") from None
    kind = x.dtype
    complex_ok = jnp.issubdtype(kind, jnp.complexfloating) and jnp.issubdtype(dtype, jnp.complexfloating)
    real = jnp.issubdtype(kind, jnp.floating) or jnp.issubdtype(kind, jnp.integer) or kind == jnp.bool_
    if not (real or complex_ok):
        raise TypeError(
            f"{name} must be {'numbers' if jnp.issubdtype(dtype, jnp.complexfloating) else 'real numbers'} "
            f"(cast to {jnp.dtype(dtype).name}); got {kind}"
        )
    return x if kind == dtype else x.astype(dtype)


def check_tokens(
    tokens: Any, vocab_size: int, lengths: Any = None, name: str = "inputs", *, values: bool = True
) -> jax.Array:
    """`tokens` as an integer array (floating, bool or complex tokens are refused);
    with `values`, where known, those at valid positions (`lengths` of `[b, t]`
    tokens; all without) must lie in [0, vocab_size)."""
    tokens = tokens if isinstance(tokens, jax.Array) else jnp.asarray(tokens)
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"{name} must be integer tokens in [0, vocab_size={vocab_size}); got {tokens.dtype}")
    if values and is_concrete(tokens) and (lengths is None or is_concrete(lengths)) and tokens.size:
        host = np.asarray(tokens)
        if lengths is not None:
            host = host[np.arange(host.shape[1])[None, :] < np.asarray(lengths)[:, None]]
        if host.size and (host.min() < 0 or host.max() >= vocab_size):
            raise ValueError(
                f"{name} must be tokens in [0, vocab_size={vocab_size}); "
                f"got values from {host.min()} to {host.max()}"
            )
    return tokens


def check_key(key: Any, name: str = "key") -> None:
    """Raises a TypeError unless `key` is a PRNG key (`jax.random.key`, or a raw uint32 [2])."""
    if key is None:
        return
    dtype = jnp.result_type(key)
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if jnp.shape(key) != ():
            raise ValueError(f"{name} must be one PRNG key; got an array of shape {jnp.shape(key)}")
        return
    if dtype != jnp.uint32 or jnp.shape(key) != (2,):
        raise TypeError(f"{name} must be a PRNG key (jax.random.key(seed)); got {dtype} {jnp.shape(key)}")
