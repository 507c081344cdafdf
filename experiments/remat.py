"""Memory for compute: a recurrent layer's training step with and without `remat`.

    python -m experiments.remat
    python -m experiments.remat --models=lstm,lstm:layer_norm=True --length=16384 --chunks=sqrt,128

Backpropagation through time keeps every step's intermediates (gates, states)
until the backward pass reads them: memory grows as t. `remat` (a switch of every
`seqjax.Recurrent` layer) runs the scan in chunks of k steps under
`jax.checkpoint`: only each chunk's first carry and the outputs are kept, and a
chunk's steps are recomputed in the backward pass, for about one more forward
pass (memory `O(t/k + k)` steps, least at k = sqrt(t)).

For every family of --models (cell families; options as `lstm:layer_norm=True`)
this compiles one training step, `jax.grad` of a squared loss on the outputs of a
one-layer layer over `[t, b, d]` float32 inputs, and reports XLA's planned
temporary memory (`compiled.memory_analysis()`, the buffers besides arguments and
outputs) and the median time of --repeats calls, for:

  - default: the path seqjax picks (on CPU the fused C++ loop for the plain cells);
  - autodiff: JAX's differentiation of the plain `lax.scan` (what remat chunks);
  - remat=k for each of --chunks ("sqrt" is k = ceil(sqrt(t))).

Outputs in --workdir: config.json, results.jsonl, results.md.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments import common, run_config, user_modules
from seqjax import registry
from seqjax.models import Recurrent

FLAGS = flags.FLAGS
flags.DEFINE_integer("length", 8192, "Sequence length t.")
flags.DEFINE_integer("input_size", 32, "Input features d.")
flags.DEFINE_list("chunks", ["sqrt", "64", "1024"], "remat chunk lengths k ('sqrt': ceil(sqrt(t))).")
flags.DEFINE_integer("repeats", 3, "Timed calls after one warm-up (the median is reported).")
# --models, --hidden_size, --batch_size and --workdir are experiments.common's.
FLAGS.set_default("models", ["lstm", "gru"])
FLAGS.set_default("hidden_size", 128)
FLAGS.set_default("batch_size", 16)


@dataclasses.dataclass(frozen=True)
class Row:
    model: str
    config: str  # default, autodiff, remat=k
    path: str  # the path the layer's scan took (seqjax.recurrences.paths.Path)
    temp_mb: float  # XLA's planned temporaries of the compiled train step
    ms: float  # median train-step time


def _switches(config: str) -> dict:
    if config == "default":
        return {}
    if config == "autodiff":
        return {"custom_backward": False, "cpu_kernel": False}
    chunk = config.removeprefix("remat=")
    return {"remat": True if chunk == "sqrt" else int(chunk)}


def measure(spec: str, config: str) -> Row:
    family, options = common.parse_model(spec)
    cell = registry.get(family).make_cell(FLAGS.hidden_size, **options)
    layer = Recurrent(cell, FLAGS.input_size, **_switches(config))
    params = layer.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (FLAGS.length, FLAGS.batch_size, FLAGS.input_size))
    step = jax.jit(jax.grad(lambda p, xs: jnp.sum(jnp.square(layer.apply(p, xs)[0]))))
    compiled = step.lower(params, xs).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
    jax.block_until_ready(compiled(params, xs))
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, xs))
        times.append(1e3 * (time.perf_counter() - start))
    return Row(spec, config, layer.path(params), round(temp, 1), round(statistics.median(times), 1))


def markdown(rows: list[Row]) -> str:
    lines = [
        f"t={FLAGS.length}, b={FLAGS.batch_size}, d={FLAGS.input_size}, h={FLAGS.hidden_size}, float32; "
        f"{run_config.hardware()}",
        "",
        "| model | config | path | temp MB | vs autodiff | ms | vs autodiff |",
        "|---|---|---|---|---|---|---|",
    ]
    base = {r.model: r for r in rows if r.config == "autodiff"}
    for r in rows:
        ref = base[r.model]
        lines.append(
            f"| {r.model} | {r.config} | {r.path} | {r.temp_mb:.0f} | {r.temp_mb / ref.temp_mb:.2f}x | "
            f"{r.ms:.0f} | {r.ms / ref.ms:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    for spec in FLAGS.models:
        family, options = common.parse_model(spec)
        if registry.get(family).make_cell is None:
            raise app.UsageError(f"--models: {family!r} is not a cell family; remat chunks a cell's scan")
        try:
            registry.get(family).check_options(options)
            Recurrent(
                registry.get(family).make_cell(FLAGS.hidden_size, **options), FLAGS.input_size, remat=True
            )
        except ValueError as error:
            raise app.UsageError(f"--models={spec}: {error}") from None
    for chunk in FLAGS.chunks:
        if chunk != "sqrt" and not (chunk.isdigit() and int(chunk) > 0):
            raise app.UsageError(f"--chunks are positive ints or 'sqrt'; got {chunk!r}")
    workdir = pathlib.Path(FLAGS.workdir or "runs/remat")
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {flag.name: flag.value for flag in FLAGS.get_key_flags_for_module(sys.modules[__name__])}
    settings |= {name: FLAGS[name].value for name in ("models", "hidden_size", "batch_size")}
    run_config.write(workdir, "remat", settings, [common.parse_model(m)[0] for m in FLAGS.models])
    configs = ["default", "autodiff", *(f"remat={k}" for k in FLAGS.chunks)]
    rows = []
    with open(workdir / "results.jsonl", "w") as out:
        for spec in FLAGS.models:
            for config in configs:
                row = measure(spec, config)
                rows.append(row)
                out.write(json.dumps(dataclasses.asdict(row)) + "\n")
                out.flush()
                print(
                    f"{spec:>24} {config:>12} {row.path:>10} {row.temp_mb:8.0f} MB {row.ms:8.0f} ms",
                    flush=True,
                )
    text = markdown(rows)
    (workdir / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    user_modules.run(main)
