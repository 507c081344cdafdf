"""Training and inference throughput of seqjax's recurrent layers against its peers.

    python -m experiments.throughput                                # everything below
    python -m experiments.throughput --cells=lstm --stacks=1 --malloc=tuned --scale_lengths= --scale_batches=
    python -m experiments.throughput --malloc=default --dtypes=float32,bfloat16   # on a GPU

Times, side by side on one machine: seqjax (as configured by default, and with the
other input-projection placement), Flax linen `nn.RNN` over SimpleCell, LSTMCell,
OptimizedLSTMCell, GRUCell, their Flax NNX equivalents, Equinox cells under
`lax.scan`, Haiku's cores under `hk.dynamic_unroll`, and PyTorch's `nn.RNN/LSTM/GRU`
with `torch.set_num_threads(--threads)` (the peers need `pip install -e .[bench]`;
missing ones are skipped), and on a GPU `jax.experimental.rnn`'s cuDNN LSTM.
`[batch, time, input]` inputs in each of `--dtypes`. On a GPU every system runs
there (PyTorch on CUDA with cuDNN); the tables name the GPU and, per row, the
code path that ran (seqjax's `Recurrent.path`: "cudnn", "hoisted", "kernel", ...;
PyTorch's "cudnn" or "native").

Every (system, cell) runs in its own worker process, once per --malloc setting
(`tuned` runs it with `--keep_freed_memory`, `seqjax.host.keep_freed_memory`: freed
memory stays in one arena instead of going back to the kernel, so allocating large
buffers stops page-faulting).
Per job: compile time of the first call, then `--repeats` timed calls after two
warm-up calls (median, min, max), and the job's peak resident memory above the
worker's baseline (VmHWM, reset before each job; shown for the default malloc
only, since the tuned one keeps freed memory mapped, so that a job reusing it
shows no growth). Achieved GFLOP/s counts the
matmul FLOPs of `Job.matmul_flops` and is compared with a float32 matmul roofline
measured by the same kind of worker.

`--cells` takes any registered cell family, a user's too (`--user_module`); the
peers have only the built-in ones, and GFLOP/s is shown for cells with a dense
recurrence (`DenseRecurrence`, with `num_gates`).

Outputs in --workdir: config.json, results.jsonl (one line per job), results.md
(the tables printed at the end).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

from experiments import run_config, user_modules
from experiments.throughput_systems import ATTENTION_SYSTEMS, CELLS, Job, Unavailable, build, systems_for
from seqjax import registry

FLAGS = flags.FLAGS
flags.DEFINE_list("configs", ["C1=64x256x32x256", "C2=32x512x8x128"], "name=batch x time x input x hidden.")
flags.DEFINE_list("cells", list(CELLS), "Registered cell families: rnn, lstm, gru, a user's.")
flags.DEFINE_list(
    "transformer_configs",
    ["T1=64x256x128x2", "T2=64x1024x128x2", "T3=8x256x128x2", "T4=8x1024x128x2"],
    "Transformer rows: name=batch x time x d_model x layers (input features = d_model; '' for none).",
)
flags.DEFINE_integer("transformer_heads", 4, "The Transformer rows' attention heads.")
flags.DEFINE_integer("transformer_mlp", 512, "The Transformer rows' MLP width.")
flags.DEFINE_list("stacks", ["1", "2bi"], "Layer stacks: <layers>, or <layers>bi for bidirectional.")
flags.DEFINE_list("modes", ["train", "forward"], "train (forward + gradients) and/or forward.")
flags.DEFINE_list("dtypes", ["float32"], "Parameter and input dtypes: float32 and/or bfloat16.")
flags.DEFINE_list("systems", None, "Systems to time (default: every one installed); see throughput_systems.")
flags.DEFINE_list("malloc", ["default", "tuned"], "glibc malloc settings: default and/or tuned.")
flags.DEFINE_integer("repeats", 10, "Timed calls per job (the median is reported).")
flags.DEFINE_integer("threads", os.cpu_count(), "PyTorch threads (JAX uses every core).")
flags.DEFINE_list("scale_lengths", ["128", "256", "512", "1024", "2048"], "Times for the scaling sweep.")
flags.DEFINE_list("scale_batches", ["16", "64", "256"], "Batches for the scaling sweep.")
flags.DEFINE_list("scale_systems", ["seqjax", "torch", "flax_nnx_OptimizedLSTMCell"], "Systems in the sweep.")
flags.DEFINE_string("scale_cell", "lstm", "Cell of the scaling sweep (C1's other sizes, train step).")
flags.DEFINE_string("workdir", "runs/throughput", "Output directory.")
flags.DEFINE_list("report", None, "Only print the tables of these results.jsonl files (merged).")
flags.DEFINE_string("worker", None, "Internal: run the JSON list of jobs and print one JSON line each.")


def _rss_peak_reset() -> int:
    """Resets the process's peak RSS and returns the current RSS, in bytes."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        status = pathlib.Path("/proc/self/status").read_text()
    except OSError:
        return 0
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


def _rss_peak() -> int:
    try:
        status = pathlib.Path("/proc/self/status").read_text()
    except OSError:
        return 0
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


def _time_calls(fn, args, repeats: int, is_torch: bool) -> tuple[float, list[float]]:
    """(seconds of the first call, seconds of each of `repeats` calls after two warm-ups);
    each call waits for its device work."""
    import jax

    def call():
        out = fn(*args)
        if not is_torch:
            jax.block_until_ready(out)
        elif _on_gpu():
            import torch

            torch.cuda.synchronize()

    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    call()
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, times


def _on_gpu() -> bool:
    import jax

    return jax.default_backend() == "gpu"


def _roofline(repeats: int, dtype: str) -> float:
    """GFLOP/s of a square matmul in `dtype` at JAX's default precision: 2048^3 on
    CPU (the best of XLA's and NumPy's), 8192^3 on GPU (XLA's)."""
    import jax
    import jax.numpy as jnp

    gpu = jax.default_backend() == "gpu"
    n = 8192 if gpu else 2048
    a = np.random.default_rng(0).standard_normal((n, n), np.float32)
    matmul = jax.jit(jnp.matmul)
    candidates = [(matmul, (jnp.asarray(a, dtype), jnp.asarray(a, dtype)), False)]
    if not gpu and dtype == "float32":
        candidates.append((np.matmul, (a, a), True))
    best = 0.0
    for fn, args, is_host in candidates:
        _, times = _time_calls(fn, args, repeats, is_host and not gpu)
        best = max(best, 2 * n**3 / np.median(times) / 1e9)
    return best


def run_worker(jobs: list[dict], repeats: int, threads: int) -> None:
    """Runs jobs (dicts of Job fields plus `mode`) and prints a JSON line for each."""
    for spec in jobs:
        spec = dict(spec)
        mode = spec.pop("mode")
        row = {**spec, "mode": mode}
        if spec["system"] == "roofline":
            row["gflops"] = _roofline(repeats, spec["dtype"])
            print(json.dumps(row), flush=True)
            continue
        job = Job(**spec)
        baseline = _rss_peak_reset()
        try:
            built = build(job, threads)
        except ImportError as e:
            row["skipped"] = f"not installed: {e.name}"
            print(json.dumps(row), flush=True)
            continue
        except Unavailable as e:
            row["skipped"] = str(e)
            print(json.dumps(row), flush=True)
            continue
        if built is None:
            row["skipped"] = f"no {job.cell} cell"
            print(json.dumps(row), flush=True)
            continue
        train, forward, args, path, is_torch = built
        first, times = _time_calls(train if mode == "train" else forward, args, repeats, is_torch)
        median = float(np.median(times))
        flops = job.matmul_flops(mode == "train")
        row.update(
            path=path,
            median_ms=1e3 * median,
            min_ms=1e3 * min(times),
            max_ms=1e3 * max(times),
            compile_s=max(first - median, 0.0),
            # Host memory: meaningless for a job that runs on a GPU.
            peak_mib=None if _on_gpu() else max(_rss_peak() - baseline, 0) / 2**20,
            tokens_per_s=job.batch * job.time / median,
            gflops=None if flops is None else flops / median / 1e9,
        )
        print(json.dumps(row), flush=True)


def _parse_config(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.partition("=")
    try:
        sizes = tuple(int(v) for v in dims.split("x"))
    except ValueError:
        sizes = ()
    if not name or len(sizes) != 4 or min(sizes) < 1:
        raise app.UsageError(f"--configs entries are name=BxTxDxH of positive ints; got {text!r}")
    return name, sizes


def _parse_stack(text: str) -> tuple[int, bool]:
    bidirectional = text.endswith("bi")
    try:
        layers = int(text.removesuffix("bi"))
    except ValueError:
        layers = 0
    if layers < 1:
        raise app.UsageError(f"--stacks entries are <layers> or <layers>bi, layers >= 1; got {text!r}")
    return layers, bidirectional


def _check_subset(name: str, values: list[str], choices: list[str], allow_empty: bool = False) -> None:
    unknown = [v for v in values if v not in choices]
    if unknown or (not values and not allow_empty):
        raise app.UsageError(
            f"--{name} must name some of {', '.join(choices)}; got {','.join(values) or 'none'}"
        )


def check_flags() -> None:
    """Every flag of a sweep, before any worker starts."""
    cell_families = [n for n in registry.names() if registry.get(n).make_cell is not None]
    _check_subset("cells", FLAGS.cells, cell_families, allow_empty=bool(FLAGS.transformer_configs))
    _check_subset("scale_cell", [FLAGS.scale_cell], cell_families)
    _check_subset("modes", FLAGS.modes, ["train", "forward"], allow_empty=True)
    _check_subset("malloc", FLAGS.malloc, ["default", "tuned"])
    _check_subset("dtypes", FLAGS.dtypes, ["float32", "bfloat16"])
    families = [*FLAGS.cells, *(ATTENTION_SYSTEMS if FLAGS.transformer_configs else [])]
    systems = sorted({s for cell in families for s in systems_for(cell)})
    if FLAGS.systems is not None:
        _check_subset("systems", FLAGS.systems, systems)
    _check_subset("scale_systems", FLAGS.scale_systems, systems_for(FLAGS.scale_cell), allow_empty=True)
    if FLAGS.cells and not FLAGS.configs:
        raise app.UsageError("--configs must name at least one configuration for --cells")
    for text in FLAGS.configs + FLAGS.transformer_configs:
        _parse_config(text)
    for name in ("transformer_heads", "transformer_mlp"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name} must be >= 1; got {FLAGS[name].value}")
    for text in FLAGS.transformer_configs:
        if _parse_config(text)[1][2] % FLAGS.transformer_heads:
            raise app.UsageError(f"--transformer_heads must divide d_model in {text!r}")
    for text in FLAGS.stacks:
        _parse_stack(text)
    for name in ("repeats", "threads"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name} must be >= 1; got {FLAGS[name].value}")
    for name in ("scale_lengths", "scale_batches"):
        if not all(v.isdigit() and int(v) >= 1 for v in FLAGS[name].value):
            raise app.UsageError(f"--{name} must be positive ints; got {','.join(FLAGS[name].value)}")


def _jobs() -> list[dict]:
    """Every measurement as a dict of Job fields + mode + config + sweep labels."""
    jobs = []
    for text in FLAGS.configs:
        name, (b, t, d, h) = _parse_config(text)
        for stack in FLAGS.stacks:
            layers, bi = _parse_stack(stack)
            for cell in FLAGS.cells:
                for system in systems_for(cell):
                    if FLAGS.systems and system not in FLAGS.systems:
                        continue
                    for mode in FLAGS.modes:
                        for dtype in FLAGS.dtypes:
                            job = Job(system, cell, b, t, d, h, layers, bi, dtype)
                            jobs.append(
                                {**dataclasses.asdict(job), "mode": mode, "config": name, "stack": stack}
                            )
    for family, text in ((f, c) for f in ATTENTION_SYSTEMS for c in FLAGS.transformer_configs):
        name, (b, t, m, layers) = _parse_config(text)
        for system in systems_for(family):
            if FLAGS.systems and system not in FLAGS.systems:
                continue
            for mode in FLAGS.modes:
                for dtype in FLAGS.dtypes:
                    job = Job(
                        system, family, b, t, m, m, layers, dtype=dtype,
                        num_heads=FLAGS.transformer_heads, mlp_dim=FLAGS.transformer_mlp,
                    )  # fmt: skip
                    labels = {"mode": mode, "config": name, "stack": str(layers)}
                    jobs.append({**dataclasses.asdict(job), **labels})
    if not FLAGS.cells:
        return jobs
    _, (b, t, d, h) = _parse_config(FLAGS.configs[0])
    sweep = [("time", (b, int(v))) for v in FLAGS.scale_lengths] + [
        ("batch", (int(v), t)) for v in FLAGS.scale_batches
    ]
    for axis, (bb, tt) in sweep:
        for system in FLAGS.scale_systems:
            if system in systems_for(FLAGS.scale_cell):
                job = Job(system, FLAGS.scale_cell, bb, tt, d, h)
                jobs.append(
                    {**dataclasses.asdict(job), "mode": "train", "config": f"scale_{axis}", "stack": "1"}
                )
    return jobs


def _run_workers(jobs: list[dict], malloc: str) -> list[dict]:
    """One worker process per (system, cell); returns the rows they printed."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}  # malloc's settings are ours
    groups: dict[tuple[str, str], list[dict]] = {
        ("roofline", ""): [{"system": "roofline", "mode": "-", "dtype": dtype} for dtype in FLAGS.dtypes]
    }
    for job in jobs:
        groups.setdefault((job["system"], job["cell"]), []).append(job)
    rows = []
    for (system, cell), group in groups.items():
        print(f"[{malloc}] {system} {cell}: {len(group)} jobs", flush=True)
        worker_jobs = [{k: v for k, v in j.items() if k not in ("config", "stack")} for j in group]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "experiments.throughput",
                f"--worker={json.dumps(worker_jobs)}",
                f"--repeats={FLAGS.repeats}",
                f"--threads={FLAGS.threads}",
                *(["--keep_freed_memory"] if malloc == "tuned" else []),
                *(f"--user_module={spec}" for spec in FLAGS.user_module),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
        # A worker prints one line per job, in order, until it finishes or fails.
        rows += [{**job, **line, "malloc": malloc} for job, line in zip(group, lines, strict=False)]
    return rows


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def tables(rows: list[dict]) -> str:
    """Markdown tables: one per (config, stack, mode, dtype, malloc), plus the scaling sweep."""
    roof = {(r["malloc"], r.get("dtype", "float32")): r["gflops"] for r in rows if r["system"] == "roofline"}
    timed = [r for r in rows if "median_ms" in r]
    out = [
        "matmul roofline: " + ", ".join(f"{d} ({m} malloc) {_fmt(g)} GFLOP/s" for (m, d), g in roof.items())
    ]
    header = (
        "| cell | system | path | ms/step (median) | min-max | tokens/s | vs best peer | GFLOP/s "
        "| % roofline | compile (s) | peak MiB |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )

    def key(r):
        return r["config"], r["stack"], r["mode"], r.get("dtype", "float32"), r["malloc"]

    for config, stack, mode, dtype, malloc in sorted(
        {key(r) for r in timed if not r["config"].startswith("scale")}
    ):
        group = [r for r in timed if key(r) == (config, stack, mode, dtype, malloc)]
        out.append(
            f"\n### {config} (b={group[0]['batch']}, t={group[0]['time']}, d={group[0]['input_size']}, "
            f"h={group[0]['hidden_size']}), layers {stack}, {mode}, {dtype}, {malloc} malloc\n\n{header}"
        )
        for cell in dict.fromkeys(r["cell"] for r in group):
            cell_rows = sorted((r for r in group if r["cell"] == cell), key=lambda r: r["median_ms"])
            peers = [r["median_ms"] for r in cell_rows if not r["system"].startswith("seqjax")]
            best_peer = min(peers) if peers else float("nan")
            for r in cell_rows:
                ceiling = roof.get((malloc, dtype))
                cols = [
                    cell,
                    r["system"],
                    r.get("path") or "-",
                    _fmt(r["median_ms"]),
                    f"{_fmt(r['min_ms'])}-{_fmt(r['max_ms'])}",
                    f"{r['tokens_per_s']:.3g}",
                    f"{best_peer / r['median_ms']:.2f}x" if peers else "-",
                    _fmt(r["gflops"]),
                    _fmt(r["gflops"] and ceiling and 100 * r["gflops"] / ceiling, 0),
                    _fmt(r["compile_s"], 2),
                    _fmt(r["peak_mib"], 0) if malloc == "default" else "-",
                ]
                out.append("| " + " | ".join(cols) + " |")
    scale = [r for r in timed if r["config"].startswith("scale")]
    for malloc in sorted({r["malloc"] for r in scale}):
        out.append(f"\n### Scaling, {scale[0]['cell']} train step, {malloc} malloc (ms/step; us per token)\n")
        out.append("| system | axis | batch | time | ms/step | us/token |\n|---|---|---|---|---|---|")
        for r in sorted(
            (r for r in scale if r["malloc"] == malloc),
            key=lambda r: (r["system"], r["config"], r["batch"], r["time"]),
        ):
            out.append(
                f"| {r['system']} | {r['config'][6:]} | {r['batch']} | {r['time']} | {_fmt(r['median_ms'])} "
                f"| {_fmt(1e6 / r['tokens_per_s'], 2)} |"
            )
    skipped = sorted({f"{r['system']}: {r['skipped']}" for r in rows if "skipped" in r})
    if skipped:
        out.append("\nSkipped: " + "; ".join(skipped))
    return "\n".join(out)


def main(argv) -> None:
    del argv
    if FLAGS.worker is not None:
        run_worker(json.loads(FLAGS.worker), FLAGS.repeats, FLAGS.threads)
        return
    if FLAGS.report:
        rows = [json.loads(line) for path in FLAGS.report for line in open(path) if line.strip()]
        print(f"Machine: {rows[0]['machine']}\n\n{tables(rows)}")
        return
    import jax

    check_flags()
    workdir = pathlib.Path(FLAGS.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {flag.name: flag.value for flag in FLAGS.get_key_flags_for_module(sys.modules[__name__])}
    run_config.write(workdir, "throughput", settings, (*FLAGS.cells, FLAGS.scale_cell))
    jobs = _jobs()
    rows = []
    for malloc in FLAGS.malloc:
        rows += _run_workers(jobs, malloc)
    device = jax.devices()[0]
    machine = (
        f"{run_config.cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__} on {jax.default_backend()}"
    )
    if device.platform == "gpu":
        machine += f" ({device.device_kind})"
    with open(workdir / "results.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({**row, "machine": machine}) + "\n")
    text = f"Machine: {machine}\n\n" + tables(rows)
    (workdir / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    user_modules.run(main)
