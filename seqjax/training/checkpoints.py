"""Where a group of runs keeps its state between chunks, and what guards it.

    workdir/checkpoints/<step>/   orbax's atomic checkpoints (written to a temporary
                                  directory, then renamed), the newest two kept
    workdir/metrics.jsonl         one strict-JSON line per run per logged chunk
    workdir/run.json              what the group is (model, task, config, seeds,
                                  learning rates): a resume must match it
    workdir/lock                  the process training here (pid, host), while it runs

A resume restores the newest checkpoint that can be read, falling back past a
damaged one (and deleting it) with a warning, and drops a torn last metrics line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import math
import os
import pathlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
from absl import logging

RUN_FILE, LOCK_FILE, METRICS_FILE = "run.json", "lock", "metrics.jsonl"


class ResumeError(ValueError):
    """A resume that would continue other runs than the command describes."""


class WorkdirInUse(RuntimeError):
    """Another live process trains in this workdir."""


# TrainConfig fields a resume may change: they do not change what a step computes.
_MAY_CHANGE = ("steps", "eval_every", "checkpoint_every", "eval_batches")


def manager(workdir: pathlib.Path, config: Any) -> ocp.CheckpointManager:
    """The checkpoint manager of a group, saving every `config.checkpoint_every` steps."""
    options = ocp.CheckpointManagerOptions(max_to_keep=2, save_interval_steps=config.checkpoint_every or 1)
    return ocp.CheckpointManager(workdir.resolve() / "checkpoints", options=options)


def restore_latest(checkpoints: ocp.CheckpointManager, state: Any) -> tuple[int, Any] | None:
    """`(step, state)` of the newest checkpoint that restores, or None if there is none.

    A checkpoint that fails to restore (truncated data, metadata or manifest) is
    skipped with a warning, and deleted with every newer one once an older one
    restores, so that training can write those steps again.

    Raises:
      ResumeError: there are checkpoints and none of them restores.
    """
    steps = sorted(checkpoints.all_steps(), reverse=True)
    for i, step in enumerate(steps):
        try:
            restored = checkpoints.restore(step, args=ocp.args.StandardRestore(state))
        except Exception as error:  # orbax and tensorstore raise many kinds on damaged files
            logging.warning(
                "checkpoint %d in %s cannot be restored (%s: %s); falling back to the one before",
                step,
                checkpoints.directory,
                type(error).__name__,
                str(error).splitlines()[0][:200] if str(error) else "",
            )
            continue
        for damaged in steps[:i]:
            checkpoints.delete(damaged)
        return step, restored
    if steps:
        raise ResumeError(f"none of the checkpoints {steps} in {checkpoints.directory} can be restored")
    return None


def strict(line: dict) -> dict:
    """`line` with non-finite numbers as None, named in a "nonfinite" entry."""
    bad = sorted(k for k, v in line.items() if isinstance(v, float) and not math.isfinite(v))
    if not bad:
        return line
    return {**{k: None if k in bad else v for k, v in line.items()}, "nonfinite": bad}


def dumps(lines: list[dict]) -> str:
    """Metric lines as strict JSON lines (no NaN or Infinity: see `strict`)."""
    return "".join(json.dumps(strict(line), allow_nan=False) + "\n" for line in lines)


def read_history(path: pathlib.Path, up_to_step: int) -> list[dict]:
    """The metric lines of `path` up to and including `up_to_step` ([] without the file).

    A torn last line (a crash while appending) is dropped with a warning; any other
    unreadable line is an error.
    """
    if not path.exists():
        return []
    texts = path.read_text().splitlines()
    lines = []
    for i, text in enumerate(texts):
        if not text.strip():
            continue
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            if i < len(texts) - 1:
                raise ValueError(f"{path}: line {i + 1} is not JSON: {text[:80]!r}") from None
            logging.warning("dropped a torn last line of %s: %r", path, text[:80])
    return [line for line in lines if line["step"] <= up_to_step]


def describe(value: Any) -> Any:
    """A JSON description of a model, task or config that is the same in every process:
    dataclasses by their fields, functions and classes by their import path, arrays
    by shape, dtype and a digest of their contents."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"type": f"{type(value).__module__}.{type(value).__qualname__}", **fields}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, np.ndarray):  # a dataset's arrays: resuming on other data is refused
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
        return {"shape": list(value.shape), "dtype": value.dtype.name, "sha256": digest}
    if isinstance(value, tuple | list):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if callable(value):
        return (
            f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__qualname__)}"
        )
    return f"{type(value).__module__}.{type(value).__qualname__}"


def run_record(
    model: Any, task: Any, config: Any, seeds: Any, learning_rates: Any, validation: Any = None
) -> dict[str, Any]:
    """What a group of runs is, as `run.json` records it (`validation`, `train`'s, only
    where it is given: older records still describe runs without it)."""
    record = {
        "model": describe(model),
        "task": describe(task),
        "config": describe(config),
        "seeds": [int(s) for s in seeds],
        "learning_rates": [float(lr) for lr in learning_rates],
    }
    if validation is not None:
        record["validation"] = {"task": describe(validation[0]), "length": int(validation[1])}
    return record


def check_resume(workdir: pathlib.Path, record: dict[str, Any], step: int) -> None:
    """Raises a ResumeError, naming what differs, unless resuming `workdir` at checkpoint
    `step` continues the same runs: `record` must equal its run.json but for the
    config fields a resume may change, and `config.steps` must reach `step`."""
    path = workdir / RUN_FILE
    if not path.exists():
        raise ValueError(
            f"{workdir} has checkpoints but no {RUN_FILE} to check them against; not resuming it"
        )
    saved = json.loads(path.read_text())
    keys = ("model", "task", "seeds", "learning_rates", "validation")
    differing = [k for k in keys if saved.get(k) != record.get(k)]
    old_config, new_config = saved.get("config", {}), record["config"]
    differing += [
        f"config.{k}"
        for k in sorted(set(old_config) | set(new_config))
        if k not in _MAY_CHANGE and old_config.get(k) != new_config.get(k)
    ]
    if differing:
        details = "; ".join(_difference(k, saved, record) for k in differing)
        raise ResumeError(f"cannot resume {workdir}: it holds other runs ({details})")
    if record["config"]["steps"] < step:
        raise ResumeError(
            f"cannot resume {workdir} with steps={record['config']['steps']}: "
            f"its checkpoint is at step {step}"
        )


def check_resumable(workdir: pathlib.Path, record: dict[str, Any], config: Any) -> None:
    """`check_resume` against the newest checkpoint in `workdir`, if it has one."""
    if not config.checkpoint_every or not (workdir / "checkpoints").exists():
        return
    checkpoints = manager(workdir, config)
    try:
        step = checkpoints.latest_step()
    finally:
        checkpoints.close()
    if step is not None:
        check_resume(workdir, record, step)


def _difference(key: str, saved: dict, record: dict) -> str:
    """`key`'s value in the saved record and in the new one, for an error message."""

    def get(d):
        for part in key.split("."):
            d = d.get(part) if isinstance(d, dict) else None
        return d

    return f"{key}: {json.dumps(get(saved))[:120]} there, {json.dumps(get(record))[:120]} now"


def write_run_record(workdir: pathlib.Path, record: dict[str, Any]) -> None:
    (workdir / RUN_FILE).write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")


@contextlib.contextmanager
def workdir_lock(workdir: pathlib.Path) -> Iterator[None]:
    """Holds `workdir/lock` (this process's pid and host) while the block runs.

    Raises:
      WorkdirInUse: a live process (on this host) holds the lock, or one on another
        host does (whose liveness cannot be checked: remove the file if it is gone).
    """
    path = workdir / LOCK_FILE
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is not None and _alive(holder):
                raise WorkdirInUse(
                    f"{workdir} is in use by process {holder.get('pid')} on {holder.get('host')} "
                    f"(lock {path}); wait for it, or use another --workdir"
                ) from None
            logging.warning("removed a stale lock of %s: %s", workdir, holder)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        break
    try:
        yield
    finally:
        if _read_lock(path) == mine:
            path.unlink(missing_ok=True)


def _read_lock(path: pathlib.Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell: assume it runs
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
