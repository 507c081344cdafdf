"""Fused recurrent loops for XLA:CPU, as a drop-in for `seqjax.scan.scan_cell`.

On CPU, a `lax.scan` step costs as much in XLA's per-step overhead (separate
thunks for the matmul, the elementwise fusions and the writes into stacked
outputs) as in arithmetic. `kernels/rnn_cpu.cc` runs a layer's whole time loop
in one call of XLA's FFI: per step one register-blocked matmul of `[h, x_t]`
against the recurrent and input weights, fused with the cell's update, on every
core. The backward loop also forms the input and weight gradients, from gate
gradients that never leave the cache (see the C++ source).

The C++ source is compiled on first use with the system's C++ compiler (`$CXX`,
else `c++`) against the FFI headers that ship with jaxlib, for the host CPU, and
cached under `$SEQJAX_CACHE_DIR` (default `~/.cache/seqjax`); `load` does the same
for the other kernels of `kernels/` (`seqjax.recurrences.linear`'s, and the attention
of `seqjax.models.transformer`). Without a compiler
`available()` is False and layers fall back to `scan_cell`; `$SEQJAX_CPU_KERNEL=0`
switches the kernel off (see `enabled`). The loops use all cores, or
`$SEQJAX_CPU_THREADS`.

Limits: float32 only; cells with the `DenseRecurrence` capability whose `kernel`
attribute names one of `KINDS` (the built-in cells); reverse-mode
differentiation only (as `scan_cell`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.recurrences import scan as scan_lib
from seqjax.recurrences.cells import LSTMState
from seqjax.recurrences.protocol import DenseRecurrence, offers

Array = jax.Array


class _Loop(NamedTuple):
    """One of the C++ loops: its id there, and the shape of its cell's carry."""

    id: int
    paired_state: bool  # the carry is LSTMState(h, c)
    saves_gates: bool  # the backward pass reads saved gate activations


# A cell's `kernel` attribute names its loop.
KINDS = {
    "rnn_tanh": _Loop(0, False, False),
    "rnn_relu": _Loop(1, False, False),
    "rnn_identity": _Loop(2, False, False),
    "lstm": _Loop(3, True, True),
    "gru": _Loop(4, False, True),
}
_SOURCE = pathlib.Path(__file__).parent / "kernels" / "rnn_cpu.cc"
# -fno-trapping-math lets the exp's float-to-int step vectorise; nothing here reads
# floating-point exception flags.
_FLAGS = (
    "-O3",
    "-mcpu=native" if platform.machine().lower() in ("arm64", "aarch64") else "-march=native",
    "-std=c++17",
    "-ffp-contract=fast",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fPIC",
    "-shared",
    "-pthread",
)


def _cpu_id() -> str:
    """What -march/-mcpu=native compiles for: the machine and its CPU flags (Linux)."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return platform.machine() + flags


def _compile(source_path: pathlib.Path) -> pathlib.Path:
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler:
        raise RuntimeError("no C++ compiler found (set $CXX)")
    # The key covers the shared headers too: a change to any rebuilds every kernel.
    source = b"\0".join(p.read_bytes() for p in [source_path, *sorted(source_path.parent.glob("*.h"))])
    key = hashlib.sha256(
        b"\0".join(
            [
                source,
                " ".join(_FLAGS).encode(),
                jax.__version__.encode(),
                compiler.encode(),
                _cpu_id().encode(),
            ]
        )
    ).hexdigest()[:16]
    cache = pathlib.Path(os.environ.get("SEQJAX_CACHE_DIR") or pathlib.Path.home() / ".cache" / "seqjax")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:  # e.g. a read-only home
        cache = pathlib.Path(tempfile.gettempdir()) / "seqjax"
        cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{source_path.stem}_{key}.so"
    if target.exists():
        return target
    # Built under a temporary name and renamed: concurrent processes (pytest -n)
    # never load a half-written library.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
    command = [compiler, *_FLAGS, f"-I{jax.ffi.include_dir()}", str(source_path), "-o", tmp]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError(f"compiling {source_path.name} failed:\n{result.stderr[-2000:]}")
    os.replace(tmp, target)
    return target


@functools.cache
def load(source_path: pathlib.Path, targets: tuple[str, ...]) -> str | None:
    """Builds `source_path` (a C++ file of `kernels/`) and registers its FFI `targets`
    on CPU, once per process; returns the error text, or None."""
    try:
        library = ctypes.CDLL(str(_compile(source_path)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return str(e)
    for name in targets:
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
    return None


def _load() -> str | None:
    return load(_SOURCE, ("SeqjaxRnnForward", "SeqjaxRnnBackward"))


def enabled() -> bool:
    """False when `$SEQJAX_CPU_KERNEL` is "0": layers then default to `scan_cell`
    (read when a layer is traced, so set it before the first call).

    The kernel's custom call has no partitioning rule: on a mesh of several CPU
    devices XLA gathers its batch and every device runs the whole loop (correct,
    but no faster than one device), so `experiments` switch it off there.
    """
    return os.environ.get("SEQJAX_CPU_KERNEL", "1") != "0"


def available() -> bool:
    """Whether the kernels are built (building them if needed) and registered."""
    return _load() is None


def unavailable_reason() -> str | None:
    """Why `available()` is False (the compiler's message), or None."""
    return _load()


def has_loop(cell: Any) -> bool:
    """Whether one of the fused loops computes `cell` (a `DenseRecurrence` cell whose
    `kernel` attribute is one of `KINDS`)."""
    return offers(cell, DenseRecurrence) and getattr(cell, "kernel", None) in KINDS


def supports(cell: Any, *arrays: Any) -> bool:
    """Whether `scan_kernel` can run `cell` on these arrays (pytrees): a loop
    computes the cell (`has_loop`), and every leaf is float32."""
    leaves = jax.tree.leaves(arrays)
    return has_loop(cell) and all(jnp.result_type(x) == jnp.float32 for x in leaves)


def _check_shapes(cell: Any, params: dict[str, Array], carry: Any, xs: Array, time_major: bool) -> None:
    """The C++ loops trust their shapes; every mismatch is caught here instead."""
    if xs.ndim != 3:
        layout = "[time, batch, input_size]" if time_major else "[batch, time, input_size]"
        raise ValueError(f"xs must be {layout}; got shape {xs.shape}")
    b, d = xs.shape[1 if time_major else 0], xs.shape[2]
    h = cell.hidden_size
    g_h = cell.num_gates * h
    expected = {"w_ih": (d, g_h), "w_hh": (h, g_h), "b_ih": (g_h,), "b_hh": (g_h,)}
    for name, shape in expected.items():
        if (name in params or name.startswith("w")) and jnp.shape(params.get(name)) != shape:
            raise ValueError(f"params[{name!r}] must have shape {shape}; got {jnp.shape(params.get(name))}")
    for leaf in jax.tree.leaves(carry):
        if jnp.shape(leaf) != (b, h):
            raise ValueError(
                f"carry leaves must have shape [batch, hidden]=({b}, {h}); got {jnp.shape(leaf)}"
            )


def _f32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _split_carry(loop: _Loop, carry: Any) -> tuple[Array, Array]:
    if loop.paired_state:
        return carry.h, carry.c
    return carry, jnp.zeros((0,), jnp.float32)


def _join_carry(loop: _Loop, h: Array, c: Array) -> Any:
    return LSTMState(h, c) if loop.paired_state else h


def _forward(cell, reverse, time_major, params, carry, xs, lengths, save):
    loop = KINDS[cell.kernel]
    h0, c0 = _split_carry(loop, carry)
    t, b = xs.shape[:2] if time_major else xs.shape[1::-1]
    h = h0.shape[-1]
    chunks = -(-h // 16)
    paired = loop.paired_state
    zeros = jnp.zeros(params["w_hh"].shape[-1:], jnp.float32)
    results = (
        _f32(*xs.shape[:2], h),
        _f32(b, h),
        _f32(b, h) if paired else _f32(0),
        _f32(t, chunks, b, 4, 16) if save and loop.saves_gates else _f32(0),  # the kernel's own layout
        _f32(t, chunks, b, 16) if save and paired else _f32(0),
    )
    hs, h_n, c_n, acts, cs = jax.ffi.ffi_call("SeqjaxRnnForward", results, vmap_method="sequential")(
        xs,
        params["w_ih"],
        params["w_hh"],
        params.get("b_ih", zeros),
        params.get("b_hh", zeros),
        h0,
        c0,
        lengths,
        kind=np.int64(loop.id),
        reverse=reverse,
        save=save,
        time_major=time_major,
    )
    return _join_carry(loop, h_n, c_n), hs, (h0, c0, hs, acts, cs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _scan(cell, reverse, time_major, params, carry, xs, lengths):
    final, hs, _ = _forward(cell, reverse, time_major, params, carry, xs, lengths, False)
    return final, hs


def _scan_fwd(cell, reverse, time_major, params, carry, xs, lengths):
    final, hs, saved = _forward(cell, reverse, time_major, params, carry, xs, lengths, True)
    return (final, hs), (params, xs, lengths, saved)


def _scan_bwd(cell, reverse, time_major, residuals, cotangents):
    params, xs, lengths, (h0, c0, hs, acts, cs) = residuals
    d_final, d_hs = cotangents
    loop = KINDS[cell.kernel]
    d_hn, d_cn = _split_carry(loop, d_final)
    b, d = h0.shape[0], xs.shape[-1]
    h, g_h = params["w_hh"].shape
    results = (_f32(*xs.shape), _f32(d, g_h), _f32(h, g_h), _f32(g_h), _f32(g_h), _f32(b, h))
    results += (_f32(b, h) if loop.paired_state else _f32(0),)
    d_xs, d_w_ih, d_w_hh, d_b_ih, d_b_hh, d_h0, d_c0 = jax.ffi.ffi_call(
        "SeqjaxRnnBackward", results, vmap_method="sequential"
    )(
        xs,
        params["w_ih"],
        params["w_hh"],
        h0,
        c0,
        lengths,
        hs,
        acts,
        cs,
        d_hs,
        d_hn,
        d_cn,
        kind=np.int64(loop.id),
        reverse=reverse,
        time_major=time_major,
    )
    grads = {"w_ih": d_w_ih, "w_hh": d_w_hh, "b_ih": d_b_ih, "b_hh": d_b_hh}
    d_params = {name: grads[name] for name in params}
    return d_params, _join_carry(loop, d_h0, d_c0), d_xs, None


_scan.defvjp(_scan_fwd, _scan_bwd)


def scan_kernel(
    cell: Any,
    params: dict[str, Array],
    carry: Any,
    xs: Array,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = True,
) -> tuple[Any, Array]:
    """`seqjax.scan.scan_cell(cell, params, carry, xs, ...)` in one fused loop on CPU.

    Same arguments, results and semantics as `scan_cell` (lengths, reverse,
    reverse-mode gradients), for a float32 cell that a loop computes (`supports`); values
    agree with it to float32 rounding (the loop has its own exp and tanh).
    With `time_major=False` xs and ys are batch-major: the loop reads and writes
    them in place, which saves the two transposes around a time-major scan.

    Args:
      cell: a `DenseRecurrence` cell whose `kernel` is one of `KINDS`.
      params: its float32 parameters.
      carry: initial carry, leaves `[b, h]`.
      xs: `[t, b, d]` (`[b, t, d]` if not time_major) float32 raw inputs.
      lengths: optional `[b]` integers in `[0, t]` (see `seqjax.scan.scan`).
      reverse: run each sequence from its last valid step to its first.
      time_major: the layout of xs and ys.

    Returns:
      `(final_carry, ys)`, ys: `[t, b, h]` (`[b, t, h]` if not time_major).

    Raises:
      ValueError: the cell or dtype is not supported, or the kernels could not be
        built (the message has the compiler's output).
    """
    if not supports(cell, params, carry, xs):
        dtypes = sorted({jnp.result_type(x).name for x in jax.tree.leaves((params, carry, xs))})
        raise ValueError(
            f"scan_kernel runs DenseRecurrence cells whose kernel is one of {', '.join(KINDS)} on float32 "
            f"params, carry and xs; got {type(cell).__name__} with kernel="
            f"{getattr(cell, 'kernel', None)!r} and dtypes {dtypes}"
        )
    _check_shapes(cell, params, carry, xs, time_major)
    if not available():
        raise ValueError(f"the CPU kernels are not available: {unavailable_reason()}")
    t, b = xs.shape[:2] if time_major else xs.shape[1::-1]
    lengths = scan_lib.check_lengths(lengths, b, t)
    if t == 0 or b == 0:
        # Nothing to loop over (the loops size their work by the batch): the scan's
        # empty result and zero gradients are the same.
        xs = xs if time_major else jnp.swapaxes(xs, 0, 1)
        final, ys = scan_lib.scan_cell(cell, params, carry, xs, lengths=lengths, reverse=reverse)
        return final, ys if time_major else jnp.swapaxes(ys, 0, 1)
    if lengths is None:
        lengths = jnp.full((b,), t, jnp.int32)
    # Traced lengths are not checked: clamped, the loops never index past the sequence.
    lengths = jnp.clip(lengths, 0, t)
    return _scan(cell, reverse, time_major, params, carry, xs, lengths)
