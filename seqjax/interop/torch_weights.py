"""Exact conversion between seqjax layer parameters and PyTorch `state_dict`s.

PyTorch names a layer's weights `weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`,
`bias_hh_l{k}` (and `weight_hr_l{k}` for an LSTM with `proj_size`), with a
`_reverse` suffix for the backward direction, and stores matrices `[out, in]`
(`[g*h, d]`); seqjax stores them `[in, out]`. The gate order is the same, so
conversion is a transpose: exact both ways. torch itself is not needed:
state_dicts are given as NumPy arrays (`{k: v.numpy() for k, v in
module.state_dict().items()}`).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

# seqjax name -> (PyTorch prefix, transposed)
_NAMES = {
    "w_ih": ("weight_ih", True),
    "w_hh": ("weight_hh", True),
    "b_ih": ("bias_ih", False),
    "b_hh": ("bias_hh", False),
    "w_hr": ("weight_hr", True),
}


def _expected(layer: Any) -> dict[str, tuple[int, int, str, tuple[int, ...]]]:
    """PyTorch key -> (layer, direction, seqjax name, PyTorch shape)."""
    cell = layer.cell
    beyond = [o for o in ("layer_norm", "peepholes") if getattr(cell, o, False)]
    if beyond:
        raise ValueError(
            f"PyTorch's recurrent layers have no {' or '.join(beyond)}: no state_dict holds them"
        )
    gh, h, p = cell.num_gates * layer.hidden_size, layer.hidden_size, layer.output_size
    shapes = {"w_ih": None, "w_hh": (gh, p), "b_ih": (gh,), "b_hh": (gh,), "w_hr": (p, h)}
    names = ["w_ih", "w_hh"] + (["b_ih", "b_hh"] if cell.bias else []) + (["w_hr"] if p != h else [])
    out = {}
    for l in range(layer.num_layers):
        for d in range(layer.num_directions):
            suffix = f"_l{l}" + ("_reverse" if d else "")
            for name in names:
                shape = shapes[name] or (gh, layer.layer_input_size(l))
                out[_NAMES[name][0] + suffix] = (l, d, name, shape)
    return out


def params_from_torch(layer: Any, state_dict: dict[str, Any]) -> tuple:
    """seqjax parameters of `layer` (an `RNN`, `LSTM` or `GRU`) from a PyTorch state_dict.

    Args:
      layer: the seqjax layer whose configuration matches the PyTorch module.
      state_dict: name -> array (NumPy or anything `np.asarray` accepts), as
        `torch.nn.RNN/LSTM/GRU.state_dict()` names them.

    Returns:
      `params[layer][direction]`, dtypes kept.

    Raises:
      ValueError: a key is missing or unexpected, or an array has the wrong shape.
    """
    expected = _expected(layer)
    missing = sorted(set(expected) - set(state_dict))
    extra = sorted(set(state_dict) - set(expected))
    if missing or extra:
        raise ValueError(
            f"state_dict does not match the layer: missing keys {missing}, unexpected keys {extra}"
        )
    params = [[{} for _ in range(layer.num_directions)] for _ in range(layer.num_layers)]
    for key, (l, d, name, shape) in expected.items():
        value = np.asarray(state_dict[key])
        if value.shape != shape:
            raise ValueError(f"state_dict[{key!r}] must have shape {shape}; got {value.shape}")
        params[l][d][name] = jnp.asarray(value.T if _NAMES[name][1] else value)
    return tuple(tuple(p) for p in params)


def params_to_torch(layer: Any, params: tuple) -> dict[str, np.ndarray]:
    """A PyTorch state_dict (NumPy arrays) from seqjax parameters; inverse of
    `params_from_torch`. Load it with
    `module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})`."""
    out = {}
    for key, (l, d, name, _) in _expected(layer).items():
        value = np.asarray(params[l][d][name])
        out[key] = np.ascontiguousarray(value.T) if _NAMES[name][1] else value
    return out
