"""Nothing silent, at run time: NaN in padding reaches nothing, NaN propagates on every
path, empty batches have zero gradients, a diverging run stops with its last finite
checkpoint, a resume checks what it resumes and survives a damaged checkpoint, a fresh
start replaces an older run's checkpoints, and a live workdir is refused."""

import dataclasses
import json
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import seqjax
from experiments import common
from seqjax.data import tasks
from seqjax.models import SequenceModel, Transformer
from seqjax.recurrences import cells, cpu_kernel, scan
from seqjax.training import NonFiniteError, TrainConfig, checkpoints, loop, train

T, B, D, H = 6, 4, 3, 5
LENGTHS = jnp.array([6, 3, 0, 1])
TASK = tasks.Copy(memory=3, alphabet=4)
MODEL = SequenceModel("gru", output_size=TASK.output_size, hidden_size=8, vocab_size=TASK.vocab_size)
CONFIG = TrainConfig(
    length=4, steps=12, batch_size=8, warmup_steps=2, log_every=2, eval_every=4, checkpoint_every=4
)


def _config(**changes):
    return dataclasses.replace(CONFIG, **changes)


@pytest.fixture(autouse=True)
def standard_promotion():
    """optax's Adam mixes int32 step counts with floats, which strict promotion rejects."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def _strict_json(text: str) -> list:
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------- NaN and empty inputs

LAYER_IDS = [
    "lstm_kernel", "rnn_relu_kernel_bf", "gru_scan_cell", "lstm_autodiff",
    "mingru_fused", "mamba_parallel", "lru_chunked_bf",
]  # fmt: skip
LAYERS = [
    seqjax.LSTM(D, H, 2, bidirectional=True),  # the fused CPU loop
    seqjax.RNN(D, H, 1, "relu", batch_first=True),  # the loop, batch-major
    seqjax.GRU(D, H, 2, cpu_kernel=False),  # the hand-written backward pass
    seqjax.LSTM(D, H, custom_backward=False),  # JAX's differentiation
    seqjax.MinGRU(D, H, 2, bidirectional=True),  # the fused gated loop
    seqjax.Mamba(D, H, bidirectional=True, state_size=2, method="parallel"),  # conv + associative scan
    seqjax.LRU(D, H, batch_first=True, method="chunked"),  # a complex state
]


@pytest.mark.parametrize("layer", LAYERS, ids=LAYER_IDS)
def test_nan_in_padding_reaches_no_output_and_no_gradient(layer):
    params = layer.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (T, B, D))
    valid = (jnp.arange(T)[:, None] < LENGTHS)[..., None]
    if layer.batch_first:
        xs, valid = jnp.swapaxes(xs, 0, 1), jnp.swapaxes(valid, 0, 1)

    def loss(params, xs):
        outputs, state = layer.apply(params, xs, lengths=LENGTHS)
        return jnp.sum(jnp.sin(outputs)) + sum(jnp.sum(jnp.abs(s) ** 2) for s in jax.tree.leaves(state))

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    poisoned = grad(params, jnp.where(valid, xs, jnp.nan))
    zeroed = grad(params, jnp.where(valid, xs, 0.0))
    for a, b in zip(jax.tree.leaves(poisoned), jax.tree.leaves(zeroed), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("inputs", ["tokens", "features"])
def test_nan_or_junk_in_transformer_padding_reaches_nothing(inputs):
    model = Transformer(8, 2, 1, **({"vocab_size": 5} if inputs == "tokens" else {"input_size": D}))
    params = model.init(jax.random.key(0))
    valid = jnp.arange(T)[None, :] < LENGTHS[:, None]
    if inputs == "tokens":
        clean = jax.random.randint(jax.random.key(1), (B, T), 0, 5)
        junk = jnp.where(valid, clean, 77)  # out of the vocabulary, but padding
        clean = jnp.where(valid, clean, 0)
    else:
        clean = jnp.where(valid[..., None], jax.random.normal(jax.random.key(1), (B, T, D)), 0.0)
        junk = jnp.where(valid[..., None], clean, jnp.nan)

    def loss(params, x):
        features, _ = model.apply(params, x, lengths=LENGTHS)
        return jnp.sum(jnp.sin(features)), features

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    for a, b in zip(jax.tree.leaves(grad(params, junk)), jax.tree.leaves(grad(params, clean)), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not cpu_kernel.available(), reason="no C++ compiler")
@pytest.mark.parametrize("name", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_the_cpu_kernel_propagates_nan_as_the_scan_does(name):
    cell = {
        "rnn_tanh": cells.RNNCell(H),
        "rnn_relu": cells.RNNCell(H, "relu"),
        "lstm": cells.LSTMCell(H),
    }.get(name, cells.GRUCell(H))
    params = cell.init(jax.random.key(0), D)
    params["w_ih"] = params["w_ih"].at[1, 0].set(jnp.nan)  # unit 0's pre-activation, from input 1
    xs = jax.random.normal(jax.random.key(1), (T, B, D)).at[2, 1, 1].set(0.0)
    carry = jax.tree.map(lambda z: z + 0.5, cell.initial_carry((B,)))
    _, kernel_ys = cpu_kernel.scan_kernel(cell, params, carry, xs, lengths=LENGTHS)
    _, scan_ys = scan.scan(cell.step, params, carry, xs, lengths=LENGTHS)
    np.testing.assert_array_equal(np.isnan(kernel_ys), np.isnan(scan_ys))
    assert np.isnan(scan_ys).any()
    finite = ~np.isnan(scan_ys)
    np.testing.assert_allclose(np.asarray(kernel_ys)[finite], np.asarray(scan_ys)[finite], atol=1e-6)


@pytest.mark.parametrize("layer", LAYERS, ids=LAYER_IDS)
def test_an_empty_batch_has_zero_gradients(layer):
    params = layer.init(jax.random.key(0))
    xs = jnp.zeros((0, T, D) if layer.batch_first else (T, 0, D))

    def loss(params, xs):
        outputs, state = layer.apply(params, xs)
        return jnp.sum(outputs) + sum(jnp.sum(jnp.real(s)) for s in jax.tree.leaves(state))

    value, (g_params, g_xs) = jax.value_and_grad(loss, argnums=(0, 1))(params, xs)
    assert float(value) == 0.0 and g_xs.shape == xs.shape
    assert all(float(jnp.abs(g).sum()) == 0.0 for g in jax.tree.leaves(g_params))


# ---------------------------------------------------------------- training that diverges


def test_a_diverging_run_stops_with_its_last_finite_checkpoint(tmp_path, monkeypatch):
    # Run 1's weights turn to NaN in the third chunk (steps 5-6), after the checkpoint at 4.
    real_programs = loop._programs

    def diverging_programs(*args):
        optimizer, chunk, evaluate = real_programs(*args)

        def diverging_chunk(state):
            if int(state.step[1]) == 4:
                state = state._replace(params=jax.tree.map(lambda p: p.at[1].multiply(jnp.nan), state.params))
            return chunk(state)

        return optimizer, diverging_chunk, evaluate

    monkeypatch.setattr(loop, "_programs", diverging_programs)
    config = _config(eval_every=2, checkpoint_every=2, steps=12)
    with pytest.raises(NonFiniteError, match=r"run 1 \(seed 1, learning rate 0.003\).* by step 6; stopped"):
        train(MODEL, TASK, config, [0, 1], [1e-2, 3e-3], tmp_path)
    lines = _strict_json((tmp_path / "metrics.jsonl").read_text())  # strict JSON: nulls, no NaN
    assert [(line["step"], line["run"]) for line in lines if line.get("nonfinite")] == [(6, 1)]
    bad = next(line for line in lines if line.get("nonfinite"))
    assert bad["loss"] is None and "loss" in bad["nonfinite"]
    assert max(line["step"] for line in lines) == 6  # it stopped there
    on_disk = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert on_disk == [2, 4]  # nothing written at or after the bad chunk
    state = loop.init_state(MODEL, loop.make_optimizer(config), [0, 1], [1e-2, 3e-3])
    manager = checkpoints.manager(tmp_path, config)
    restored = manager.restore(4, args=ocp.args.StandardRestore(state))
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(restored.params))


class _NaNWeight:
    """MODEL with an extra weight that is NaN and unused: the loss stays finite."""

    output_size, vocab_size = MODEL.output_size, MODEL.vocab_size

    def init(self, key, dtype=jnp.float32):
        return {**MODEL.init(key, dtype), "unused": jnp.full((2,), jnp.nan, dtype)}

    def apply(self, params, inputs, **kwargs):
        return MODEL.apply({k: v for k, v in params.items() if k != "unused"}, inputs, **kwargs)


def test_non_finite_weights_behind_a_finite_loss_stop_too_and_skip_run_trains_on(tmp_path):
    with pytest.raises(NonFiniteError, match=r"run 0 .* by step 2"):
        train(_NaNWeight(), TASK, CONFIG, [0], [1e-2], tmp_path / "stop")
    config = _config(warmup_steps=0, clip_norm=None, eval_every=2, steps=8)
    _, history = train(MODEL, TASK, config, [0, 1], [1e-2, 2e36], tmp_path / "skip", on_nonfinite="skip_run")
    assert [line["step"] for line in history if line["run"] == 0][-1] == 8
    assert all(np.isfinite(line["loss"]) for line in history if line["run"] == 0)
    failed = [line["step"] for line in history if line.get("failed")]
    assert failed and failed[-1] == 8 and all(line["run"] == 1 for line in history if line.get("failed"))
    assert _strict_json((tmp_path / "skip" / "metrics.jsonl").read_text())


def test_the_command_line_exits_non_zero_naming_the_run(tmp_path):
    args = [
        "--models=gru",
        "--lengths=4",
        "--seeds=3",
        "--learning_rates=2e36",
        "--steps=40",
        "--batch_size=8",
    ]
    args += ["--hidden_size=8", "--log_every=2", "--eval_every=2", "--checkpoint_every=2", "--clip_norm=0"]
    args += ["--warmup_steps=0", f"--workdir={tmp_path}"]
    out = subprocess.run(
        [sys.executable, "-m", "experiments.copy_task", *args], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 1
    assert "run 0 (seed 3, learning rate 2e+36): loss, gradient norm or parameters not finite" in out.stderr
    assert _strict_json((tmp_path / "gru_len4" / "metrics.jsonl").read_text())


def test_a_failing_group_keeps_the_finished_groups_summary(tmp_path, monkeypatch):
    experiment = __import__("experiments.copy_task", fromlist=["EXPERIMENT"]).EXPERIMENT
    settings = common.Settings(
        models=("gru", "rnn"), lengths=(3,), seeds=(0,), learning_rates=(1e-2,), steps=2, batch_size=4,
        hidden_size=4, log_every=2, eval_every=2, checkpoint_every=0, workdir=str(tmp_path),
    )  # fmt: skip

    def train_or_fail(model, *args, **kwargs):
        if model.family == "rnn":
            raise NonFiniteError("rnn diverged")
        return train(model, *args, **kwargs)

    monkeypatch.setattr(common, "train", train_or_fail)
    with pytest.raises(NonFiniteError):
        common.run(experiment, settings)
    assert [row["model"] for row in json.loads((tmp_path / "summary.json").read_text())] == ["gru"]
    assert not (tmp_path / checkpoints.LOCK_FILE).exists()


# ---------------------------------------------------------------- resume


def _kill_at(step):
    class Killed(Exception):
        pass

    def on_log(s, lines):
        if s == step:
            raise Killed

    return Killed, on_log


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    with jax.numpy_dtype_promotion("standard"):
        return train(MODEL, TASK, CONFIG, [0, 1], [1e-2, 3e-3], tmp_path_factory.mktemp("whole"))


@pytest.fixture
def killed(tmp_path):
    """A workdir whose run was killed at step 10, after checkpoints at 4 and 8."""
    killed_error, on_log = _kill_at(10)
    with pytest.raises(killed_error):
        train(MODEL, TASK, CONFIG, [0, 1], [1e-2, 3e-3], tmp_path, on_log=on_log)
    return tmp_path


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


# orbax leaves coroutines of a failed restore behind, which pytest reports on collection.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "damage",
    ["data", "_METADATA", "manifest.ocdbt", "array_metadatas", "torn metrics line"],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(killed, uninterrupted, damage):
    newest = killed / "checkpoints" / "8" / "default"
    if damage == "data":
        targets = [max((newest / "ocdbt.process_0" / "d").iterdir(), key=lambda p: p.stat().st_size)]
    elif damage == "array_metadatas":
        targets = list((newest / "array_metadatas").iterdir())
    elif damage == "torn metrics line":
        with (killed / "metrics.jsonl").open("a") as f:
            f.write('{"run": 0, "step": 12, "lo')
        targets = []
    else:
        targets = [newest / damage]
    for target in targets:
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    state, history = train(MODEL, TASK, CONFIG, [0, 1], [1e-2, 3e-3], killed, resume=True)
    _same(state.params, uninterrupted[0].params)
    assert [line["loss"] for line in history] == [line["loss"] for line in uninterrupted[1]]
    assert _strict_json((killed / "metrics.jsonl").read_text())


def test_a_fresh_start_replaces_an_older_runs_checkpoints(killed, uninterrupted):
    # The killed run left steps 4 and 8; a fresh start killed at 6 must leave only its own
    # step 4 (it would collide with the old one, and the old 8 would be resumed as its own).
    killed_error, on_log = _kill_at(6)
    with pytest.raises(killed_error):
        train(MODEL, TASK, CONFIG, [0, 1], [1e-2, 3e-3], killed, on_log=on_log)
    assert sorted(int(p.name) for p in (killed / "checkpoints").iterdir()) == [4]
    state, history = train(MODEL, TASK, CONFIG, [0, 1], [1e-2, 3e-3], killed, resume=True)
    _same(state.params, uninterrupted[0].params)
    assert [line["loss"] for line in history] == [line["loss"] for line in uninterrupted[1]]


def test_resume_refuses_other_runs_before_compiling(killed, monkeypatch):
    def no_compiling(*args):
        raise AssertionError("compiled before checking the resume")

    monkeypatch.setattr(loop, "_programs", no_compiling)
    other_task = tasks.SelectiveCopy(num_tokens=3, alphabet=4)
    wider = SequenceModel("gru", output_size=TASK.output_size, hidden_size=9, vocab_size=TASK.vocab_size)
    for args, match in [
        ((MODEL, TASK, CONFIG, [7, 1], [1e-2, 3e-3]), r"seeds: \[0, 1\] there, \[7, 1\] now"),
        (
            (MODEL, TASK, CONFIG, [0, 1], [1e-2, 1e-3]),
            r"learning_rates: \[0.01, 0.003\] there, \[0.01, 0.001\] now",
        ),
        ((wider, TASK, CONFIG, [0, 1], [1e-2, 3e-3]), "model: "),
        ((MODEL, other_task, CONFIG, [0, 1], [1e-2, 3e-3]), "task: "),
        (
            (MODEL, TASK, _config(batch_size=4), [0, 1], [1e-2, 3e-3]),
            "config.batch_size: 8 there, 4 now",
        ),
        (
            (MODEL, TASK, _config(steps=6), [0, 1], [1e-2, 3e-3]),
            "with steps=6: its checkpoint is at step 8",
        ),
    ]:
        with pytest.raises(checkpoints.ResumeError, match=match):
            train(*args, killed, resume=True)


def test_a_live_workdir_is_refused_and_a_stale_lock_taken_over(tmp_path):
    def train_here():
        config = _config(steps=2, log_every=2, eval_every=2, checkpoint_every=0)
        return train(MODEL, TASK, config, [0], [1e-2], tmp_path)

    lock = tmp_path / checkpoints.LOCK_FILE
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "since": 0}))
        with pytest.raises(checkpoints.WorkdirInUse, match=f"in use by process {holder.pid}"):
            train_here()
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale, taken over, and released at the end.
    train_here()
    assert not lock.exists()
    assert pathlib.Path(tmp_path / checkpoints.RUN_FILE).exists()
