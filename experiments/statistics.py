"""Statistics over seeds: means with 95% intervals, and learning rates chosen on validation.

Every experiment's table reports a group of runs (one model, task setting and
learning rate, several seeds) as the mean over seeds with Student's t interval,
and a learning-rate sweep picks each model's rate on the validation stream only;
the test stream, scored once at the end, is what the table then reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np
from scipy import stats


def interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """`(mean, half_width)` of the t interval for the mean of `values` (seeds as
    independent draws); the half-width is nan for fewer than two values, and 0 when
    they are all equal."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        raise ValueError("interval needs at least one value")
    if x.size < 2:
        return float(x.mean()), math.nan
    spread = x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * spread)


def format_interval(values: Sequence[float], digits: int = 3) -> str:
    """`"0.912 ± 0.034"` (mean ± 95% half-width), or the mean alone for one value."""
    mean, half = interval(values)
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def best_learning_rates(rows: Sequence[dict], key: Callable[[dict], Hashable]) -> dict[Hashable, float]:
    """The learning rate of each group `key(row)` with the highest mean validation
    accuracy over its seeds (ties: the lower mean validation loss, then the lower rate).
    Rows carry "learning_rate", "val_accuracy" and "val_loss"; test figures are not read."""
    scores: dict[Hashable, dict[float, list[dict]]] = {}
    for row in rows:
        scores.setdefault(key(row), {}).setdefault(row["learning_rate"], []).append(row)

    def rank(item):
        lr, runs = item
        loss = np.mean([r["val_loss"] if r["val_loss"] is not None else math.inf for r in runs])
        return (
            -np.mean([r["val_accuracy"] or 0.0 for r in runs]),
            loss if math.isfinite(loss) else math.inf,
            lr,
        )

    return {group: min(by_lr.items(), key=rank)[0] for group, by_lr in scores.items()}
