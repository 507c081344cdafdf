"""PyTorch reference values for the layer parity tests.

`make_case` runs a real `torch.nn.RNN/LSTM/GRU` (packed sequences when lengths
are given) and returns its weights, inputs and results as NumPy arrays. Running
this file writes every case of `CASES` to `torch_rnn.npz` beside it:

    pip install torch==2.13.0 && python tests/golden/torch_golden.py

The tests read that file, and also call `make_case` live when torch imports.
"""

from __future__ import annotations

import itertools
import pathlib

import numpy as np

MODES = ("rnn_tanh", "rnn_relu", "lstm", "gru", "lstm_proj")
TIME, BATCH, INPUT, HIDDEN = 7, 4, 5, 6
PROJ = 3  # proj_size of "lstm_proj", PyTorch's LSTM with projections
# Every product of the layer options; an initial state is given in half of them,
# so that each (mode, layers, directions, lengths) is run with and without one.
CASES = [
    dict(mode=m, num_layers=nl, bidirectional=bi, batch_first=bf, with_lengths=wl, with_state=bf != wl)
    for m, nl, bi, bf, wl in itertools.product(MODES, (1, 2, 3), (False, True), (False, True), (False, True))
]
PATH = pathlib.Path(__file__).with_name("torch_rnn.npz")


def case_name(case: dict) -> str:
    flags = "bi{bidirectional:d}_bf{batch_first:d}_len{with_lengths:d}_st{with_state:d}".format(**case)
    return f"{case['mode']}_l{case['num_layers']}_{flags}"


def make_case(
    mode: str,
    num_layers: int,
    bidirectional: bool,
    batch_first: bool,
    with_lengths: bool,
    with_state: bool,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Runs PyTorch on random weights and inputs; keys "sd/<name>" hold the state_dict."""
    import torch

    torch.manual_seed(seed)
    kwargs = dict(num_layers=num_layers, batch_first=batch_first, bidirectional=bidirectional)
    if mode.startswith("rnn"):
        module = torch.nn.RNN(INPUT, HIDDEN, nonlinearity=mode[4:], **kwargs)
    elif mode == "lstm_proj":
        module = torch.nn.LSTM(INPUT, HIDDEN, proj_size=PROJ, **kwargs)
    else:
        module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[mode](INPUT, HIDDEN, **kwargs)
    x = torch.randn((BATCH, TIME, INPUT) if batch_first else (TIME, BATCH, INPUT))
    out = {f"sd/{k}": v.detach().numpy() for k, v in module.state_dict().items()}
    out["inputs"] = x.numpy()
    state_shape = (num_layers * (2 if bidirectional else 1), BATCH, HIDDEN)
    state = None
    if with_state:
        state = torch.randn((*state_shape[:2], PROJ) if mode == "lstm_proj" else state_shape)
        out["h0"] = state.numpy()
        if mode.startswith("lstm"):
            c0 = torch.randn(state_shape)
            out["c0"] = c0.numpy()
            state = (state, c0)
    with torch.no_grad():
        if with_lengths:
            # PyTorch's packed sequences need lengths >= 1; one sequence is full length.
            lengths = torch.randint(1, TIME + 1, (BATCH,))
            lengths[0] = TIME
            out["lengths"] = lengths.numpy()
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first, enforce_sorted=False)
            y, final = module(packed, state)
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first, total_length=TIME)
        else:
            y, final = module(x, state)
    out["outputs"] = y.numpy()
    if mode.startswith("lstm"):
        out["h_n"], out["c_n"] = final[0].numpy(), final[1].numpy()
    else:
        out["h_n"] = final.numpy()
    return out


def main() -> None:
    arrays = {}
    for i, case in enumerate(CASES):
        for key, value in make_case(**case, seed=i).items():
            arrays[f"{case_name(case)}/{key}"] = value
    np.savez_compressed(PATH, **arrays)
    print(f"wrote {len(CASES)} cases to {PATH}")


if __name__ == "__main__":
    main()
