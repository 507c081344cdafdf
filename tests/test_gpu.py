"""On a CUDA GPU: every path of the built-in layers against PyTorch's golden values
(the default, the unrolled scan, in `tests/test_torch_weights.py`), cuDNN's
gradients against the scan's, cuDNN under `vmap`, and the default paths.

Skipped without a GPU (CI has none): the CPU suite checks the same conversion and
wrapper logic around JAX's reference LSTM (`tests/test_cudnn.py`). Matmuls run at
"highest" precision here, so that TF32 does not hide an error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqjax
from seqjax.recurrences import cudnn
from tests.golden import torch_golden
from tests.test_torch_weights import ATOL, RTOL, layer_for

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")

# switches -> the path they select on a GPU
PATHS = {
    "cudnn": dict(cudnn=True),
    "hoisted": dict(custom_backward=False),
    "plain": dict(custom_backward=False, hoist_projection=False),
    "scan_cell": dict(custom_backward=True, unroll=1),
}


@pytest.fixture(scope="module")
def golden():
    with np.load(torch_golden.PATH) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


@pytest.mark.parametrize("path", PATHS)
def test_every_path_matches_torch(path, golden):
    """Every golden case of the LSTM on cuDNN; the 2-layer cases of every cell on the scans."""
    for case in torch_golden.CASES:
        if case["mode"] != "lstm" if path == "cudnn" else case["num_layers"] != 2:
            continue
        prefix = torch_golden.case_name(case) + "/"
        arrays = {k[len(prefix) :]: v for k, v in golden.items() if k.startswith(prefix)}
        layer = layer_for(case, **PATHS[path])
        params = layer.params_from_torch({k[3:]: v for k, v in arrays.items() if k.startswith("sd/")})
        assert layer.path(params) == path
        state = None
        if "h0" in arrays:
            state = (arrays["h0"], arrays["c0"]) if case["mode"] == "lstm" else arrays["h0"]
        outputs, final = layer.apply(params, arrays["inputs"], state, lengths=arrays.get("lengths"))
        err = f"{path}, {torch_golden.case_name(case)}"
        np.testing.assert_allclose(outputs, arrays["outputs"], rtol=RTOL, atol=ATOL, err_msg=err)
        finals = final if case["mode"] == "lstm" else (final,)
        for got, name in zip(finals, ("h_n", "c_n"), strict=False):
            np.testing.assert_allclose(got, arrays[name], rtol=RTOL, atol=ATOL, err_msg=err)


def _lstm_loss(layer):
    def loss(params, xs, state, lengths):
        ys, (h, c) = layer.apply(params, xs, state, lengths=lengths)
        return jnp.sum(ys * jnp.cos(ys)) + jnp.sum(h * c)

    return loss


def test_cudnn_gradients_equal_scan(key):
    assert cudnn.available()
    k1, k2, k3 = jax.random.split(key, 3)
    layers = {c: seqjax.LSTM(5, 7, 2, bidirectional=True, batch_first=True, cudnn=c) for c in (True, False)}
    params = layers[True].init(k1)
    xs = jax.random.normal(k2, (4, 9, 5))
    state = tuple(jax.random.normal(k3, (2, 4, 4, 7)))
    lengths = jnp.array([9, 0, 3, 1])
    grads = {
        c: jax.jit(jax.value_and_grad(_lstm_loss(layer), argnums=(0, 1, 2)))(params, xs, state, lengths)
        for c, layer in layers.items()
    }
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # noqa: E731
    jax.tree.map(close, grads[True], grads[False])


def test_cudnn_under_vmap(key):
    """vmapped seeds (a batch of parameter sets) through cuDNN equal the scan."""
    layers = {c: seqjax.LSTM(3, 6, batch_first=True, cudnn=c) for c in (True, False)}
    params = jax.vmap(layers[True].init)(jax.random.split(key, 3))
    xs = jax.random.normal(key, (2, 5, 3))
    lengths = jnp.array([5, 2])

    def loss(layer):
        return lambda p: jnp.sum(layer.apply(p, xs, lengths=lengths)[0] ** 2)

    got = {c: jax.jit(jax.vmap(jax.grad(loss(layer))))(params) for c, layer in layers.items()}
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got[True], got[False])


def test_default_paths_on_gpu(key):
    """The measured default (the unrolled scan with the hand-written backward pass, which
    the golden tests run) in every dtype; cuDNN only when asked, and float32 only."""
    lstm = seqjax.LSTM(3, 6)
    assert lstm.path(lstm.init(key)) == "scan_cell"
    bf16 = lstm.init(key, jnp.bfloat16)
    assert lstm.path(bf16) == "scan_cell"
    ys, _ = lstm.apply(bf16, jnp.ones((4, 2, 3), jnp.bfloat16))
    assert ys.dtype == jnp.bfloat16 and bool(jnp.isfinite(ys).all())
    with pytest.raises(ValueError, match="cudnn=True: cuDNN's LSTM in JAX takes float32 only"):
        seqjax.LSTM(3, 6, cudnn=True).path(bf16)
