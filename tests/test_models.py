"""Task models: one interface for every backbone, and parameter counts by formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.models import SequenceModel, count_params

V, O, H = 6, 5, 8


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "transformer"])
def test_same_interface_and_param_counts(kind, key):
    options = {"num_heads": 2} if kind == "transformer" else {}
    model = SequenceModel(kind, output_size=O, hidden_size=H, vocab_size=V, num_layers=2, options=options)
    params = model.init(key)
    x = jax.random.randint(jax.random.key(1), (3, 7), 0, V)
    out = model.apply(params, x, lengths=jnp.array([7, 4, 2]))
    assert out.shape == (3, 7, O)
    gates = {"rnn": 1, "lstm": 4, "gru": 3}
    if kind in gates:
        # PyTorch's count: g*h*(d + h) weights and 2*g*h biases per layer.
        g = gates[kind]
        expected = g * H * (V + H) + 2 * g * H + g * H * (H + H) + 2 * g * H
    else:
        block = 4 * (H * H + H) + 2 * 2 * H + (H * 4 * H + 4 * H) + (4 * H * H + H)
        expected = V * H + 2 * block + 2 * H
    assert count_params(params) == expected + H * O + O


def test_feature_inputs_and_recurrent_one_hot_equals_features(key):
    tokens = SequenceModel("gru", output_size=O, hidden_size=H, vocab_size=V)
    features = SequenceModel("gru", output_size=O, hidden_size=H, input_size=V)
    params = tokens.init(key)
    x = jax.random.randint(jax.random.key(1), (3, 7), 0, V)
    np.testing.assert_allclose(
        tokens.apply(params, x), features.apply(params, jax.nn.one_hot(x, V)), rtol=1e-6, atol=1e-6
    )
    with pytest.raises(ValueError, match="unknown model family 'hyena'; registered: rnn, lstm, gru"):
        SequenceModel("hyena", output_size=O, hidden_size=H, vocab_size=V)
    with pytest.raises(
        ValueError, match=r"family 'lstm' takes no option 'num_heads'; its options are .*forget_bias"
    ):
        SequenceModel("lstm", output_size=O, hidden_size=H, vocab_size=V, options={"num_heads": 2})
