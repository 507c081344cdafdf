"""Nothing silent: a table of bad inputs per public boundary, each of which must raise a
clear error naming the argument, before anything compiles; and the inputs that are
cast instead, against their cast twins.

Each table is one test: its cases run in turn and every miss (no error, or another
error or message) is reported together, so that the next boundary gets the same
treatment by adding a table.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import app, flags
from absl.testing import flagsaver

import seqjax
from experiments import common
from seqjax import registry
from seqjax.data import chomsky, tasks
from seqjax.models import Recurrent, SequenceModel, Transformer
from seqjax.models.transformer import attention
from seqjax.recurrences import cells
from seqjax.training import TrainConfig, train

T, B, D, H = 5, 3, 4, 6


def probe(cases) -> int:
    """Runs (name, thunk, exception type, message regex) cases; fails listing every miss."""
    misses = []
    for name, thunk, error, match in cases:
        try:
            thunk()
        except error as e:
            if not re.search(match, str(e)):
                misses.append(f"{name}: {type(e).__name__}({e}) does not match {match!r}")
        except Exception as e:
            misses.append(f"{name}: {type(e).__name__}: {str(e)[:200]}")
        else:
            misses.append(f"{name}: no error")
    assert not misses, "\n".join(misses)
    return len(cases)


@pytest.fixture(scope="module")
def lstm():
    layer = seqjax.LSTM(D, H, 2)
    return layer, layer.init(jax.random.key(0))


def test_layers(lstm):
    layer, params = lstm
    xs = jnp.ones((T, B, D))
    renamed = [
        [{("b_hi" if k == "b_ih" else k): v for k, v in p.items()} for p in layer_] for layer_ in params
    ]
    reshaped = [[{**p, "w_hh": p["w_hh"][:, :-1]} for p in layer_] for layer_ in params]
    mixed = [[{**p, "w_hh": p["w_hh"].astype(jnp.bfloat16)} for p in layer_] for layer_ in params]
    cases = [
        ("input_size 0", lambda: seqjax.LSTM(0, H), ValueError, "input_size must be a positive int; got 0"),
        ("hidden_size 2.5", lambda: seqjax.GRU(D, 2.5), ValueError, "hidden_size must be a positive int"),
        ("num_layers True", lambda: seqjax.RNN(D, H, True), ValueError, "num_layers must be a positive int"),
        (
            "batch_first 'False'",
            lambda: seqjax.GRU(D, H, batch_first="False"),
            TypeError,
            "batch_first must be a bool",
        ),
        (
            "bidirectional 1",
            lambda: seqjax.GRU(D, H, bidirectional=1),
            TypeError,
            "bidirectional must be a bool",
        ),
        ("bias 'yes'", lambda: seqjax.LSTM(D, H, 1, "yes"), TypeError, "bias must be a bool"),
        ("dropout 1.0", lambda: seqjax.GRU(D, H, dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
        (
            "dropout nan",
            lambda: seqjax.GRU(D, H, dropout=math.nan),
            ValueError,
            r"dropout must be in \[0, 1\)",
        ),
        (
            "nonlinearity gelu",
            lambda: seqjax.RNN(D, H, nonlinearity="gelu"),
            ValueError,
            "nonlinearity must be one of",
        ),
        (
            "forget_bias without bias",
            lambda: seqjax.LSTM(D, H, bias=False, forget_bias=1.0),
            ValueError,
            "forget_bias needs bias=True",
        ),
        (
            "unknown switch",
            lambda: seqjax.LSTM(D, H, cpu_kernal=True),
            ValueError,
            "LSTM takes no option 'cpu_kernal'",
        ),
        (
            "cpu_kernel 'yes'",
            lambda: seqjax.LSTM(D, H, cpu_kernel="yes"),
            TypeError,
            "cpu_kernel must be True, False or None",
        ),
        ("a cell that is none", lambda: Recurrent(None, D), TypeError, "Cell protocol"),
        (
            "inputs 4-D",
            lambda: layer.apply(params, jnp.ones((1, T, B, D))),
            ValueError,
            r"inputs must have shape \[time, batch, input_size\]",
        ),
        (
            "inputs wrong width",
            lambda: layer.apply(params, jnp.ones((T, B, D + 1))),
            ValueError,
            "inputs last axis must be input_size=4",
        ),
        (
            "inputs no time",
            lambda: layer.apply(params, jnp.ones((0, B, D))),
            ValueError,
            "at least one time step",
        ),
        (
            "inputs complex",
            lambda: layer.apply(params, jnp.ones((T, B, D), jnp.complex64)),
            TypeError,
            "inputs must be real numbers",
        ),
        ("inputs strings", lambda: layer.apply(params, np.array([["a"]])), TypeError, "inputs must be"),
        (
            "params misspelt key",
            lambda: layer.apply(renamed, xs),
            ValueError,
            r"missing params\[0\]\[0\]\['b_ih'\].*unexpected params\[0\]\[0\]\['b_hi'\]",
        ),
        ("params one layer", lambda: layer.apply(params[:1], xs), ValueError, r"missing params\[1\]"),
        (
            "params wrong shape",
            lambda: layer.apply(reshaped, xs),
            ValueError,
            r"params\[0\]\[0\]\['w_hh'\] must have shape \(6, 24\)",
        ),
        (
            "params mixed dtypes",
            lambda: layer.apply(mixed, xs),
            ValueError,
            r"\['w_hh'\] must have shape \(6, 24\) and dtype float32.*bfloat16",
        ),
        ("params none", lambda: layer.apply(None, xs), ValueError, "params must hold floating arrays"),
        (
            "GRU params into an LSTM",
            lambda: layer.apply(seqjax.GRU(D, H, 2).init(jax.random.key(0)), xs),
            ValueError,
            r"\['b_hh'\] must have shape \(24,\)",
        ),
        (
            "lengths too long",
            lambda: layer.apply(params, xs, lengths=jnp.array([5, 6, 1])),
            ValueError,
            r"lengths must lie in \[0, time=5\]",
        ),
        (
            "lengths negative",
            lambda: layer.apply(params, xs, lengths=jnp.array([1, -2, 3])),
            ValueError,
            r"lengths must lie in \[0, time=5\]",
        ),
        (
            "lengths floats",
            lambda: layer.apply(params, xs, lengths=jnp.array([1.0, 2.0, 3.0])),
            ValueError,
            "lengths must be integers",
        ),
        (
            "lengths wrong batch",
            lambda: layer.apply(params, xs, lengths=jnp.array([1, 2])),
            ValueError,
            r"lengths must be integers of shape \[batch\]=\(3,\)",
        ),
        (
            "state not a pair",
            lambda: layer.apply(params, xs, jnp.zeros((2, B, H))),
            ValueError,
            r"initial_state must be LSTMState of 2",
        ),
        (
            "state wrong shape",
            lambda: layer.apply(params, xs, (jnp.zeros((1, B, H)),) * 2),
            ValueError,
            r"initial_state must have shape .*\(2, 3, 6\)",
        ),
        (
            "state complex",
            lambda: layer.apply(params, xs, (jnp.zeros((2, B, H), jnp.complex64),) * 2),
            TypeError,
            "initial_state must be real numbers",
        ),
        (
            "dropout without key",
            lambda: seqjax.LSTM(D, H, 2, dropout=0.5).apply(params, xs, deterministic=False),
            ValueError,
            "key is required",
        ),
        (
            "dropout with an int key",
            lambda: seqjax.LSTM(D, H, 2, dropout=0.5).apply(params, xs, key=0, deterministic=False),
            TypeError,
            "key must be a PRNG key",
        ),
        (
            "deterministic 'no'",
            lambda: layer.apply(params, xs, deterministic="no"),
            TypeError,
            "deterministic must be a bool",
        ),
        (
            "step bidirectional",
            lambda: seqjax.GRU(D, H, bidirectional=True).step(None, None, xs[0]),
            ValueError,
            "step needs a unidirectional layer",
        ),
        (
            "step wrong width",
            lambda: layer.step(params, None, jnp.ones((B, D + 1))),
            ValueError,
            r"x must have shape \[batch, input_size=4\]",
        ),
        (
            "step wrong state",
            lambda: layer.step(params, (jnp.zeros((2, 2, H)),) * 2, jnp.ones((B, D))),
            ValueError,
            "initial_state must have shape",
        ),
        (
            "torch keys of a GRU",
            lambda: layer.params_from_torch(
                seqjax.GRU(D, H, 2).params_to_torch(seqjax.GRU(D, H, 2).init(jax.random.key(0)))
            ),
            ValueError,
            r"state_dict\['weight_ih_l0'\] must have shape \(24, 4\)",
        ),
    ]
    probe(cases)


def test_inputs_of_another_dtype_are_cast(lstm):
    layer, params = lstm
    ints = jax.random.randint(jax.random.key(1), (T, B, D), -3, 3)
    for inputs in (ints, np.asarray(ints), ints.astype(jnp.float16), ints.astype(bool)):
        got, _ = layer.apply(params, inputs, (np.zeros((2, B, H), np.int32),) * 2)
        want, _ = layer.apply(params, jnp.asarray(inputs).astype(jnp.float32))
        np.testing.assert_array_equal(got, want)
        assert got.dtype == jnp.float32


def test_cells_and_the_registry():
    gru_params = cells.GRUCell(4).init(jax.random.key(0), 3)
    cases = [
        ("hidden_size 0", lambda: cells.LSTMCell(0), ValueError, "hidden_size must be a positive int"),
        (
            "recurrent_init glorot",
            lambda: cells.GRUCell(4, recurrent_init="glorot"),
            ValueError,
            "recurrent_init must be one of",
        ),
        ("bias 1", lambda: cells.GRUCell(4, bias=1), TypeError, "bias must be a bool"),
        (
            "input_size -1",
            lambda: cells.LSTMCell(4).init(jax.random.key(0), -1),
            ValueError,
            "input_size must be a positive int",
        ),
        (
            "a misspelt bias, straight to the cell",
            lambda: cells.GRUCell(4).step(
                {**{("b_hi" if k == "b_ih" else k): v for k, v in gru_params.items()}},
                jnp.zeros((1, 4)),
                jnp.ones((1, 3)),
            ),
            ValueError,
            r"params of GRUCell\(bias=True\) must have keys .*; got \['b_hh', 'b_hi'",
        ),
        (
            "LSTM parameters to a GRU's state_dict",
            lambda: seqjax.GRU(3, 4).params_to_torch(seqjax.LSTM(3, 4).init(jax.random.key(0))),
            ValueError,
            r"params\[0\]\[0\]\['b_hh'\] must have shape \(12,\)",
        ),
        (
            "register a duplicate",
            lambda: seqjax.register_cell("gru", cells.GRUCell),
            ValueError,
            "already registered",
        ),
        (
            "register a bad name",
            lambda: seqjax.register_cell("a-b", cells.GRUCell),
            ValueError,
            "must be an identifier",
        ),
        ("register a non-callable", lambda: seqjax.register_cell("thing", 3), TypeError, "must be callable"),
        ("unknown family", lambda: registry.get("hyena"), ValueError, "unknown model family 'hyena'"),
    ]
    probe(cases)


@pytest.fixture(scope="module")
def transformer():
    model = Transformer(8, 2, 2, vocab_size=7, max_len=6, positional="learned")
    return model, model.init(jax.random.key(0))


def test_transformer(transformer):
    model, params = transformer
    tokens = jnp.zeros((B, T), jnp.int32)
    full = model.initial_state(B)._replace(position=jnp.full((B,), 6, jnp.int32))
    qkv = jnp.zeros((B, T, 2, 4))
    cases = [
        (
            "heads do not divide",
            lambda: Transformer(8, 3, 1, vocab_size=7),
            ValueError,
            "num_heads=3 must divide d_model=8",
        ),
        (
            "both vocab and input",
            lambda: Transformer(8, 2, 1, vocab_size=7, input_size=3),
            ValueError,
            "exactly one of",
        ),
        (
            "dropout 1",
            lambda: Transformer(8, 2, 1, vocab_size=7, dropout=1.0),
            ValueError,
            r"dropout must be in \[0, 1\)",
        ),
        (
            "positional alibi",
            lambda: Transformer(8, 2, 1, vocab_size=7, positional="alibi"),
            ValueError,
            "positional must be one of",
        ),
        (
            "float tokens",
            lambda: model.apply(params, jnp.ones((B, T))),
            TypeError,
            r"inputs must be integer tokens in \[0, vocab_size=7\)",
        ),
        (
            "token out of range",
            lambda: model.apply(params, tokens.at[0, 0].set(7)),
            ValueError,
            r"tokens in \[0, vocab_size=7\); got values from 0 to 7",
        ),
        (
            "negative token",
            lambda: model.apply(params, tokens.at[1, 1].set(-1)),
            ValueError,
            "got values from -1 to 0",
        ),
        (
            "tokens 3-D",
            lambda: model.apply(params, jnp.zeros((B, T, 1), jnp.int32)),
            ValueError,
            r"inputs must be tokens \[batch, time\]",
        ),
        (
            "past learned positions",
            lambda: model.apply(params, jnp.zeros((B, 7), jnp.int32)),
            ValueError,
            "learned positions stop at max_len=6",
        ),
        (
            "no time steps",
            lambda: model.apply(params, jnp.zeros((B, 0), jnp.int32)),
            ValueError,
            "at least one time step",
        ),
        (
            "params of another model",
            lambda: model.apply(Transformer(8, 2, 1, vocab_size=7).init(jax.random.key(0)), tokens),
            ValueError,
            r"missing params\['blocks'\]\[1\]",
        ),
        (
            "lengths too long",
            lambda: model.apply(params, tokens, lengths=jnp.array([6, 1, 1])),
            ValueError,
            "lengths must lie in",
        ),
        (
            "step past the cache",
            lambda: model.step(params, full, jnp.zeros((B,), jnp.int32)),
            ValueError,
            r"state.position must lie in \[0, max_len=6\)",
        ),
        (
            "step on a wrong state",
            lambda: model.step(params, model.initial_state(B + 1), jnp.zeros((B,), jnp.int32)),
            ValueError,
            r"state.k and state.v must be 2 arrays \(one per layer\) of shape",
        ),
        (
            "step on a tuple",
            lambda: model.step(params, (1, 2), jnp.zeros((B,), jnp.int32)),
            TypeError,
            "state must be a KVCache",
        ),
        (
            "step token out of range",
            lambda: model.step(params, model.initial_state(B), jnp.full((B,), 9, jnp.int32)),
            ValueError,
            "vocab_size=7",
        ),
        (
            "cache longer than learned positions",
            lambda: model.initial_state(B, max_len=7),
            ValueError,
            "exceeds the 6 learned positions",
        ),
        (
            "encoder step",
            lambda: Transformer(8, 2, 1, vocab_size=7, causal=False).initial_state(B),
            ValueError,
            "needs causal=True",
        ),
        (
            "attention: keys of another head size",
            lambda: attention(qkv, qkv[..., :2], qkv[..., :2]),
            ValueError,
            r"q \[b, t, n, k\] and k, v \[b, s, n, k\]; got q \(3, 5, 2, 4\), k \(3, 5, 2, 2\)",
        ),
        (
            "attention: values unlike keys",
            lambda: attention(qkv, qkv, qkv[:, :4]),
            ValueError,
            r"v \(3, 4, 2, 4\)",
        ),
        (
            "attention: lengths of another batch",
            lambda: attention(qkv, qkv, qkv, key_value_seq_lengths=jnp.array([1, 2])),
            ValueError,
            r"key_value_seq_lengths must be \[b\]=\[3\]; got shape \(2,\)",
        ),
    ]
    probe(cases)


def test_transformer_step_past_its_cache_under_jit_is_nan(transformer):
    model, params = transformer
    full = model.initial_state(B)._replace(position=jnp.array([6, 2, 6], jnp.int32))
    _, y = jax.jit(model.step)(params, full, jnp.zeros((B,), jnp.int32))  # positions unknown when traced
    assert np.isnan(y[0]).all() and np.isfinite(y[1]).all() and np.isnan(y[2]).all()


def test_task_models():
    model = SequenceModel("gru", output_size=3, hidden_size=H, vocab_size=5)
    params = model.init(jax.random.key(0))
    tokens = jnp.zeros((B, T), jnp.int32)
    cases = [
        (
            "unknown family",
            lambda: SequenceModel("hyena", 3, H, vocab_size=5),
            ValueError,
            "unknown model family",
        ),
        (
            "vocab and input",
            lambda: SequenceModel("gru", 3, H, vocab_size=5, input_size=2),
            ValueError,
            "exactly one of",
        ),
        (
            "vocab 0",
            lambda: SequenceModel("gru", 3, H, vocab_size=0),
            ValueError,
            "vocab_size must be a positive int",
        ),
        (
            "output 0",
            lambda: SequenceModel("gru", 0, H, vocab_size=5),
            ValueError,
            "output_size must be a positive int",
        ),
        (
            "unknown option",
            lambda: SequenceModel("gru", 3, H, vocab_size=5, options={"forget_bias": 1.0}),
            ValueError,
            "family 'gru' takes no option 'forget_bias'",
        ),
        (
            "float tokens",
            lambda: model.apply(params, jnp.ones((B, T))),
            TypeError,
            "inputs must be integer tokens",
        ),
        (
            "token out of vocabulary",
            lambda: model.apply(params, tokens.at[2, 4].set(5)),
            ValueError,
            r"tokens in \[0, vocab_size=5\)",
        ),
        (
            "params of another width",
            lambda: model.apply(SequenceModel("gru", 3, H + 1, vocab_size=5).init(jax.random.key(0)), tokens),
            ValueError,
            r"params\['backbone'\]",
        ),
        (
            "step token out of vocabulary",
            lambda: model.step(params, model.initial_state(B), jnp.full((B,), 6, jnp.int32)),
            ValueError,
            "vocab_size=5",
        ),
    ]
    probe(cases)


def test_padding_is_exempt_from_token_checks():
    model = SequenceModel("lstm", output_size=3, hidden_size=H, vocab_size=5)
    params = model.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, 5)
    lengths = jnp.array([5, 2, 0])
    padded = tokens.at[1, 2:].set(99).at[2].set(-7)
    np.testing.assert_array_equal(
        model.apply(params, padded, lengths=lengths), model.apply(params, tokens, lengths=lengths)
    )


def test_tasks():
    cases = [
        (
            "flip-flop p_ignore 1.5",
            lambda: tasks.FlipFlop(p_ignore=1.5),
            ValueError,
            r"p_ignore must be a finite number in \[0.0, 1.0\)",
        ),
        ("flip-flop p_ignore 1", lambda: tasks.FlipFlop(p_ignore=1.0), ValueError, "p_ignore"),
        (
            "adding tolerance -1",
            lambda: tasks.Adding(tolerance=-1),
            ValueError,
            "tolerance must be a finite number",
        ),
        ("adding tolerance nan", lambda: tasks.Adding(tolerance=math.nan), ValueError, "tolerance"),
        ("copy memory 0", lambda: tasks.Copy(memory=0), ValueError, "memory must be a positive int"),
        ("copy alphabet 1", lambda: tasks.Copy(alphabet=1), ValueError, "alphabet must hold at least 2"),
        (
            "selective copy tokens 0",
            lambda: tasks.SelectiveCopy(num_tokens=0),
            ValueError,
            "num_tokens must be a positive int",
        ),
        (
            "recall vocab 3",
            lambda: tasks.AssociativeRecall(vocab_size=3),
            ValueError,
            "vocab_size must be >= 4",
        ),
        ("recall power -1", lambda: tasks.AssociativeRecall(power=-1.0), ValueError, "power"),
        (
            "recall pairs 0",
            lambda: tasks.AssociativeRecall(num_pairs=0),
            ValueError,
            "num_pairs must be a positive int",
        ),
        (
            "parity min_length 0",
            lambda: chomsky.ParityCheck(min_length=0),
            ValueError,
            "min_length must be a positive int",
        ),
        (
            "copy length 0",
            lambda: tasks.Copy().sample(jax.random.key(0), 2, 0),
            ValueError,
            "length of the copy task must be an int >= 1",
        ),
        (
            "copy batch 0",
            lambda: tasks.Copy().sample(jax.random.key(0), 0, 3),
            ValueError,
            "batch_size must be a positive int",
        ),
        (
            "flip-flop odd length",
            lambda: tasks.FlipFlop().sample(jax.random.key(0), 2, 7),
            ValueError,
            "must be even",
        ),
        (
            "recall too short",
            lambda: tasks.AssociativeRecall().sample(jax.random.key(0), 2, 2),
            ValueError,
            "length of the associative_recall task",
        ),
    ]
    probe(cases)


def test_train_config_and_train(tmp_path):
    task = tasks.Copy(memory=2, alphabet=3)
    model = SequenceModel("gru", output_size=task.output_size, hidden_size=4, vocab_size=task.vocab_size)
    config = TrainConfig(length=2, steps=2, batch_size=2, log_every=1, eval_every=1, checkpoint_every=0)
    small = dict(log_every=5, eval_every=5, steps=10, checkpoint_every=5)
    cases = [
        ("clip_norm -1", lambda: TrainConfig(length=4, clip_norm=-1, **small), ValueError, "clip_norm"),
        (
            "warmup -5",
            lambda: TrainConfig(length=4, warmup_steps=-5, **small),
            ValueError,
            "warmup_steps must be an int >= 0",
        ),
        (
            "checkpoint_every -50",
            lambda: TrainConfig(length=4, **{**small, "checkpoint_every": -50}),
            ValueError,
            "checkpoint_every must be an int >= 0",
        ),
        (
            "steps 10.0",
            lambda: TrainConfig(length=4, **{**small, "steps": 10.0}),
            ValueError,
            "steps must be a positive int",
        ),
        (
            "eval_every 7",
            lambda: TrainConfig(length=4, **{**small, "eval_every": 7}),
            ValueError,
            "eval_every=7 must be a multiple of log_every=5",
        ),
        (
            "weight_decay inf",
            lambda: TrainConfig(length=4, weight_decay=math.inf, **small),
            ValueError,
            "weight_decay",
        ),
        (
            "optimizer adamw",
            lambda: TrainConfig(length=4, optimizer="adamw", **small),
            ValueError,
            "optimizer must be one of",
        ),
        (
            "seeds and rates unpaired",
            lambda: train(model, task, config, [0, 1], [1e-2], tmp_path),
            ValueError,
            "must pair up",
        ),
        ("no runs", lambda: train(model, task, config, [], [], tmp_path), ValueError, "at least one run"),
        (
            "learning rate inf",
            lambda: train(model, task, config, [0], [math.inf], tmp_path),
            ValueError,
            "learning_rates must be a finite number",
        ),
        (
            "learning rate 0",
            lambda: train(model, task, config, [0], [0.0], tmp_path),
            ValueError,
            "learning_rates",
        ),
        (
            "negative seed",
            lambda: train(model, task, config, [-1], [1e-2], tmp_path),
            ValueError,
            "seeds must be ints",
        ),
        (
            "output size below the task's",
            lambda: train(
                SequenceModel("gru", 3, 4, vocab_size=task.vocab_size), task, config, [0], [1e-2], tmp_path
            ),
            ValueError,
            "output_size=3 does not match the copy task's",
        ),
        (
            "features for a token task",
            lambda: train(
                SequenceModel("gru", task.output_size, 4, input_size=5), task, config, [0], [1e-2], tmp_path
            ),
            ValueError,
            "vocab_size=None does not match",
        ),
        (
            "nonfinite policy",
            lambda: train(model, task, config, [0], [1e-2], tmp_path, on_nonfinite="ignore"),
            ValueError,
            "on_nonfinite must be one of",
        ),
    ]
    probe(cases)


EXPERIMENT_FLAGS = [  # as a command line gives them
    (dict(models="lstm,hyena"), "--models: unknown model family 'hyena'; registered: rnn, lstm"),
    (dict(models="lstm:forgetbias=0"), "--models: family 'lstm' takes no option 'forgetbias'"),
    (dict(models="lstm:forget_bias"), "options follow the family as key=value"),
    (dict(models="gru,gru"), "--models lists a model twice"),
    (dict(models=""), "--models must name at least one"),
    (dict(seeds=""), "--seeds must name at least one"),
    (dict(seeds="-1"), r"--seeds must be ints in \[0, 2\*\*31\)"),
    (dict(seeds="1.5"), "--seeds must be a comma list of ints"),
    (dict(lengths=""), "--lengths must name at least one"),
    (dict(lengths="10,x"), "--lengths must be a comma list of ints"),
    (dict(lengths="0"), "length of the copy task must be an int >= 1"),
    (dict(eval_lengths="0"), "length of the copy task must be an int >= 1"),
    (dict(learning_rates=""), "--learning_rates must name at least one"),
    (dict(learning_rates="0"), "learning_rates must be a finite number"),
    (dict(learning_rates="-1e-3"), "learning_rates must be a finite number"),
    (dict(learning_rates="nan"), "learning_rates must be a finite number"),
    (dict(learning_rates="inf"), "learning_rates must be a finite number"),
    (dict(steps="0"), "steps must be a positive int; got 0"),
    (dict(steps="-100"), "steps must be a positive int"),
    (dict(log_every="0"), "log_every must be a positive int; got 0"),
    (dict(eval_every="0"), "eval_every must be a positive int; got 0"),
    (dict(eval_every="7"), "eval_every=7 must be a multiple of log_every=50"),
    (dict(checkpoint_every="-50"), "checkpoint_every must be an int >= 0"),
    (dict(batch_size="0"), "batch_size must be a positive int"),
    (dict(hidden_size="0"), "hidden_size must be a positive int"),
    (dict(num_layers="0"), "num_layers must be a positive int"),
    (dict(num_heads="0"), "--num_heads must be a positive int"),
    (dict(clip_norm="-1"), "--clip_norm"),
    (dict(weight_decay="-0.1"), "weight_decay must be a finite number"),
    (dict(warmup_steps="-5"), "warmup_steps must be an int >= 0"),
    (dict(match_params="true", match_reference="hyena"), "--match_reference: unknown model family"),
    (dict(run_devices="0"), "runs must be a positive divisor"),
    (
        dict(task_options="memroy=3"),
        "--task_options: the copy task has no field memroy; its fields are alphabet, memory",
    ),
    (dict(task_options="memory=0"), "--task_options: memory must be a positive int; got 0"),
    (dict(task_options="memory"), "--task_options are key=value"),
    (
        dict(model_learning_rates="mamba=1e-3"),
        "--model_learning_rates names 'mamba', which --models does not",
    ),
    (dict(model_learning_rates="gru=x"), "--model_learning_rates are model=rate/rate"),
    (dict(model_learning_rates="gru=-1"), "--model_learning_rates of gru must be a finite number > 0"),
    (dict(patience="0"), r"--patience \(unset: off\) must be a positive int; got 0"),
]


def test_experiment_flags():
    import importlib

    experiment = importlib.import_module("experiments.copy_task").EXPERIMENT
    flags.FLAGS(["prog"])

    def settings_with(overrides):
        def thunk():
            with flagsaver.as_parsed(**overrides):
                common.settings_from_flags(experiment)

        return thunk

    probe([(str(o), settings_with(o), app.UsageError, m) for o, m in EXPERIMENT_FLAGS])
    # Enum flags refuse unknown values when parsed.
    for name, value in (("optimizer", "adamw"), ("positional", "alibi"), ("on_nonfinite", "ignore")):
        with pytest.raises(flags.IllegalFlagValueError):
            flags.FLAGS[name].parse(value)


def test_gradient_flow_flags():
    from experiments import gradient_flow

    flags.FLAGS(["prog"])

    def main_with(overrides):
        def thunk():
            with flagsaver.as_parsed(**overrides):
                gradient_flow.main(["prog"])

        return thunk

    cases = [
        (dict(length="1"), "--length must be >= 2"),
        (dict(hidden_size="6"), "--hidden_size a positive multiple of 4"),
        (dict(clip_steps="15"), "--clip_steps must be a positive multiple of 10"),
        (dict(inits="default,xavier"), "--inits must be a non-empty subset"),
        (dict(inits=""), "--inits must be a non-empty subset"),
        (dict(scale="nan"), "--scale must be a finite number > 0"),
        (dict(scale="-3"), "--scale must be a finite number > 0"),
        (dict(batch_size="0"), "--batch_size must be >= 1"),
        (dict(models="rnn,hyena"), "--models: unknown model family 'hyena'"),
    ]
    probe([(str(o), main_with(o), app.UsageError, m) for o, m in cases])


THROUGHPUT_PROBE = """
import sys
from absl import app, flags
from absl.testing import flagsaver
from experiments import throughput
flags.FLAGS(["prog"])
for overrides, match in CASES:
    try:
        with flagsaver.as_parsed(**overrides):
            throughput.check_flags()
    except app.UsageError as error:
        print("ok" if match in str(error) else f"miss {overrides}: {error}")
    else:
        print(f"miss {overrides}: no error")
"""


def test_throughput_flags():
    """In a process of its own: the benchmark's flags share names with the experiments'."""
    import subprocess
    import sys

    cases = [
        (dict(modes="foo"), "--modes must name some of train, forward; got foo"),
        (dict(malloc="foo"), "--malloc must name some of default, tuned"),
        (dict(malloc=""), "--malloc must name some of default, tuned; got none"),
        (dict(cells="hyena"), "--cells must name some of rnn, lstm, gru"),
        (dict(scale_cell="hyena"), "--scale_cell must name some of"),
        (dict(systems="seqjax,nope"), "--systems must name some of"),
        (dict(scale_systems="nope"), "--scale_systems must name some of"),
        (dict(configs="C1=1x2x3"), "--configs entries are name=BxTxDxH of positive ints"),
        (dict(configs="C1=0x2x3x4"), "--configs entries are name=BxTxDxH of positive ints"),
        (dict(configs=""), "--configs must name at least one"),
        (dict(stacks="0"), "--stacks entries are <layers> or <layers>bi"),
        (dict(stacks="twobi"), "--stacks entries are <layers> or <layers>bi"),
        (dict(repeats="0"), "--repeats must be >= 1"),
        (dict(threads="0"), "--threads must be >= 1"),
        (dict(scale_lengths="128,-1"), "--scale_lengths must be positive ints"),
        (dict(scale_batches="x"), "--scale_batches must be positive ints"),
    ]
    script = f"CASES = {cases!r}\n" + THROUGHPUT_PROBE
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    results = out.stdout.split("\n")[:-1]
    assert results == ["ok"] * len(cases), "\n".join(r for r in results if r != "ok")
