"""The systems that `experiments.throughput` times: seqjax and its peers.

Each builder takes a `Job` and returns `(train_step, forward, args, path)`: two
functions of `*args` (JAX functions are jitted, PyTorch's are plain calls) that
run a training step (forward, the loss `mean(outputs ** 2)`, gradients with
respect to every parameter) and inference, and the name of the code path that
runs (seqjax's `Recurrent.path`, "cudnn" or "native" for PyTorch, None for the
others). seqjax runs any registered cell
family (`seqjax.registry`), a user's too; the peers have their own versions of
the built-in ones (`PEER_CELLS`). Peers are optional imports (`pip install -e
.[bench]`); a builder raises ImportError when its library is missing and `None`
is returned for cells a system does not have.

Inputs are `[batch, time, input]` for every system, in the job's dtype (float32
or bfloat16; parameters too); each one is given its natural layout (seqjax and
PyTorch run time-major internally, as their layers do). On a GPU every system
runs there: JAX's default device, and PyTorch on CUDA (cuDNN where it applies).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import registry
from seqjax.models import Recurrent
from seqjax.recurrences.protocol import DenseRecurrence, offers

CELLS = ("rnn", "lstm", "gru")  # the families every peer has


class Unavailable(Exception):
    """A system cannot run this job here; the message says why."""


# Each peer library's class for the built-in families (Equinox has no vanilla RNN).
PEER_CELLS = {
    "flax": {"rnn": ("SimpleCell",), "lstm": ("LSTMCell", "OptimizedLSTMCell"), "gru": ("GRUCell",)},
    "equinox": {"lstm": "LSTMCell", "gru": "GRUCell"},
    "haiku": {"rnn": "VanillaRNN", "lstm": "LSTM", "gru": "GRU"},
    "torch": {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"},
    "jax_cudnn": {"lstm": "lstm"},  # jax.experimental.rnn, on CUDA GPUs only
}
# The systems that time an attention family: seqjax's model, PyTorch's
# nn.TransformerEncoder and Flax linen's nn.MultiHeadDotProductAttention blocks.
ATTENTION_SYSTEMS = {"transformer": ("seqjax", "torch", "flax_linen")}


@dataclasses.dataclass(frozen=True)
class Job:
    """One measurement: a system running a cell (or the Transformer) on a shape.

    batch, time, input_size, hidden_size: the shape (b, t, d, h); h is d_model m
    for the Transformer.
    num_layers, bidirectional: the stack.
    num_heads, mlp_dim: the Transformer's n and f.
    """

    system: str
    cell: str
    batch: int
    time: int
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dtype: str = "float32"
    num_heads: int = 4
    mlp_dim: int = 512

    def make_cell(self) -> Any:
        """The registered family's cell at this job's hidden size."""
        return registry.get(self.cell).make_cell(self.hidden_size)

    def matmul_flops(self, train: bool) -> float | None:
        """FLOPs of the matmuls, the only O(h^2) work (elementwise work is ignored),
        for a `DenseRecurrence` cell with g gates (its `num_gates`; None for other cells).

        Forward, per layer and direction: 2*b*t*g*h*(d_l + h), d_l its input size.
        Training adds the state gradient (2*b*t*g*h*h), the input gradient for
        layers after the first (2*b*t*g*h*d_l) and the weight gradients
        (2*b*t*g*h*(d_l + h)).

        The Transformer (pre-LN, input projection d -> m, causal): forward
        2*b*t*d*m, and per layer 8*b*t*m^2 (the Q, K, V and output projections),
        4*b*t*m*f (the MLP) and 4*b*t^2*m (QK^T and AV, counted in full although a
        causal implementation may skip half); training is 3x the forward (each
        matmul's two gradients).
        """
        if self.cell in ATTENTION_SYSTEMS:
            b, t, d, m, f = self.batch, self.time, self.input_size, self.hidden_size, self.mlp_dim
            forward = 2.0 * b * t * d * m + self.num_layers * (8.0 * b * t * m * m + 4.0 * b * t * m * f)
            forward += self.num_layers * 4.0 * b * t * t * m
            return forward * (3 if train else 1)
        cell = self.make_cell()
        if not offers(cell, DenseRecurrence):  # the count below is a dense recurrence's
            return None
        num_gates = cell.num_gates
        n = 2 if self.bidirectional else 1
        total = 0.0
        for layer in range(self.num_layers):
            d = self.input_size if layer == 0 else n * self.hidden_size
            unit = 2.0 * self.batch * self.time * num_gates * self.hidden_size
            forward = unit * (d + self.hidden_size)
            backward = unit * self.hidden_size + unit * (d + self.hidden_size) + (unit * d if layer else 0)
            total += n * (forward + (backward if train else 0.0))
        return total


def _inputs(job: Job) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((job.batch, job.time, job.input_size), np.float32)


def _jax_steps(apply: Callable[[Any, jax.Array], jax.Array], params: Any, job: Job, path: str | None = None):
    """Jitted train step and forward of `apply(params, xs [b, t, d]) -> ys`, on
    parameters and inputs cast to the job's dtype."""

    def loss(p, xs):
        return jnp.mean(apply(p, xs).astype(jnp.float32) ** 2)

    train = jax.jit(jax.value_and_grad(loss))
    forward = jax.jit(apply)
    params = jax.tree.map(lambda p: p.astype(job.dtype), params)
    return train, forward, (params, jnp.asarray(_inputs(job), job.dtype)), path


def _stack(job: Job, one_direction: Callable[[Any, jax.Array], jax.Array], init: Callable[[Any, int], Any]):
    """Deep/bidirectional stack of `one_direction(params, xs [b, t, d]) -> [b, t, h]`
    for the peers without their own; `init(key, input_size) -> params`."""
    n = 2 if job.bidirectional else 1
    keys = jax.random.split(jax.random.key(0), (job.num_layers, n))
    params = [
        [init(keys[l, k], job.input_size if l == 0 else n * job.hidden_size) for k in range(n)]
        for l in range(job.num_layers)
    ]

    def apply(params, xs):
        for layer in params:
            outs = [one_direction(layer[0], xs)]
            if n == 2:
                outs.append(jnp.flip(one_direction(layer[1], jnp.flip(xs, 1)), 1))
            xs = jnp.concatenate(outs, -1) if n == 2 else outs[0]
        return xs

    return apply, params


# seqjax's variants: the default, then the paths behind the defaults (see
# `seqjax.recurrences.paths`): the scan with the hand-written backward pass, JAX's
# differentiation of the scan, and on GPU the default without unrolling and cuDNN.
SEQJAX_VARIANTS = {
    "seqjax": {},
    "seqjax_scan": dict(cpu_kernel=False, custom_backward=True),
    "seqjax_autodiff": dict(cpu_kernel=False, custom_backward=False),
    "seqjax_unroll1": dict(unroll=1),
    "seqjax_cudnn": dict(cudnn=True),
}
GPU_ONLY = ("seqjax_unroll1", "seqjax_cudnn", "jax_cudnn")


def seqjax_system(job: Job, **switches: Any):
    """seqjax's `Recurrent` over the family's cell with these switches; None where
    the cell lacks the capability a forced path needs."""
    try:
        layer = Recurrent(
            job.make_cell(),
            job.input_size,
            job.num_layers,
            bidirectional=job.bidirectional,
            batch_first=True,
            **switches,
        )
    except ValueError:
        return None
    params = layer.init(jax.random.key(0), job.dtype)
    return _jax_steps(lambda p, xs: layer.apply(p, xs)[0], params, job, layer.path(params))


def jax_cudnn_system(job: Job):
    """`jax.experimental.rnn.lstm` (cuDNN; float32, the LSTM only) on the whole stack."""
    from jax.experimental import rnn

    from seqjax.recurrences import cudnn

    if job.dtype != "float32":
        raise Unavailable("jax.experimental.rnn takes float32 only")
    if not cudnn.available():
        raise Unavailable(f"jax.experimental.rnn needs a CUDA GPU; running on {jax.default_backend()}")
    n = 2 if job.bidirectional else 1
    d, h, layers = job.input_size, job.hidden_size, job.num_layers
    weights = rnn.init_lstm_weight(jax.random.key(0), d, h, layers, job.bidirectional)

    def apply(weights, xs):
        zeros = jnp.zeros((layers * n, xs.shape[0], h), xs.dtype)
        lengths = jnp.full((xs.shape[0],), xs.shape[1], jnp.int32)
        return rnn.lstm(xs, zeros, zeros, weights, lengths, d, h, layers, 0.0, job.bidirectional)[0]

    return _jax_steps(apply, weights, job, "cudnn")


def flax_linen_system(job: Job, cell_name: str):
    import flax.linen as nn

    cell_cls = getattr(nn, cell_name)

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, xs):
            for _ in range(job.num_layers):
                rnn = nn.RNN(cell_cls(job.hidden_size))
                if job.bidirectional:
                    rnn = nn.Bidirectional(rnn, nn.RNN(cell_cls(job.hidden_size)))
                xs = rnn(xs)
            return xs

    model = Stack()
    xs = jnp.asarray(_inputs(job))
    return _jax_steps(model.apply, model.init(jax.random.key(0), xs[:, :2]), job)


def flax_nnx_system(job: Job, cell_name: str):
    from flax import nnx

    cell_cls = getattr(nnx, cell_name)
    rngs = nnx.Rngs(0)
    n = 2 if job.bidirectional else 1
    rnns = []
    for l in range(job.num_layers):
        d = job.input_size if l == 0 else n * job.hidden_size
        make = lambda d=d: nnx.RNN(cell_cls(d, job.hidden_size, rngs=rngs))  # noqa: E731
        rnns.append(nnx.Bidirectional(make(), make()) if job.bidirectional else make())
    graphdef, params, rest = nnx.split(nnx.List(rnns), nnx.Param, ...)

    def apply(params, xs):
        # An explicit zero carry keeps the cells from drawing one from their Rngs.
        zeros = jnp.zeros((xs.shape[0], job.hidden_size), xs.dtype)
        carry = (zeros, zeros) if job.cell == "lstm" else zeros
        for rnn in nnx.merge(graphdef, params, rest):
            xs = rnn(xs, initial_carry=(carry, carry) if job.bidirectional else carry)
        return xs

    return _jax_steps(apply, params, job)


def equinox_system(job: Job):
    import equinox as eqx

    name = PEER_CELLS["equinox"].get(job.cell)
    if name is None:
        return None
    cell_cls = getattr(eqx.nn, name)

    def init(key, d):
        return eqx.filter(cell_cls(d, job.hidden_size, key=key), eqx.is_array)

    static = eqx.filter(
        cell_cls(job.input_size, job.hidden_size, key=jax.random.key(0)), eqx.is_array, inverse=True
    )

    def one_direction(params, xs):
        cell = eqx.combine(params, static)
        zeros = jnp.zeros((xs.shape[0], job.hidden_size), xs.dtype)
        carry = (zeros, zeros) if job.cell == "lstm" else zeros
        batched = jax.vmap(cell)

        def step(c, x):
            c = batched(x, c)
            return c, c[0] if job.cell == "lstm" else c

        return jnp.swapaxes(jax.lax.scan(step, carry, jnp.swapaxes(xs, 0, 1))[1], 0, 1)

    return _jax_steps(*_stack(job, one_direction, init), job)


def haiku_system(job: Job):
    import haiku as hk

    core_cls = getattr(hk, PEER_CELLS["haiku"][job.cell])

    def one_direction_fn(xs):
        core = core_cls(job.hidden_size)
        ys, _ = hk.dynamic_unroll(core, jnp.swapaxes(xs, 0, 1), core.initial_state(xs.shape[0]))
        return jnp.swapaxes(ys, 0, 1)

    transformed = hk.without_apply_rng(hk.transform(one_direction_fn))

    def init(key, d):
        return transformed.init(key, jnp.zeros((1, 2, d)))

    return _jax_steps(*_stack(job, transformed.apply, init), job)


def torch_system(job: Job, threads: int):
    """PyTorch's layer; on CUDA when JAX runs on a GPU (cuDNN where it applies)."""
    import torch

    torch.set_num_threads(threads)
    cls = getattr(torch.nn, PEER_CELLS["torch"][job.cell])
    torch.manual_seed(0)
    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, job.dtype)
    model = cls(
        job.input_size, job.hidden_size, job.num_layers, bidirectional=job.bidirectional, batch_first=True
    ).to(device, dtype)
    xs = torch.from_numpy(_inputs(job)).to(device, dtype)
    path = "cudnn" if device == "cuda" and torch.backends.cudnn.is_acceptable(xs) else "native"

    def train(xs):
        model.zero_grad(set_to_none=True)
        loss = model(xs)[0].float().pow(2).mean()
        loss.backward()
        return loss

    def forward(xs):
        with torch.inference_mode():
            return model(xs)[0]

    return train, forward, (xs,), path


def seqjax_transformer_system(job: Job):
    """seqjax's Transformer: input projection, pre-LN causal blocks, final LayerNorm."""
    from seqjax.models import transformer

    model = transformer.Transformer(
        job.hidden_size, job.num_heads, job.num_layers, input_size=job.input_size, mlp_dim=job.mlp_dim,
        positional="none",
    )  # fmt: skip
    # Which path `transformer.attention` takes for these inputs.
    head = job.hidden_size // job.num_heads
    q = jax.ShapeDtypeStruct((job.batch, job.time, job.num_heads, head), job.dtype)
    scores = job.batch * job.num_heads * job.time**2
    if transformer.kernel_unavailable_reason(q, q, q) is None:
        path = "flash_cpu"
    elif jax.default_backend() == "cpu" and scores > transformer.SMALL_SCORES:
        path = "tiled"
    else:
        path = "dot_product_attention"
    return _jax_steps(lambda p, xs: model.apply(p, xs)[0], model.init(jax.random.key(0)), job, path)


def flax_transformer_system(job: Job):
    """The same architecture from Flax linen's layers (`nn.MultiHeadDotProductAttention`)."""
    import flax.linen as nn

    class Model(nn.Module):
        @nn.compact
        def __call__(self, xs):
            mask = nn.make_causal_mask(jnp.ones(xs.shape[:2]))
            x = nn.Dense(job.hidden_size)(xs)
            for _ in range(job.num_layers):
                x = x + nn.MultiHeadDotProductAttention(job.num_heads)(nn.LayerNorm()(x), mask=mask)
                x = x + nn.Dense(job.hidden_size)(nn.gelu(nn.Dense(job.mlp_dim)(nn.LayerNorm()(x))))
            return nn.LayerNorm()(x)

    model = Model()
    xs = jnp.asarray(_inputs(job))
    return _jax_steps(model.apply, model.init(jax.random.key(0), xs[:, :2]), job, "dot_product_attention")


def torch_transformer_system(job: Job, threads: int):
    """PyTorch's `nn.TransformerEncoder(norm_first=True)`, causal, after a linear input
    projection and with a final LayerNorm: the same architecture."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    layer = torch.nn.TransformerEncoderLayer(
        job.hidden_size, job.num_heads, job.mlp_dim, dropout=0.0, activation="gelu", batch_first=True,
        norm_first=True,
    )  # fmt: skip
    encoder = torch.nn.TransformerEncoder(
        layer, job.num_layers, norm=torch.nn.LayerNorm(job.hidden_size), enable_nested_tensor=False
    )
    model = torch.nn.Sequential(torch.nn.Linear(job.input_size, job.hidden_size), encoder)
    model = model.to(device, getattr(torch, job.dtype))
    xs = torch.from_numpy(_inputs(job)).to(device, getattr(torch, job.dtype))
    mask = torch.nn.Transformer.generate_square_subsequent_mask(job.time, device=device)

    def run(xs):
        return encoder(model[0](xs), mask=mask.to(xs.dtype), is_causal=True)

    def train(xs):
        model.zero_grad(set_to_none=True)
        loss = run(xs).float().pow(2).mean()
        loss.backward()
        return loss

    def forward(xs):
        with torch.inference_mode():
            return run(xs)

    return train, forward, (xs,), "sdpa"


def systems_for(cell: str) -> list[str]:
    """Names of every system that can run the family `cell` on this backend: seqjax
    as configured by default (on CPU the fused kernel, on GPU the unrolled scan, where the
    cell allows), seqjax's other paths (the measurements behind the defaults; the
    scan without unrolling and cuDNN on GPU only), then the peers that have it
    (`jax.experimental.rnn` on GPU, for the LSTM)."""
    if cell in ATTENTION_SYSTEMS:
        return list(ATTENTION_SYSTEMS[cell])
    gpu = jax.default_backend() == "gpu"
    names = [n for n in SEQJAX_VARIANTS if gpu or n not in GPU_ONLY]
    flax_cells = PEER_CELLS["flax"].get(cell, ())
    names += [f"flax_linen_{c}" for c in flax_cells] + [f"flax_nnx_{c}" for c in flax_cells]
    peers = [peer for peer in ("equinox", "haiku", "torch", "jax_cudnn") if cell in PEER_CELLS[peer]]
    return names + [peer for peer in peers if gpu or peer not in GPU_ONLY]


def build(job: Job, threads: int):
    """`(train_step, forward, args, path, is_torch)` for `job`, or None if the system
    lacks the cell. Raises ImportError when the system's library is missing, and
    `Unavailable` when it cannot run the job here."""
    name = job.system
    if job.cell in ATTENTION_SYSTEMS:
        builders = {
            "seqjax": seqjax_transformer_system,
            "flax_linen": flax_transformer_system,
            "torch": lambda job: torch_transformer_system(job, threads),
        }
        built = builders[name](job)
    elif name in SEQJAX_VARIANTS:
        built = seqjax_system(job, **SEQJAX_VARIANTS[name])
    elif name == "jax_cudnn":
        built = jax_cudnn_system(job)
    elif name.startswith("flax_linen_"):
        built = flax_linen_system(job, name.removeprefix("flax_linen_"))
    elif name.startswith("flax_nnx_"):
        built = flax_nnx_system(job, name.removeprefix("flax_nnx_"))
    elif name == "equinox":
        built = equinox_system(job)
    elif name == "haiku":
        built = haiku_system(job)
    elif name == "torch":
        built = torch_system(job, threads)
    else:
        raise ValueError(f"unknown system {name!r}")
    return None if built is None else (*built, name == "torch")
