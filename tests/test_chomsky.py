"""The Chomsky-hierarchy tasks against plain-Python references of each transduction."""

import dataclasses
import itertools

import jax
import numpy as np
import pytest

from seqjax.data import chomsky, tasks


def _little_endian(bits):
    return sum(b << i for i, b in enumerate(bits))


def _binary_addition(x):
    plus = x.index(2)
    total = _little_endian(x[:plus]) + _little_endian(x[plus + 1 :])
    digits = [int(c) for c in reversed(f"{total:b}")]
    return digits + [2] + [0] * (len(x) + 1 - len(digits) - 1)


def _stack(x):
    s = next((i for i, v in enumerate(x) if v >= 2), len(x))
    stack = list(x[:s])
    for action in x[s:]:
        if action == 2:
            stack = stack[:-1]
        else:
            stack.append(action - 3)
    return stack[::-1] + [2] + [0] * (len(x) - len(stack))


def _missing(x):
    half = len(x) // 2
    gap = x.index(2)
    return [x[(gap + half) % (2 * half)]]


def _evaluate(x, alphabet):
    # Python's own evaluation of the expression, * before + and -.
    return [eval("".join(alphabet[v] for v in x)) % 5]


ARITHMETIC = "01234+-*()"
REFERENCES = {
    "even_pairs": lambda x: [sum(a != b for a, b in itertools.pairwise(x)) % 2],
    "parity_check": lambda x: [sum(x) % 2],
    "cycle_navigation": lambda x: [sum({0: 0, 1: 1, 2: -1}[v] for v in x) % 5],
    "modular_arithmetic": lambda x: _evaluate(x, ARITHMETIC),
    "reverse_string": lambda x: x[::-1],
    "stack_manipulation": _stack,
    "modular_arithmetic_brackets": lambda x: _evaluate(x, ARITHMETIC),
    "duplicate_string": lambda x: x + x,
    "missing_duplicate_string": _missing,
    "odds_first": lambda x: x[1::2] + x[::2],
    "binary_addition": _binary_addition,
    "bucket_sort": sorted,
}


def test_every_task_has_a_reference():
    assert set(REFERENCES) == set(chomsky.CHOMSKY) and set(chomsky.CHOMSKY) <= set(tasks.TASKS)


@pytest.mark.parametrize("name", list(chomsky.CHOMSKY))
def test_outputs_masks_and_lengths_against_the_reference(name):
    task = chomsky.CHOMSKY[name]()
    length, batch_size = 13, 96
    batch = jax.jit(task.sample, static_argnums=(1, 2))(jax.random.key(0), batch_size, length)
    x, y, loss_mask, weights, lengths = (np.asarray(a) for a in batch)
    t = task.num_steps(length)
    assert x.shape == y.shape == weights.shape == (batch_size, t) and x.dtype == np.int32
    query, pad = task.symbols, task.symbols + 1
    sizes = set()
    for row in range(batch_size):
        n = int(np.argmax(x[row] == query))
        symbols = x[row, :n].tolist()
        expected = REFERENCES[name](symbols)
        m = len(expected)
        sizes.add(n)
        assert m == task.output_length(n) and lengths[row] == n + m
        assert (
            max(symbols) < task.symbols
            and (x[row, n : n + m] == query).all()
            and (x[row, n + m :] == pad).all()
        )
        assert y[row, n : n + m].tolist() == list(expected), (name, symbols)
        np.testing.assert_array_equal(loss_mask[row], (np.arange(t) >= n) & (np.arange(t) < n + m))
        # Accuracy weights: one per example, spread over the scored outputs (up to the
        # termination token where there is one).
        scored = m if not task.terminated else expected.index(task.classes - 1) + 1
        np.testing.assert_allclose(weights[row, n : n + scored], 1 / scored, rtol=1e-6)
        assert weights[row].sum() == pytest.approx(1.0)
    # Lengths cover the range (odd ones only for the arithmetic without brackets).
    valid = {int(task.valid_length(np.array(n))) for n in range(1, length + 1)}
    assert sizes == valid


def test_generalisation_lengths_and_the_checks():
    task = dataclasses.replace(chomsky.ReverseString(), min_length=41)
    n = np.asarray(task.sample(jax.random.key(1), 256, 60).lengths) // 2
    assert n.min() >= 41 and n.max() <= 60
    with pytest.raises(ValueError, match="length of the reverse_string task must be an int >= 41"):
        task.sample(jax.random.key(1), 2, 40)
    with pytest.raises(ValueError, match="min_length must be a positive int"):
        chomsky.BucketSort(min_length=0)
    assert chomsky.CycleNavigation().baseline(10).accuracy == pytest.approx(0.2)


def test_the_host_drawn_expressions_are_a_function_of_the_key_under_jit_and_vmap():
    task = chomsky.ModularArithmeticBrackets()
    keys = jax.random.split(jax.random.key(3), 3)
    sample = jax.jit(jax.vmap(lambda k: task.sample(k, 4, 25).inputs))
    together = np.asarray(sample(keys))
    for i, key in enumerate(keys):
        np.testing.assert_array_equal(together[i], np.asarray(task.sample(key, 4, 25).inputs))
    assert len({together[i].tobytes() for i in range(3)}) == 3
