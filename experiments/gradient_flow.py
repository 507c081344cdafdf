"""Vanishing and exploding gradients, measured per model and initialisation.

For every model of `--models` (default: tanh RNN, relu RNN, LSTM, GRU and the
Transformer; any registered family, a user's too), at the family's default
initialisation, with orthogonal recurrent weights, and with the recurrent
weights scaled up: the norm of the gradient that reaches each time step from a
loss on the last step (`||dL/ds_t||` for the state s_t of a cell family,
`||dL/dx_t||` for the inputs of a backbone family), its fitted per-step decay
rate, and the spectral radius and largest singular value of the recurrent
Jacobian along the trajectory. Then a short training run on an exploding
configuration, with and without optax's gradient-norm clipping.

"orthogonal" passes `recurrent_init="orthogonal"` to families that take it (the
others are skipped); "scaled" multiplies the parameters a cell or backbone names
in `recurrent_params` (`w_hh`; the Transformer's blocks), or all of them.

    python -m experiments.gradient_flow
    python -m experiments.gradient_flow --length=300 --scale=2 --hidden_size=128 --batch_size=32
    python -m experiments.gradient_flow --user_module=my_cells.py --models=lstm,indrnn

Writes to --workdir: config.json, gradient_flow.png, profiles.json, profiles.csv,
clipping.json, clipping.png, results.md.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from experiments import common, run_config, user_modules
from seqjax import registry
from seqjax.analysis import diagnostics
from seqjax.data import tasks
from seqjax.models import SequenceModel
from seqjax.recurrences import protocol
from seqjax.training import TrainConfig, train

# --models, --hidden_size, --batch_size, --num_heads, --positional and --workdir are
# the experiments' shared flags (experiments.common).
flags.DEFINE_integer("length", 100, "Sequence length T; the loss reads the last step.")
flags.DEFINE_float("scale", 3.0, "Factor on the recurrent weights of the 'scaled' initialisation.")
flags.DEFINE_integer("clip_steps", 300, "Steps of the clipping comparison (a multiple of 10).")
flags.DEFINE_list("inits", ["default", "orthogonal", "scaled"], "Initialisations to profile.")
FLAGS = flags.FLAGS
INITS = ("default", "orthogonal", "scaled")
MODELS = ("rnn", "rnn:nonlinearity=relu", "lstm", "lstm:forget_bias=None", "gru", "transformer")  # default
INPUT_SIZE = 8
BACKBONE_LAYERS = 2  # a backbone family is profiled two layers deep, as attention needs
MAX_JACOBIAN_STATE = 512  # the largest state whose recurrent Jacobian spectrum is taken


def scale_recurrence(module: Any, params: dict[str, Any], factor: float) -> dict[str, Any]:
    """`params` of a cell or backbone with the ones named by its `recurrent_params`
    (every one if it names none) multiplied by `factor`."""
    names = getattr(module, "recurrent_params", tuple(params))
    return {k: jax.tree.map(lambda w: factor * w, v) if k in names else v for k, v in params.items()}


def _options(settings: common.Settings, spec: str, init: str) -> dict[str, Any] | None:
    """The family's options for `init`, or None if the family cannot take that init."""
    name, options = common.model_options(settings, spec)
    if init == "orthogonal":
        if "recurrent_init" not in registry.get(name).option_names():
            return None
        options["recurrent_init"] = "orthogonal"
    return options


def measure_cell(cell: Any, init: str, length: int, batch: int, scale: float) -> dict:
    """State-gradient profile and Jacobian spectrum of one cell and initialisation."""
    hidden = protocol.output_size(cell)
    params = cell.init(jax.random.key(0), INPUT_SIZE)
    if init == "scaled":
        params = scale_recurrence(cell, params, scale)
    xs = jax.random.normal(jax.random.key(1), (length, batch, INPUT_SIZE))  # [t, b, d]
    readout = jax.random.normal(jax.random.key(2), (hidden,)) / np.sqrt(hidden)
    _, grads = jax.jit(
        lambda p, x: diagnostics.hidden_state_gradients(cell, p, x, lambda ys: jnp.mean(ys[-1] @ readout))
    )(params, xs)
    norms = diagnostics.profile(grads)  # [t]
    state_size = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(cell.initial_carry()))
    if state_size > MAX_JACOBIAN_STATE:
        # A [s, s] Jacobian per step would not fit (Mamba's [E, N] state): no spectrum.
        return {"norms": norms, "spectral_radius": None, "max_singular_value": None}
    # The spectrum along a few trajectories: eigenvalues are costly, and these vary little.
    spectrum = jax.jit(functools.partial(diagnostics.jacobian_spectrum, cell))(params, xs[:, :4])
    return {
        "norms": norms,
        "spectral_radius": float(jnp.mean(spectrum.spectral_radius)),
        "max_singular_value": float(jnp.mean(spectrum.max_singular_value)),
    }


def measure_backbone(backbone: Any, init: str, length: int, hidden: int, batch: int, scale: float) -> dict:
    """Input-gradient profile of a backbone family (it has no cell to take a Jacobian of)."""
    params = backbone.init(jax.random.key(0))
    if init == "scaled":
        params = scale_recurrence(backbone, params, scale)
    xs = jax.random.normal(jax.random.key(1), (batch, length, INPUT_SIZE))  # [b, t, d]
    readout = jax.random.normal(jax.random.key(2), (hidden,)) / np.sqrt(hidden)
    grads = jax.jit(
        lambda p, x: diagnostics.input_gradients(
            lambda inputs: backbone.apply(p, inputs)[0], x, lambda y: jnp.mean(y[:, -1] @ readout)
        )
    )(params, xs)
    return {
        "norms": diagnostics.profile(grads, time_axis=1),
        "spectral_radius": None,
        "max_singular_value": None,
    }


def measure(settings: common.Settings, spec: str, init: str, length: int, scale: float) -> dict | None:
    """The profile of model `spec` at `init`, or None where the family has no such init."""
    options = _options(settings, spec, init)
    if options is None:
        return None
    family, hidden = registry.get(common.parse_model(spec)[0]), settings.hidden_size
    if family.make_cell is not None:
        return measure_cell(family.make_cell(hidden, **options), init, length, settings.batch_size, scale)
    backbone = family.make_backbone(hidden, BACKBONE_LAYERS, input_size=INPUT_SIZE, dropout=0.0, **options)
    return measure_backbone(backbone, init, length, hidden, settings.batch_size, scale)


def clipping_run(workdir: pathlib.Path, steps: int, scale: float) -> dict:
    """A relu RNN with scaled recurrent weights on the adding problem, with and without clipping."""
    task = tasks.Adding()
    results = {}
    for label, clip in (("no clipping", None), ("clip_by_global_norm(1.0)", 1.0)):
        rnn = SequenceModel(
            "rnn", output_size=1, hidden_size=32, input_size=2, options={"nonlinearity": "relu"}
        )
        model = ScaledInit(rnn, scale)
        config = TrainConfig(
            length=50,
            steps=steps,
            batch_size=32,
            warmup_steps=0,
            clip_norm=clip,
            log_every=10,
            eval_every=steps,
            checkpoint_every=0,
        )
        _, history = train(model, task, config, [0], [1e-3], workdir / label.split("(")[0].replace(" ", "_"))
        results[label] = [(line["step"], line["loss"], line["grad_norm"]) for line in history]
    return results


@dataclasses.dataclass(frozen=True)
class ScaledInit:
    """A cell family's `model` with its recurrent weights starting `scale` times larger."""

    model: SequenceModel
    scale: float

    def init(self, key, dtype=jnp.float32):
        params = self.model.init(key, dtype)
        cell = self.model.backbone.cell
        params["backbone"] = tuple(
            tuple(scale_recurrence(cell, p, self.scale) for p in layer) for layer in params["backbone"]
        )
        return params

    def apply(self, *args, **kwargs):
        return self.model.apply(*args, **kwargs)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    hidden_size = 64 if FLAGS.hidden_size is None else FLAGS.hidden_size
    if FLAGS.length < 2 or hidden_size < 4 or hidden_size % 4:
        raise app.UsageError("--length must be >= 2 and --hidden_size a positive multiple of 4")
    if FLAGS.clip_steps < 10 or FLAGS.clip_steps % 10:
        raise app.UsageError(f"--clip_steps must be a positive multiple of 10; got {FLAGS.clip_steps}")
    if not FLAGS.inits or set(FLAGS.inits) - set(INITS):
        raise app.UsageError(f"--inits must be a non-empty subset of {','.join(INITS)}; got {FLAGS.inits}")
    if not (math.isfinite(FLAGS.scale) and FLAGS.scale > 0):
        raise app.UsageError(f"--scale must be a finite number > 0; got {FLAGS.scale}")
    if FLAGS.batch_size < 1:
        raise app.UsageError(f"--batch_size must be >= 1; got {FLAGS.batch_size}")
    logging.set_verbosity(logging.INFO)
    workdir = pathlib.Path(FLAGS.workdir or "runs/gradient_flow")
    workdir.mkdir(parents=True, exist_ok=True)
    models = tuple(FLAGS.models) if FLAGS["models"].present else MODELS
    settings = common.Settings(
        models=models,
        lengths=(FLAGS.length,),
        seeds=(0,),
        learning_rates=(1e-3,),
        steps=FLAGS.clip_steps,
        batch_size=FLAGS.batch_size,
        hidden_size=hidden_size,
        num_heads=FLAGS.num_heads,
        positional=FLAGS.positional,
        workdir=str(workdir),
    )
    try:  # every model resolves before anything is measured
        for spec in models:
            _options(settings, spec, "default")
    except ValueError as error:
        raise app.UsageError(f"--models: {error}") from None
    config = {
        **dataclasses.asdict(settings),
        "inits": list(FLAGS.inits),
        "scale": FLAGS.scale,
        "clip_steps": FLAGS.clip_steps,
    }
    run_config.write(workdir, "gradient_flow", config, [common.parse_model(spec)[0] for spec in models])
    rows = []
    for init in FLAGS.inits:
        for spec in models:
            measured = measure(settings, spec, init, FLAGS.length, FLAGS.scale)
            if measured is None:
                logging.info("skipped %s / %s: the family takes no recurrent_init", spec, init)
                continue
            rows.append({"model": spec, "init": init, **measured})
            logging.info("measured %s / %s", spec, init)
    for row in rows:
        norms = row.pop("norms")
        row["decay_rate"] = float(diagnostics.decay_rate(norms))
        row["grad_norm_at_loss"] = float(norms[-1])
        row["grad_norm_at_start"] = float(norms[0])
        row["profile"] = [float(n) for n in norms[::-1]]  # by distance from the loss
    (workdir / "profiles.json").write_text(json.dumps(rows, indent=1))
    with (workdir / "profiles.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "init", "distance", "grad_norm"])
        for row in rows:
            writer.writerows([row["model"], row["init"], k, n] for k, n in enumerate(row["profile"]))
    plot_profiles(workdir, rows)
    clipping = clipping_run(workdir, FLAGS.clip_steps, FLAGS.scale)
    (workdir / "clipping.json").write_text(json.dumps(clipping, indent=1))
    plot_clipping(workdir, clipping)
    table = markdown(rows, clipping)
    (workdir / "results.md").write_text(table + "\n")
    print(f"\ngradient flow: results in {workdir}\n\n{table}\n")


def markdown(rows: list[dict], clipping: dict) -> str:
    def fmt(x):
        return "-" if x is None else f"{x:.3g}"

    lines = [
        "| model | init | decay rate (log/step) | factor per step | grad norm at loss | grad norm at t=0 | "
        "mean spectral radius | mean sigma_max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['init']} | {r['decay_rate']:.3f} | {np.exp(r['decay_rate']):.3f} | "
            f"{fmt(r['grad_norm_at_loss'])} | {fmt(r['grad_norm_at_start'])} | {fmt(r['spectral_radius'])} | "
            f"{fmt(r['max_singular_value'])} |"
        )
    lines += [
        "",
        "| clipping | first loss | final loss | max grad norm | final grad norm |",
        "|---|---|---|---|---|",
    ]
    for label, history in clipping.items():
        _, losses, norms = zip(*history, strict=True)
        lines.append(f"| {label} | {losses[0]:.4g} | {losses[-1]:.4g} | {max(norms):.4g} | {norms[-1]:.4g} |")
    return "\n".join(lines)


def plot_profiles(workdir: pathlib.Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inits = [i for i in INITS if any(r["init"] == i for r in rows)]
    fig, axes = plt.subplots(1, len(inits), figsize=(5 * len(inits), 4), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, init in zip(axes, inits, strict=True):
        for i, row in enumerate(r for r in rows if r["init"] == init):
            profile = np.asarray(row["profile"])
            with np.errstate(divide="ignore"):
                ax.plot(np.log10(profile), label=row["model"], color=f"C{i}")
        ax.set_title(f"init: {init}")
        ax.set_xlabel("distance from the loss (steps)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("log10 ||dL/ds_t|| (backbones: ||dL/dx_t||)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(workdir / "gradient_flow.png", dpi=100)
    plt.close(fig)


def plot_clipping(workdir: pathlib.Path, clipping: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_norm) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, history in clipping.items():
        steps, losses, norms = zip(*history, strict=True)
        ax_loss.plot(steps, losses, label=label)
        ax_norm.plot(steps, norms, label=label)
    ax_loss.axhline(1 / 6, color="k", linestyle="--", label="memoryless (1/6)")
    for ax, name in ((ax_loss, "training loss (MSE)"), (ax_norm, "gradient norm (before clipping)")):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(name)
    ax_loss.set_title("relu RNN, scaled init, adding problem")
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(workdir / "clipping.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    user_modules.run(main)
