"""Online inference: what one more token costs, against the context already read.

    python -m experiments.streaming
    python -m experiments.streaming --contexts=128,2048 --batches=1 --models=lstm,transformer --steps=32

The source tutorial ends on RNNs still having a place in online inference. The
reason is measurable: a recurrent model carries a fixed-size state, so a token
costs the same after 128 tokens as after 32768, while a Transformer's KV cache,
and the attention over it, grow with the context. For every model of --models
(one width, --hidden_size, --num_layers, token inputs and logits over
--vocab_size) and every context c of --contexts and batch b of --batches:

  - the model reads a random c-token context (`SequenceModel.stream`, in chunks of
    --prefill_chunk; at batch 1, the state then copied to the b sequences);
  - then --steps tokens are fed one at a time, each one call of
    `SequenceModel.step(..., donate_state=True)` outside `jit`, as an online loop
    runs, timed to its output (after --warmup untimed calls);
  - reported: the per-token latency (median, p90), tokens/s (b / median), and the
    state's bytes per sequence (the recurrent carry, or the KV cache with room for
    the decoded tokens).

The Transformer (RoPE, causal) runs with its KV cache, and without one for
reference: every token re-runs `apply` over the whole c-token context (skipped
where its attention scores `[b, heads, c, c]` would exceed --nocache_max_elements).

Peers, in the same run when PyTorch is installed (`pip install -e .[torch]`), with
seqjax's weights (their first outputs are checked against seqjax's): `nn.LSTM`
and `nn.GRU` stepped one token at a time with a carried state, and a pre-LN
decoder with a KV cache of the same size (the same model, its cache filled from
seqjax's). PyTorch's decoder attends over the filled part of its cache; seqjax's
over its whole (static-shaped) cache, masked.

Every model's calls run in rounds, one token of each per round, so that all of
them see the same machine load. Outputs in --workdir: config.json, results.jsonl,
results.md (tables and "what the numbers say"), streaming.png (log-log latency
and state bytes against context).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments import run_config, user_modules
from seqjax import registry
from seqjax.interop import torch_weights
from seqjax.models import Recurrent, SequenceModel, Transformer

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "models",
    ["rnn", "lstm", "gru", "mingru", "minlstm", "lru", "rglru", "mamba", "transformer"],
    "Model families.",
)
flags.DEFINE_list(
    "contexts", ["128", "512", "2048", "8192", "32768"], "Context lengths read before decoding."
)
flags.DEFINE_list("batches", ["1", "64"], "Sequences decoded together.")
flags.DEFINE_integer("hidden_size", 128, "Width of every model (d_model of the Transformer).")
flags.DEFINE_integer("num_layers", 2, "Layers of every model.")
flags.DEFINE_integer("vocab_size", 256, "Tokens in and logits out.")
flags.DEFINE_integer("num_heads", 4, "Attention heads of the Transformer.")
flags.DEFINE_integer("steps", 64, "Timed tokens per model, context and batch.")
flags.DEFINE_integer("warmup", 4, "Untimed tokens first.")
flags.DEFINE_integer("burst", 8, "Timed tokens of one model in a row, in each round.")
flags.DEFINE_integer("prefill_chunk", 2048, "Tokens per `stream` call while reading a context.")
flags.DEFINE_float(
    "nocache_max_elements", 2.0**27, "Skip the no-cache Transformer where b*heads*c^2 exceeds this."
)
flags.DEFINE_integer("nocache_calls", 5, "Timed calls of the no-cache Transformer (each re-reads c tokens).")
flags.DEFINE_boolean("torch", True, "Time the PyTorch peers when PyTorch is installed.")
flags.DEFINE_string("workdir", "runs/streaming", "Output directory.")


@dataclasses.dataclass(frozen=True)
class Row:
    model: str  # what is timed, e.g. "lstm", "transformer (KV cache)", "PyTorch nn.LSTM"
    batch: int
    context: int
    median_ms: float | None  # per token; None if skipped
    p90_ms: float | None
    tokens_per_second: float | None
    state_bytes: int | None  # per sequence
    calls: int
    note: str = ""
    peer_of: str = ""  # a PyTorch peer: the seqjax model it mirrors


@dataclasses.dataclass
class Runner:
    """One model at one context and batch: `call()` decodes one token and waits for it."""

    model: str
    batch: int
    context: int
    call: Callable[[], None]
    state_bytes: int | None
    calls: int  # timed calls wanted
    times: list[float] = dataclasses.field(default_factory=list)
    note: str = ""
    peer_of: str = ""


def _room() -> int:
    """Tokens a runner decodes: warm-up, timed, and one untimed per round."""
    return FLAGS.warmup + FLAGS.steps + -(-FLAGS.steps // FLAGS.burst)


def _nbytes(tree: Any) -> int:
    return sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def _model(family: str) -> SequenceModel:
    family_options = registry.get(family).option_names()
    options = {"num_heads": FLAGS.num_heads} if "num_heads" in family_options else {}
    return SequenceModel(
        family,
        output_size=FLAGS.vocab_size,
        hidden_size=FLAGS.hidden_size,
        vocab_size=FLAGS.vocab_size,
        num_layers=FLAGS.num_layers,
        options=options,
    )


def read_context(model: SequenceModel, params: Any, tokens: np.ndarray, room: int) -> Any:
    """The state after reading `tokens [c]` (batch 1), with room for `room` more steps."""
    state = model.initial_state(1, max_len=len(tokens) + room)
    for start in range(0, len(tokens), FLAGS.prefill_chunk):
        state, _ = model.stream(params, state, tokens[None, start : start + FLAGS.prefill_chunk])
    return state


def _to_batch(model: SequenceModel, state: Any, batch: int, room_total: int) -> Any:
    """A batch-1 state copied to `batch` sequences (the batch axis is wherever the
    model's own `initial_state(batch)` has it)."""
    target = jax.eval_shape(lambda: model.initial_state(batch, max_len=room_total))
    return jax.tree.map(lambda x, t: jnp.array(jnp.broadcast_to(x, t.shape)), state, target)


def seqjax_runners(family: str, contexts: list[int], batch: int, stream: np.ndarray) -> list[Runner]:
    model = _model(family)
    params = model.init(jax.random.key(0))
    room = _room()
    feed = [jnp.asarray(stream[i : i + batch]) for i in range(room)]  # tokens arriving one at a time
    runners = []
    for c in contexts:
        state = _to_batch(model, read_context(model, params, stream[:c], room), batch, c + room)
        holder = {"state": state, "i": 0}

        def call(model=model, params=params, holder=holder):
            holder["state"], y = model.step(params, holder["state"], feed[holder["i"]], donate_state=True)
            y.block_until_ready()
            holder["i"] += 1

        runners.append(Runner(_label(model), batch, c, call, _nbytes(state) // batch, FLAGS.steps))
        if not _fixed_state(model):
            runners.append(_nocache_runner(family, model, params, stream, c, batch))
    return runners


def _label(model: SequenceModel) -> str:
    return model.family if _fixed_state(model) else f"{model.family} (KV cache)"


def _fixed_state(model: SequenceModel) -> bool:
    """Whether the model's state is the same size at any context (measured, not named)."""
    sizes = {_nbytes(jax.eval_shape(lambda n=n: model.initial_state(1, max_len=n))) for n in (16, 1024)}
    return len(sizes) == 1


def _nocache_runner(family, model, params, stream, c, batch) -> Runner:
    label = f"{family} (no cache)"
    if batch * FLAGS.num_heads * c * c > FLAGS.nocache_max_elements:
        note = f"skipped: scores over --nocache_max_elements={FLAGS.nocache_max_elements:.3g}"
        return Runner(label, batch, c, lambda: None, None, 0, note=note)
    context = jnp.asarray(np.broadcast_to(stream[:c], (batch, c)))
    apply = jax.jit(model.apply)

    def call():
        apply(params, context).block_until_ready()  # the whole context again, for one token

    return Runner(label, batch, c, call, None, FLAGS.nocache_calls)


# ---------------------------------------------------------------- PyTorch peers


def torch_runners(family: str, contexts: list[int], batch: int, stream: np.ndarray) -> list[Runner]:
    """PyTorch's stepped nn.RNN / nn.LSTM / nn.GRU, or a KV-cached decoder for the
    Transformer, with seqjax's weights; none for the other families."""
    import torch

    torch.set_grad_enabled(False)
    model = _model(family)
    params = model.init(jax.random.key(0))
    room = _room()
    feed = [torch.from_numpy(stream[i : i + batch].astype(np.int64)) for i in range(room)]
    head_w, head_b = (torch.from_numpy(np.array(params["head"][k])) for k in ("w", "b"))
    if isinstance(model.backbone, Recurrent):
        module = _torch_recurrent(model, params)
        if module is None:
            return []
        label = f"PyTorch nn.{type(module).__name__}"
        eye = torch.eye(FLAGS.vocab_size)

        def run(x, state):
            out, state = module(eye[x].unsqueeze(0), state)
            return out[0] @ head_w + head_b, state

        def prefill(tokens):
            out, state = module(eye[torch.from_numpy(tokens.astype(np.int64))][:, None], None)
            return out[-1] @ head_w + head_b, state

        expand = (lambda s: s.expand(-1, batch, -1).contiguous()) if batch > 1 else (lambda s: s)
    elif isinstance(model.backbone, Transformer):
        decoder = TorchDecoder(model, params)
        label = "PyTorch decoder (KV cache)"
        run = decoder.step

        def expand(x):  # the cache [L, 1, n, s, k] to [L, b, n, s, k]; the position stays
            return x if x.ndim == 0 else x.expand(-1, batch, -1, -1, -1).contiguous()

        def prefill(tokens):
            return None, decoder.cache_from(read_context(model, params, tokens, room), len(tokens) + room)

    else:  # a backbone PyTorch has no counterpart for
        return []

    runners, peer_of = [], _label(model)
    note = _check_peer(model, params, stream, prefill, run)
    for c in contexts:
        _, state = prefill(stream[:c])
        holder = {"state": jax.tree.map(expand, state, is_leaf=torch.is_tensor), "i": 0}

        def call(holder=holder):
            _, holder["state"] = run(feed[holder["i"]], holder["state"])
            holder["i"] += 1

        state_bytes = (
            sum(t.nbytes for t in jax.tree.leaves(holder["state"], is_leaf=torch.is_tensor)) // batch
        )
        runners.append(Runner(label, batch, c, call, state_bytes, FLAGS.steps, note=note, peer_of=peer_of))
    return runners


def _torch_recurrent(model: SequenceModel, params: Any):
    """nn.LSTM / nn.GRU / nn.RNN with the backbone's weights, or None where PyTorch has no
    such layer (the parallel families)."""
    import torch

    cell = model.backbone.cell
    # PyTorch's layer of the same name as the cell (LSTMCell -> nn.LSTM), with the same gates.
    layer = getattr(torch.nn, type(cell).__name__.removesuffix("Cell"), None)
    if layer is None or not hasattr(cell, "num_gates"):
        return None
    nonlinearity = getattr(cell, "nonlinearity", None)
    options = {} if nonlinearity is None else {"nonlinearity": getattr(nonlinearity, "value", nonlinearity)}
    try:
        module = layer(FLAGS.vocab_size, FLAGS.hidden_size, FLAGS.num_layers, bias=cell.bias, **options)
    except (TypeError, ValueError):  # a nonlinearity PyTorch does not have
        return None
    state_dict = torch_weights.params_to_torch(model.backbone, params["backbone"])
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()})
    return module.eval()


def _check_peer(model, params, stream, prefill, run) -> str:
    """The peer's output for one token after a 16-token context, against seqjax's."""
    import torch

    state = read_context(model, params, stream[:16], 1)
    _, want = model.step(params, state, jnp.asarray(stream[16:17]))
    _, peer_state = prefill(stream[:16])
    got, _ = run(torch.from_numpy(stream[16:17].astype(np.int64)), peer_state)
    return f"agrees with seqjax to {float(np.max(np.abs(got.numpy() - np.asarray(want)))):.1e}"


class TorchDecoder:
    """seqjax's Transformer (pre-LN, RoPE, gelu) as a PyTorch KV-cached decoder: fused
    QKV matmul, `scaled_dot_product_attention` over the filled part of the cache."""

    def __init__(self, model: SequenceModel, params: Any):
        import torch

        self.torch = torch
        p = jax.tree.map(lambda x: torch.from_numpy(np.array(x)), params)
        backbone, m = p["backbone"], model.hidden_size
        self.n, self.k = FLAGS.num_heads, m // FLAGS.num_heads
        self.embed, self.ln_f, self.head = backbone["embed"]["tokens"], backbone["ln_f"], p["head"]
        self.blocks = []
        for block in backbone["blocks"]:
            a = block["attn"]
            self.blocks.append(
                {
                    "ln1": block["ln1"],
                    "ln2": block["ln2"],
                    "w_qkv": torch.cat([a[f"w{c}"].reshape(m, -1) for c in "qkv"], 1),
                    "b_qkv": torch.cat([a[f"b{c}"].reshape(-1) for c in "qkv"]),
                    "w_o": a["wo"].reshape(-1, m),
                    "b_o": a["bo"],
                    **block["mlp"],
                }
            )
        half = self.k // 2
        self.freqs = 10000.0 ** (-torch.arange(half, dtype=torch.float32) / half)

    def cache_from(self, cache: Any, size: int) -> tuple:
        """A seqjax `KVCache` as (k, v [L, b, n, s, k], position)."""
        k, v = (self.torch.from_numpy(np.stack(layers)) for layers in cache[:2])
        return k[:, :, :, :size], v[:, :, :, :size], self.torch.tensor(int(cache.position[0]))

    def _norm(self, x, p):
        return self.torch.nn.functional.layer_norm(x, x.shape[-1:], p["scale"], p["bias"], eps=1e-6)

    def _rope(self, x, position):
        half = self.k // 2
        angles = position * self.freqs
        sin, cos = angles.sin(), angles.cos()
        x1, x2 = x[..., :half], x[..., half:]
        return self.torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)

    def step(self, tokens, state):
        functional = self.torch.nn.functional
        keys, values, position = state
        pos = int(position)
        x = self.embed[tokens]  # [b, m]
        b = x.shape[0]
        for i, block in enumerate(self.blocks):
            qkv = self._norm(x, block["ln1"]) @ block["w_qkv"] + block["b_qkv"]
            q, k, v = (t.view(b, self.n, 1, self.k) for t in qkv.split(self.n * self.k, -1))
            q, k = self._rope(q, pos), self._rope(k, pos)
            keys[i, :, :, pos] = k[:, :, 0]
            values[i, :, :, pos] = v[:, :, 0]
            out = functional.scaled_dot_product_attention(
                q, keys[i, :, :, : pos + 1], values[i, :, :, : pos + 1]
            )  # [b, n, 1, k]
            x = x + out.reshape(b, -1) @ block["w_o"] + block["b_o"]
            h = functional.gelu(self._norm(x, block["ln2"]) @ block["w1"] + block["b1"], approximate="tanh")
            x = x + h @ block["w2"] + block["b2"]
        y = self._norm(x, self.ln_f) @ self.head["w"] + self.head["b"]
        return y, (keys, values, position + 1)


# ---------------------------------------------------------------- measuring


def time_in_rounds(runners: list[Runner]) -> None:
    """Calls every runner in rounds, a burst of --burst timed tokens each per round after
    one untimed (its caches warm again, as in a loop that only decodes), so that every
    runner sees the same machine load; --warmup untimed calls first."""
    for r in runners:
        for _ in range(FLAGS.warmup if r.calls else 0):
            r.call()
    while any(len(r.times) < r.calls for r in runners):
        for r in runners:
            if len(r.times) < r.calls:
                r.call()
            for _ in range(min(FLAGS.burst, r.calls - len(r.times))):
                start = time.perf_counter()
                r.call()
                r.times.append(time.perf_counter() - start)


def row(r: Runner) -> Row:
    if not r.times:
        return Row(r.model, r.batch, r.context, None, None, None, r.state_bytes, 0, r.note, r.peer_of)
    median, p90 = float(np.median(r.times)) * 1e3, float(np.percentile(r.times, 90)) * 1e3
    return Row(
        r.model,
        r.batch,
        r.context,
        median,
        p90,
        r.batch / median * 1e3,
        r.state_bytes,
        len(r.times),
        r.note,
        r.peer_of,
    )


def _fmt(value: float | None) -> str:
    return "skip" if value is None else f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("MB", 2**20), ("KB", 2**10)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value} B"


def markdown(rows: list[Row]) -> str:
    contexts = sorted({r.context for r in rows})
    lines = [f"Hardware: {run_config.hardware()}", ""]
    for batch in sorted({r.batch for r in rows}):
        lines += [
            f"Per-token latency, batch {batch}: median ms (p90), tokens/s at the largest timed context",
            "",
        ]
        lines += ["| model | " + " | ".join(f"c={c}" for c in contexts) + " | tokens/s | state / sequence |"]
        lines.append("|---|" + "---:|" * (len(contexts) + 2))
        for model in dict.fromkeys(r.model for r in rows if r.batch == batch):
            cells = {r.context: r for r in rows if r.batch == batch and r.model == model}
            values = [
                f"{_fmt(cells[c].median_ms)} ({_fmt(cells[c].p90_ms)})"
                if c in cells and cells[c].median_ms
                else "skip"
                for c in contexts
            ]
            timed = [cells[c] for c in contexts if c in cells and cells[c].tokens_per_second]
            states = sorted({cells[c].state_bytes for c in contexts if c in cells and cells[c].state_bytes})
            state = (
                "-"
                if not states
                else _bytes(states[0])
                if len(states) == 1
                else f"{_bytes(states[0])} .. {_bytes(states[-1])}"
            )
            rate = f"{timed[-1].tokens_per_second:.3g}" if timed else "-"
            lines.append(f"| {model} | {' | '.join(values)} | {rate} | {state} |")
        lines.append("")
    notes = sorted({(r.model, r.note) for r in rows if r.note and not r.note.startswith("skipped")})
    lines += [f"- {model}: {note}" for model, note in notes]
    lines += ["", "What the numbers say:", ""] + [f"- {s}" for s in findings(rows)]
    return "\n".join(lines) + "\n"


def findings(rows: list[Row]) -> list[str]:
    """Statements computed from the measurements (never written by hand)."""
    out = []
    timed = [r for r in rows if r.median_ms is not None]
    for batch in sorted({r.batch for r in timed}):
        for model in dict.fromkeys(r.model for r in timed if r.batch == batch):
            cells = sorted(
                (r for r in timed if r.batch == batch and r.model == model), key=lambda r: r.context
            )
            if len(cells) < 2:
                continue
            lo, hi = cells[0], cells[-1]
            ratio = hi.median_ms / lo.median_ms
            states = {r.state_bytes for r in cells}
            if len(states) == 1 and None not in states:
                state = f"its state is {_bytes(lo.state_bytes)} per sequence at every context"
            elif None in states:
                state = "it keeps no state"
            else:
                state = (
                    f"its state grows from {_bytes(lo.state_bytes)} to {_bytes(hi.state_bytes)} per sequence"
                )
            out.append(
                f"b={batch}, {model}: a token at c={hi.context} costs {ratio:.2f}x one at c={lo.context} "
                f"({lo.median_ms:.3g} -> {hi.median_ms:.3g} ms); {state}."
            )
    for theirs, ours in dict.fromkeys((r.model, r.peer_of) for r in timed if r.peer_of):
        for batch in sorted({r.batch for r in timed}):
            ms = {(r.model, r.context): r.median_ms for r in timed if r.batch == batch}
            ratios = [ms[theirs, c] / ms[ours, c] for m, c in ms if m == ours and (theirs, c) in ms]
            if ratios:
                out.append(
                    f"b={batch}: seqjax's {ours} takes a token {np.median(ratios):.2f}x as fast as {theirs} "
                    f"(median over contexts; {min(ratios):.2f}x to {max(ratios):.2f}x)."
                )
    skipped = sorted({(r.model, r.batch, r.context) for r in rows if r.median_ms is None})
    if skipped:
        out.append("Skipped (memory): " + ", ".join(f"{m} b={b} c={c}" for m, b, c in skipped) + ".")
    return out


def plot(workdir: pathlib.Path, rows: list[Row]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One colour per seqjax model; a PyTorch peer takes its counterpart's, dashed.
    ours = list(dict.fromkeys(r.model for r in rows if not r.peer_of))
    colours = {m: plt.cm.tab20(i % 20) for i, m in enumerate(ours)}
    peers = {r.model: r.peer_of for r in rows if r.peer_of}

    def draw(ax, model, xs, ys):
        style = dict(color=colours.get(peers.get(model, model)), marker="s" if model in peers else "o")
        ax.loglog(xs, ys, "--" if model in peers else "-", label=model, **style)

    batches = sorted({r.batch for r in rows})
    fig, axes = plt.subplots(1, len(batches) + 1, figsize=(6 * (len(batches) + 1), 4.8))
    for ax, batch in zip(axes, batches, strict=False):
        for model in dict.fromkeys(r.model for r in rows):
            cells = sorted(
                (r for r in rows if r.model == model and r.batch == batch and r.median_ms),
                key=lambda r: r.context,
            )
            if cells:
                draw(ax, model, [r.context for r in cells], [r.median_ms for r in cells])
        ax.set(
            xlabel="context c (tokens read)",
            ylabel="ms per token (median)",
            title=f"decode latency, batch {batch}",
        )
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    for model in dict.fromkeys(r.model for r in rows if r.state_bytes and not r.peer_of):
        cells = sorted(
            (r for r in rows if r.model == model and r.batch == batches[0] and r.state_bytes),
            key=lambda r: r.context,
        )
        draw(axes[-1], model, [r.context for r in cells], [r.state_bytes for r in cells])
    axes[-1].set(xlabel="context c", ylabel="bytes per sequence", title="state memory (PyTorch's: the same)")
    axes[-1].grid(True, which="both", alpha=0.3)
    axes[-1].legend(fontsize=7, ncol=2)
    fig.suptitle(run_config.hardware(), fontsize=9)
    fig.tight_layout()
    fig.savefig(workdir / "streaming.png", dpi=120)
    plt.close(fig)


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv):
    del argv
    workdir = pathlib.Path(FLAGS.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for family in FLAGS.models:
        registry.get(family)
    contexts = sorted(int(v) for v in FLAGS.contexts)
    batches = [int(v) for v in FLAGS.batches]
    if not contexts or min(contexts) < 1 or not batches or min(batches) < 1:
        raise ValueError(
            f"--contexts and --batches must be positive ints; got {FLAGS.contexts}, {FLAGS.batches}"
        )
    settings = {flag.name: flag.value for flag in FLAGS.get_key_flags_for_module(sys.modules[__name__])}
    run_config.write(workdir, "streaming", settings, FLAGS.models)
    with_torch = FLAGS.torch and _torch_available()
    rng = np.random.default_rng(0)
    stream = rng.integers(0, FLAGS.vocab_size, max(contexts) + max(batches) + _room()).astype(np.int32)
    rows: list[Row] = []
    with open(workdir / "results.jsonl", "w") as out:
        for batch in batches:
            runners = []
            for family in FLAGS.models:
                runners += seqjax_runners(family, contexts, batch, stream)
                if with_torch:
                    runners += torch_runners(family, contexts, batch, stream)
                print(f"b={batch}: {family} has read its contexts", flush=True)
            time_in_rounds(runners)
            for r in runners:
                rows.append(row(r))
                out.write(json.dumps(dataclasses.asdict(rows[-1])) + "\n")
                print(
                    f"{r.model:>28} b={batch:<3} c={r.context:<6} {_fmt(rows[-1].median_ms):>8} ms "
                    f"(p90 {_fmt(rows[-1].p90_ms)})  {_bytes(r.state_bytes):>9}/seq {r.note}",
                    flush=True,
                )
            del runners
    text = markdown(rows)
    if not with_torch:
        text += (
            "\nPyTorch peers: not run ("
            + ("--notorch" if not FLAGS.torch else "PyTorch is not installed")
            + ").\n"
        )
    (workdir / "results.md").write_text(text)
    plot(workdir, rows)
    print(text)


if __name__ == "__main__":
    user_modules.run(main)
