"""Runs the multi-device and multi-process cases of test_distributed.py in a process
of its own (JAX fixes its device count at start-up; the test process has one).

    python -m tests.distributed_worker <scenario> <out.npz> [process_id num_processes port]

Scenarios:
  devices     (4 devices) trains the runs data-parallel over 4 devices, then with
              the runs split over 4 devices; records the shardings that the
              training step and the evaluation see.
  checkpoint  (4 devices) crashes a run after its step-4 checkpoint and resumes it on
              another mesh (4 -> 1 and 1 -> 4 devices).
  process     (2 devices per process) one of two processes training one model together.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from typing import Any

import jax
import numpy as np

from seqjax.data import tasks
from seqjax.data.datasets import Dataset, Split
from seqjax.models import SequenceModel
from seqjax.training import TrainConfig, distributed, train

TASK = tasks.Copy(memory=3, alphabet=4)
MODEL = SequenceModel("lstm", output_size=TASK.output_size, hidden_size=16, vocab_size=TASK.vocab_size)
CONFIG = TrainConfig(
    length=4,
    steps=6,
    batch_size=8,
    warmup_steps=2,
    log_every=2,
    eval_every=2,
    checkpoint_every=2,
    eval_batches=1,
    stop_accuracy=0.2,  # run 0 reaches it at its first evaluation: every mesh freezes a run
)
SEEDS, LRS = (0, 1, 2, 3), (1e-3, 3e-3, 1e-3, 3e-3)


def _split(n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(n, 5, 2)).astype(np.float32)
    return Split(inputs, (inputs[:, :, 0] > 0).astype(np.int32), rng.integers(1, 6, n).astype(np.int32))


# A dataset (gathered by index on the device) of 21 training sequences of varying lengths.
DATASET = Dataset("toy", _split(21, 0), _split(9, 1), _split(9, 2), output_size=2)
DATASET_MODEL = SequenceModel("gru", output_size=2, hidden_size=8, input_size=2)
DATASET_CONFIG = dataclasses.replace(CONFIG, length=DATASET.steps, batch_size=4)

_seen: list[Any] = []  # shardings of the inputs, one per compiled train step or evaluation


@dataclasses.dataclass(frozen=True)
class Inspected:
    """MODEL, recording the sharding of the inputs that the compiled step sees."""

    model: Any

    def init(self, key):
        return self.model.init(key)

    def apply(self, params, inputs, **kwargs):
        jax.debug.inspect_array_sharding(inputs, callback=_seen.append)
        return self.model.apply(params, inputs, **kwargs)


def _result(prefix: str, state, history) -> dict[str, np.ndarray]:
    leaves = jax.tree.leaves(state.params)
    out = {f"{prefix}/param{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    out[f"{prefix}/loss"] = np.array([line["loss"] for line in history])
    out[f"{prefix}/eval_loss"] = np.array([line.get("eval_loss", np.nan) for line in history])
    return out


def _sharding_info(state, inputs_shape) -> dict[str, Any]:
    leaf = jax.tree.leaves(state.params)[0]
    seen = [_seen.pop() for _ in range(len(_seen))]
    return {
        "state_devices": len(leaf.sharding.device_set),
        "state_shard_shape": list(leaf.sharding.shard_shape(leaf.shape)),
        "state_shape": list(leaf.shape),
        "inputs_shard_shapes": [list(s.shard_shape(inputs_shape)) for s in seen],
        "inputs_shape": list(inputs_shape),
        "inputs_devices": [len(s.device_set) for s in seen],
    }


def devices(workdir: str) -> dict[str, Any]:
    inputs_shape = (len(SEEDS), CONFIG.batch_size, TASK.num_steps(CONFIG.length))
    out: dict[str, Any] = {}
    info = {}
    # Data parallel (every device splits the batch), then runs split over the devices.
    for name, runs in {"data4": 1, "runs4": 4}.items():
        mesh = distributed.make_mesh(runs)
        state, history = train(Inspected(MODEL), TASK, CONFIG, SEEDS, LRS, f"{workdir}/{name}", mesh=mesh)
        out.update(_result(name, state, history))
        info[name] = _sharding_info(state, inputs_shape)
    out["info"] = np.array(json.dumps(info))
    state, history = train(
        DATASET_MODEL, DATASET, DATASET_CONFIG, SEEDS, LRS, f"{workdir}/data", mesh=distributed.make_mesh(1)
    )
    out.update(_result("dataset", state, history))
    return out


class _Crash(Exception):
    pass


def _crash_at(step: int):
    def on_log(s, lines):
        if s == step:
            raise _Crash

    return on_log


def checkpoint(workdir: str) -> dict[str, Any]:
    one = distributed.make_mesh(1, jax.devices()[:1])
    four = distributed.make_mesh(2)  # runs over 2 devices x data over 2
    out: dict[str, Any] = {}
    for name, (first, second) in {"4to1": (four, one), "1to4": (one, four)}.items():
        try:
            train(MODEL, TASK, CONFIG, SEEDS, LRS, f"{workdir}/{name}", mesh=first, on_log=_crash_at(4))
        except _Crash:
            pass
        state, history = train(MODEL, TASK, CONFIG, SEEDS, LRS, f"{workdir}/{name}", mesh=second, resume=True)
        out.update(_result(name, state, history))
        out[f"{name}/devices"] = np.array(len(jax.tree.leaves(state.params)[0].sharding.device_set))
    return out


def process(workdir: str, process_id: int, num_processes: int, port: int) -> dict[str, Any]:
    distributed.initialize(f"localhost:{port}", num_processes, process_id)
    mesh = distributed.make_mesh(1)  # data-parallel over every device of both processes
    state, history = train(MODEL, TASK, CONFIG, SEEDS, LRS, workdir, mesh=mesh)
    out = _result("process", state, history)
    state, history = train(DATASET_MODEL, DATASET, DATASET_CONFIG, SEEDS, LRS, f"{workdir}/data", mesh=mesh)
    out.update(_result("dataset", state, history))
    out["process/devices"] = np.array([jax.device_count(), jax.local_device_count(), jax.process_count()])
    return out


def main(argv: list[str]) -> None:
    scenario, path = argv[1], argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        if scenario == "devices":
            out = devices(tmp)
        elif scenario == "checkpoint":
            out = checkpoint(tmp)
        else:
            process_id, num_processes, port = (int(v) for v in argv[3:6])
            out = process(argv[6], process_id, num_processes, port)
    np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv)
