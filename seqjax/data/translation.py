"""Parallel text for encoder-decoders: generated with real structure, or the user's file.

    pairs = translation.dates(12000, seed=0)          # [("Tue, 3 May 1987", "1987-05-03"), ...]
    pairs = translation.numbers(12000, seed=0)        # [("forty-two thousand seven", "42007"), ...]
    pairs = translation.read_pairs("pairs.tsv")       # source TAB target, a pair a line
    corpus = translation.Corpus.split(pairs)          # 80/10/10, by distinct source
    data = corpus.dataset()                           # a `seqjax.data.datasets.Dataset`

Characters are the tokens; one vocabulary serves source and target, after the
ids `seq2seq.PAD`, `BOS` and `EOS`. A `Dataset`'s inputs `[n, S + T]` pack each
source (padded to S) and the decoder's inputs (BOS and the target, padded to T);
its targets `[n, S + T]` hold the target and EOS at the last T positions, and its
mask scores exactly those (see `seqjax.models.seq2seq`).

- `dates`: a date between 1950 and 2049 written in one of `DATE_FORMATS` (names
  of days and months, ordinals, two-digit years, numeric forms whose separators
  fix the order), mapped to ISO 8601. The formats' lengths differ, so the source
  length ranges from 6 to 29 characters while the target is always 10.
- `numbers`: an integer with 1 to `max_digits` digits (as many of each digit
  count) written in English words, mapped to its digits: sources grow with the
  number, from 3 to over 60 characters, which is what the length-accuracy plot
  of attention against none needs.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import pathlib
import random

import numpy as np

from seqjax.data.datasets import Dataset, Split
from seqjax.models.seq2seq import BOS, EOS, PAD
from seqjax.validation import check_positive_int

SPECIALS = 3  # PAD, BOS, EOS take the first ids

_ORDINAL = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}


def _ordinal(day: int) -> str:
    return f"{day}{_ORDINAL.get(day, 'th')}"


# Each takes a date; together they write one date in 16 ways.
DATE_FORMATS = (
    lambda d: d.strftime("%d %B %Y"),  # 03 May 1987
    lambda d: f"{d.day} {d:%B %Y}",  # 3 May 1987
    lambda d: f"{d:%B} {d.day}, {d:%Y}",  # May 3, 1987
    lambda d: f"{d:%b} {d.day} {d:%Y}",  # May 3 1987
    lambda d: f"{d:%A}, {d:%B} {d.day}, {d:%Y}",  # Sunday, May 3, 1987
    lambda d: f"{d:%a} {d.day} {d:%b} {d:%y}",  # Sun 3 May 87
    lambda d: f"the {_ordinal(d.day)} of {d:%B} {d:%Y}",  # the 3rd of May 1987
    lambda d: f"{_ordinal(d.day)} {d:%b} {d:%Y}".lower(),  # 3rd may 1987
    lambda d: f"{d:%B %Y}".upper().replace(" ", f" {d.day}, "),  # MAY 3, 1987
    lambda d: f"{d.month}/{d.day}/{d:%Y}",  # 5/3/1987 (US order, slashes)
    lambda d: f"{d.month}/{d.day}/{d:%y}",  # 5/3/87
    lambda d: f"{d:%d.%m.%Y}",  # 03.05.1987 (day first, dots)
    lambda d: f"{d.day}.{d.month}.{d:%y}",  # 3.5.87
    lambda d: f"{d:%Y/%m/%d}",  # 1987/05/03
    lambda d: f"{d:%d-%b-%Y}".upper(),  # 03-MAY-1987
    lambda d: f"{d:%Y%m%d}",  # 19870503
)


def dates(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """`n` distinct (written date, ISO 8601) pairs: dates uniform over 1950-2049
    (two-digit years: 50-99 are 19xx, 00-49 20xx), formats uniform over `DATE_FORMATS`."""
    check_positive_int(n, "n")
    rng, first = random.Random(seed), datetime.date(1950, 1, 1)
    days = (datetime.date(2049, 12, 31) - first).days + 1
    if n > days * len(DATE_FORMATS) // 2:
        raise ValueError(f"n must be at most {days * len(DATE_FORMATS) // 2} distinct dates; got {n}")
    pairs: dict[str, str] = {}
    while len(pairs) < n:
        date = first + datetime.timedelta(days=rng.randrange(days))
        pairs.setdefault(rng.choice(DATE_FORMATS)(date), date.isoformat())
    return list(pairs.items())


_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen".split()
)
_ONES += "sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))


def number_words(value: int) -> str:
    """`value` (0 <= value < 10**12) in English words: 342017 -> "three hundred
    forty-two thousand seventeen"."""
    if value < 20:
        return _ONES[value]
    if value < 100:
        return _TENS[value // 10] + ("" if value % 10 == 0 else "-" + _ONES[value % 10])
    if value < 1000:
        rest = value % 100
        return f"{_ONES[value // 100]} hundred" + (f" {number_words(rest)}" if rest else "")
    for scale, name in _SCALES:
        if value >= scale:
            rest = value % scale
            return f"{number_words(value // scale)} {name}" + (f" {number_words(rest)}" if rest else "")
    raise ValueError(f"value must be in [0, 10**12); got {value}")


def numbers(n: int, seed: int = 0, max_digits: int = 6) -> list[tuple[str, str]]:
    """`n` distinct (English words, digits) pairs: the digit count uniform in
    1..`max_digits`, then the number uniform among those with that many digits."""
    check_positive_int(n, "n")
    check_positive_int(max_digits, "max_digits")
    if max_digits > 12:
        raise ValueError(f"max_digits must be at most 12; got {max_digits}")
    if n > 10**max_digits // 2:
        raise ValueError(f"n must be at most {10**max_digits // 2} for max_digits={max_digits}; got {n}")
    rng, pairs = random.Random(seed), {}
    while len(pairs) < n:
        digits = rng.randint(1, max_digits)
        value = rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits)
        pairs.setdefault(number_words(value), str(value))
    return list(pairs.items())


def read_pairs(path: str | pathlib.Path, flag: str = "--pairs_file") -> list[tuple[str, str]]:
    """The (source, target) pairs of a UTF-8 file with one `source<TAB>target` a line
    (blank lines skipped); a ValueError names `flag` and the first malformed line."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{flag}: no file {str(path)!r}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"{flag}: {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise ValueError(
                f"{flag}: {path} line {number} must be a source and a target separated by one tab; "
                f"got {line[:60]!r}"
            )
        pairs.append((fields[0].strip(), fields[1].strip()))
    if len(pairs) < 10:
        raise ValueError(f"{flag}: {path} holds {len(pairs)} pairs; at least 10 are needed to split it")
    return pairs


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
    """Train, validation and test pairs, and their character vocabulary.

    Args:
      name: names the data in tables and errors.
      train, validation, test: lists of (source, target) strings.

    The vocabulary is every character of the three splits (an alphabet, not what
    is learnt: a character seen only in testing keeps an untrained embedding);
    `encode` refuses any other. Hashable by identity.
    """

    name: str
    train: list[tuple[str, str]]
    validation: list[tuple[str, str]]
    test: list[tuple[str, str]]

    @classmethod
    def split(cls, name: str, pairs: list[tuple[str, str]], seed: int = 0) -> Corpus:
        """80/10/10 of the distinct sources, shuffled with `seed`: no source is in two splits."""
        unique = list(dict(pairs).items())
        random.Random(seed).shuffle(unique)
        a, b = int(0.8 * len(unique)), int(0.9 * len(unique))
        return cls(name, unique[:a], unique[a:b], unique[b:])

    @functools.cached_property
    def characters(self) -> str:
        parts = (self.train, self.validation, self.test)
        return "".join(sorted({c for part in parts for pair in part for text in pair for c in text}))

    @property
    def vocab_size(self) -> int:
        return SPECIALS + len(self.characters)

    @property
    def source_steps(self) -> int:
        """S: the longest source of any split."""
        return max(len(s) for part in (self.train, self.validation, self.test) for s, _ in part)

    @property
    def target_steps(self) -> int:
        """T: the longest target of any split, and its EOS."""
        return 1 + max(len(t) for part in (self.train, self.validation, self.test) for _, t in part)

    def encode(self, texts: list[str], steps: int, what: str = "text") -> np.ndarray:
        """`[n, steps]` int32 ids of `texts`, PAD after each; a ValueError names a
        character outside the vocabulary."""
        ids = {c: SPECIALS + i for i, c in enumerate(self.characters)}
        out = np.full((len(texts), steps), PAD, np.int32)
        for row, text in enumerate(texts):
            for col, c in enumerate(text[:steps]):
                if c not in ids:
                    raise ValueError(f"the {what} {text!r} holds {c!r}, which is not in the vocabulary")
                out[row, col] = ids[c]
        return out

    def decode(self, ids: np.ndarray) -> list[str]:
        """The strings of `[n, t]` ids, each up to its first EOS or PAD."""
        texts = []
        for row in np.asarray(ids):
            chars = []
            for i in row:
                if i in (PAD, EOS):
                    break
                chars.append(self.characters[i - SPECIALS] if i >= SPECIALS else "")
            texts.append("".join(chars))
        return texts

    def sources(self, part: str) -> np.ndarray:
        """`[n, S]` int32: the sources of a split."""
        return self.encode([s for s, _ in getattr(self, part)], self.source_steps, f"{part} source")

    def dataset(self) -> Dataset:
        """The packed `Dataset` (see the module docstring); its loss is cross-entropy
        over the target tokens and EOS, its accuracy the tokens'."""
        s, t = self.source_steps, self.target_steps

        def split(part: str) -> Split:
            pairs = getattr(self, part)
            targets = self.encode([x for _, x in pairs], t, f"{part} target")
            lengths = np.array([len(x) for _, x in pairs])
            targets[np.arange(len(pairs)), lengths] = EOS
            decoder_inputs = np.concatenate([np.full((len(pairs), 1), BOS, np.int32), targets[:, :-1]], 1)
            scored = np.arange(t) <= lengths[:, None]
            inputs = np.concatenate([self.sources(part), decoder_inputs], 1)
            packed = np.concatenate([np.zeros((len(pairs), s), np.int32), targets], 1)
            mask = np.concatenate([np.zeros((len(pairs), s)), scored], 1).astype(np.float32)
            return Split(inputs, packed, mask=mask)

        return Dataset(
            self.name,
            split("train"),
            split("validation"),
            split("test"),
            output_size=self.vocab_size,
            vocab_size=self.vocab_size,
        )
