"""Sequence classification data sets that ship inside installed packages (no download).

    data = classification.japanese_vowels()        # sktime; [n, 29, 12], lengths 7..29, 9 speakers
    data = classification.digits("pixels")         # scikit-learn; [n, 64, 1], one pixel a step
    data = classification.digits("permuted")       # the same pixels in a fixed random order
    data = classification.digits("rows")           # [n, 8, 8], one row of 8 pixels a step

Each is a `seqjax.data.datasets.Dataset` with one integer label per sequence
(targets `[n]`) and float32 features, normalised with the training split's
statistics only. Both need the `[apps]` extra (`pip install -e ".[apps]"`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from seqjax.data.datasets import Dataset, Split


def require(module: str, what: str) -> Any:
    """`module`, or an ImportError of one line saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{what} needs {module.split('.')[0]}, of seqjax's [apps] extra: pip install -e '.[apps]'"
        ) from None


def japanese_vowels() -> Dataset:
    """Japanese Vowels (Kudo, Toyama & Shimbo 1999; UCI, and the UEA archive's split).

    Nine male speakers each utter the vowels /ae/; each frame holds 12 LPC cepstrum
    coefficients, 7 to 29 frames per utterance; the label is the speaker. The
    archive's 270 training utterances (every fifth of them, in order, is held out
    for validation: 216 train, 54 validation) and its 370 test ones. Inputs
    `[n, 29, 12]` zero-padded past `lengths` `[n]`; each coefficient is
    standardised with the mean and deviation of the training frames.
    """
    datasets = require("sktime.datasets", "japanese_vowels")

    def load(split: str) -> tuple[list[np.ndarray], np.ndarray]:
        frame, labels = datasets.load_japanese_vowels(split=split, return_X_y=True)
        rows = frame.to_numpy()
        series = [np.stack([np.asarray(cell, np.float32) for cell in row], axis=-1) for row in rows]
        return series, np.asarray(labels).astype(np.int64) - 1

    train_series, train_labels = load("train")
    test_series, test_labels = load("test")
    held_out = np.arange(len(train_series)) % 5 == 4
    frames = np.concatenate([s for s, h in zip(train_series, held_out, strict=True) if not h])
    mean, std = frames.mean(axis=0), frames.std(axis=0)
    steps = max(len(s) for s in train_series + test_series)

    def split(series: list[np.ndarray], labels: np.ndarray) -> Split:
        inputs = np.zeros((len(series), steps, series[0].shape[1]), np.float32)
        for i, s in enumerate(series):
            inputs[i, : len(s)] = (s - mean) / std
        return Split(inputs, labels, np.array([len(s) for s in series], np.int32))

    picked = [s for s, h in zip(train_series, held_out, strict=True) if not h]
    validation = [s for s, h in zip(train_series, held_out, strict=True) if h]
    return Dataset(
        "japanese_vowels",
        split(picked, train_labels[~held_out]),
        split(validation, train_labels[held_out]),
        split(test_series, test_labels),
        output_size=9,
    )


DIGIT_LAYOUTS = ("pixels", "permuted", "rows")


def digits(layout: str = "pixels") -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes) read as a sequence.

    Args:
      layout: "pixels": 64 steps of one pixel, row by row (the small cousin of
        pixel-by-pixel MNIST, Le et al. 2015); "permuted": the same 64 pixels in
        one fixed random order (permuted MNIST: neighbouring pixels no longer
        neighbours in time); "rows": 8 steps of a row of 8 pixels.

    A fixed shuffle (NumPy seed 0) holds out 20% for test (360) and 10% for
    validation (180), leaving 1257 to train. Pixels (0..16) are standardised with
    the training images' mean and deviation.
    """
    if layout not in DIGIT_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(DIGIT_LAYOUTS)}; got {layout!r}")
    sklearn_datasets = require("sklearn.datasets", "digits")
    bunch = sklearn_datasets.load_digits()
    images, labels = bunch.images.reshape(-1, 64).astype(np.float32), bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(images))
    test, validation, train = np.split(order, [360, 540])
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    arrange: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "pixels": lambda x: x[:, :, None],
        "permuted": lambda x: x[:, np.random.default_rng(1).permutation(64), None],
        "rows": lambda x: x.reshape(-1, 8, 8),
    }
    inputs = arrange[layout](images)
    return Dataset(
        f"digits_{layout}",
        *(Split(inputs[part], labels[part]) for part in (train, validation, test)),
        output_size=10,
    )
