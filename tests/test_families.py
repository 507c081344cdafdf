"""Open model families: a user's cell (tests/user_cells.py, IndRNN) through seqjax's
layers and models against NumPy and finite differences; `step` against `apply` for
every family; the capability checks, the registry and the 0.1 import paths."""

import pathlib
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax
from experiments import user_modules
from seqjax import registry
from seqjax.models import Backbone, Recurrent, SequenceModel
from seqjax.recurrences import cells, cpu_kernel, paths, scan
from seqjax.recurrences.protocol import Cell, DenseRecurrence, ProjectsInput
from tests.helpers import check_grads_by_finite_differences, numpy_stack

T, B, D, H = 6, 4, 3, 5
LENGTHS = np.array([6, 4, 1, 0])
USER_CELLS = pathlib.Path(__file__).with_name("user_cells.py")
# Every built-in family and the user's IndRNN, small.
FAMILIES = [
    ("rnn", {}),
    ("lstm", {}),
    ("gru", {}),
    ("transformer", {"num_heads": 1}),
    ("indrnn", {}),
    ("mingru", {}),
    ("minlstm", {}),
    ("lru", {"state_size": 3}),
    ("rglru", {}),
    ("mamba", {"state_size": 3}),
]


@pytest.fixture(scope="module")
def indrnn():
    """The user's cell class, registered as "indrnn" (imported as --user_module would)."""
    return user_modules.import_user_module(str(USER_CELLS)).IndRNN


def numpy_indrnn(p, h, x):
    h = np.maximum(x @ p["w"] + p["u"] * h + p["b"], 0.0)
    return h, h


def test_user_cell_deep_bidirectional_with_lengths_matches_numpy(indrnn):
    layer = Recurrent(indrnn(H), D, num_layers=2, bidirectional=True, batch_first=True)
    with jax.enable_x64(True):
        params = layer.init(jax.random.key(0), jnp.float64)
        xs = jax.random.normal(jax.random.key(1), (B, T, D), jnp.float64)
        h0 = jax.random.uniform(jax.random.key(2), (4, B, H), jnp.float64)
        outputs, final = layer.apply(params, xs, h0, lengths=LENGTHS)
    ref_outputs, ref_final = numpy_stack(numpy_indrnn, params, np.swapaxes(xs, 0, 1), LENGTHS, h0)
    np.testing.assert_allclose(outputs, np.swapaxes(ref_outputs, 0, 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(final, ref_final, rtol=1e-10, atol=1e-12)


def test_user_cell_gradients_match_finite_differences(indrnn):
    # The CPU default path for a cell with no capability is lax.scan under JAX's
    # differentiation, where a dense-only backward pass once raised KeyError('w_hh').
    layer = Recurrent(indrnn(H), D, num_layers=2, bidirectional=True)
    with jax.enable_x64(True):
        params = layer.init(jax.random.key(0), jnp.float64)
        xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float64)
        h0 = jax.random.uniform(jax.random.key(2), (4, B, H), jnp.float64)

        @jax.jit
        def loss(params, xs, h0):
            outputs, final = layer.apply(params, xs, h0, lengths=LENGTHS)
            return jnp.sum(jnp.sin(outputs)) + jnp.sum(final**2)

        check_grads_by_finite_differences(loss, (params, xs, h0))


class ProjectedIndRNN:
    """IndRNN with the ProjectsInput capability, by composition (the projection hoists)."""

    def __init__(self, cell):
        self.cell, self.hidden_size = cell, cell.hidden_size
        self.init, self.initial_carry = cell.init, cell.initial_carry

    def project(self, params, x):
        return x @ params["w"] + params["b"]

    def step_projected(self, params, h, gx):
        h = jax.nn.relu(gx + params["u"] * h)
        return h, h

    def step(self, params, h, x):
        return self.step_projected(params, h, self.project(params, x))


def test_capabilities_choose_the_path_and_are_checked_before_use(indrnn):
    plain, projected = indrnn(H), ProjectedIndRNN(indrnn(H))
    assert isinstance(plain, Cell) and not isinstance(plain, ProjectsInput | DenseRecurrence)
    assert isinstance(projected, ProjectsInput) and not isinstance(projected, DenseRecurrence)
    assert isinstance(cells.LSTMCell(H), DenseRecurrence) and cpu_kernel.has_loop(cells.LSTMCell(H))

    xs = jax.random.normal(jax.random.key(1), (T, B, D))
    hoisted = Recurrent(projected, D, hoist_projection=True)
    params = hoisted.init(jax.random.key(0))
    assert paths.choose(projected, hoisted.switches, params, xs) is paths.Path.HOISTED
    assert paths.choose(plain, Recurrent(plain, D).switches, params, xs) is paths.Path.PLAIN
    ys, h_n = hoisted.apply(params, xs, lengths=LENGTHS)
    ys_plain, h_plain = Recurrent(plain, D).apply(params, xs, lengths=LENGTHS)
    np.testing.assert_allclose(ys, ys_plain, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(h_n, h_plain, rtol=1e-6, atol=1e-7)

    with pytest.raises(ValueError, match="custom_backward=True needs a cell with the DenseRecurrence"):
        Recurrent(plain, D, custom_backward=True)
    with pytest.raises(ValueError, match="hoist_projection=True needs a cell with the ProjectsInput"):
        Recurrent(plain, D, hoist_projection=True)
    with pytest.raises(
        ValueError, match=r"cpu_kernel=True needs a DenseRecurrence cell whose kernel is one of"
    ):
        Recurrent(projected, D, cpu_kernel=True)
    with pytest.raises(TypeError, match="scan_cell needs a cell with the DenseRecurrence capability"):
        scan.scan_cell(plain, params[0][0], jnp.zeros((B, H)), xs)
    with pytest.raises(TypeError, match=r"Cell protocol .* has no init, initial_carry, step"):
        Recurrent(type("NotACell", (), {"hidden_size": 3})(), D)
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        Recurrent(indrnn(0), D)
    with pytest.raises(TypeError, match="batch_first must be a bool"):
        Recurrent(plain, D, batch_first="False")


@pytest.mark.parametrize("family, options", FAMILIES)
def test_step_equals_apply_and_state_stops_at_each_length(family, options, indrnn):
    model = SequenceModel(
        family, output_size=3, hidden_size=H + 1, input_size=D, num_layers=2, options=options
    )
    assert isinstance(model.backbone, Backbone)
    params = model.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    full = model.apply(params, xs)
    state = model.initial_state(B)
    for t in range(T):
        state, y = model.step(params, state, xs[:, t])
        np.testing.assert_allclose(y, full[:, t], rtol=1e-5, atol=1e-5)

    # With lengths, apply's final state is each sequence's own after its last step:
    # stepping on from it equals stepping each sequence alone, and (for a recurrent
    # carry) the states themselves agree.
    _, final = model.backbone.apply(params["backbone"], xs, lengths=LENGTHS)
    following = jax.random.normal(jax.random.key(2), (B, D))
    _, y_next = model.step(params, final, following)
    for b, n in enumerate(LENGTHS):
        alone = model.initial_state(1)
        for t in range(n):
            alone, _ = model.step(params, alone, xs[b : b + 1, t])
        if isinstance(model.backbone, Recurrent):
            for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(alone), strict=True):
                np.testing.assert_allclose(got[:, b], want[:, 0], rtol=1e-5, atol=1e-6)
        _, y_alone = model.step(params, alone, following[b : b + 1])
        np.testing.assert_allclose(y_next[b], y_alone[0], rtol=1e-5, atol=1e-5)


def test_layer_step_is_unidirectional_and_checks_its_input():
    layer = seqjax.LSTM(D, H, num_layers=2)
    params = layer.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (T, D))  # unbatched
    outputs, (h_n, c_n) = layer.apply(params, xs)
    state = layer.initial_state(1)
    state = jax.tree.map(lambda s: s[:, 0], state)
    for t in range(T):
        state, y = layer.step(params, state, xs[t])
        np.testing.assert_allclose(y, outputs[t], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state[0], h_n, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state[1], c_n, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"x must have shape \[batch, input_size=3\]"):
        layer.step(params, state, jnp.ones((2, 4)))
    bidirectional = seqjax.GRU(D, H, bidirectional=True)
    with pytest.raises(ValueError, match="step needs a unidirectional layer"):
        bidirectional.step(bidirectional.init(jax.random.key(0)), None, jnp.ones((2, D)))


def test_registry_and_options(indrnn):
    assert registry.get("indrnn").make_cell is indrnn
    builtin = {"rnn", "lstm", "gru", "mingru", "minlstm", "lru", "rglru", "mamba", "transformer"}
    assert set(registry.names()[: len(builtin)]) == builtin
    with pytest.raises(ValueError, match="family 'lstm' is already registered"):
        seqjax.register_cell("lstm", cells.LSTMCell)
    with pytest.raises(ValueError, match="a family name must be an identifier"):
        seqjax.register_cell("my cell", indrnn)
    with pytest.raises(ValueError, match="unknown model family 'mamba2'; registered: rnn, lstm"):
        registry.get("mamba2")
    # The registered LSTM starts its forget gate at 1.0, an option a model can change.
    default = SequenceModel("lstm", output_size=2, hidden_size=H, input_size=D)
    pytorch = SequenceModel("lstm", output_size=2, hidden_size=H, input_size=D, options={"forget_bias": None})
    assert default.backbone.cell.forget_bias == 1.0 and pytorch.backbone.cell.forget_bias is None
    assert SequenceModel("rnn", 2, H, input_size=D, options={"nonlinearity": "relu"}) == SequenceModel(
        "rnn", 2, H, input_size=D, options=(("nonlinearity", "relu"),)
    )
    with pytest.raises(ValueError, match="family 'rnn' takes no option 'forget_bias'"):
        SequenceModel("rnn", 2, H, input_size=D, options={"forget_bias": 1.0})
    with pytest.raises(TypeError, match="option 'mlp_dim' must be hashable"):
        SequenceModel("transformer", 2, 8, input_size=D, options={"mlp_dim": [16]})
    # A replaced family is what every later model builds.
    seqjax.register_cell("indrnn_replaced", cells.GRUCell)
    seqjax.register_cell("indrnn_replaced", indrnn, replace=True)
    assert isinstance(SequenceModel("indrnn_replaced", 2, H, input_size=D).backbone.cell, indrnn)


def test_layers_cells_and_models_pickle_and_compare_by_value(indrnn):
    for thing in (
        seqjax.LSTM(D, H, 2, bidirectional=True),
        Recurrent(indrnn(H), D, 2),
        cells.RNNCell(H, "relu"),
        SequenceModel("transformer", 2, 8, vocab_size=5, options={"num_heads": 2}),
    ):
        again = pickle.loads(pickle.dumps(thing))
        assert again == thing and hash(again) == hash(thing)
    assert seqjax.GRU(D, H) == seqjax.GRU(D, H) != seqjax.GRU(D, H, bias=False)


def test_pytorch_positional_argument_order():
    # nn.RNN(input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, dropout, bidirectional)
    rnn = seqjax.RNN(D, H, 2, "relu", False, True, 0.5, True)
    assert (rnn.nonlinearity.value, rnn.bias, rnn.batch_first, rnn.dropout, rnn.bidirectional) == (
        "relu",
        False,
        True,
        0.5,
        True,
    )
    # nn.LSTM / nn.GRU(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
    lstm = seqjax.LSTM(D, H, 1, False)
    assert not lstm.bias and "b_ih" not in lstm.init(jax.random.key(0))[0][0]
    gru = seqjax.GRU(D, H, 2, True, True, 0.25, True)
    assert (gru.bias, gru.batch_first, gru.dropout, gru.bidirectional) == (True, True, 0.25, True)


def test_flat_module_paths_of_0_1_still_import():
    import seqjax.linen
    import seqjax.train
    from seqjax.tasks import Copy

    assert seqjax.train.train is seqjax.training.train
    assert Copy is seqjax.data.tasks.Copy and seqjax.diagnostics is seqjax.analysis.diagnostics
    assert seqjax.linen.Recurrent is seqjax.interop.linen.Recurrent
    assert seqjax.cells.lstm is cells.LSTMCell and seqjax.layers.Recurrent is Recurrent
