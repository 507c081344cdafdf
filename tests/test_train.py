"""Training engine: vmapped runs equal runs trained alone (kill-and-resume against an
uninterrupted run is in test_robustness.py, with damaged checkpoints)."""

import jax
import numpy as np
import pytest

from seqjax.data import tasks
from seqjax.models import SequenceModel
from seqjax.training import TrainConfig, loss_and_metrics, train

TASK = tasks.Copy(memory=3, alphabet=4)
MODEL = SequenceModel("gru", output_size=TASK.output_size, hidden_size=8, vocab_size=TASK.vocab_size)
CONFIG = TrainConfig(
    length=4, steps=20, batch_size=8, warmup_steps=5, log_every=5, eval_every=10, checkpoint_every=10
)


@pytest.fixture(autouse=True)
def standard_promotion():
    """optax's Adam mixes int32 step counts with floats, which strict promotion rejects."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def final_losses(history, step):
    return [line["loss"] for line in history if line["step"] == step]


def assert_same_params(a, b, rtol=0.0):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * 1e-2)


def test_vmapped_runs_equal_runs_alone(tmp_path):
    seeds, lrs = [0, 1], [1e-2, 3e-3]
    together, history = train(MODEL, TASK, CONFIG, seeds, lrs, tmp_path / "group")
    assert len(final_losses(history, 20)) == 2
    for r, (seed, lr) in enumerate(zip(seeds, lrs, strict=True)):
        alone, alone_history = train(MODEL, TASK, CONFIG, [seed], [lr], tmp_path / f"run{r}")
        assert_same_params(
            jax.tree.map(lambda p, r=r: p[r], together.params),
            jax.tree.map(lambda p: p[0], alone.params),
            1e-5,
        )
        np.testing.assert_allclose(
            final_losses(history, 20)[r], final_losses(alone_history, 20)[0], rtol=1e-5
        )
    # Different seeds and rates give different runs.
    assert len(set(final_losses(history, 20))) == 2


def test_loss_and_metrics_against_numpy():
    batch = TASK.sample(jax.random.key(0), 4, 5)
    logits = jax.random.normal(jax.random.key(1), (*batch.targets.shape, TASK.output_size))
    loss, accuracy = loss_and_metrics(TASK, logits, batch)
    z = np.asarray(logits, np.float64)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, np.asarray(batch.targets)[..., None], -1)[..., 0]
    mask, eval_mask = np.asarray(batch.loss_mask), np.asarray(batch.eval_mask)
    np.testing.assert_allclose(loss, (nll * mask).sum() / mask.sum(), rtol=1e-5)
    hits = np.argmax(z, -1) == np.asarray(batch.targets)
    np.testing.assert_allclose(accuracy, (hits * eval_mask).sum() / eval_mask.sum(), rtol=1e-6)


def test_config_errors():
    with pytest.raises(ValueError, match="eval_every=7 must be a multiple of log_every=5"):
        TrainConfig(length=4, log_every=5, eval_every=7)
    with pytest.raises(ValueError, match="seeds and learning_rates must pair up"):
        train(MODEL, TASK, CONFIG, [0, 1], [1e-2], "/tmp/unused")
