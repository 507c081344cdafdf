"""Character-level text as a `Dataset` for language modelling: a user's file, or Python's own source.

    text = text.stdlib_corpus()                   # every Python installation has it
    text = text.read_text_file("corpus.txt")      # or the user's UTF-8 text
    data = text.char_dataset(text, length=128)    # [n, 128] windows, next-character targets

The text is split without shuffling, as enwik8 and text8 are: the first 90% of
its characters train, the next 5% validate, the last 5% test. Each split is cut
into windows of `length` characters; the target of each character is the next
one. The vocabulary is the training split's characters, plus one index for any
character that only the held-out splits have.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import pathlib
import sysconfig

import numpy as np

from seqjax.data.datasets import Dataset, Split
from seqjax.validation import check_positive_int

# Modules of the standard library, read in this order (pure Python in every
# CPython >= 3.11; a corpus of ~1.2 MB). Karpathy's char-rnn trained on source code
# for the same reason: structured text that every machine has.
STDLIB_MODULES = (
    "argparse", "ast", "bisect", "calendar", "cmd", "code", "codeop", "colorsys", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "difflib", "enum", "fnmatch", "fractions",
    "functools", "getopt", "gettext", "glob", "graphlib", "heapq", "inspect", "ipaddress",
    "keyword", "linecache", "numbers", "operator", "optparse", "pprint", "queue", "random",
    "reprlib", "sched", "secrets", "shlex", "statistics", "string", "textwrap", "timeit",
    "tokenize", "traceback", "types", "uuid", "warnings", "weakref",
)  # fmt: skip
SPLIT_FRACTIONS = (0.9, 0.05, 0.05)


def stdlib_corpus(modules: tuple[str, ...] = STDLIB_MODULES) -> str:
    """The source of `modules` of this Python's standard library, concatenated in order."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    return "".join((root / f"{name}.py").read_text(encoding="utf-8") for name in modules)


def read_text_file(path: str | pathlib.Path, name: str = "text_file") -> str:
    """A UTF-8 text file's contents; a ValueError names `name` if it is missing, empty or not text."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{name}: no such file: {path}")
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{name}: {path} is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{name}: {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    if "\x00" in text:
        raise ValueError(f"{name}: {path} is not text (it holds NUL bytes)")
    return text


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Characters <-> indices: `chars[i]` is index i; index `len(chars)` is the
    unknown character (held-out characters that training never saw)."""

    chars: str

    @property
    def size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> np.ndarray:
        """`[len(text)]` int32 indices."""
        table = {c: i for i, c in enumerate(self.chars)}
        unknown = len(self.chars)
        return np.fromiter((table.get(c, unknown) for c in text), np.int32, len(text))

    def decode(self, ids: np.ndarray) -> str:
        """The characters of `ids` (any shape, flattened); the unknown index reads as U+FFFD."""
        return "".join(self.chars[i] if i < len(self.chars) else "\ufffd" for i in np.ravel(ids))


@dataclasses.dataclass(frozen=True, eq=False)
class CharData:
    """A character dataset with its vocabulary and the baselines of its training split."""

    dataset: Dataset
    vocabulary: Vocabulary
    unigram_bits: float  # H(X) of the training split's characters, bits per character
    bigram_bits: float  # H(X_t | X_{t-1}) of the training split, bits per character
    bigram_test_bits: float  # the add-one bigram fitted on train, on the test split


def _windows(ids: np.ndarray, length: int) -> Split:
    n = (len(ids) - 1) // length
    return Split(ids[: n * length].reshape(n, length), ids[1 : n * length + 1].reshape(n, length))


def _bigram_counts(ids: np.ndarray, size: int) -> np.ndarray:
    counts = np.zeros((size, size))
    np.add.at(counts, (ids[:-1], ids[1:]), 1.0)
    return counts


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def char_dataset(text: str, length: int, *, name: str = "text", min_train_windows: int = 1) -> CharData:
    """Splits `text` 90/5/5 (in order) into windows of `length` characters.

    Args:
      text: the corpus.
      length: t, characters per window (the model reads t and predicts the next t).
      name: what errors call the text (e.g. the flag it came from).
      min_train_windows: the training split must hold at least this many windows
        (a batch's worth).

    Returns:
      A `CharData`; its dataset's inputs and targets are `[n, t]` int32.
    """
    check_positive_int(length, "length")
    bounds = np.cumsum([0, *(round(f * len(text)) for f in SPLIT_FRACTIONS)])
    bounds[-1] = len(text)
    parts = [text[a:b] for a, b in itertools.pairwise(bounds)]
    for part, split in zip(parts, ("train", "validation", "test"), strict=True):
        need = (min_train_windows if split == "train" else 1) * length + 1
        if len(part) < need:
            raise ValueError(
                f"{name}: {len(text)} characters are too few for windows of {length}: its {split} split "
                f"({len(part)} characters) needs at least {need}; give more text or shorter windows"
            )
    vocabulary = Vocabulary("".join(sorted(set(parts[0]))))
    train, validation, test = (vocabulary.encode(p) for p in parts)
    size = vocabulary.size
    pairs = _bigram_counts(train, size)
    unigram = np.bincount(train, minlength=size) / len(train)
    previous = pairs.sum(axis=1)
    seen = [a for a in range(size) if previous[a]]
    bigram_bits = sum(previous[a] / previous.sum() * _entropy_bits(pairs[a] / previous[a]) for a in seen)
    smoothed = (pairs + 1.0) / (previous[:, None] + size)
    bigram_test_bits = float(-np.mean(np.log2(smoothed[test[:-1], test[1:]])))
    dataset = Dataset(
        name,
        _windows(train, length),
        _windows(validation, length),
        _windows(test, length),
        output_size=size,
        vocab_size=size,
    )
    return CharData(dataset, vocabulary, _entropy_bits(unigram), float(bigram_bits), bigram_test_bits)


def bits(nats: float) -> float:
    """Nats (a cross-entropy loss) in bits."""
    return nats / math.log(2)
