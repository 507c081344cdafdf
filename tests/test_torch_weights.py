"""Parity with PyTorch's nn.RNN/LSTM/GRU, through state_dicts converted by seqjax.

Golden values come from `tests/golden/torch_golden.py` run against real PyTorch;
when torch imports, fresh cases are also generated and checked live.
"""

import functools
import importlib.util

import jax
import numpy as np
import pytest

import seqjax
from tests.golden import torch_golden

RTOL, ATOL = 1e-5, 1e-6
LAYERS = {
    "rnn_tanh": seqjax.RNN,
    "rnn_relu": seqjax.RNN,
    "lstm": seqjax.LSTM,
    "gru": seqjax.GRU,
    "lstm_proj": functools.partial(seqjax.LSTM, proj_size=torch_golden.PROJ),
}
HAS_TORCH = importlib.util.find_spec("torch") is not None


def layer_for(case: dict, **switches):
    kwargs = dict(
        num_layers=case["num_layers"], bidirectional=case["bidirectional"], batch_first=case["batch_first"]
    )
    kwargs |= switches
    if case["mode"].startswith("rnn"):
        kwargs["nonlinearity"] = case["mode"][4:]
    return LAYERS[case["mode"]](torch_golden.INPUT, torch_golden.HIDDEN, **kwargs)


def check_against_torch(case: dict, arrays: dict) -> None:
    layer = layer_for(case)
    sd = {k[3:]: v for k, v in arrays.items() if k.startswith("sd/")}
    params = layer.params_from_torch(sd)
    state = None
    if "h0" in arrays:
        state = (arrays["h0"], arrays["c0"]) if case["mode"].startswith("lstm") else arrays["h0"]
    outputs, final = layer.apply(params, arrays["inputs"], state, lengths=arrays.get("lengths"))
    np.testing.assert_allclose(outputs, arrays["outputs"], rtol=RTOL, atol=ATOL)
    if case["mode"].startswith("lstm"):
        np.testing.assert_allclose(final[0], arrays["h_n"], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(final[1], arrays["c_n"], rtol=RTOL, atol=ATOL)
    else:
        np.testing.assert_allclose(final, arrays["h_n"], rtol=RTOL, atol=ATOL)


@pytest.fixture(scope="module")
def golden():
    with np.load(torch_golden.PATH) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("case", torch_golden.CASES, ids=torch_golden.case_name)
def test_matches_torch_golden(case, golden):
    prefix = torch_golden.case_name(case) + "/"
    check_against_torch(case, {k[len(prefix) :]: v for k, v in golden.items() if k.startswith(prefix)})


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed; the golden test covers the same cases")
@pytest.mark.parametrize("mode", torch_golden.MODES)
def test_matches_torch_live(mode):
    rng = np.random.default_rng(abs(hash(mode)) % 2**32)
    for seed in range(4):
        case = dict(
            mode=mode,
            num_layers=int(rng.integers(1, 4)),
            bidirectional=bool(rng.integers(2)),
            batch_first=bool(rng.integers(2)),
            with_lengths=bool(rng.integers(2)),
            with_state=bool(rng.integers(2)),
        )
        check_against_torch(case, torch_golden.make_case(**case, seed=1000 + seed))


@pytest.mark.parametrize("layer_cls", [seqjax.RNN, seqjax.LSTM, seqjax.GRU, LAYERS["lstm_proj"]])
@pytest.mark.parametrize("bias", [True, False])
def test_round_trip_is_exact(layer_cls, bias, key):
    layer = layer_cls(3, 5, num_layers=2, bidirectional=True, bias=bias)
    params = layer.init(key)
    sd = layer.params_to_torch(params)
    gates = layer.cell.num_gates
    assert sd["weight_ih_l1_reverse"].shape == (gates * 5, 2 * layer.output_size)
    assert ("bias_hh_l0" in sd) == bias
    back = layer.params_from_torch(sd)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    # PyTorch stores [out, in]: the input-to-hidden weight is the transposed w_ih.
    np.testing.assert_array_equal(sd["weight_ih_l0"], np.asarray(params[0][0]["w_ih"]).T)
    assert ("weight_hr_l1_reverse" in sd) == (layer.output_size != layer.hidden_size)


def test_state_dict_errors(key):
    layer = seqjax.LSTM(3, 5, num_layers=2)
    sd = layer.params_to_torch(layer.init(key))
    missing = {k: v for k, v in sd.items() if k != "bias_hh_l1"}
    with pytest.raises(ValueError, match=r"missing keys \['bias_hh_l1'\]"):
        layer.params_from_torch(missing)
    with pytest.raises(ValueError, match=r"unexpected keys \['weight_hh_l2'\]"):
        layer.params_from_torch({**sd, "weight_hh_l2": sd["weight_hh_l1"]})
    with pytest.raises(ValueError, match=r"state_dict\['weight_ih_l1'\] must have shape \(20, 5\)"):
        layer.params_from_torch({**sd, "weight_ih_l1": np.zeros((20, 3), np.float32)})


def test_options_without_a_torch_counterpart_are_refused(key):
    for option in ("layer_norm", "peepholes"):
        layer = seqjax.LSTM(3, 5, **{option: True})
        with pytest.raises(ValueError, match=f"PyTorch's recurrent layers have no {option}"):
            layer.params_to_torch(layer.init(key))
