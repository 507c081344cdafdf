"""config.json: what a run was, written before it trains, so that it can be rerun.

It holds the experiment's name, its resolved settings and its own flags (e.g. the
text file a language model trained on), the files that define
every family it names outside seqjax (so a rerun registers them again), the
command line, and the versions and backend. `python -m experiments.<name>
--config=<workdir>/config.json` reruns an experiment from it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import platform
import sys
from collections.abc import Iterable
from typing import Any

import jax

from seqjax import host, registry


def _version(package: str) -> str:
    """The installed version, or a note: the experiments also run from a source tree
    on `PYTHONPATH` (as on a machine where nothing can be installed)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed (run from source)"


def environment() -> dict[str, Any]:
    """Versions and hardware."""
    devices = jax.devices()
    return {
        "seqjax": _version("seqjax"),
        "jax": jax.__version__,
        "jaxlib": importlib.metadata.version("jaxlib"),
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": len(devices),
        "device_kind": devices[0].device_kind,
        "processes": jax.process_count(),
        "platform": platform.platform(),
        "malloc": malloc(),
    }


def family_sources(families: Iterable[str]) -> list[str]:
    """The files (or module names) that register these families, seqjax's own left out."""
    sources = []
    for name in families:
        factory = registry.get(name).factory
        module = sys.modules.get(getattr(getattr(factory, "func", factory), "__module__", ""))
        if module is None or module.__name__.split(".")[0] == "seqjax":
            continue
        source = getattr(module, "__file__", None) or module.__name__
        if source not in sources:
            sources.append(source)
    return sources


def cpu_name() -> str:
    """The CPU's model name (Linux), else what `platform` knows."""
    try:
        cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
        return cpuinfo.split("model name")[1].split(":", 1)[1].split("\n")[0].strip()
    except (OSError, IndexError):
        return platform.processor() or platform.machine()


def write(
    workdir: pathlib.Path,
    experiment: str,
    settings: dict[str, Any],
    families: Iterable[str],
    flags: dict[str, Any] | None = None,
) -> None:
    """Writes `workdir/config.json` (process 0 of a multi-process job); `flags` are the
    experiment's own flags, by name."""
    if jax.process_index() != 0:
        return
    config = {
        "experiment": experiment,
        "settings": settings,
        "flags": flags or {},
        "user_modules": family_sources(families),
        "argv": sys.argv,
        "environment": environment(),
    }
    (workdir / "config.json").write_text(json.dumps(config, indent=1) + "\n")


def hardware() -> str:
    """What ran the measurements: the accelerator, else the CPU and its cores."""
    device = jax.devices()[0]
    kind = cpu_name() if device.platform == "cpu" else device.device_kind
    return f"{device.platform}: {kind}, {os.cpu_count()} CPU cores, jax {jax.__version__}, {malloc()}"


def malloc() -> str:
    """The C library allocator's setting in this process, which moves CPU timings."""
    if host.freed_memory_kept():
        return "freed memory kept (seqjax.host)"
    if "GLIBC_TUNABLES" in os.environ:
        return f"GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']}"
    return "default malloc"
