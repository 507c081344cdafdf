"""Time series to forecast, windowed into datasets, and the forecasts' scores.

    series = series.sunspots()                      # statsmodels: yearly, 1700-2008
    series = series.co2()                           # statsmodels: weekly Mauna Loa CO2, 1958-2001
    series = series.from_csv("load.csv", ["a", "b"])  # the user's own columns
    problem = Forecasting(series, context=40, horizon=10, test_size=60, validation_size=40)
    data = problem.dataset("direct")                # a `seqjax.data.datasets.Dataset` of windows
    scores = problem.scores(forecasts, problem.origins("test"))

The series is split in time: the training part, then `validation_size` and
`test_size` steps held out. A forecast made at origin o reads the `context`
steps before o (which may reach back into earlier parts: they are the past) and
predicts steps o .. o + horizon - 1; the held-out parts are scored by rolling the
origin over every step at which the whole horizon still lies inside the part.

Each window is scaled with statistics that a forecast can know (`scaling`):
"window" subtracts its context's own mean and divides by its context's deviation
(instance normalisation, as RevIN, Kim et al. 2022: the model sees the shape of
the recent past, not its level or amplitude, which drift: sunspot cycles grew
after 1900 and CO2 rises); "last" shifts it by its last observed value (so that a
trend never takes the inputs out of the range the model was trained on) and
divides it by each channel's deviation over the training part; "standard"
subtracts the training part's mean instead (the level then stays visible to the
model). Forecasts are mapped back with the same statistics.

Two ways to forecast h steps (`dataset(strategy)`):
- "direct": one output of `horizon * c` values per window, read from the context
  (a multi-output readout: targets `[n, horizon * c]`, horizon-major).
- "autoregressive": a one-step-ahead model, trained with teacher forcing on
  windows of `context + horizon - 1` steps (targets: the next step's c values),
  whose predictions are fed back at forecast time
  (`seqjax.models.SequenceModel.forecast`).

Scores (Hyndman & Koehler 2006): MAE and RMSE in the series' units, and MASE, the
MAE over that of the one-step seasonal-naive forecast on the training part (the
naive forecast with `season=1`), averaged over the channels.

`sunspots` and `co2` need statsmodels, of the `[apps]` extra.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
import pathlib

import numpy as np

from seqjax.data.classification import require
from seqjax.data.datasets import Dataset, Split
from seqjax.validation import check_positive_int

STRATEGIES = ("direct", "autoregressive")
PARTS = ("train", "validation", "test")
SCALINGS = ("last", "standard", "window")
TRANSFORMS = ("none", "sqrt", "log")


@dataclasses.dataclass(frozen=True, eq=False)
class Series:
    """A multivariate series.

    Args:
      name: names it in errors, tables and plots.
      values: `[n, c]` float64, n steps of c channels, finite.
      columns: the c channel names.
      season: the seasonal period in steps (1: none), for the seasonal-naive forecast.
      time: `[n]` float64, each step's time (years, say) for plots.
    """

    name: str
    values: np.ndarray
    columns: tuple[str, ...]
    season: int = 1
    time: np.ndarray | None = None

    def __post_init__(self):
        values = np.asarray(self.values, np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape[1] != len(self.columns):
            raise ValueError(f"values must be [n, c={len(self.columns)}]; got shape {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError(f"the {self.name} series must be finite; got NaN or inf")
        check_positive_int(self.season, "season")
        time = np.arange(len(values), dtype=np.float64) if self.time is None else np.asarray(self.time, float)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "time", time)

    def __len__(self) -> int:
        return len(self.values)


def sunspots() -> Series:
    """Wolf's yearly mean sunspot numbers, 1700-2008 (309 years; statsmodels'
    `sunspots`), with the 11-year solar cycle as its season."""
    datasets = require("statsmodels.api", "the sunspots series").datasets
    frame = datasets.sunspots.load_pandas().data
    return Series("sunspots", frame["SUNACTIVITY"].to_numpy(), ("sunspots",), 11, frame["YEAR"].to_numpy())


def co2() -> Series:
    """Weekly atmospheric CO2 at Mauna Loa in ppm, March 1958 to December 2001 (2284
    weeks; statsmodels' `co2`); the 59 missing weeks are interpolated linearly in
    time. Its season is 52 weeks."""
    datasets = require("statsmodels.api", "the co2 series").datasets
    frame = datasets.co2.load_pandas().data["co2"].interpolate(method="time")
    years = frame.index.year + (frame.index.dayofyear - 1) / 365.25
    return Series("co2", frame.to_numpy(), ("co2",), 52, np.asarray(years))


def from_csv(path: str | pathlib.Path, columns: list[str] | tuple[str, ...], season: int = 1) -> Series:
    """The named numeric columns of a CSV file with a header line, one row a step.

    A ValueError names `--csv` or `--columns` and the first offending line: a missing
    file, a missing column, an empty or non-numeric value, too few rows.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"--csv: no file {str(path)!r}")
    if not columns:
        raise ValueError("--columns must name at least one column of the CSV file")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"--csv: {path} is empty")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"--columns: {', '.join(map(repr, missing))} not in {path}'s header {header}")
    picks = [header.index(c) for c in columns]
    values = np.empty((len(rows) - 1, len(columns)))
    for i, row in enumerate(rows[1:]):
        for j, k in enumerate(picks):
            text = row[k].strip() if k < len(row) else ""
            try:
                values[i, j] = float(text)
            except ValueError:
                raise ValueError(
                    f"--csv: {path} line {i + 2}, column {columns[j]!r}: {text!r} is not a number"
                ) from None
            if not math.isfinite(values[i, j]):
                raise ValueError(f"--csv: {path} line {i + 2}, column {columns[j]!r}: {text!r} is not finite")
    return Series(path.stem, values, tuple(columns), season)


@dataclasses.dataclass(frozen=True, eq=False)
class Forecasting:
    """A series split in time and read in windows (see the module docstring).

    Args:
      series: the `Series`.
      context: L, the steps a forecast reads.
      horizon: H, the steps it predicts.
      test_size, validation_size: the held-out tail's steps, each at least H.
      scaling: "window", "last" or "standard" (see the module docstring).
      transform: "none", "sqrt" or "log", applied to the series before the
        scaling (variance-stabilising, as for count series such as sunspots);
        forecasts are mapped back, and scored, in the series' units.

    Hashable by identity, as `Dataset`s are.
    """

    series: Series
    context: int
    horizon: int
    test_size: int
    validation_size: int
    scaling: str = "window"
    transform: str = "none"

    def __post_init__(self):
        if self.scaling not in SCALINGS:
            raise ValueError(f"--scaling must be one of {', '.join(SCALINGS)}; got {self.scaling!r}")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"--transform must be one of {', '.join(TRANSFORMS)}; got {self.transform!r}")
        low = self.series.values.min()
        if (self.transform == "sqrt" and low < 0) or (self.transform == "log" and low <= 0):
            sign = "non-negative" if self.transform == "sqrt" else "positive"
            raise ValueError(
                f"--transform={self.transform} needs {sign} values; the {self.series.name} has {low:g}"
            )
        for name in ("context", "horizon", "test_size", "validation_size"):
            check_positive_int(getattr(self, name), f"--{name}")
        for name in ("test_size", "validation_size"):
            if getattr(self, name) < self.horizon:
                raise ValueError(
                    f"--horizon={self.horizon} is longer than the held-out {name.split('_')[0]} tail of "
                    f"{getattr(self, name)} steps (--{name}); shorten it or hold out more"
                )
        need = self.context + self.horizon + max(self.series.season, 1)
        if self.train_end < need:
            raise ValueError(
                f"the {self.series.name} series' training part has {self.train_end} steps "
                f"(of {len(self.series)}, after holding out {self.validation_size} + {self.test_size}); "
                f"--context + --horizon + its season need {need}: shorten them or hold out less"
            )

    @property
    def train_end(self) -> int:
        return len(self.series) - self.test_size - self.validation_size

    @property
    def channels(self) -> int:
        return self.series.values.shape[1]

    @functools.cached_property
    def values(self) -> np.ndarray:
        """`[n, c]`: the series after `transform`, which the models and peers read."""
        return {"none": lambda y: y, "sqrt": np.sqrt, "log": np.log}[self.transform](self.series.values)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """Transformed values back in the series' units (a negative square root is 0)."""
        return {"none": lambda y: y, "sqrt": lambda y: np.maximum(y, 0.0) ** 2, "log": np.exp}[
            self.transform
        ](values)

    @functools.cached_property
    def scale(self) -> np.ndarray:
        """`[c]`: each channel's deviation over the training part (1 where constant)."""
        std = self.values[: self.train_end].std(axis=0)
        return np.where(std > 0, std, 1.0)

    def origins(self, part: str) -> np.ndarray:
        """`[n]` int: the origins whose whole horizon lies in `part` ("train": every
        one with a full context before it)."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {', '.join(PARTS)}; got {part!r}")
        test = len(self.series) - self.test_size
        bounds = [self.context, self.train_end, test, len(self.series)]
        index = PARTS.index(part)
        return np.arange(bounds[index], bounds[index + 1] - self.horizon + 1)

    def _location_scale(self, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`([n, 1, c], [n, 1, c] or [c])`: what each window is shifted by and divided by."""
        if self.scaling == "window":
            context = self.values[origins[:, None] + np.arange(-self.context, 0)]
            spread = context.std(axis=1, keepdims=True)
            return context.mean(axis=1, keepdims=True), np.maximum(spread, 1e-3 * self.scale)
        if self.scaling == "last":
            return self.values[origins - 1][:, None], self.scale
        mean = self.values[: self.train_end].mean(axis=0)
        return np.broadcast_to(mean, (len(origins), 1, self.channels)), self.scale

    def _scaled(self, origins: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """`[n, len(offsets), c]` float32: the series at origin + offset, shifted and
        scaled."""
        location, scale = self._location_scale(origins)
        return ((self.values[origins[:, None] + offsets] - location) / scale).astype(np.float32)

    def contexts(self, origins: np.ndarray) -> np.ndarray:
        """`[n, L, c]` float32: the scaled contexts of `origins`, the models' inputs."""
        return self._scaled(origins, np.arange(-self.context, 0))

    def unscale(self, forecasts: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """`[n, H, c]` in the series' units from scaled forecasts `[n, H, c]` (or the
        direct readout's `[n, H * c]`)."""
        forecasts = np.asarray(forecasts, np.float64).reshape(len(origins), self.horizon, self.channels)
        location, scale = self._location_scale(origins)
        return self.inverse(forecasts * scale + location)

    def dataset(self, strategy: str = "direct") -> Dataset:
        """The windows of every part as a `Dataset`: float32 inputs `[n, L, c]` and
        targets `[n, H * c]` ("direct"), or inputs `[n, L + H - 1, c]` and targets
        the next steps `[n, L + H - 1]` (`[n, L + H - 1, c]` for c > 1)."""
        strategy = check_strategy(strategy)
        c, h = self.channels, self.horizon

        def split(part: str) -> Split:
            origins = self.origins(part)
            if strategy == "direct":
                targets = self._scaled(origins, np.arange(h)).reshape(len(origins), h * c)
                return Split(self.contexts(origins), targets)
            steps = self._scaled(origins, np.arange(-self.context, h))
            targets = steps[:, 1:] if c > 1 else steps[:, 1:, 0]
            return Split(steps[:, :-1], targets)

        size = h * c if strategy == "direct" else c
        name = f"{self.series.name}_{strategy}"
        return Dataset(name, *(split(p) for p in PARTS), output_size=size, loss="mse")

    def truth(self, origins: np.ndarray) -> np.ndarray:
        """`[n, H, c]`: the observed values that forecasts from `origins` predict."""
        return self.series.values[origins[:, None] + np.arange(self.horizon)]

    def naive(self, origins: np.ndarray, season: int = 1) -> np.ndarray:
        """`[n, H, c]`: the (seasonal) naive forecast, the last observed value of the
        same phase of the season: y[o + k - season * (k // season + 1)] at step k."""
        k = np.arange(self.horizon)
        return self.series.values[origins[:, None] + k - season * (k // season + 1)]

    @functools.cached_property
    def mase_scale(self) -> np.ndarray:
        """`[c]`: the one-step seasonal-naive forecast's MAE over the training part."""
        y, m = self.series.values[: self.train_end], self.series.season
        scale = np.abs(y[m:] - y[:-m]).mean(axis=0)
        return np.where(scale > 0, scale, np.nan)  # a constant training part has no MASE

    def scores(self, forecasts: np.ndarray, origins: np.ndarray) -> dict[str, float]:
        """MAE, RMSE (the series' units, pooled over origins, steps and channels) and
        MASE (each channel's MAE over its `mase_scale`, averaged) of forecasts
        `[n, H, c]` made at `origins` `[n]`."""
        error = np.asarray(forecasts, np.float64) - self.truth(origins)
        return {
            "mae": float(np.abs(error).mean()),
            "rmse": float(np.sqrt((error**2).mean())),
            "mase": float((np.abs(error).mean(axis=(0, 1)) / self.mase_scale).mean()),
        }


def check_strategy(strategy: str) -> str:
    """`strategy` if it is one of `STRATEGIES`, else a ValueError naming `--strategies`."""
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategies must be among {', '.join(STRATEGIES)}; got {strategy!r}")
    return strategy
