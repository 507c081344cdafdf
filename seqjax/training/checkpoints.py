"""Where a group of runs keeps its state between chunks: orbax checkpoints and the
metrics file.

    workdir/checkpoints/<step>/   orbax's atomic checkpoints (written to a temporary
                                  directory, then renamed), the newest two kept
    workdir/metrics.jsonl         one JSON line per run per logged chunk
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import orbax.checkpoint as ocp


def manager(workdir: pathlib.Path, config: Any) -> ocp.CheckpointManager:
    """The checkpoint manager of a group, saving every `config.checkpoint_every` steps."""
    options = ocp.CheckpointManagerOptions(max_to_keep=2, save_interval_steps=config.checkpoint_every or 1)
    return ocp.CheckpointManager(workdir.resolve() / "checkpoints", options=options)


def read_history(path: pathlib.Path, up_to_step: int) -> list[dict]:
    """The metric lines of `path` up to and including `up_to_step` ([] without the file)."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["step"] <= up_to_step]
