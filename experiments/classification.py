"""Sequence classification, one label per sequence: speakers from their vowels, digits pixel by pixel.

The sequence-to-label use of recurrent networks (the tutorial's sentiment
analysis), on data that ships with installed packages (`seqjax.data.classification`):

- japanese_vowels: 9 speakers, 12 cepstrum coefficients per frame, 7 to 29 frames
  (variable lengths, through `lengths`); the UEA archive's split.
- digits_pixels / digits_permuted / digits_rows: scikit-learn's 8x8 digits read as
  64 pixels (pixel-by-pixel MNIST's small cousin), the same pixels in a fixed
  random order (permuted MNIST's), or 8 rows of 8.

Recurrent families read out their last valid step (`--bidirectional`: both
directions' final states), the Transformer the mean over valid steps (it runs
with `causal=False` by default here: an encoder). Every family trains on the same
flags; test accuracy per family and seed, with scikit-learn's classical
classifiers on the same splits (logistic regression and an RBF SVM, on the flat
pixels, or on per-coefficient summaries of each utterance: mean, deviation,
first and last frame) and published figures to read them against.

    python -m experiments.classification                       # every data set; RNN, LSTM, GRU, Transformer
    python -m experiments.classification --datasets=japanese_vowels --bidirectional
    python -m experiments.classification --models=lstm,gru,mingru,lru,rglru,mamba,transformer:causal=False

Needs the `[apps]` extra (`pip install -e ".[apps]"`: scikit-learn, sktime).
Writes to --workdir (runs/classification): one directory per data set (each an
experiment's outputs), and over all of them summary.json, summary.csv and
results.md.

Defaults, by measurement on a 2-core CPU: see `experiment`'s docstring.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import numpy as np
from absl import flags

from experiments import common, statistics
from seqjax.data import classification
from seqjax.data.datasets import Dataset, Split

DATASETS = {
    "japanese_vowels": classification.japanese_vowels,
    **{
        f"digits_{layout}": functools.partial(classification.digits, layout)
        for layout in classification.DIGIT_LAYOUTS
    },
}
flags.DEFINE_list("datasets", list(DATASETS), f"Data sets: {', '.join(DATASETS)}.")
FLAGS = flags.FLAGS

MODELS = ("rnn", "lstm", "gru", "transformer:causal=False")  # the default; any registered family runs

# Published test accuracies to read seqjax's against (see the README for the sources).
PUBLISHED = {
    "japanese_vowels": "0.941 (Kudo et al. 1999, the data set's paper)",
    "digits_pixels": "pixel MNIST (28x28, 784 steps): LSTM 0.982 (Arjovsky et al. 2016)",
    "digits_permuted": "permuted MNIST: LSTM 0.88 (Arjovsky et al. 2016)",
    "digits_rows": "-",
}


@functools.cache
def load(name: str) -> Dataset:
    """The data set `name` (loaded once per process)."""
    if name not in DATASETS:
        raise ValueError(f"--datasets: unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]()


def experiment(name: str) -> common.Experiment:
    """One data set's experiment, at its own sequence length.

    Defaults: width 64, one layer, 1000 steps of batch 64 at rate 3e-3 (the
    Transformer 1e-3), three seeds; a run stops early once it classifies the whole
    validation split right. Measured on a 2-core CPU: the four data sets and the
    default four families in 7 minutes, Japanese Vowels at 0.94-0.98 test accuracy
    for every family (100 steps already gave 0.96-0.98), the 64-pixel digits at
    0.86-0.90 with the recurrent models overfitting (training accuracy 0.90-1.00), so
    more steps would not help without regularisation (`--weight_decay`).
    """
    data = load(name)
    return dataclasses.replace(
        EXPERIMENT, task=data, lengths=(data.steps,), prepare=None, flags=(("datasets", [name]),)
    )


def _prepare(template: common.Experiment) -> common.Experiment:
    """The first data set's experiment (every one is loaded here: a missing extra or
    an unknown name is a usage error before anything compiles)."""
    names = [n.strip() for n in FLAGS.datasets]
    if not names:
        raise ValueError("--datasets must name at least one")
    for name in names:
        load(name)
    return experiment(names[0])


EXPERIMENT = common.Experiment(
    name="classification",
    task=None,
    lengths=(1,),
    steps=1000,
    solved_accuracy=1.0,
    learning_rates=(3e-3,),
    model_learning_rates=("transformer:causal=False=1e-3",),
    hidden_size=64,
    per_sequence=True,
    prepare=_prepare,
)


def _features(split: Split) -> np.ndarray:
    """`[n, f]` for the classical classifiers: the flat inputs, or for variable
    lengths each feature's mean, deviation, first and last valid value."""
    if split.lengths is None:
        return split.inputs.reshape(len(split), -1)
    rows = []
    for x, n in zip(split.inputs, split.lengths, strict=True):
        valid = x[:n]
        rows.append(np.concatenate([valid.mean(0), valid.std(0), valid[0], valid[-1]]))
    return np.stack(rows)


def classical(data: Dataset) -> dict[str, float]:
    """Test accuracy of scikit-learn's logistic regression and RBF SVM (standardised
    inputs, default regularisation), fitted on the training split."""
    pipeline = classification.require("sklearn.pipeline", "the classical baselines")
    preprocessing = classification.require("sklearn.preprocessing", "the classical baselines")
    linear = classification.require("sklearn.linear_model", "the classical baselines")
    svm = classification.require("sklearn.svm", "the classical baselines")
    models = {
        "logistic regression": linear.LogisticRegression(max_iter=5000),
        "RBF SVM": svm.SVC(),
    }
    scores = {}
    for label, model in models.items():
        fitted = pipeline.make_pipeline(preprocessing.StandardScaler(), model)
        fitted.fit(_features(data.train), data.train.targets)
        scores[label] = float(np.mean(fitted.predict(_features(data.test)) == data.test.targets))
    return scores


def markdown_table(rows: list[dict], classical_scores: dict[str, dict[str, float]]) -> str:
    """Data set x model: test accuracy, mean ± 95% interval over seeds (each model at
    its rate chosen on validation), the classical classifiers and the published figure."""
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    classical_labels = list(next(iter(classical_scores.values()), {}))
    head = ["data set", "steps", "chance", *models, *classical_labels, "published"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        chosen = common.selected([r for r in rows if r["dataset"] == name])
        data = load(name)
        cells = [name, str(data.steps), f"{np.bincount(data.test.targets).max() / len(data.test):.3f}"]
        for model in models:
            scores = [r["test_accuracy"] for r in chosen if r["model"] == model]
            cells.append(statistics.format_interval(scores) if scores else "-")
        cells += [f"{classical_scores[name][c]:.3f}" for c in classical_labels]
        cells.append(PUBLISHED[name])
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Test accuracy, mean ± 95% t interval over seeds; chance is the test split's majority class.",
    ]
    return "\n".join(lines)


def run(names: list[str], settings: common.Settings) -> list[dict]:
    """Trains every model on each data set (its own experiment and work directory),
    then writes the summary and table over all of them; returns the rows."""
    workdir = pathlib.Path(settings.workdir)
    rows, classical_scores = [], {}
    for name in names:
        one = experiment(name)
        data_settings = dataclasses.replace(settings, lengths=one.lengths, workdir=str(workdir / name))
        common.check_settings(one, data_settings)
        rows += [{"dataset": name, **row} for row in common.run(one, data_settings)]
        classical_scores[name] = classical(load(name))
        if jax.process_index() == 0:  # after every data set: a later failure loses none of these
            common.write_summary(workdir, rows)
            (workdir / "results.md").write_text(markdown_table(rows, classical_scores) + "\n")
    table = markdown_table(rows, classical_scores)
    if jax.process_index() == 0:
        print(f"\nclassification: results in {workdir}\n\n{table}\n")
    return rows


def _sweep(_: common.Experiment, settings: common.Settings) -> list[dict]:
    return run([n.strip() for n in FLAGS.datasets], settings)


if __name__ == "__main__":
    flags.FLAGS.set_default("models", list(MODELS))
    common.main(EXPERIMENT, _sweep)
