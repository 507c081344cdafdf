"""Which algorithm runs a cell over time: chosen from the cell's capabilities, the
backend and the caller's switches, never from the cell's name.

    path = choose(cell, switches, params, carry, xs)    # at trace time
    carry, ys = run(path, cell, params, carry, xs, lengths=..., reverse=..., time_major=...)

The paths, each needing a capability of `seqjax.recurrences.protocol` (a cell
without it takes the next path that applies; `PLAIN` runs every cell):

    SEQUENCE    the cell's own `run_sequence` over the whole sequence (a parallel or
                fused linear recurrence): `RunsSequence`. Default wherever it applies.
    CUDNN       cuDNN's LSTM kernels (`seqjax.recurrences.cudnn`): CUDA, float32, a
                `DenseRecurrence` cell with kernel "lstm". Only when asked for
                (`cudnn=True`): the scans below were faster on the GPU measured.
    KERNEL      the fused CPU loop (`cpu_kernel.scan_kernel`): CPU, float32, a cell
                that one of its loops computes. Default on CPU where it applies.
    SCAN_CELL   `scan.scan_cell`'s hand-written backward pass: `DenseRecurrence`.
                Default on GPU, and on CPU where the kernel does not apply.
    HOISTED     one matmul projects every step, then `lax.scan` of `step_projected`,
                differentiated by JAX: `ProjectsInput`. Default on other backends.
    PLAIN       `lax.scan` of `step` on the raw inputs, differentiated by JAX.
    NOISE       training only, for a cell with noise of its own (`TrainingNoise`:
                variational dropout, zoneout): `lax.scan` of `noisy_step` on the raw
                inputs and the noise `draw_noise` drew, differentiated by JAX.
                `choose` names the evaluation path; layers take this one when
                they draw noise.

The defaults are what `experiments/throughput.py` measured fastest (README,
"Throughput"): on CPU the fused loop; on an H200 GPU the hand-written backward
pass over the hoisted projection, the scan unrolled 8 steps (`unroll`). In one
run at C1 the unrolled scan (with JAX's differentiation) trained the LSTM 1.65x
faster than seqjax's cuDNN path and 1.96x faster than PyTorch's cuDNN LSTM; in
another the hand-written backward pass made it 1.2x faster still. TPUs are not
measured: there, JAX's own differentiation of the hoisted scan.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

import jax

from seqjax import validation
from seqjax.recurrences import cpu_kernel, cudnn, linear, scan
from seqjax.recurrences.protocol import DenseRecurrence, ProjectsInput, RunsSequence, offers

Array = jax.Array


class Path(enum.Enum):
    SEQUENCE = "sequence"
    CUDNN = "cudnn"
    KERNEL = "kernel"
    SCAN_CELL = "scan_cell"
    HOISTED = "hoisted"
    PLAIN = "plain"
    NOISE = "noise"


@dataclasses.dataclass(frozen=True)
class Switches:
    """A caller's choices; None picks the measured default where the cell allows it.

    Attributes:
      hoist_projection: project every step's input in one matmul before the scan
        (True) or inside it (False); the `SCAN_CELL` path takes either.
      custom_backward: differentiate with `scan.scan_cell`'s hand-written backward
        pass (reverse mode only) or, if False, let JAX differentiate the scan
        (forward mode too: `jax.jvp`).
      cpu_kernel: run the fused CPU loop (reverse mode only) or not; None uses it on
        CPU whenever it applies, `custom_backward` is not False,
        `$SEQJAX_CPU_KERNEL` is not "0", and it could be built.
      unroll: forwarded to `lax.scan`; None is 8 on GPU, where each step of a
        `lax.scan` costs kernel launches (measured: 8 to 32 steps were equally
        fast, and 8 compiles faster), else 1.
      method: how a `RunsSequence` cell's linear recurrence runs ("sequential",
        "parallel", "chunked", "fused", "auto"; see `seqjax.recurrences.linear.Method`);
        None is the cell's own `method`.
      cudnn: run cuDNN's LSTM (`seqjax.recurrences.cudnn`); a ValueError where it
        cannot, saying why. Off by default: slower than the unrolled scan on the
        GPU measured.
      remat: trade compute for memory in training: the scan runs in chunks of
        `remat` steps (True: sqrt(t), rounded up), each under `jax.checkpoint`
        (`seqjax.scan.scan`), and JAX differentiates it: the `HOISTED`, `PLAIN`
        and `NOISE` paths. The fused loop and the hand-written backward pass keep
        every step's residuals and are not used.
    """

    hoist_projection: bool | None = None
    custom_backward: bool | None = None
    cpu_kernel: bool | None = None
    unroll: int | None = None
    method: str | None = None
    cudnn: bool = False
    remat: int | bool = False

    def check(self, cell: Any) -> None:
        """Raises a ValueError for a switch set to True that the cell has no capability for."""
        for name, needed, capability in (
            ("hoist_projection", ProjectsInput, "ProjectsInput"),
            ("custom_backward", DenseRecurrence, "DenseRecurrence"),
        ):
            value = getattr(self, name)
            if value not in (None, True, False):
                raise TypeError(f"{name} must be True, False or None; got {value!r}")
            if value and not offers(cell, needed):
                raise ValueError(
                    f"{name}=True needs a cell with the {capability} capability "
                    f"(seqjax.recurrences.protocol); {type(cell).__name__} has not"
                )
        if self.method is not None:
            validation.as_enum(linear.Method, self.method, "method")
            if not offers(cell, RunsSequence):
                raise ValueError(
                    f"method={self.method!r} needs a cell with the RunsSequence capability "
                    f"(seqjax.recurrences.protocol); {type(cell).__name__} has not"
                )
        if self.cpu_kernel not in (None, True, False):
            raise TypeError(f"cpu_kernel must be True, False or None; got {self.cpu_kernel!r}")
        if not isinstance(self.cudnn, bool):
            raise TypeError(f"cudnn must be True or False; got {self.cudnn!r}")
        if self.unroll is not None:
            validation.check_positive_int(self.unroll, "unroll")
        if self.remat is not False:
            if self.remat is not True:
                validation.check_positive_int(self.remat, "remat")
            for name in ("custom_backward", "cpu_kernel", "cudnn"):
                if getattr(self, name):
                    raise ValueError(f"remat needs JAX's differentiation of the scan; {name}=True is not")
            if offers(cell, RunsSequence):
                raise ValueError(
                    f"remat chunks a scan of steps; {type(cell).__name__} runs whole sequences (RunsSequence)"
                )
        if self.cudnn and not cudnn.computes(cell):
            raise ValueError(f"cudnn=True: {cudnn.unsupported_reason(cell)}")
        if self.cpu_kernel and not cpu_kernel.has_loop(cell):
            raise ValueError(
                f"cpu_kernel=True needs a DenseRecurrence cell whose kernel is one of "
                f"{', '.join(cpu_kernel.KINDS)}; {type(cell).__name__} has kernel="
                f"{getattr(cell, 'kernel', None)!r}"
            )


# The paths that read `[b, t, d]` inputs as they are.
BATCH_MAJOR = frozenset({Path.KERNEL, Path.CUDNN})


def choose(cell: Any, switches: Switches, *arrays: Any) -> Path:
    """The path for `cell` on these arrays (params, carry, xs: their dtypes count)."""
    if offers(cell, RunsSequence):
        return Path.SEQUENCE
    if switches.cudnn:
        reason = cudnn.unsupported_reason(cell, *arrays)
        if reason is not None:
            raise ValueError(f"cudnn=True: {reason}")
        return Path.CUDNN
    backend = jax.default_backend()
    on_cpu = backend == "cpu"
    custom_backward = switches.custom_backward
    if switches.remat is not False:
        return Path.HOISTED if hoist(cell, switches) else Path.PLAIN
    if custom_backward is None:
        custom_backward = backend in ("cpu", "gpu") and offers(cell, DenseRecurrence)
    use_kernel = switches.cpu_kernel
    if use_kernel is None:
        use_kernel = (
            on_cpu
            and custom_backward
            and cpu_kernel.enabled()
            and cpu_kernel.supports(cell, *arrays)
            and cpu_kernel.available()
        )
    if use_kernel:
        return Path.KERNEL
    if custom_backward:
        return Path.SCAN_CELL
    if hoist(cell, switches):
        return Path.HOISTED
    return Path.PLAIN


def unroll(switches: Switches) -> int:
    """The steps of `lax.scan` per loop iteration: `switches.unroll`, or 8 on GPU and 1
    elsewhere (see `Switches`)."""
    if switches.unroll is not None:
        return switches.unroll
    return 8 if jax.default_backend() == "gpu" else 1


def remat_chunk(switches: Switches, xs: Array) -> int | None:
    """The steps per checkpointed chunk for `xs: [t, ...]`, or None without `remat`."""
    if switches.remat is False:
        return None
    return math.isqrt(xs.shape[0] - 1) + 1 if switches.remat is True else switches.remat


def hoist(cell: Any, switches: Switches) -> bool:
    """Whether the input projection runs before the scan (`HOISTED`, and inside `SCAN_CELL`)."""
    if switches.hoist_projection is not None:
        return switches.hoist_projection
    return jax.default_backend() != "cpu" and offers(cell, ProjectsInput)


def run(
    path: Path,
    cell: Any,
    params: Any,
    carry: Any,
    xs: Array,
    *,
    switches: Switches,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = True,
    noise: Any = None,
) -> tuple[Any, Array]:
    """Runs `cell` over `xs` on `path`.

    Args:
      path: from `choose`.
      cell, params: the cell and its parameters.
      carry: initial carry, leaves `[b, ...]`.
      xs: `[t, b, d]` raw inputs; `[b, t, d]` if not `time_major`, which only the
        `KERNEL` and `CUDNN` paths read (callers transpose for the others).
      switches: the caller's switches (projection placement, unroll).
      lengths: optional `[b]` valid lengths (see `seqjax.scan.scan`).
      reverse: run each sequence from its last valid step to its first.
      time_major: the layout of xs and ys.
      noise: for `NOISE`, `cell.draw_noise(key, xs)`.

    Returns:
      `(final_carry, ys)`, ys `[t, b, h]` (`[b, t, h]` if not time_major).
    """
    if path is Path.KERNEL:
        return cpu_kernel.scan_kernel(
            cell, params, carry, xs, lengths=lengths, reverse=reverse, time_major=time_major
        )
    if path is Path.CUDNN:
        return cudnn.run(cell, params, carry, xs, lengths=lengths, reverse=reverse, time_major=time_major)
    if not time_major:
        raise ValueError(f"the {path.value} path reads time-major xs [t, b, d]")
    if path is Path.SEQUENCE:
        return cell.run_sequence(params, carry, xs, lengths=lengths, reverse=reverse, method=switches.method)
    options = dict(lengths=lengths, reverse=reverse, unroll=unroll(switches))
    if path is Path.SCAN_CELL:
        return scan.scan_cell(cell, params, carry, xs, hoist=hoist(cell, switches), **options)
    options["remat"] = remat_chunk(switches, xs)
    if path is Path.HOISTED:
        return scan.scan(cell.step_projected, params, carry, cell.project(params, xs), **options)
    if path is Path.NOISE:
        sequence, steps = noise

        def step(p, c, inputs):
            x, step_noise = inputs
            return cell.noisy_step(p, c, x, (sequence, step_noise))

        return scan.scan(step, params, carry, (xs, steps), **options)
    return scan.scan(cell.step, params, carry, xs, **options)
