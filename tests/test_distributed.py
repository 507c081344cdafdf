"""Data-parallel, run-sharded and multi-process training against a single-device run.

The multi-device cases run in subprocesses (`tests/distributed_worker.py`) with
`--xla_force_host_platform_device_count`, since JAX fixes its devices at start-up;
the reference is trained here, in the test process, on its one device.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from seqjax.training import distributed, train
from tests import distributed_worker as worker

TIMEOUT_S = 240


def _run(*args: str, devices: int) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.distributed_worker", *args],
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> None:
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"worker timed out after {TIMEOUT_S}s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]


def _params(results, prefix: str) -> list[np.ndarray]:
    keys = sorted(
        (k for k in results if k.startswith(f"{prefix}/param")), key=lambda k: int(k[len(prefix) + 6 :])
    )
    return [results[k] for k in keys]


def _assert_same_run(results, prefix: str, reference_state, reference_history) -> None:
    expected = [np.asarray(leaf) for leaf in jax.tree.leaves(reference_state.params)]
    got = _params(results, prefix)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(results[f"{prefix}/loss"], [h["loss"] for h in reference_history], rtol=1e-5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The worker's sweep of runs, vmapped here on one device without a mesh."""
    workdir = tmp_path_factory.mktemp("reference")
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 step counts with floats
        return train(worker.MODEL, worker.TASK, worker.CONFIG, worker.SEEDS, worker.LRS, workdir)


@pytest.fixture(scope="module")
def dataset_reference(tmp_path_factory):
    """The worker's runs on its dataset (batches gathered by index), on one device."""
    workdir = tmp_path_factory.mktemp("dataset")
    with jax.numpy_dtype_promotion("standard"):
        return train(
            worker.DATASET_MODEL, worker.DATASET, worker.DATASET_CONFIG, worker.SEEDS, worker.LRS, workdir
        )


def test_data_parallel_and_run_sharded_equal_one_device(tmp_path, reference, dataset_reference):
    proc = _run("devices", str(tmp_path / "out.npz"), devices=4)
    _finish(proc)
    results = np.load(tmp_path / "out.npz")
    info = json.loads(str(results["info"]))
    batch, num_runs = worker.CONFIG.batch_size, len(worker.SEEDS)
    assert [(h["run"], h["step"]) for h in reference[1] if "stopped" in h] == [(0, 2)]  # early stopping

    # Data parallel over 4 devices: the batch axis is split 4 ways, parameters replicated.
    data = info["data4"]
    assert data["inputs_devices"] and all(n == 4 for n in data["inputs_devices"])
    assert data["inputs_shape"] == [num_runs, batch, worker.TASK.num_steps(worker.CONFIG.length)]
    assert all(shard[:2] == [num_runs, batch // 4] for shard in data["inputs_shard_shapes"])
    assert data["state_devices"] == 4 and data["state_shard_shape"] == data["state_shape"]
    _assert_same_run(results, "data4", *reference)

    # The sweep's runs split over 4 devices: one run per device, its whole batch with it.
    runs = info["runs4"]
    assert runs["state_devices"] == 4 and runs["state_shard_shape"][0] == 1 and runs["state_shape"][0] == 4
    assert all(shard[:2] == [1, batch] for shard in runs["inputs_shard_shapes"])
    _assert_same_run(results, "runs4", *reference)
    _assert_same_run(results, "dataset", *dataset_reference)  # a dataset, data-parallel


def test_checkpoint_restores_from_4_devices_on_1_and_back(tmp_path, reference):
    proc = _run("checkpoint", str(tmp_path / "out.npz"), devices=4)
    _finish(proc)
    results = np.load(tmp_path / "out.npz")
    # Each run crashed after its step-4 checkpoint and finished on the other mesh.
    assert int(results["4to1/devices"]) == 1 and int(results["1to4/devices"]) == 4
    _assert_same_run(results, "4to1", *reference)
    _assert_same_run(results, "1to4", *reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_one_model_together(tmp_path, reference, dataset_reference):
    port, workdir = _free_port(), tmp_path / "job"
    procs = [
        _run("process", str(tmp_path / f"out{i}.npz"), str(i), "2", str(port), str(workdir), devices=2)
        for i in range(2)
    ]
    try:
        for proc in procs:
            _finish(proc)
    finally:
        for proc in procs:
            proc.kill()
    results = [np.load(tmp_path / f"out{i}.npz") for i in range(2)]
    for r in results:
        assert list(r["process/devices"]) == [4, 2, 2]  # global devices, local devices, processes
        _assert_same_run(r, "process", *reference)
        _assert_same_run(r, "dataset", *dataset_reference)
    # Process 0 alone wrote the metrics: one line per run per logged step.
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(worker.SEEDS) * worker.CONFIG.steps // worker.CONFIG.log_every
    assert (workdir / "checkpoints").is_dir()


def test_make_mesh_checks_its_arguments():
    mesh = distributed.make_mesh(1)
    assert mesh.shape == {"runs": 1, "data": jax.device_count()}
    with pytest.raises(ValueError, match="runs must be a positive divisor"):
        distributed.make_mesh(jax.device_count() + 1)
