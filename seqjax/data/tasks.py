"""Long-range dependency tasks, generated on the fly in JAX (no downloads).

Every task is a frozen dataclass with a pure generator

    batch = task.sample(key, batch_size, length)     # jit-able; batch_size, length static

where `length` is the task's difficulty knob (the delay T of the copy task, the
sequence length elsewhere), and the analytic loss and accuracy of the best
predictor that has no memory of the sequence (`task.baseline(length)`), against
which every result is reported.

A `Batch` holds, with b = batch and t = `task.num_steps(length)`:
  inputs:    `[b, t]` int32 tokens in [0, vocab_size), or `[b, t, d]` float32.
  targets:   `[b, t]` int32 classes in [0, output_size), or `[b, t]` float32 values.
  loss_mask: `[b, t]` float32, 1 where the loss is taken (averaged over these).
  eval_mask: `[b, t]` float32, 1 where accuracy is measured.
  lengths:   `[b]` int32 valid lengths for variable-length tasks, else None.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from seqjax.validation import check_positive_int, check_real

Array = jax.Array


class Batch(NamedTuple):
    inputs: Array
    targets: Array
    loss_mask: Array
    eval_mask: Array
    lengths: Array | None = None


class Baseline(NamedTuple):
    """Loss and accuracy of the best memoryless (or chance) predictor."""

    loss: float
    accuracy: float


class Loss(enum.Enum):
    CROSS_ENTROPY = "cross_entropy"
    MSE = "mse"


def _check_length(length: int, minimum: int, name: str, batch_size: int = 1) -> None:
    if not isinstance(length, int) or isinstance(length, bool) or length < minimum:
        raise ValueError(f"length of the {name} task must be an int >= {minimum}; got {length!r}")
    check_positive_int(batch_size, "batch_size")


def _check_alphabet(alphabet: int) -> None:
    check_positive_int(alphabet, "alphabet")
    if alphabet < 2:
        raise ValueError(f"alphabet must hold at least 2 symbols; got {alphabet}")


class _Symbols:
    """Tasks over `alphabet` data symbols and two special tokens; outputs are tokens."""

    alphabet: int

    @property
    def vocab_size(self) -> int:
        return self.alphabet + 2

    @property
    def output_size(self) -> int:
        return self.alphabet + 2


@dataclasses.dataclass(frozen=True)
class Copy(_Symbols):
    """Copy / memory task (Hochreiter & Schmidhuber 1997; Arjovsky, Shah & Bengio 2016).

    Vocabulary of `alphabet + 2`: data symbols 0..alphabet-1, blank = alphabet,
    delimiter = alphabet + 1. Inputs: `memory` symbols drawn uniformly with
    replacement, T - 1 blanks, the delimiter, `memory` blanks (t = T + 2*memory).
    Targets: T + memory blanks, then the `memory` symbols.

    Scored: the loss over all t positions (as in Arjovsky et al.), accuracy over
    the `memory` recall positions. The memoryless predictor (blank, then uniform
    over the alphabet on the recall steps) has cross-entropy
    `memory * log(alphabet) / (T + 2*memory)` and recall accuracy 1/alphabet.
    """

    memory: int = 10
    alphabet: int = 8
    loss: ClassVar[Loss] = Loss.CROSS_ENTROPY
    name: ClassVar[str] = "copy"

    def __post_init__(self):
        check_positive_int(self.memory, "memory")
        _check_alphabet(self.alphabet)

    def num_steps(self, length: int) -> int:
        return length + 2 * self.memory

    def sample(self, key: Array, batch_size: int, length: int) -> Batch:
        _check_length(length, 1, self.name, batch_size)
        m, blank = self.memory, self.alphabet
        symbols = jax.random.randint(key, (batch_size, m), 0, self.alphabet)
        blanks = jnp.full((batch_size, length - 1), blank)
        delimiter = jnp.full((batch_size, 1), blank + 1)
        recall_blanks = jnp.full((batch_size, m), blank)
        inputs = jnp.concatenate([symbols, blanks, delimiter, recall_blanks], axis=1)
        targets = jnp.concatenate([jnp.full((batch_size, length + m), blank), symbols], axis=1)
        t = self.num_steps(length)
        eval_mask = jnp.broadcast_to(jnp.arange(t) >= length + m, (batch_size, t))
        return Batch(
            inputs.astype(jnp.int32),
            targets.astype(jnp.int32),
            jnp.ones((batch_size, t), jnp.float32),
            eval_mask.astype(jnp.float32),
        )

    def baseline(self, length: int) -> Baseline:
        return Baseline(self.memory * math.log(self.alphabet) / self.num_steps(length), 1 / self.alphabet)


@dataclasses.dataclass(frozen=True)
class Adding:
    """Adding problem, as in Arjovsky et al. 2016 (after Hochreiter & Schmidhuber 1997).

    Inputs `[b, T, 2]`: channel 0 holds values U[0, 1]; channel 1 marks exactly one
    position in the first half and one in the second. The target, read at the last
    step only, is the sum of the two marked values (MSE). The memoryless
    predictor says 1 (the mean), with MSE 1/6 = Var(U1 + U2). Accuracy is the
    fraction within 0.04 of the target (Hochreiter & Schmidhuber's criterion);
    for the constant 1 it is P(|U1 + U2 - 1| < 0.04) = 2(0.04) - 0.04^2.
    """

    tolerance: float = 0.04
    loss: ClassVar[Loss] = Loss.MSE
    name: ClassVar[str] = "adding"
    vocab_size: ClassVar[None] = None
    input_size: ClassVar[int] = 2
    output_size: ClassVar[int] = 1

    def __post_init__(self):
        check_real(self.tolerance, "tolerance", 0.0, 2.0, low_open=True)

    def num_steps(self, length: int) -> int:
        return length

    def sample(self, key: Array, batch_size: int, length: int) -> Batch:
        _check_length(length, 2, self.name, batch_size)
        k_values, k_first, k_second = jax.random.split(key, 3)
        values = jax.random.uniform(k_values, (batch_size, length))
        half = length // 2
        first = jax.random.randint(k_first, (batch_size,), 0, half)
        second = jax.random.randint(k_second, (batch_size,), half, length)
        steps = jnp.arange(length)
        markers = (steps == first[:, None]) | (steps == second[:, None])
        total = jnp.sum(jnp.where(markers, values, 0.0), axis=1)
        last = jnp.broadcast_to(steps == length - 1, (batch_size, length)).astype(jnp.float32)
        inputs = jnp.stack([values, markers.astype(jnp.float32)], axis=-1)
        return Batch(inputs, last * total[:, None], last, last)

    def baseline(self, length: int) -> Baseline:
        del length
        return Baseline(1 / 6, 2 * self.tolerance - self.tolerance**2)


@dataclasses.dataclass(frozen=True)
class SelectiveCopy(_Symbols):
    """Selective copying (Gu & Dao 2023, Mamba).

    Vocabulary of `alphabet + 2`: noise = 0, data tokens 1..alphabet, the recall
    marker = alphabet + 1. Inputs: T positions of noise holding `num_tokens` data
    tokens at random (distinct, ordered) positions, then `num_tokens` markers
    (t = T + num_tokens). Targets: the data tokens in order, at the marker
    positions, which alone are scored. Unlike the copy task the spacing varies, so
    no fixed delay solves it. Memoryless predictor: uniform over the alphabet,
    loss log(alphabet), accuracy 1/alphabet.
    """

    num_tokens: int = 16
    alphabet: int = 8
    loss: ClassVar[Loss] = Loss.CROSS_ENTROPY
    name: ClassVar[str] = "selective_copy"

    def __post_init__(self):
        check_positive_int(self.num_tokens, "num_tokens")
        _check_alphabet(self.alphabet)

    def num_steps(self, length: int) -> int:
        return length + self.num_tokens

    def sample(self, key: Array, batch_size: int, length: int) -> Batch:
        _check_length(length, self.num_tokens, self.name, batch_size)
        n = self.num_tokens
        k_tokens, k_positions = jax.random.split(key)
        tokens = jax.random.randint(k_tokens, (batch_size, n), 1, self.alphabet + 1)
        # n distinct positions per example, in increasing order.
        scores = jax.random.uniform(k_positions, (batch_size, length))
        positions = jnp.sort(jnp.argsort(scores, axis=1)[:, :n], axis=1)
        rows = jnp.arange(batch_size)[:, None]
        context = jnp.zeros((batch_size, length), jnp.int32).at[rows, positions].set(tokens)
        markers = jnp.full((batch_size, n), self.alphabet + 1, jnp.int32)
        inputs = jnp.concatenate([context, markers], axis=1)
        targets = jnp.concatenate([jnp.zeros((batch_size, length), jnp.int32), tokens], axis=1)
        mask = jnp.broadcast_to(jnp.arange(length + n) >= length, (batch_size, length + n)).astype(
            jnp.float32
        )
        return Batch(inputs, targets.astype(jnp.int32), mask, mask)

    def baseline(self, length: int) -> Baseline:
        del length
        return Baseline(math.log(self.alphabet), 1 / self.alphabet)


@dataclasses.dataclass(frozen=True)
class AssociativeRecall:
    """Multi-query associative recall, MQAR (Arora et al. 2023, Zoology).

    Vocabulary `vocab_size`: 0 is noise, keys come from [1, v/2), values from
    [v/2, v). A sequence of length t lists `num_pairs` key-value pairs (distinct
    keys) as `k1 v1 k2 v2 ...`, then the rest is noise holding each key once more as
    a query, at positions drawn with probability decaying as a power law of the
    distance from the pairs (Zoology's placement). The target at a query is its
    value; only query positions are scored. `num_pairs=None` takes t // 16, the
    paper's ratio ((64, 4), (128, 8), (256, 16)). Memoryless predictor: uniform
    over the v/2 values, loss log(v/2), accuracy 2/v.
    """

    vocab_size: int = 64
    num_pairs: int | None = None
    power: float = 0.01
    loss: ClassVar[Loss] = Loss.CROSS_ENTROPY
    name: ClassVar[str] = "associative_recall"

    def __post_init__(self):
        check_positive_int(self.vocab_size, "vocab_size")
        if self.vocab_size < 4:
            raise ValueError(f"vocab_size must be >= 4 (noise, a key, a value); got {self.vocab_size}")
        if self.num_pairs is not None:
            check_positive_int(self.num_pairs, "num_pairs")
        check_real(self.power, "power", 0.0, math.inf)

    @property
    def output_size(self) -> int:
        return self.vocab_size

    def pairs(self, length: int) -> int:
        return self.num_pairs or max(1, length // 16)

    def num_steps(self, length: int) -> int:
        return length

    def sample(self, key: Array, batch_size: int, length: int) -> Batch:
        n = self.pairs(length)
        _check_length(length, 3 * n, self.name, batch_size)
        half = self.vocab_size // 2
        if n > half - 1:
            raise ValueError(f"num_pairs={n} needs a vocab_size above {2 * (n + 1)}; got {self.vocab_size}")
        k_keys, k_values, k_positions = jax.random.split(key, 3)
        keys = jax.vmap(lambda k: jax.random.permutation(k, half - 1)[:n] + 1)(
            jax.random.split(k_keys, batch_size)
        )
        values = jax.random.randint(k_values, (batch_size, n), half, self.vocab_size)
        pairs = jnp.stack([keys, values], axis=-1).reshape(batch_size, 2 * n)
        # Query slots after the pairs, more likely close to them (power law in the gap).
        slots = length - 2 * n
        weights = jnp.arange(1, slots + 1, dtype=jnp.float32) ** -self.power
        positions = jax.vmap(
            lambda k: jax.random.choice(k, slots, (n,), replace=False, p=weights / weights.sum())
        )(jax.random.split(k_positions, batch_size))
        rows = jnp.arange(batch_size)[:, None]
        queries = jnp.zeros((batch_size, slots), jnp.int32).at[rows, positions].set(keys)
        answers = jnp.zeros((batch_size, slots), jnp.int32).at[rows, positions].set(values)
        mask = jnp.zeros((batch_size, slots), jnp.float32).at[rows, positions].set(1.0)
        zeros = jnp.zeros((batch_size, 2 * n), jnp.int32)
        inputs = jnp.concatenate([pairs, queries], axis=1).astype(jnp.int32)
        targets = jnp.concatenate([zeros, answers], axis=1)
        mask = jnp.concatenate([zeros.astype(jnp.float32), mask], axis=1)
        return Batch(inputs, targets, mask, mask)

    def baseline(self, length: int) -> Baseline:
        del length
        values = self.vocab_size - self.vocab_size // 2
        return Baseline(math.log(values), 1 / values)


@dataclasses.dataclass(frozen=True)
class FlipFlop:
    """Flip-flop language modelling (Liu et al. 2023).

    Tokens: write w = 0, read r = 1, ignore i = 2, bits 3 (zero) and 4 (one).
    A sequence of length t (even) is t/2 instruction-bit pairs; it opens with a
    write, then each instruction is ignore with probability `p_ignore` and
    otherwise write or read with equal odds. Bits after w and i are random; the bit
    after r is the most recent written bit. The model reads the sequence causally
    and is scored at each r on predicting the next token (the bit). The
    memoryless predictor says 0 or 1 at random: loss log 2, accuracy 1/2. Liu et
    al. train at p_ignore = 0.8 and test on sparse (0.98) and dense (0.1) mixes.
    """

    p_ignore: float = 0.8
    loss: ClassVar[Loss] = Loss.CROSS_ENTROPY
    name: ClassVar[str] = "flip_flop"

    def __post_init__(self):
        check_real(self.p_ignore, "p_ignore", 0.0, 1.0)  # at 1 no read would be scored

    vocab_size: ClassVar[int] = 5
    output_size: ClassVar[int] = 5

    def num_steps(self, length: int) -> int:
        return length

    def sample(self, key: Array, batch_size: int, length: int) -> Batch:
        _check_length(length, 4, self.name, batch_size)
        if length % 2:
            raise ValueError(
                f"length of the flip_flop task must be even (instruction, bit pairs); got {length}"
            )
        pairs = length // 2
        k_op, k_bits = jax.random.split(key)
        p_rw = (1.0 - self.p_ignore) / 2
        ops = jax.random.choice(k_op, 3, (batch_size, pairs), p=jnp.array([p_rw, p_rw, self.p_ignore]))
        ops = ops.at[:, 0].set(0)  # open with a write, so every read has an answer
        bits = jax.random.bernoulli(k_bits, 0.5, (batch_size, pairs)).astype(jnp.int32)

        def carry_last_write(last, op_bit):
            op, bit = op_bit
            return jnp.where(op == 0, bit, last), jnp.where(op == 0, bit, last)

        _, last_written = jax.lax.scan(carry_last_write, jnp.zeros(batch_size, jnp.int32), (ops.T, bits.T))
        bits = jnp.where(ops == 1, last_written.T, bits)
        inputs = jnp.stack([ops, bits + 3], axis=-1).reshape(batch_size, length).astype(jnp.int32)
        # Next-token prediction at each read instruction: the target is its bit.
        targets = jnp.stack([bits + 3, jnp.zeros_like(bits)], axis=-1).reshape(batch_size, length)
        mask = jnp.stack([ops == 1, jnp.zeros_like(ops, bool)], axis=-1).reshape(batch_size, length)
        mask = mask.astype(jnp.float32)
        return Batch(inputs, targets.astype(jnp.int32), mask, mask)

    def baseline(self, length: int) -> Baseline:
        del length
        return Baseline(math.log(2), 0.5)


# Every task class by name; `seqjax.data.chomsky` adds its own.
TASKS: dict[str, Any] = {
    task.name: task for task in (Copy, Adding, SelectiveCopy, AssociativeRecall, FlipFlop)
}
