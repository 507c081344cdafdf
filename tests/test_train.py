"""Training engine: vmapped runs equal runs trained alone (kill-and-resume against an
uninterrupted run is in test_robustness.py, with damaged checkpoints)."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from seqjax.data import tasks
from seqjax.models import SequenceModel
from seqjax.training import TrainConfig, loop, loss_and_metrics, train

TASK = tasks.Copy(memory=3, alphabet=4)
MODEL = SequenceModel("gru", output_size=TASK.output_size, hidden_size=8, vocab_size=TASK.vocab_size)
CONFIG = TrainConfig(
    length=4, steps=20, batch_size=8, warmup_steps=5, log_every=5, eval_every=10, checkpoint_every=10
)
RUNS = ([0, 1], [1e-2, 3e-3])


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


def test_mixed_precision_keeps_float32_master_weights(tmp_path):
    """bfloat16 compute moves the weights (the casts took effect) a little off the
    float32 run's path; the master weights and the optimiser state stay float32."""
    half = dataclasses.replace(CONFIG, compute_dtype="bfloat16")
    full_state, full = train(MODEL, TASK, CONFIG, [0], [1e-2], tmp_path / "f32")
    half_state, mixed = train(MODEL, TASK, half, [0], [1e-2], tmp_path / "bf16")
    for leaf in jax.tree.leaves((half_state.params, half_state.opt_state)):
        assert leaf.dtype != jax.numpy.bfloat16
    drift = [
        float(np.abs(a - b).max())
        for a, b in zip(jax.tree.leaves(full_state.params), jax.tree.leaves(half_state.params), strict=True)
    ]
    assert 0 < max(drift) < 0.05
    np.testing.assert_allclose(final_losses(mixed, 20), final_losses(full, 20), rtol=0.05)
    with pytest.raises(ValueError, match="compute_dtype must be one of 'float32', 'bfloat16'; got 'float16'"):
        TrainConfig(length=4, compute_dtype="float16")


def test_config_errors():
    with pytest.raises(ValueError, match="eval_every=7 must be a multiple of log_every=5"):
        TrainConfig(length=4, log_every=5, eval_every=7)
    with pytest.raises(ValueError, match="seeds and learning_rates must pair up"):
        train(MODEL, TASK, CONFIG, [0, 1], [1e-2], "/tmp/unused")


def test_validation_scores_the_given_task_and_length(tmp_path):
    """Every evaluation scores `validation`'s task and length on the validation stream,
    run.json records it, and a resume with another validation is refused."""
    longer = dataclasses.replace(TASK, memory=5)
    validation = (longer, 9)
    state, history = train(MODEL, TASK, CONFIG, *RUNS, tmp_path, validation=validation)
    loss, accuracy = loop.make_evaluate(MODEL, longer, CONFIG)(state.params, state.seed, 9)
    usual = loop.make_evaluate(MODEL, TASK, CONFIG)(state.params, state.seed, CONFIG.length)
    final = [line for line in history if line["step"] == CONFIG.steps]
    np.testing.assert_allclose([line["eval_loss"] for line in final], loss, rtol=1e-6)
    np.testing.assert_allclose([line["eval_accuracy"] for line in final], accuracy, rtol=1e-6)
    assert not np.allclose(loss, usual[0], rtol=1e-3)
    record = json.loads((tmp_path / "run.json").read_text())["validation"]
    assert (record["length"], record["task"]["memory"]) == (9, 5)
    with pytest.raises(ValueError, match=r"validation: .*\"length\": 9} there, .*\"length\": 8} now"):
        train(MODEL, TASK, CONFIG, *RUNS, tmp_path, resume=True, validation=(longer, 8))
    other = "validation's task must have the training task's output_size=6; got 7"
    with pytest.raises(ValueError, match=other):
        train(MODEL, TASK, CONFIG, *RUNS, tmp_path / "x", validation=(tasks.Copy(memory=3, alphabet=5), 4))
    with pytest.raises(ValueError, match="validation's length must be"):
        train(MODEL, TASK, CONFIG, *RUNS, tmp_path / "x", validation=(longer, 0))


# ---------------------------------------------------------------- early stopping

EVERY5 = dataclasses.replace(CONFIG, eval_every=5)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """Two runs without early stopping, evaluated every 5 steps."""
    with jax.numpy_dtype_promotion("standard"):
        return train(MODEL, TASK, EVERY5, *RUNS, tmp_path_factory.mktemp("plain"))


def _strip(lines):
    """Metric lines without their wall-clock figures."""
    return [{k: v for k, v in x.items() if k not in ("seconds", "tokens_per_second")} for x in lines]


def _evals(history, run):
    return [(line["step"], line["eval_accuracy"]) for line in history if line["run"] == run]


@pytest.fixture(scope="module")
def threshold(plain):
    """`(accuracy, run, step)`: an accuracy that run `run` first reaches at `step` < 20
    and the other run never reaches, in the plain runs."""
    for run in (0, 1):
        other = max(acc for _, acc in _evals(plain[1], 1 - run))
        for i, (step, acc) in enumerate(_evals(plain[1], run)):
            if step < 20 and acc > other and all(a < acc for _, a in _evals(plain[1], run)[:i]):
                return acc, run, step
    raise AssertionError("the plain runs offer no threshold that only one of them reaches")


@pytest.fixture(scope="module")
def early(plain, threshold, tmp_path_factory):
    config = dataclasses.replace(EVERY5, stop_accuracy=threshold[0])
    with jax.numpy_dtype_promotion("standard"):
        return train(MODEL, TASK, config, *RUNS, tmp_path_factory.mktemp("early"))


def test_early_stopping_freezes_a_solved_run_and_not_the_other(plain, threshold, early, tmp_path):
    accuracy, run, step = threshold
    state, history = early
    (mark,) = [line for line in history if "stopped" in line]
    assert (mark["run"], mark["step"], mark["stopped"]) == (run, step, "solved")
    other = 1 - run
    # The run that trains on is the plain run, bit for bit.
    for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(plain[0].params), strict=True):
        np.testing.assert_array_equal(x[other], y[other])
    assert _strip(line for line in history if line["run"] == other) == _strip(
        line for line in plain[1] if line["run"] == other
    )
    # The frozen run scores the same at every later evaluation, and is the run trained
    # alone up to `step`: alone, every run of its group has stopped, so training ends there.
    later = [acc for s, acc in _evals(history, run) if s >= step]
    assert len(later) > 1 and len(set(later)) == 1
    config = dataclasses.replace(EVERY5, stop_accuracy=accuracy)
    alone, alone_history = train(MODEL, TASK, config, [RUNS[0][run]], [RUNS[1][run]], tmp_path)
    assert max(line["step"] for line in alone_history) == step
    assert alone_history[-1]["stopped"] == "solved"
    assert (tmp_path / "checkpoints" / str(step)).exists()
    assert_same_params(
        jax.tree.map(lambda p: p[run], state.params), jax.tree.map(lambda p: p[0], alone.params), 1e-5
    )
    plain_before = [line["loss"] for line in plain[1] if line["run"] == run and line["step"] <= step]
    np.testing.assert_allclose([line["loss"] for line in alone_history], plain_before, rtol=1e-5)


def test_a_resumed_early_stopping_run_equals_an_uninterrupted_one(threshold, early, tmp_path):
    config = dataclasses.replace(EVERY5, stop_accuracy=threshold[0])

    class Killed(Exception):
        pass

    def kill(step, lines):
        if step == 15:
            raise Killed

    with pytest.raises(Killed):
        train(MODEL, TASK, config, *RUNS, tmp_path, on_log=kill)
    state, history = train(MODEL, TASK, config, *RUNS, tmp_path, resume=True)
    for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(early[0]), strict=True):
        np.testing.assert_array_equal(x, y)
    assert _strip(history) == _strip(early[1])


@pytest.mark.parametrize(
    ("losses", "patience", "expected"),
    [
        ([1.0, 0.9, 0.8], 1, None),  # improving
        ([1.0, 0.9, 0.95], 1, "patience"),
        ([1.0, 0.9, 0.95], 2, None),
        ([1.0, 0.9, 0.95, 0.9], 2, "patience"),  # equal to the best is no improvement
        ([1.0, None, 1.1], 2, "patience"),  # a non-finite loss never improves
    ],
)
def test_patience_counts_evaluations_since_the_lowest_validation_loss(losses, patience, expected):
    config = dataclasses.replace(CONFIG, patience=patience)
    history = [{"run": 0, "eval_loss": x, "eval_accuracy": 0.0} for x in losses[:-1]]
    history += [{"run": 1, "eval_loss": 0.0, "eval_accuracy": 0.0}]  # another run's lines do not count
    line = {"run": 0, "eval_loss": losses[-1], "eval_accuracy": 0.0}
    assert loop._stop_reason(config, history, line) == expected
