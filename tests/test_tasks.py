"""Task generators: shapes, vocabularies, scored positions, and the analytic baselines
measured against the memoryless predictor on generated batches (a NumPy reference)."""

import math

import jax
import numpy as np
import pytest

from seqjax.data import tasks

KEY = jax.random.key(0)


def memoryless_ce(batch, probs):
    """Mean cross-entropy of per-position class probabilities `probs [b, t, v]` (NumPy)."""
    p = np.take_along_axis(np.asarray(probs), np.asarray(batch.targets)[..., None], -1)[..., 0]
    mask = np.asarray(batch.loss_mask)
    return float(-(np.log(p) * mask).sum() / mask.sum())


@pytest.mark.parametrize("delay", [5, 50])
def test_copy(delay):
    task = tasks.Copy()
    batch = jax.jit(task.sample, static_argnums=(1, 2))(KEY, 512, delay)
    x, y = np.asarray(batch.inputs), np.asarray(batch.targets)
    t = delay + 20
    assert x.shape == y.shape == (512, t) and x.dtype == np.int32
    assert x[:, :10].max() <= 7 and (x[:, 10 : delay + 9] == 8).all() and (x[:, delay + 9] == 9).all()
    assert (x[:, delay + 10 :] == 8).all()
    np.testing.assert_array_equal(y[:, -10:], x[:, :10])
    assert (y[:, :-10] == 8).all()
    assert batch.eval_mask.sum() == 512 * 10 and batch.loss_mask.sum() == 512 * t
    # The memoryless predictor: blank until the recall, then uniform over the 8 symbols.
    probs = np.zeros((512, t, 10))
    probs[:, :-10, 8] = 1.0
    probs[:, -10:, :8] = 1 / 8
    assert memoryless_ce(batch, probs) == pytest.approx(task.baseline(delay).loss, rel=1e-6)
    assert task.baseline(delay).loss == pytest.approx(10 * math.log(8) / (delay + 20))
    # Symbols are uniform over the alphabet.
    counts = np.bincount(x[:, :10].ravel(), minlength=8)
    assert counts.min() > 0.8 * counts.mean()


def test_adding():
    task = tasks.Adding()
    batch = task.sample(KEY, 20000, 30)
    x = np.asarray(batch.inputs)
    assert x.shape == (20000, 30, 2)
    markers = x[..., 1]
    assert (markers[:, :15].sum(1) == 1).all() and (markers[:, 15:].sum(1) == 1).all()
    target = (x[..., 0] * markers).sum(1)
    np.testing.assert_allclose(batch.targets[:, -1], target, rtol=1e-6)
    assert (np.asarray(batch.loss_mask)[:, -1] == 1).all() and batch.loss_mask.sum() == 20000
    mse_of_one = np.mean((target - 1.0) ** 2)
    assert mse_of_one == pytest.approx(task.baseline(30).loss, rel=0.03)
    within = np.mean(np.abs(target - 1.0) < 0.04)
    assert within == pytest.approx(task.baseline(30).accuracy, abs=0.01)


def test_selective_copy():
    task = tasks.SelectiveCopy(num_tokens=4, alphabet=6)
    batch = task.sample(KEY, 256, 20)
    x, y, m = (np.asarray(a) for a in (batch.inputs, batch.targets, batch.eval_mask))
    assert x.shape == (256, 24) and x.max() < task.vocab_size
    for row in range(256):
        data = x[row, :20][x[row, :20] > 0]
        assert len(data) == 4 and data.max() <= 6
        np.testing.assert_array_equal(y[row, 20:], data)  # in order of appearance
    assert (x[:, 20:] == 7).all() and (m[:, 20:] == 1).all() and m[:, :20].sum() == 0
    # Spacing varies: the data positions are not fixed.
    positions = {tuple(np.nonzero(x[row, :20])[0]) for row in range(256)}
    assert len(positions) > 100
    probs = np.full((256, 24, 8), 1 / 6)
    probs[..., [0, 7]] = 1e-30
    assert memoryless_ce(batch, probs) == pytest.approx(task.baseline(20).loss, rel=1e-5)


def test_associative_recall():
    task = tasks.AssociativeRecall(vocab_size=32)
    batch = task.sample(KEY, 128, 64)
    x, y, m = (np.asarray(a) for a in (batch.inputs, batch.targets, batch.eval_mask))
    n = task.pairs(64)
    assert n == 4 and x.shape == (128, 64)
    for row in range(128):
        keys, values = x[row, 0 : 2 * n : 2], x[row, 1 : 2 * n : 2]
        assert len(set(keys)) == n and (1 <= keys).all() and (keys < 16).all() and (values >= 16).all()
        lookup = dict(zip(keys, values, strict=True))
        queries = np.nonzero(m[row])[0]
        assert len(queries) == n and (queries >= 2 * n).all()
        assert sorted(x[row, queries]) == sorted(keys)
        for q in queries:
            assert y[row, q] == lookup[x[row, q]]
    assert task.baseline(64) == tasks.Baseline(math.log(16), 1 / 16)


def flip_flop_reference(inputs):
    """NumPy: the target of each read is the bit of the most recent write."""
    targets = np.zeros_like(inputs)
    for row, seq in enumerate(inputs):
        last = None
        for i in range(0, len(seq), 2):
            if seq[i] == 0:
                last = seq[i + 1]
            elif seq[i] == 1:
                targets[row, i] = last
    return targets


@pytest.mark.parametrize("p_ignore", [0.1, 0.8, 0.98])
def test_flip_flop(p_ignore):
    task = tasks.FlipFlop(p_ignore=p_ignore)
    batch = task.sample(KEY, 64, 100)
    x, y, m = (np.asarray(a) for a in (batch.inputs, batch.targets, batch.eval_mask))
    assert x.shape == (64, 100) and (x[:, 0] == 0).all()
    assert set(np.unique(x[:, 0::2])) <= {0, 1, 2} and set(np.unique(x[:, 1::2])) <= {3, 4}
    np.testing.assert_array_equal(y * m, flip_flop_reference(x) * m)
    np.testing.assert_array_equal(m, (x == 1) * (np.arange(100) % 2 == 0))
    np.testing.assert_array_equal(x[:, 1::2][m[:, 0::2] == 1], y[:, 0::2][m[:, 0::2] == 1])
    assert np.mean(x[:, 2::2] == 2) == pytest.approx(p_ignore, abs=0.03)


def test_bad_lengths():
    with pytest.raises(ValueError, match="length of the copy task must be an int >= 1"):
        tasks.Copy().sample(KEY, 2, 0)
    with pytest.raises(ValueError, match="flip_flop task must be even"):
        tasks.FlipFlop().sample(KEY, 2, 11)
    with pytest.raises(ValueError, match="num_pairs=40 needs a vocab_size above 82"):
        tasks.AssociativeRecall(vocab_size=64, num_pairs=40).sample(KEY, 2, 200)
