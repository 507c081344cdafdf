"""The Chomsky-hierarchy transduction tasks (Deletang et al. 2023, Table 2), generated on the fly.

Each task maps an input string of n symbols to an output string of
`output_length(n)` symbols (one, for the classification tasks). As in the
paper's non-autoregressive set-up, the model reads the input, then one query
token per output symbol, and predicts the output at the query positions:

    inputs:  s_1 ... s_n  Q ... Q  P ... P      Q = query, P = padding
    targets:              y_1 ... y_m           (m = output_length(n))

Every example of a batch has its own n, uniform in [min_length, length] (the
paper's training draws lengths 1..40; its test, 41..500), so `lengths` gives each
example's valid steps, n + m. The loss averages over every output position; the
accuracy is the mean over examples of each one's share of correct output symbols
(the paper's per-length score, averaged over lengths), counted up to and
including the termination token where the task has one. Chance is one over the
number of output classes.

    task = chomsky.TASKS["reverse_string"]()
    batch = task.sample(key, batch_size=64, length=40)           # n in [1, 40]
    test = dataclasses.replace(task, min_length=41)              # scored on 41..500
    batch = test.sample(key, 64, 500)

The generators follow the paper's code (google-deepmind/neural_networks_chomsky_hierarchy,
`tasks/`); where seqjax differs it says so in the task's docstring.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from seqjax.data.tasks import TASKS, Baseline, Batch, Loss, _check_length
from seqjax.validation import check_positive_int

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Transduction(abc.ABC):
    """What every Chomsky task shares: the layout above, lengths, masks and chance.

    A task subclass sets `name`, `level` ("regular", "dcf" or "cs"), `symbols` (input
    alphabet), `classes` (output alphabet) and `generate`, and may set
    `output_length`, `valid_length` and `terminated`.
    """

    min_length: int = 1
    loss: ClassVar[Loss] = Loss.CROSS_ENTROPY
    name: ClassVar[str]
    level: ClassVar[str]
    symbols: ClassVar[int]
    classes: ClassVar[int]
    terminated: ClassVar[bool] = False  # outputs end with a termination token; scored up to it
    shortest: ClassVar[int] = 1  # the shortest input the task defines

    def __post_init__(self):
        check_positive_int(self.min_length, "min_length")

    @property
    def vocab_size(self) -> int:
        return self.symbols + 2  # the query and padding tokens

    @property
    def output_size(self) -> int:
        return self.classes

    def output_length(self, n: Any) -> Any:
        """Output symbols for an input of n symbols (ints or int arrays)."""
        return n * 0 + 1

    def valid_length(self, n: Array) -> Array:
        """The input length actually used for a drawn n (e.g. odd, for arithmetic)."""
        return jnp.maximum(n, self.shortest)

    def num_steps(self, length: int) -> int:
        return length + self.output_length(length)

    @abc.abstractmethod
    def generate(self, key: Array, n: Array, length: int) -> tuple[Array, Array]:
        """`(symbols [b, length] int32 in [0, symbols), outputs [b, output_length(length)]
        int32 in [0, classes))`: the inputs (read up to n) and their outputs (up to
        output_length(n))."""

    def sample(self, key: Array, batch_size: int, length: int) -> Batch:
        _check_length(length, max(self.min_length, self.shortest), self.name, batch_size)
        k_lengths, k_task = jax.random.split(key)
        n = self.valid_length(jax.random.randint(k_lengths, (batch_size,), self.min_length, length + 1))
        symbols, outputs = self.generate(k_task, n, length)
        m, t = self.output_length(n), self.num_steps(length)
        steps = jnp.arange(t)
        j = steps - n[:, None]  # the output index at each step
        is_output = (j >= 0) & (j < m[:, None])
        query, pad = self.symbols, self.symbols + 1
        padded = jnp.pad(symbols, ((0, 0), (0, t - length)))
        inputs = jnp.where(steps < n[:, None], padded, jnp.where(is_output, query, pad))
        targets = jnp.take_along_axis(outputs, jnp.clip(j, 0, outputs.shape[1] - 1), axis=1)
        targets = jnp.where(is_output, targets, 0)
        scored = is_output
        if self.terminated:  # up to and including the first termination token
            end = jnp.argmax(outputs == self.classes - 1, axis=1)
            scored = scored & (j <= end[:, None])
        scored = scored.astype(jnp.float32)
        weights = scored / jnp.maximum(scored.sum(1, keepdims=True), 1.0)
        return Batch(
            inputs.astype(jnp.int32),
            targets.astype(jnp.int32),
            is_output.astype(jnp.float32),
            weights,
            (n + m).astype(jnp.int32),
        )

    def baseline(self, length: int) -> Baseline:
        del length
        return Baseline(math.log(self.classes), 1 / self.classes)


def _valid(n: Array, length: int) -> Array:
    """`[b, length]`: True at the first n[i] positions."""
    return jnp.arange(length) < n[:, None]


def _bits(key: Array, n: Array, length: int, symbols: int = 2) -> Array:
    return jax.random.randint(key, (n.shape[0], length), 0, symbols)


def _gather(x: Array, index: Array) -> Array:
    """`x[i, index[i, j]]`, index clipped into range."""
    return jnp.take_along_axis(x, jnp.clip(index, 0, x.shape[1] - 1), axis=1)


# ---------------------------------------------------------------- regular


@dataclasses.dataclass(frozen=True)
class EvenPairs(Transduction):
    """Whether a bit string holds an even number of `01` and `10` pairs (the first
    and last bits agree). Output: 1 if the number is odd."""

    name: ClassVar[str] = "even_pairs"
    level: ClassVar[str] = "regular"
    symbols: ClassVar[int] = 2
    classes: ClassVar[int] = 2

    def generate(self, key, n, length):
        bits = _bits(key, n, length)
        changes = (bits[:, 1:] != bits[:, :-1]) & _valid(n, length)[:, 1:]
        return bits, (changes.sum(1) % 2)[:, None]


@dataclasses.dataclass(frozen=True)
class ParityCheck(Transduction):
    """Whether a bit string holds an odd number of ones."""

    name: ClassVar[str] = "parity_check"
    level: ClassVar[str] = "regular"
    symbols: ClassVar[int] = 2
    classes: ClassVar[int] = 2

    def generate(self, key, n, length):
        bits = _bits(key, n, length)
        return bits, (jnp.where(_valid(n, length), bits, 0).sum(1) % 2)[:, None]


@dataclasses.dataclass(frozen=True)
class CycleNavigation(Transduction):
    """The final position on a cycle of 5 from position 0, after moves stay (0),
    right (1) and left (2)."""

    name: ClassVar[str] = "cycle_navigation"
    level: ClassVar[str] = "regular"
    symbols: ClassVar[int] = 3
    classes: ClassVar[int] = 5

    def generate(self, key, n, length):
        moves = _bits(key, n, length, 3)
        steps = jnp.where(_valid(n, length), jnp.where(moves == 2, -1, moves), 0)
        return moves, (steps.sum(1) % 5)[:, None]


_PLUS, _MINUS, _TIMES = 0, 1, 2  # operators, after the digits


@dataclasses.dataclass(frozen=True)
class ModularArithmetic(Transduction):
    """An expression `d op d op ... d` over digits 0..4 and +, -, * (tokens 5, 6, 7),
    evaluated modulo 5 with * before + and -. Inputs have odd lengths: an even
    drawn n is shortened by one, as in the paper."""

    name: ClassVar[str] = "modular_arithmetic"
    level: ClassVar[str] = "regular"
    symbols: ClassVar[int] = 8
    classes: ClassVar[int] = 5

    def valid_length(self, n):
        return n - (1 - n % 2)

    def generate(self, key, n, length):
        k_digits, k_ops = jax.random.split(key)
        b = n.shape[0]
        digits = jax.random.randint(k_digits, (b, length), 0, 5)
        ops = jax.random.randint(k_ops, (b, length), 0, 3)
        tokens = jnp.where(jnp.arange(length) % 2 == 0, digits, 5 + ops)

        def apply(carry, k):
            total, term = carry  # the sum of finished terms, the running product
            op, digit = ops[:, 2 * k - 1], digits[:, 2 * k]
            new_total = jnp.where(op == _TIMES, total, total + term)
            new_term = jnp.where(op == _TIMES, term * digit, jnp.where(op == _PLUS, digit, -digit))
            live = 2 * k < n
            return (jnp.where(live, new_total, total) % 5, jnp.where(live, new_term, term) % 5), None

        (total, term), _ = jax.lax.scan(
            apply, (jnp.zeros(b, jnp.int32), digits[:, 0]), jnp.arange(1, (length + 1) // 2)
        )
        return tokens, ((total + term) % 5)[:, None]


# ---------------------------------------------------------------- deterministic context-free


@dataclasses.dataclass(frozen=True)
class ReverseString(Transduction):
    """A bit string, reversed."""

    name: ClassVar[str] = "reverse_string"
    level: ClassVar[str] = "dcf"
    symbols: ClassVar[int] = 2
    classes: ClassVar[int] = 2

    def output_length(self, n):
        return n

    def generate(self, key, n, length):
        bits = _bits(key, n, length)
        return bits, _gather(bits, n[:, None] - 1 - jnp.arange(length))


_POP, _PUSH0, _PUSH1 = 2, 3, 4


@dataclasses.dataclass(frozen=True)
class StackManipulation(Transduction):
    """A stack of bits (given bottom to top), then actions POP (2), PUSH 0 (3) and
    PUSH 1 (4); the output is the final stack top to bottom, a termination token (2)
    and zeros, n + 1 symbols in all. POP on an empty stack does nothing. The stack
    takes the first s symbols, s uniform in [1, n - 1] (all of them for n = 1)."""

    name: ClassVar[str] = "stack_manipulation"
    level: ClassVar[str] = "dcf"
    symbols: ClassVar[int] = 5
    classes: ClassVar[int] = 3
    terminated: ClassVar[bool] = True

    def output_length(self, n):
        return n + 1

    def generate(self, key, n, length):
        k_stack, k_bits, k_actions = jax.random.split(key, 3)
        b = n.shape[0]
        s = jnp.where(n > 1, jax.random.randint(k_stack, (b,), 1, jnp.maximum(n, 2)), n)
        position = jnp.arange(length)
        bits, actions = _bits(k_bits, n, length), _bits(k_actions, n, length, 3) + _POP
        tokens = jnp.where(position < s[:, None], bits, actions)
        rows = jnp.arange(b)

        def act(carry, p):
            stack, depth = carry
            token = tokens[:, p]
            push = (p < s) | ((p < n) & (token != _POP))
            pop = (p >= s) & (p < n) & (token == _POP)
            value = jnp.where(p < s, token, token - _PUSH0)
            stack = stack.at[rows, depth].set(jnp.where(push, value, stack[rows, depth]), mode="drop")
            depth = depth + push.astype(jnp.int32) - (pop & (depth > 0)).astype(jnp.int32)
            return (stack, depth), None

        (stack, depth), _ = jax.lax.scan(
            act, (jnp.zeros((b, length), jnp.int32), jnp.zeros(b, jnp.int32)), position
        )
        j = jnp.arange(length + 1)
        top_first = _gather(stack, depth[:, None] - 1 - j)
        outputs = jnp.where(j < depth[:, None], top_first, jnp.where(j == depth[:, None], 2, 0))
        return tokens, outputs


_DIGITS = 5
_OPEN, _CLOSE = _DIGITS + 3, _DIGITS + 4  # after the digits and + - *


def _expression(rng: np.random.Generator, n: int) -> tuple[list[int], int]:
    """A random bracketed expression of exactly n tokens and its value modulo 5, drawn
    as the paper's generator draws them (a random split into left and right operands)."""
    minus = _DIGITS + _MINUS
    if n <= 4:  # d, -d, (d), (-d)
        digit = int(rng.integers(_DIGITS))
        negate = n in (2, 4)
        tokens = [minus, digit] if negate else [digit]
        return ([_OPEN, *tokens, _CLOSE] if n >= 3 else tokens), (-digit if negate else digit) % _DIGITS
    left = int(rng.integers(1, n - 3))
    left_tokens, a = _expression(rng, left)
    right_tokens, c = _expression(rng, n - left - 3)
    op = int(rng.integers(3))
    value = (a + c, a - c, a * c)[op] % _DIGITS
    return [_OPEN, *left_tokens, _DIGITS + op, *right_tokens, _CLOSE], value


@dataclasses.dataclass(frozen=True)
class ModularArithmeticBrackets(Transduction):
    """A bracketed expression over digits 0..4, +, -, * (5, 6, 7), ( and ) (8, 9),
    and unary minus, of exactly n tokens, evaluated modulo 5 (the paper's Table 2
    uses multiplication too). Drawn on the host by the paper's recursive
    procedure, seeded from the key, through `jax.pure_callback`: a pure function of
    the key, like the others, but not compiled into the step."""

    name: ClassVar[str] = "modular_arithmetic_brackets"
    level: ClassVar[str] = "dcf"
    symbols: ClassVar[int] = 10
    classes: ClassVar[int] = 5

    def generate(self, key, n, length):
        def draw(key_data, n):
            rng = np.random.default_rng(np.asarray(key_data, np.uint32).ravel().tolist())
            tokens = np.zeros((len(n), length), np.int32)
            values = np.zeros((len(n), 1), np.int32)
            for i, size in enumerate(np.asarray(n)):
                expression, values[i, 0] = _expression(rng, int(size))
                tokens[i, : len(expression)] = expression
            return tokens, values

        shapes = (
            jax.ShapeDtypeStruct((n.shape[0], length), jnp.int32),
            jax.ShapeDtypeStruct((n.shape[0], 1), jnp.int32),
        )
        return jax.pure_callback(draw, shapes, jax.random.key_data(key), n, vmap_method="sequential")


# ---------------------------------------------------------------- context-sensitive


@dataclasses.dataclass(frozen=True)
class DuplicateString(Transduction):
    """A bit string, written twice."""

    name: ClassVar[str] = "duplicate_string"
    level: ClassVar[str] = "cs"
    symbols: ClassVar[int] = 2
    classes: ClassVar[int] = 2

    def output_length(self, n):
        return 2 * n

    def generate(self, key, n, length):
        bits = _bits(key, n, length)
        return bits, _gather(bits, jnp.arange(2 * length) % n[:, None])


@dataclasses.dataclass(frozen=True)
class MissingDuplicateString(Transduction):
    """A bit string written twice (the first n // 2 symbols, then again), one symbol
    replaced by the token 2, and a padding token 3 when n is odd: the output is
    the missing bit. Inputs have at least 2 symbols."""

    name: ClassVar[str] = "missing_duplicate_string"
    level: ClassVar[str] = "cs"
    symbols: ClassVar[int] = 4
    classes: ClassVar[int] = 2
    shortest: ClassVar[int] = 2

    def generate(self, key, n, length):
        k_bits, k_missing = jax.random.split(key)
        half = n // 2
        position = jnp.arange(length)
        bits = _gather(_bits(k_bits, n, length), position % half[:, None])
        missing = jax.random.randint(k_missing, n.shape, 0, 2 * half)
        tokens = jnp.where(position == missing[:, None], 2, jnp.where(position < 2 * half[:, None], bits, 3))
        return tokens, _gather(bits, missing[:, None])


@dataclasses.dataclass(frozen=True)
class OddsFirst(Transduction):
    """A bit string with the symbols at odd positions (counting from 0) first, then
    those at even positions."""

    name: ClassVar[str] = "odds_first"
    level: ClassVar[str] = "cs"
    symbols: ClassVar[int] = 2
    classes: ClassVar[int] = 2

    def output_length(self, n):
        return n

    def generate(self, key, n, length):
        bits = _bits(key, n, length)
        j, odds = jnp.arange(length), (n // 2)[:, None]
        return bits, _gather(bits, jnp.where(j < odds, 2 * j + 1, 2 * (j - odds)))


@dataclasses.dataclass(frozen=True)
class BinaryAddition(Transduction):
    """`a + b` in little-endian binary (`+` is token 2; a takes l symbols, l uniform in
    [1, n - 2], b the rest), to their sum in little-endian binary without trailing
    zeros (`0` for zero), a termination token (2) and zeros: n + 1 symbols. Inputs
    have at least 3 symbols. Unlike the paper's generator, whose numbers are at
    least 1, a and b may be 0."""

    name: ClassVar[str] = "binary_addition"
    level: ClassVar[str] = "cs"
    symbols: ClassVar[int] = 3
    classes: ClassVar[int] = 3
    terminated: ClassVar[bool] = True
    shortest: ClassVar[int] = 3

    def output_length(self, n):
        return n + 1

    def generate(self, key, n, length):
        k_split, k_bits = jax.random.split(key)
        first = jax.random.randint(k_split, n.shape, 1, n - 1)  # a's length, in [1, n - 2]
        position = jnp.arange(length)
        bits = _bits(k_bits, n, length)
        tokens = jnp.where(position == first[:, None], 2, bits)
        a = jnp.where(position < first[:, None], bits, 0)
        b = jnp.where(position < (n - 1 - first)[:, None], _gather(bits, first[:, None] + 1 + position), 0)

        def add(carry, ab):
            total = ab[0] + ab[1] + carry
            return total // 2, total % 2

        carry, digits = jax.lax.scan(add, jnp.zeros(n.shape, jnp.int32), (a.T, b.T))
        digits = jnp.concatenate([digits.T, carry[:, None], jnp.zeros((n.shape[0], 1), jnp.int32)], axis=1)
        j = jnp.arange(length + 2)
        size = jnp.maximum(jnp.max(jnp.where(digits == 1, j + 1, 0), axis=1), 1)  # without trailing zeros
        outputs = jnp.where(j < size[:, None], digits, jnp.where(j == size[:, None], 2, 0))
        return tokens, outputs[:, : length + 1]


@dataclasses.dataclass(frozen=True)
class BucketSort(Transduction):
    """A string over 5 symbols, sorted."""

    name: ClassVar[str] = "bucket_sort"
    level: ClassVar[str] = "cs"
    symbols: ClassVar[int] = 5
    classes: ClassVar[int] = 5

    def output_length(self, n):
        return n

    def generate(self, key, n, length):
        tokens = _bits(key, n, length, 5)
        return tokens, jnp.sort(jnp.where(_valid(n, length), tokens, 5), axis=1)


# In the order of the paper's Table 2.
CHOMSKY: dict[str, type[Transduction]] = {
    task.name: task
    for task in (
        EvenPairs,
        ModularArithmetic,
        ParityCheck,
        CycleNavigation,
        StackManipulation,
        ReverseString,
        ModularArithmeticBrackets,
        DuplicateString,
        MissingDuplicateString,
        OddsFirst,
        BinaryAddition,
        BucketSort,
    )
}
TASKS.update(CHOMSKY)
