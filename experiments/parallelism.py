"""Does parallelism over time pay? Training and inference time and memory against length.

    python -m experiments.parallelism
    python -m experiments.parallelism --lengths=256,4096 --batches= --models=gru,mingru --methods=fused,auto

The source tutorial's claim is that an RNN cannot be computed in parallel over
time. The gated linear recurrences (minGRU, minLSTM, LRU, RG-LRU, Mamba) can, by a
parallel prefix scan, and the Transformer by attention, whose cost grows as t^2.
This measures, on this machine, for every model of --models at one parameter
budget (each model's width matched to --reference at width --hidden_size, input
width --input_size):

  - train: one jitted forward + backward (all parameter gradients) of a squared
    loss on the outputs, `[b, t, d]` float32 inputs;
  - inference: the jitted forward pass;
  - memory: XLA's planned peak of the compiled train step (its temporaries plus
    outputs, `compiled.memory_analysis()`), in MB;

against sequence length (--lengths, at batch --sweep_batch) and batch (--batches,
at length --sweep_length). The parallel families run once per --methods
(`seqjax.recurrences.linear.Method`; "auto" is what a user gets); the other
families on their fastest path. A method whose compiled train step plans more
memory than --max_memory_mb is not run and is listed as skipped, with the memory it
would need (e.g. Mamba's `[t, b, E, N]` coefficients, which its fused CPU loop never
forms; attention scores `[b, heads, t, t]` where the backend has no tiled attention).

First, the headline: seqjax's GRU layer against the minGRU layer at the same sizes
(`--headline`, default t=4096, b=8, d=h=256), train step, every method, timed in
alternation so that both see the same machine load.

Large buffers page-fault on every call under glibc's default malloc (see
experiments/throughput.py); `GLIBC_TUNABLES` set as throughput's `--malloc=tuned`
does, before the command, keeps freed memory mapped. The hardware line says which ran.

Outputs in --workdir: config.json, results.jsonl (one line per measurement),
results.md (the tables and "what the numbers say"), parallelism.png (log-log time
against length, train and inference, and memory).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

import seqjax
from experiments import run_config, user_modules
from seqjax import registry
from seqjax.models import SequenceModel, count_params
from seqjax.recurrences import linear, protocol

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "models", ["gru", "lstm", "mingru", "minlstm", "lru", "rglru", "mamba", "transformer"], "Model families."
)
flags.DEFINE_list(
    "methods", ["sequential", "parallel", "chunked", "fused", "auto"], "Linear-recurrence methods."
)
flags.DEFINE_list("lengths", ["256", "1024", "4096", "16384"], "Sequence lengths of the length sweep.")
flags.DEFINE_integer("sweep_batch", 8, "Batch of the length sweep.")
flags.DEFINE_list("batches", ["1", "64"], "Batches of the batch sweep (at --sweep_length).")
flags.DEFINE_integer("sweep_length", 1024, "Length of the batch sweep.")
flags.DEFINE_integer("hidden_size", 128, "Width of --reference; the others are matched to its parameters.")
flags.DEFINE_integer("input_size", 128, "Input features d.")
flags.DEFINE_string("reference", "gru", "The family whose parameter count at --hidden_size is the budget.")
flags.DEFINE_integer("repeats", 5, "Timed calls per measurement after one warm-up (the median is reported).")
flags.DEFINE_float(
    "max_memory_mb",
    None,
    "Skip a method whose compiled train step plans more memory (MB); default: half the device's "
    "memory (the host's RAM on CPU).",
)
flags.DEFINE_string(
    "headline", "4096x8x256", "time x batch x width of the GRU/minGRU comparison ('' to skip)."
)
flags.DEFINE_string("workdir", "runs/parallelism", "Output directory.")

MODES = ("train", "inference")
METHODS = tuple(m.value for m in linear.Method)


@dataclasses.dataclass(frozen=True)
class Row:
    model: str
    method: str  # the linear-recurrence method, or "-" for families without one
    mode: str
    length: int
    batch: int
    hidden_size: int
    params: int
    ms: float | None  # median; None if skipped
    ms_min: float | None
    memory_mb: float | None  # planned peak of the train step
    note: str = ""


def _is_parallel(family: str) -> bool:
    cell = registry.get(family).make_cell
    return cell is not None and isinstance(cell(8), protocol.RunsSequence)


def _model(family: str, hidden: int, method: str | None) -> SequenceModel:
    options = {"method": method} if method is not None else {}
    return SequenceModel(family, FLAGS.input_size, hidden, input_size=FLAGS.input_size, options=options)


def _params(model: SequenceModel) -> int:
    return count_params(jax.eval_shape(lambda: model.init(jax.random.key(0))))


def matched_width(family: str, budget: int) -> int:
    """The width (a multiple of 8) whose model's parameter count is nearest `budget`;
    the count grows with the width, so a bisection finds it."""
    lo, hi = 1, 8
    while _params(_model(family, 8 * hi, None)) < budget:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _params(_model(family, 8 * mid, None)) < budget else (lo, mid)
    return min((8 * lo, 8 * hi), key=lambda h: abs(_params(_model(family, h, None)) - budget))


def memory_budget_mb() -> float:
    """--max_memory_mb, else half the default device's memory (the host's RAM on CPU)."""
    if FLAGS.max_memory_mb is not None:
        return FLAGS.max_memory_mb
    stats = jax.devices()[0].memory_stats() or {}
    total = stats.get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return total / 2**21


def _functions(model: SequenceModel):
    def loss(params, xs):
        return jnp.mean(model.apply(params, xs) ** 2)

    return jax.jit(jax.grad(loss)), jax.jit(model.apply)


def _time_alternating(calls: dict[Any, tuple[Any, tuple]]) -> dict[Any, tuple[float, float]]:
    """(median, min) ms of each `fn(*args)` of `calls`, called in turn --repeats times
    after a warm-up call each, so that every one sees the same machine load."""
    for fn, args in calls.values():
        jax.block_until_ready(fn(*args))
    times: dict[Any, list[float]] = {name: [] for name in calls}
    for _ in range(FLAGS.repeats):
        for name, (fn, args) in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    return {name: (float(np.median(v)) * 1e3, float(np.min(v)) * 1e3) for name, v in times.items()}


def _memory_mb(fn, *args) -> float | None:
    """XLA's planned temporaries plus outputs of the compiled `fn`, in MB (None where the
    backend does not report them)."""
    stats = fn.lower(*args).compile().memory_analysis()
    if stats is None:
        return None
    return (stats.temp_size_in_bytes + stats.output_size_in_bytes) / 2**20


def measure(family: str, methods: list[str | None], hidden: int, length: int, batch: int) -> list[Row]:
    """Rows of every method and mode at one size; the methods are timed in alternation."""
    models = {method: _model(family, hidden, method) for method in methods}
    first = next(iter(models.values()))
    n = _params(first)
    # Planned on shapes alone: nothing of a skipped size is allocated.
    shapes = (
        jax.eval_shape(lambda: first.init(jax.random.key(0))),
        jax.ShapeDtypeStruct((batch, length, FLAGS.input_size), jnp.float32),
    )
    fns = {method: _functions(model) for method, model in models.items()}
    memory = {method: _memory_mb(fns[method][0], *shapes) for method in methods}
    budget = memory_budget_mb()
    over = {method for method in methods if (memory[method] or 0) > budget}
    rows = [
        Row(family, method or "-", mode, length, batch, hidden, n, None, None, memory[method], note)
        for method in methods
        if method in over
        for note in [f"skipped: plans {memory[method]:.0f} MB, over --max_memory_mb={budget:.0f}"]
        for mode in MODES
    ]
    fns = {method: fn for method, fn in fns.items() if method not in over}
    if not fns:
        return rows
    params = first.init(jax.random.key(0))  # the methods share parameters
    xs = jax.random.normal(jax.random.key(1), shapes[1].shape)
    for k, mode in enumerate(MODES):
        timed = _time_alternating({method: (fn[k], (params, xs)) for method, fn in fns.items()})
        for method, (ms, ms_min) in timed.items():
            rows.append(
                Row(family, method or "-", mode, length, batch, hidden, n, ms, ms_min, memory[method])
            )
    return rows


def runnable(methods: list[str]) -> list[str]:
    """The methods that can run on this backend; says which are dropped and why (the
    fused loop runs on CPU only)."""
    keep = []
    for method in methods:
        reason = linear.fused_unavailable_reason() if method == "fused" else None
        if reason is None:
            keep.append(method)
        else:
            print(f"method {method!r} skipped: {reason}", flush=True)
    return keep


def headline(spec: str, methods: list[str]) -> list[dict[str, Any]]:
    """The GRU layer against the minGRU layer at one size, train step, timed in alternation."""
    t, b, h = (int(v) for v in spec.split("x"))
    xs = jax.random.normal(jax.random.key(1), (t, b, h))
    layers = {"GRU": seqjax.GRU(h, h)} | {f"minGRU {m}": seqjax.MinGRU(h, h, method=m) for m in methods}
    calls = {
        name: (
            jax.jit(jax.grad(lambda p, x, layer=layer: jnp.mean(layer.apply(p, x)[0] ** 2))),
            (layer.init(jax.random.key(0)), xs),
        )
        for name, layer in layers.items()
    }
    timed = _time_alternating(calls)
    reference = timed["GRU"][0]
    return [
        {
            "layer": name,
            "t": t,
            "b": b,
            "d=h": h,
            "ms": ms,
            "ms_min": ms_min,
            "speedup_vs_gru": reference / ms,
        }
        for name, (ms, ms_min) in timed.items()
    ]


def markdown(rows: list[Row], head: list[dict[str, Any]]) -> str:
    lines = [f"Hardware: {run_config.hardware()}", ""]
    if head:
        t, b, h = head[0]["t"], head[0]["b"], head[0]["d=h"]
        lines += [f"Headline: train step (forward + backward) of one layer, t={t}, b={b}, d=h={h}", ""]
        lines += ["| layer | median ms | min ms | speed-up vs GRU (medians) |", "|---|---:|---:|---:|"]
        lines += [
            f"| {r['layer']} | {r['ms']:.1f} | {r['ms_min']:.1f} | {r['speedup_vs_gru']:.2f}x |" for r in head
        ]
        lines.append("")
    for mode in MODES:
        mode_rows = [r for r in rows if r.mode == mode]
        configs = sorted({(r.length, r.batch) for r in mode_rows})
        header = " | ".join(f"t={t} b={b}" for t, b in configs)
        lines += [f"{mode} ms (median of {FLAGS.repeats})", "", f"| model | method | h | params | {header} |"]
        lines.append("|---|---|---:|---:|" + "---:|" * len(configs))
        for key in dict.fromkeys((r.model, r.method) for r in mode_rows):
            cells = {(r.length, r.batch): r for r in mode_rows if (r.model, r.method) == key}
            first = next(iter(cells.values()))
            values = [_fmt(cells[c].ms) if c in cells else "" for c in configs]
            lines.append(
                f"| {key[0]} | {key[1]} | {first.hidden_size} | {first.params} | {' | '.join(values)} |"
            )
        lines.append("")
    configs = sorted({(r.length, r.batch) for r in rows})
    lines += ["train-step memory, MB (XLA's planned temporaries + outputs)", ""]
    lines += ["| model | method | " + " | ".join(f"t={t} b={b}" for t, b in configs) + " |"]
    lines.append("|---|---|" + "---:|" * len(configs))
    for key in dict.fromkeys((r.model, r.method) for r in rows if r.mode == "train"):
        cells = {(r.length, r.batch): r for r in rows if (r.model, r.method) == key and r.mode == "train"}
        lines.append(
            f"| {key[0]} | {key[1]} | "
            + " | ".join(_fmt(cells[c].memory_mb) if c in cells else "" for c in configs)
            + " |"
        )
    lines += ["", "What the numbers say:", ""] + [f"- {s}" for s in findings(rows, head)]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "skip" if value is None else f"{value:.3g}" if value < 100 else f"{value:.0f}"


def findings(rows: list[Row], head: list[dict[str, Any]]) -> list[str]:
    """Statements computed from the measurements (never written by hand)."""
    out = []
    if head:
        best = max(head[1:], key=lambda r: r["speedup_vs_gru"])
        auto = next(r for r in head if r["layer"] == "minGRU auto")
        out.append(
            f"At t={head[0]['t']}, b={head[0]['b']}, d=h={head[0]['d=h']} the minGRU layer trains "
            f"{auto['speedup_vs_gru']:.2f}x faster than the GRU with method=auto "
            f"(best: {best['layer']}, {best['speedup_vs_gru']:.2f}x)."
        )
    timed = [r for r in rows if r.ms is not None]
    for mode in MODES:
        worst = None
        for family in {r.model for r in timed if r.method == "auto"}:
            for config in {(r.length, r.batch) for r in timed if r.model == family}:
                same = [
                    r for r in timed if r.model == family and r.mode == mode and (r.length, r.batch) == config
                ]
                auto = [r for r in same if r.method == "auto"]
                if auto and len(same) > 1:
                    ratio = auto[0].ms / min(r.ms for r in same)
                    if worst is None or ratio > worst[0]:
                        worst = (ratio, family, config)
        if worst:
            out.append(
                f"{mode}: method=auto is at most {100 * (worst[0] - 1):.0f}% slower than the fastest method "
                f"at any measured size (worst: {worst[1]} at t={worst[2][0]}, b={worst[2][1]})."
            )
    lengths = sorted({r.length for r in timed if r.batch == FLAGS.sweep_batch})
    if len(lengths) >= 2:
        lo, hi = lengths[0], lengths[-1]
        for family in dict.fromkeys(r.model for r in timed):
            best = {}
            for t in (lo, hi):
                cands = [
                    r.ms
                    for r in timed
                    if (r.model, r.mode, r.length, r.batch) == (family, "train", t, FLAGS.sweep_batch)
                ]
                if cands:
                    best[t] = min(cands)
            if len(best) == 2:
                slope = math.log(best[hi] / best[lo]) / math.log(hi / lo)
                out.append(
                    f"{family}: train time grows as t^{slope:.2f} from t={lo} to t={hi} "
                    f"(b={FLAGS.sweep_batch})."
                )
    skipped = dict.fromkeys((r.model, r.method, r.length, r.batch) for r in rows if r.ms is None)
    if skipped:
        names = (f"{m}{'' if method == '-' else ' ' + method} t={t} b={b}" for m, method, t, b in skipped)
        out.append("Skipped (memory): " + ", ".join(names) + ".")
    return out


def plot(workdir: pathlib.Path, rows: list[Row]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    sweep = [r for r in rows if r.batch == FLAGS.sweep_batch and r.ms is not None]
    for ax, mode in zip(axes[:2], MODES, strict=True):
        for family in dict.fromkeys(r.model for r in sweep):
            by_t: dict[int, float] = {}
            for r in sweep:
                if r.model == family and r.mode == mode and r.method in ("auto", "-"):
                    by_t[r.length] = r.ms
            if by_t:
                ts = sorted(by_t)
                ax.loglog(ts, [by_t[t] for t in ts], "o-", label=family)
        ax.set(xlabel="sequence length t", ylabel="ms", title=f"{mode} (b={FLAGS.sweep_batch}, method=auto)")
        ax.grid(True, which="both", alpha=0.3)
    for family in dict.fromkeys(r.model for r in sweep):
        by_t = {
            r.length: r.memory_mb
            for r in sweep
            if r.model == family and r.mode == "train" and r.method in ("auto", "-") and r.memory_mb
        }
        if by_t:
            ts = sorted(by_t)
            axes[2].loglog(ts, [by_t[t] for t in ts], "o-", label=family)
    axes[2].set(xlabel="sequence length t", ylabel="MB", title="train-step memory (XLA plan)")
    axes[2].grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(run_config.hardware(), fontsize=9)
    fig.tight_layout()
    fig.savefig(workdir / "parallelism.png", dpi=120)
    plt.close(fig)


def main(argv):
    del argv
    workdir = pathlib.Path(FLAGS.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for family in FLAGS.models:
        registry.get(family)
    for method in FLAGS.methods:
        linear.check_method(method)
    lengths = [int(v) for v in FLAGS.lengths]
    batches = [int(v) for v in FLAGS.batches]
    settings = {flag.name: flag.value for flag in FLAGS.get_key_flags_for_module(sys.modules[__name__])}
    run_config.write(workdir, "parallelism", settings, FLAGS.models)
    methods = runnable(FLAGS.methods)
    head = headline(FLAGS.headline, runnable(list(METHODS))) if FLAGS.headline else []
    for r in head:
        print(f"headline {r['layer']:>18}: {r['ms']:8.1f} ms  {r['speedup_vs_gru']:.2f}x vs GRU", flush=True)
    budget = _params(_model(FLAGS.reference, FLAGS.hidden_size, None))
    configs = [(t, FLAGS.sweep_batch) for t in lengths] + [
        (FLAGS.sweep_length, b) for b in batches if b != FLAGS.sweep_batch
    ]
    rows: list[Row] = []
    with open(workdir / "results.jsonl", "w") as out:
        for family in FLAGS.models:
            hidden = matched_width(family, budget)
            family_methods = methods if _is_parallel(family) else [None]
            for length, batch in configs:
                for row in measure(family, family_methods, hidden, length, batch):
                    rows.append(row)
                    out.write(json.dumps(dataclasses.asdict(row)) + "\n")
                    out.flush()
                    print(
                        f"{row.model:>11} {row.method:>10} {row.mode:>9} t={row.length:<6} "
                        f"b={row.batch:<3} {_fmt(row.ms):>8} ms  {_fmt(row.memory_mb):>7} MB {row.note}",
                        flush=True,
                    )
    text = markdown(rows, head)
    (workdir / "results.md").write_text(text)
    plot(workdir, rows)
    print(text)


if __name__ == "__main__":
    user_modules.run(main)
