"""Device meshes for training, and joining a multi-process job.

Training places its arrays on a two-axis `jax.sharding.Mesh`:

    runs: the vmapped (seed, learning rate) axis of a group of runs, so that a
          sweep of R runs trains on several devices at once;
    data: the batch axis of every step (data parallelism); parameters are
          replicated along it and XLA reduces their gradients across it.

`make_mesh(runs=1)` puts every device on `data`. With one device nothing
changes. Several processes (hosts) form one job with `initialize`, after which
`jax.devices()` lists every process's devices and the same mesh spans them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

RUNS, DATA = "runs", "data"


def make_mesh(runs: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `[runs, data]` mesh over `devices` (default: every device of the job).

    Args:
      runs: devices along the runs axis; it must divide the number of devices,
        and the rest go to the data axis.
      devices: the devices to use.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not isinstance(runs, int) or runs < 1 or len(devices) % runs:
        raise ValueError(f"runs must be a positive divisor of the {len(devices)} devices; got {runs!r}")
    return Mesh(np.array(devices).reshape(runs, len(devices) // runs), (RUNS, DATA))


def check_divisible(mesh: Mesh, num_runs: int, batch_size: int) -> None:
    """Raises a ValueError unless the runs and the batch split evenly over the mesh."""
    if num_runs % mesh.shape[RUNS]:
        raise ValueError(
            f"the number of runs ({num_runs}) must be a multiple of the mesh's runs axis ({mesh.shape[RUNS]})"
        )
    if batch_size % mesh.shape[DATA]:
        raise ValueError(
            f"batch_size ({batch_size}) must be a multiple of the mesh's data axis ({mesh.shape[DATA]})"
        )


def runs_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays with a leading `[R]` runs axis, split along `runs`, replicated along `data`."""
    return NamedSharding(mesh, PartitionSpec(RUNS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Arrays held whole by every device (readable by every process)."""
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Constrains every leaf `[b, ...]` of `tree` to be split along `data` on its
    first axis (inside a `vmap` over runs, that axis is the one after `[R]`)."""
    return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, PartitionSpec(DATA)))


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins a multi-process job (`jax.distributed.initialize`).

    Arguments left None are detected from the cluster (SLURM, Open MPI, Cloud
    TPU, Kubernetes), as `jax.distributed.initialize` does. On CPU the
    processes' collectives use Gloo.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only read by the CPU backend
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
