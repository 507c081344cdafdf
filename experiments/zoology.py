"""The Zoology MQAR grid (Arora et al. 2023, Fig. 2): recall accuracy against model width.

Multi-query associative recall with length/16 key-value pairs, two layers, every
model at each width of `--widths` and each sequence length of `--lengths`, at
each model's learning rates (a sweep with `--full`: the rates train together, each
cell's rate is chosen on the validation stream, the test stream is reported). Attention recalls
at every width; a recurrent model's fixed-size state must hold every pair, so its
accuracy rises with width and falls with length.

    python -m experiments.zoology                       # CPU-sized subset (Mamba, Transformer)
    python -m experiments.zoology --full                # the paper's grid (GPU-sized)
    python -m experiments.zoology --models=gru,mamba,transformer --widths=8,16,32,64

Writes to --workdir (runs/zoology): one directory per width (an experiment's
outputs each), and over the grid summary.json, summary.csv, results.md and
zoology.png (accuracy against width, one panel per length, as in the paper).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
from absl import app, flags

from experiments import common, statistics
from seqjax import registry
from seqjax.data import tasks

flags.DEFINE_list("widths", ["16", "64"], "Model widths (hidden size; d_model of the Transformer).")
flags.DEFINE_boolean(
    "full",
    False,
    "The paper's grid: widths 64,128,256,512, lengths 64,128,256, vocabulary 8192, four learning "
    "rates 1e-4..1e-2, 20000 steps and every registered family (flags given explicitly still apply).",
)
FLAGS = flags.FLAGS

MODELS = ("mamba", "transformer")
FULL = dict(
    widths=(64, 128, 256, 512),
    lengths=(64, 128, 256),
    vocab_size=8192,
    learning_rates=tuple(float(x) for x in np.logspace(-4, -2, 4)),
    steps=20000,
)

# A CPU-sized subset (529 s alone on 2 cores; the README's first Zoology table),
# chosen by measurement. Over a 64-token vocabulary the GRU and RG-LRU recalled about
# one pair at widths 32 and 64 within 1500 steps (0.29-0.52): no width effect showed.
# Over 16 tokens (t=32, 2 pairs, width 64) Mamba at rate 3e-3 had one seed of three at
# 0.88 after 1500 steps and two recalling one pair; at 1e-2 all three bound both pairs
# by step 1050 to 1350. The Transformer solves every cell at 3e-3 by step 900.
# Attention then recalls at every width while Mamba gains with width and loses with
# length, the paper's picture; the GRU, which stays at one pair at every width, is in
# the README.
EXPERIMENT = common.Experiment(
    name="zoology",
    task=tasks.AssociativeRecall(vocab_size=16),
    lengths=(32, 64),
    steps=1500,
    num_layers=2,
    learning_rates=(1e-2,),
    model_learning_rates=("transformer=3e-3",),
    x_axis=("key-value pairs", lambda n: n // 16),
)


def run(experiment: common.Experiment, settings: common.Settings, widths: tuple[int, ...]) -> list[dict]:
    """Every width in turn (each checked before any trains), into
    `settings.workdir/d<width>`; writes the grid's summary, table and plot after each."""
    per_width = [dataclasses.replace(settings, hidden_size=w) for w in widths]
    for width_settings in per_width:
        common.check_settings(experiment, width_settings)
    workdir = pathlib.Path(settings.workdir)
    rows: list[dict] = []
    for width_settings in per_width:
        width_settings = dataclasses.replace(
            width_settings, workdir=str(workdir / f"d{width_settings.hidden_size}")
        )
        rows += [
            {"width": width_settings.hidden_size, **r}
            for r in common.selected(common.run(experiment, width_settings))
        ]
        common.write_summary(workdir, rows)
        table = markdown_table(rows)
        (workdir / "results.md").write_text(table + "\n")
    plot(workdir, rows)
    print(f"\nzoology: results in {workdir}\n\n{table}\n")
    return rows


def _accuracies(rows: list[dict], model: str, length: int, width: int) -> list[float]:
    return [
        r["test_accuracy"] for r in rows if (r["model"], r["length"], r["width"]) == (model, length, width)
    ]


def markdown_table(rows: list[dict]) -> str:
    """model x (length, width): test accuracy, mean ± 95% interval over seeds, at each
    cell's learning rate chosen on validation."""
    cells = sorted({(r["length"], r["width"]) for r in rows})
    head = ["model", *(f"t={n} ({n // 16} pairs), d={w}" for n, w in cells)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in dict.fromkeys(r["model"] for r in rows):
        values = []
        for n, w in cells:
            accuracies = _accuracies(rows, model, n, w)
            values.append(statistics.format_interval(accuracies) if accuracies else "-")
        lines.append(f"| {model} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def plot(workdir: pathlib.Path, rows: list[dict]) -> None:
    """zoology.png: test accuracy against width, one panel per sequence length, a line
    per model with its 95% interval over seeds (the form of the paper's Fig. 2), over
    the memoryless baseline of the task the runs had (`--task_options` included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["length"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(lengths), figsize=(3.8 * len(lengths), 3.4), squeeze=False, sharey=True)
    for ax, length in zip(axes[0], lengths, strict=True):
        for i, model in enumerate(models):
            widths = sorted({r["width"] for r in rows if r["model"] == model and r["length"] == length})
            spans = [statistics.interval(_accuracies(rows, model, length, w)) for w in widths]
            mean = np.array([m for m, _ in spans])
            half = np.nan_to_num(np.array([h for _, h in spans]))
            ax.plot(widths, mean, "o-", color=f"C{i}", label=model, markersize=3)
            ax.fill_between(
                widths, np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1), color=f"C{i}", alpha=0.15
            )
        baseline = next(r["baseline_accuracy"] for r in rows if r["length"] == length)
        ax.axhline(baseline, color="k", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_title(f"sequence length {length}, {length // 16} pairs", fontsize=9)
        ax.set_xlabel("model dimension")
    axes[0, 0].set_ylabel("MQAR test accuracy")
    axes[0, 0].set_ylim(0, 1.02)
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(workdir / "zoology.png", dpi=110)
    plt.close(fig)


def _sweep(experiment: common.Experiment, settings: common.Settings) -> list[dict]:
    if FLAGS.full:  # the paper's grid where the command line does not say otherwise
        full = {**FULL, "models": registry.names()}  # every family registered by now, a user's too
        for name, value in full.items():
            if name != "vocab_size" and not FLAGS[name].present:  # parsed as from a command line: given
                FLAGS[name].parse(",".join(map(str, value)) if isinstance(value, tuple) else str(value))
        task = dataclasses.replace(experiment.task, vocab_size=full["vocab_size"])
        experiment = dataclasses.replace(experiment, task=task)
        settings = common.settings_from_flags(experiment)
    try:
        widths = tuple(int(w) for w in FLAGS.widths)
    except ValueError:
        raise app.UsageError(f"--widths must be a comma list of ints; got {','.join(FLAGS.widths)}") from None
    if not widths or min(widths) < 1:
        raise app.UsageError(f"--widths must name positive ints; got {','.join(map(str, widths))}")
    return run(experiment, settings, widths)


if __name__ == "__main__":
    # The CPU-sized default compares three kinds of model; name any registered family.
    flags.FLAGS.set_default("models", list(MODELS))
    common.main(EXPERIMENT, _sweep)
