"""Online inference and streams, for every family: a stream fed in chunks equals one
pass; greedy generation and regression rollouts equal re-running `apply` on the
growing sequence; sampling against the softmax it draws from (NumPy); truncated
BPTT against ordinary training, a step-by-step reference, and an interrupted run."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import user_modules
from seqjax.data import tasks
from seqjax.models import SequenceModel
from seqjax.models.decoding import sample
from seqjax.training import TrainConfig, init_state, make_optimizer, train
from tests.test_families import FAMILIES, USER_CELLS

V, H, B = 6, 8, 3


@pytest.fixture(scope="module", autouse=True)
def indrnn():
    """The user's cell, registered as "indrnn" (as --user_module would)."""
    return user_modules.import_user_module(str(USER_CELLS)).IndRNN


def token_model(family, options):
    return SequenceModel(family, output_size=V, hidden_size=H, vocab_size=V, num_layers=2, options=options)


@pytest.mark.parametrize("family, options", FAMILIES)
def test_chunked_stream_equals_one_pass_and_greedy_generation_equals_argmax(family, options):
    model = token_model(family, options)
    params = model.init(jax.random.key(0))
    stream = jax.random.randint(jax.random.key(1), (B, 16), 0, V)
    whole = model.apply(params, stream)
    for chunk in (1, 7, 16):
        state, outputs = model.initial_state(B), []
        for start in range(0, 16, chunk):
            state, ys = model.stream(params, state, stream[:, start : start + chunk])
            outputs.append(ys)
        np.testing.assert_allclose(jnp.concatenate(outputs, 1), whole, rtol=1e-5, atol=1e-5)

    # Each prompt continues after its own length; re-running apply on prompt + continuation
    # (causal: position i sees only <= i; one padded batch) must predict every generated token.
    prompt, lengths = stream[:, :5], np.array([5, 2, 1])
    generated = model.generate(params, jax.random.key(2), prompt, 6, temperature=0.0, lengths=lengths)
    assert generated.shape == (B, 6) and generated.dtype == jnp.int32
    grown = np.zeros((B, 11), np.int32)
    for b, n in enumerate(lengths):
        grown[b, : n + 6] = np.concatenate([prompt[b, :n], generated[b]])
    logits = model.apply(params, grown)
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(jnp.argmax(logits[b, n - 1 : n + 5], -1), generated[b])


@pytest.mark.parametrize("family, options", [("lstm", {}), ("transformer", {"num_heads": 2})])
def test_donated_steps_equal_apply(family, options):
    # The LSTM's initial carry is one zero array twice; the Transformer's cache is large.
    model = token_model(family, options)
    params = model.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (B, 5), 0, V)
    state = model.initial_state(B, max_len=5)
    for t in range(5):
        state, y = model.step(params, state, tokens[:, t], donate_state=True)
        np.testing.assert_allclose(y, model.apply(params, tokens)[:, t], rtol=1e-5, atol=1e-5)


def test_forecast_feeds_predictions_back():
    model = SequenceModel("lstm", output_size=2, hidden_size=H, input_size=2)
    params = model.init(jax.random.key(0))
    context = jax.random.normal(jax.random.key(1), (B, 5, 2))
    lengths = np.array([5, 3, 1])
    future = model.forecast(params, context, 4, lengths=lengths)
    assert future.shape == (B, 4, 2)
    for b, n in enumerate(lengths):
        sequence = jnp.concatenate([context[b, :n], future[b]])[None]
        np.testing.assert_allclose(
            model.apply(params, sequence)[0, n - 1 : -1], future[b], rtol=1e-5, atol=1e-6
        )


def test_sampling_draws_from_the_tempered_top_k_softmax():
    logits = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
    draws = 40_000
    rows = jnp.broadcast_to(logits, (draws, 4))
    for temperature, top_k in [(1.0, None), (0.5, None), (2.0, 2)]:
        tokens = np.asarray(sample(jax.random.key(3), rows, temperature, top_k, greedy=False))
        z = np.asarray(logits, np.float64) / temperature
        if top_k is not None:
            z[np.argsort(z)[:-top_k]] = -np.inf
        p = np.exp(z - z.max())
        p /= p.sum()
        counts = np.bincount(tokens, minlength=4) / draws
        np.testing.assert_allclose(counts, p, atol=4 * np.sqrt(0.25 / draws))
    assert (sample(jax.random.key(0), rows[:5], 1.0, None, greedy=True) == 0).all()


def test_generation_errors():
    model = token_model("gru", {})
    params = model.init(jax.random.key(0))
    prompt = jnp.zeros((2, 3), jnp.int32)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(params, jax.random.key(0), prompt, 2, temperature=-1.0)
    with pytest.raises(ValueError, match=r"top_k must be None or an int in \[1, vocab_size=6\]"):
        model.generate(params, jax.random.key(0), prompt, 2, top_k=7)
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        model.generate(params, jax.random.key(0), prompt, 2, lengths=np.array([3, 0]))
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        model.generate(params, jax.random.key(0), prompt, 0)
    features = SequenceModel("gru", output_size=2, hidden_size=H, input_size=3)
    with pytest.raises(ValueError, match="for feature inputs use forecast"):
        features.generate(features.init(jax.random.key(0)), jax.random.key(0), jnp.zeros((2, 3, 3)), 2)
    with pytest.raises(ValueError, match="forecast needs feature inputs and outputs of the same size"):
        features.forecast(features.init(jax.random.key(0)), jnp.zeros((2, 3, 3)), 2)
    encoder = SequenceModel("transformer", V, 8, vocab_size=V, options={"causal": False})
    with pytest.raises(ValueError, match="needs causal=True"):
        encoder.generate(encoder.init(jax.random.key(0)), jax.random.key(0), prompt, 2)
    cached = SequenceModel("transformer", V, 8, vocab_size=V)
    small = cached.initial_state(2, max_len=4)
    with pytest.raises(
        ValueError, match=r"state.position must lie in \[0, max_len=4\) with room for 5 more step"
    ):
        cached.stream(cached.init(jax.random.key(0)), small, jnp.zeros((2, 5), jnp.int32))


# ---------------------------------------------------------------- truncated BPTT


@dataclasses.dataclass(frozen=True)
class FixedCopy(tasks.Copy):
    """The copy task, always the same batch: a reference loop needs no key schedule."""

    def sample(self, key, batch_size, length):
        return super().sample(jax.random.key(7), batch_size, length)


TASK = FixedCopy(memory=3, alphabet=4)  # length 4: sequences of 10 steps
MODEL = SequenceModel("gru", output_size=TASK.output_size, hidden_size=8, vocab_size=TASK.vocab_size)
SGD = dict(length=4, batch_size=4, optimizer="sgd", clip_norm=None, warmup_steps=0, final_lr_fraction=1.0)


@pytest.fixture(autouse=True)
def standard_promotion():
    """optax mixes int32 step counts with floats, which strict promotion rejects."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def test_tbptt_matches_a_step_by_step_reference(tmp_path):
    """Windows of 4, 4 and 2 steps, the state carried between them without gradient:
    against plain SGD on a loss built from `step` calls, window by window."""
    config = TrainConfig(steps=6, log_every=3, eval_every=6, checkpoint_every=0, tbptt=4, **SGD)
    lr = 0.5
    state, _ = train(MODEL, TASK, config, [0], [lr], tmp_path)

    params = jax.tree.map(lambda p: p[0], init_state(MODEL, make_optimizer(config), [0], [lr]).params)
    batch = TASK.sample(None, 4, 4)
    for _ in range(2):  # two passes over the sequence: six updates
        carry = MODEL.initial_state(4)
        for start, stop in [(0, 4), (4, 8), (8, 10)]:

            def loss(params, carry=carry, start=start, stop=stop):
                logits = []
                for t in range(start, stop):
                    carry, y = MODEL.step(params, carry, batch.inputs[:, t])
                    logits.append(y)
                logp = jax.nn.log_softmax(jnp.stack(logits, 1))
                nll = -jnp.take_along_axis(logp, batch.targets[:, start:stop, None], -1)[..., 0]
                mask = batch.loss_mask[:, start:stop]
                return jnp.sum(nll * mask) / jnp.maximum(mask.sum(), 1.0), carry

            grads, carry = jax.grad(loss, has_aux=True)(params)
            params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-6)


def test_tbptt_with_whole_sequences_is_ordinary_training(tmp_path):
    config = TrainConfig(length=4, steps=6, batch_size=4, log_every=3, eval_every=6, checkpoint_every=0)
    whole, _ = train(MODEL, tasks.Copy(3, 4), config, [0], [1e-2], tmp_path / "plain")
    windowed = dataclasses.replace(config, tbptt=10)
    same, _ = train(MODEL, tasks.Copy(3, 4), windowed, [0], [1e-2], tmp_path / "tbptt")
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(same.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_resumed_tbptt_run_equals_an_uninterrupted_one(tmp_path):
    # Windows of 4: checkpoints every 2 updates fall mid-sequence, where the carried state matters.
    config = TrainConfig(
        length=4, steps=8, batch_size=4, log_every=2, eval_every=4, checkpoint_every=2, tbptt=4
    )
    task = tasks.Copy(3, 4)
    whole, whole_history = train(MODEL, task, config, [0, 1], [1e-2, 3e-3], tmp_path / "whole")

    class Killed(Exception):
        pass

    def kill(step, lines):
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        train(MODEL, task, config, [0, 1], [1e-2, 3e-3], tmp_path / "killed", on_log=kill)
    state, history = train(MODEL, task, config, [0, 1], [1e-2, 3e-3], tmp_path / "killed", resume=True)
    for a, b in zip(
        jax.tree.leaves((whole.params, whole.carry)),
        jax.tree.leaves((state.params, state.carry)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert [line["loss"] for line in history] == [line["loss"] for line in whole_history]
