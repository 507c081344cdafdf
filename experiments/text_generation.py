"""Character-level language models (Karpathy's char-rnn, 2015): every family at matched parameters.

Each model reads windows of `--lengths` characters and predicts the next
character at every step. The score is bits per character on the held-out test
split, against the training split's unigram and bigram entropies (what a model
that sees 0 or 1 previous character could at best reach on the training text) and
the add-one bigram model fitted on the training split, scored on the test split.
The best model (lowest validation loss) then writes samples at a few temperatures,
through `SequenceModel.generate` (one compiled `lax.scan`).

    python -m experiments.text_generation                      # the standard library's source
    python -m experiments.text_generation --text_file=book.txt --lengths=256 --steps=5000
    python -m experiments.text_generation --models=lstm,gru,mingru,lru,rglru,mamba,transformer

The default corpus is a fixed list of modules of this Python's standard library
(`seqjax.data.text.STDLIB_MODULES`, ~1.3 MB), split 90/5/5 in order; a user's
UTF-8 file is split the same way. Writes to --workdir (runs/text_generation): the
experiment's summary, table, curves and checkpoints, samples.txt, and
results.md with bits per character.

Defaults, by measurement on a 2-core CPU: see `experiment`'s docstring.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np
from absl import flags

from experiments import common, statistics
from seqjax.data import text
from seqjax.validation import check_positive_int

flags.DEFINE_string("text_file", None, "A UTF-8 text file to train on (default: the standard library).")
flags.DEFINE_list("temperatures", ["0.5", "0.8", "1.0"], "Sampling temperatures of the printed samples.")
flags.DEFINE_integer("sample_length", 400, "Characters per sample.")
FLAGS = flags.FLAGS

MODELS = ("rnn", "lstm", "gru", "transformer")  # the default; any registered family runs
BATCH_SIZE = 32  # the default (see `experiment`)
PROMPT_LENGTH = 64  # samples continue the first characters of the test split


def experiment(
    corpus: str | None = None, length: int = 128, batch_size: int = BATCH_SIZE
) -> common.Experiment:
    """The experiment on `corpus` (default: the standard library's source) in windows
    of `length` characters.

    Defaults chosen by measurement on a 2-core CPU: width 128 for the LSTM and every
    other family resized to its parameter count (`--match_params`, ~170k parameters),
    one layer, windows of 128, 600 steps of batch 32 (2.5M characters per seed,
    about a minute per family with three seeds). The rates are the best of a sweep
    at 1000 steps (seed 0; training loss in nats over the last 50 steps): vanilla RNN 1e-2 (1.28; 1.57 at
    3e-3), LSTM 2e-2 (1.38; 1.55 at 1e-2, 1.97 at 3e-3), GRU 2e-2 (1.17; 1.24, 1.65),
    Transformer 3e-3 (1.42 at 750 steps; 1.67 at 1e-3); the parallel families take
    1e-2, unswept. Every family is then well below the bigram entropy (3.4 bits).
    """
    data = text.char_dataset(
        text.stdlib_corpus() if corpus is None else corpus,
        length,
        name="the standard library corpus" if corpus is None else "--text_file",
        min_train_windows=batch_size,
    )
    return dataclasses.replace(EXPERIMENT, task=data.dataset, lengths=(length,), prepare=None, data=data)


@dataclasses.dataclass(frozen=True)
class TextExperiment(common.Experiment):
    """An experiment with its text's vocabulary and baselines (`data`), for the table and samples."""

    data: text.CharData | None = None


def _prepare(template: common.Experiment) -> common.Experiment:
    """The experiment on --text_file (or the default corpus) at the one --lengths."""
    lengths = FLAGS.lengths or [str(template.lengths[0])]
    if len(lengths) != 1:
        raise ValueError(f"--lengths: text generation trains at one window length; got {','.join(lengths)}")
    try:
        length = int(lengths[0])
    except ValueError:
        raise ValueError(f"--lengths must be an int; got {lengths[0]}") from None
    temperatures(FLAGS.temperatures)
    check_positive_int(FLAGS.sample_length, "--sample_length")
    corpus = None if FLAGS.text_file is None else text.read_text_file(FLAGS.text_file, "--text_file")
    own = ("text_file", "temperatures", "sample_length")  # recorded in config.json, for --config
    return dataclasses.replace(
        experiment(corpus, length, FLAGS.batch_size), flags=tuple((f, FLAGS[f].value) for f in own)
    )


EXPERIMENT = TextExperiment(
    name="text_generation",
    task=None,
    lengths=(128,),
    steps=600,
    solved_accuracy=1.0,  # next-character accuracy never reaches it: no early "solved" stop
    learning_rates=(1e-2,),
    model_learning_rates=("lstm=2e-2", "gru=2e-2", "transformer=3e-3"),
    hidden_size=128,
    match_params=True,
    prepare=_prepare,
)


def markdown_table(data: text.CharData, rows: list[dict]) -> str:
    """Per model (at its rate chosen on validation): test and validation bits per
    character, mean ± 95% interval over seeds, with the baselines."""
    head = ["model", "params", "lr", "test bits/char", "validation bits/char", "test accuracy", "time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups: dict[str, list[dict]] = {}
    for row in common.selected(rows):
        groups.setdefault(row["model"], []).append(row)
    for model, group in groups.items():
        lines.append(
            "| "
            + " | ".join(
                [
                    model,
                    str(group[0]["params"]),
                    f"{group[0]['learning_rate']:g}",
                    statistics.format_interval([r["test_bits_per_char"] for r in group]),
                    statistics.format_interval([r["val_bits_per_char"] for r in group]),
                    statistics.format_interval([r["test_accuracy"] for r in group]),
                    f"{group[0]['seconds']:.0f}",
                ]
            )
            + " |"
        )
    lines += [
        "",
        f"Baselines (bits per character): training split's unigram entropy {data.unigram_bits:.3f}, "
        f"bigram entropy {data.bigram_bits:.3f}; add-one bigram fitted on train, on test "
        f"{data.bigram_test_bits:.3f}. Vocabulary {data.vocabulary.size} characters; "
        f"{len(data.dataset.train)} training windows of {data.dataset.steps}.",
    ]
    return "\n".join(lines)


def samples(data: text.CharData, model, params, temperatures: list[float], length: int) -> str:
    """Continuations of the test split's first characters, one per temperature."""
    prompt = data.dataset.test.inputs[:1, :PROMPT_LENGTH]
    parts = [f"prompt: {data.vocabulary.decode(prompt)!r}"]
    for i, temperature in enumerate(temperatures):
        tokens = model.generate(params, jax.random.key(i), prompt, length, temperature=temperature)
        parts.append(f"--- temperature {temperature:g} ---\n{data.vocabulary.decode(np.asarray(tokens))}")
    return "\n".join(parts)


def run(experiment: TextExperiment, settings: common.Settings, temperatures: list[float], sample_length: int):
    """Trains the sweep, then samples from the run with the lowest validation loss;
    returns the rows and the samples' text."""
    best: dict = {}

    def keep_best(model, state, rows):
        for r, row in enumerate(rows):
            if row["val_loss"] is not None and row["val_loss"] < best.get("loss", np.inf):
                params = jax.tree.map(lambda x, r=r: x[r], state.params)
                best.update(loss=row["val_loss"], model=model, params=params, row=row)

    data = experiment.data
    rows = [
        row
        | {
            # None where a diverged run's loss is (see --on_nonfinite).
            "test_bits_per_char": None if row["test_loss"] is None else text.bits(row["test_loss"]),
            "val_bits_per_char": None if row["val_loss"] is None else text.bits(row["val_loss"]),
            "unigram_bits": data.unigram_bits,
            "bigram_bits": data.bigram_bits,
            "bigram_test_bits": data.bigram_test_bits,
        }
        for row in common.run(experiment, settings, keep_best)
    ]
    table = markdown_table(data, rows)
    written = ""
    if best:
        row = best["row"]
        header = f"{row['model']} (seed {row['seed']}, validation {text.bits(best['loss']):.3f} bits/char)"
        written = f"{header}\n" + samples(data, best["model"], best["params"], temperatures, sample_length)
    if jax.process_index() == 0:
        workdir = pathlib.Path(settings.workdir)
        common.write_summary(workdir, rows)
        (workdir / "results.md").write_text(table + "\n")
        (workdir / "samples.txt").write_text(written + "\n")
        print(f"\n{table}\n\nSamples from {written}\n")
    return rows, written


def temperatures(values: list[str]) -> list[float]:
    """--temperatures as numbers >= 0 (0: greedy), or a ValueError naming the flag."""
    try:
        parsed = [float(t) for t in values]
    except ValueError:
        parsed = [-1.0]
    if not parsed or min(parsed) < 0 or not all(np.isfinite(parsed)):
        raise ValueError(f"--temperatures must be numbers >= 0 (0: greedy); got {','.join(values)}")
    return parsed


def _sweep(experiment: common.Experiment, settings: common.Settings) -> list[dict]:
    return run(experiment, settings, temperatures(FLAGS.temperatures), FLAGS.sample_length)[0]


if __name__ == "__main__":
    flags.FLAGS.set_default("models", list(MODELS))
    flags.FLAGS.set_default("batch_size", BATCH_SIZE)
    common.main(EXPERIMENT, _sweep)
