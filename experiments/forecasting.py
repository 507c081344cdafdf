"""Multi-step forecasting of real series, against the naive forecasts and ARIMA/ETS.

Two series that ship with statsmodels (`seqjax.data.series`): yearly sunspot
numbers (1700-2008, an 11-year cycle of varying length and height) and weekly
Mauna Loa CO2 (1958-2001, a trend and a yearly cycle), or the user's own columns
of a CSV file. Every family forecasts `--horizon` steps from `--context` steps, two
ways (`--strategies`):

- direct: one readout of all `horizon` values at the context's last step;
- autoregressive: a one-step-ahead model trained with teacher forcing, its
  forecasts fed back (`SequenceModel.forecast`, one compiled `lax.scan`).

Each window is scaled by its own context (`--scaling`; nothing is read from the
held-out parts); the held-out test tail is scored by
rolling the origin over each of its steps: MAE and RMSE in the series' units and
MASE (MAE over that of the in-sample one-step seasonal-naive forecast), against
the naive and seasonal-naive forecasts and, as a practitioner's peers, statsmodels'
ARIMA (orders chosen by AIC on the training part; Fourier terms for the season)
and additive Holt-Winters ETS, each fitted once on the training part and rolled
over the same origins with its parameters fixed.

    python -m experiments.forecasting                                  # sunspots and co2
    python -m experiments.forecasting --series=sunspots --models=lstm,gru,lru,transformer
    python -m experiments.forecasting --csv=load.csv --columns=demand,temperature --horizon=24 \\
        --context=96 --season=24 --test_size=336 --validation_size=336

Needs the `[apps]` extra (statsmodels). Writes to --workdir (runs/forecasting):
one directory per series and strategy (each an experiment's outputs),
summary.json and summary.csv with every run's scores, results.md and
forecasts.png (the test tail and each method's forecasts from every horizon-th
origin).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import warnings
from typing import NamedTuple

import jax
import numpy as np
from absl import flags

from experiments import common, statistics
from seqjax.data import series as series_lib
from seqjax.data.classification import require


class Defaults(NamedTuple):
    """A shipped series' problem and training steps, as measured (see `experiment`)."""

    context: int
    horizon: int
    test_size: int
    validation_size: int
    scaling: str
    transform: str
    steps: int


SHIPPED = {
    "sunspots": Defaults(40, 10, 60, 40, "window", "none", 200),
    "co2": Defaults(104, 52, 260, 260, "window", "none", 1500),
}
flags.DEFINE_list("series", list(SHIPPED), f"Shipped series: {', '.join(SHIPPED)} (ignored with --csv).")
flags.DEFINE_string("csv", None, "A CSV file with a header line: forecast its --columns instead.")
flags.DEFINE_list("columns", [], "The CSV columns to read and forecast (with --csv).")
flags.DEFINE_integer("season", None, "Seasonal period in steps (--csv; default 1: none).")
flags.DEFINE_integer("context", None, "Steps a forecast reads (default: per series; --csv 4 * horizon).")
flags.DEFINE_integer("horizon", None, "Steps forecast (default: per series; --csv 8).")
flags.DEFINE_integer("test_size", None, "Held-out test steps (default: per series; --csv a tenth).")
flags.DEFINE_integer("validation_size", None, "Held-out validation steps (default as --test_size).")
flags.DEFINE_enum(
    "scaling", None, list(series_lib.SCALINGS), "Window scaling (default: window, each context's own)."
)
flags.DEFINE_enum(
    "transform", None, list(series_lib.TRANSFORMS), "Applied before scaling (default: per series; none)."
)
flags.DEFINE_list("strategies", list(series_lib.STRATEGIES), "direct and/or autoregressive.")
flags.DEFINE_boolean("classical", True, "Also fit statsmodels' ARIMA and ETS on each series.")
FLAGS = flags.FLAGS

MODELS = ("lstm", "gru", "transformer")  # the default; any registered family runs


def problem(name: str) -> series_lib.Forecasting:
    """The forecasting problem of a shipped series or of `--csv`, with the flags' sizes."""
    if FLAGS.csv:
        data = series_lib.from_csv(FLAGS.csv, [c.strip() for c in FLAGS.columns], FLAGS.season or 1)
        horizon = FLAGS.horizon or 8
        test = FLAGS.test_size or max(horizon, len(data) // 10)
        sizes = (
            FLAGS.context or 4 * horizon,
            horizon,
            test,
            FLAGS.validation_size or test,
            FLAGS.scaling or "window",
            FLAGS.transform or "none",
        )
    else:
        if name not in SHIPPED:
            raise ValueError(f"--series: unknown series {name!r}; shipped: {', '.join(SHIPPED)}")
        data = getattr(series_lib, name)()
        given = (
            FLAGS.context,
            FLAGS.horizon,
            FLAGS.test_size,
            FLAGS.validation_size,
            FLAGS.scaling,
            FLAGS.transform,
        )
        sizes = tuple(g or d for g, d in zip(given, SHIPPED[name][:6], strict=True))
    return series_lib.Forecasting(data, *sizes)


@functools.cache
def _problem(name: str) -> series_lib.Forecasting:
    return problem(name)


@functools.cache
def _dataset(problem: series_lib.Forecasting, strategy: str):
    """The windows of a problem (built once: `_prepare` and `run` share them)."""
    return problem.dataset(strategy)


def experiment(name: str, strategy: str) -> common.Experiment:
    """One series' experiment with one strategy.

    Defaults, measured on a 2-core CPU: width 32, one layer, batches of 32 at rate
    3e-3 (the LSTM 1e-2, the Transformer 1e-3), three seeds; steps per series
    (`SHIPPED`; --steps sets them all): sunspots' 160 training windows are overfit
    after 200 steps, co2's 1500 windows want 1500. Both series and strategies with
    the peers take about 5 minutes; the figures, and what else was tried, are in
    the README.
    """
    task = _dataset(_problem(name), strategy)
    direct = strategy == "direct"
    return dataclasses.replace(
        EXPERIMENT,
        name=f"forecasting_{name}_{strategy}",
        task=task,
        lengths=(task.steps,),
        per_sequence=direct,
        readout="last" if direct else "steps",
        prepare=None,
        flags=(("series", [name]), ("strategies", [strategy])),
    )


def names() -> list[str]:
    """The series to forecast: the CSV file's (named by its stem), or the shipped ones."""
    return [pathlib.Path(FLAGS.csv).stem] if FLAGS.csv else [n.strip() for n in FLAGS.series]


def steps_of(name: str, settings: common.Settings) -> int:
    """A series' training steps: --steps where given, else its shipped default (a CSV
    file's: the settings')."""
    if FLAGS.csv or FLAGS.steps is not None or name not in SHIPPED:
        return settings.steps
    return SHIPPED[name].steps


def _prepare(template: common.Experiment) -> common.Experiment:
    """The first (series, strategy)'s experiment; every series is loaded and checked
    here, so that bad flags are usage errors before anything compiles."""
    if not FLAGS.csv and FLAGS.columns:
        raise ValueError("--columns reads --csv's columns; give --csv too")
    strategies = [series_lib.check_strategy(s.strip()) for s in FLAGS.strategies]
    if not strategies or not names():
        raise ValueError("--series and --strategies must name at least one each")
    for name in names():
        _problem(name)
    return experiment(names()[0], strategies[0])


EXPERIMENT = common.Experiment(
    name="forecasting",
    task=None,
    lengths=(1,),
    steps=500,
    solved_accuracy=1.0,
    learning_rates=(3e-3,),
    model_learning_rates=("lstm=1e-2", "transformer=1e-3"),
    hidden_size=32,
    prepare=_prepare,
)


def _forecast(problem: series_lib.Forecasting, strategy: str, model, params, origins: np.ndarray):
    """`[n, H, c]` forecasts in the series' units of one run's `params` from `origins`."""
    contexts = problem.contexts(origins)
    if strategy == "direct":
        scaled = model.apply(params, contexts)
    else:
        scaled = model.forecast(params, contexts, problem.horizon)
    return problem.unscale(jax.device_get(scaled), origins)


def _run_params(state, r: int):
    return jax.tree.map(lambda x: x[r], state.params)


def arima(problem: series_lib.Forecasting, origins: np.ndarray) -> np.ndarray:
    """`[n, H, c]`: each channel's ARIMA(p, d, q) forecasts from `origins`, fitted to
    the transformed series (`--transform`) and mapped back.

    Fitted once on the training part (statsmodels' SARIMAX, with a constant): d is
    0 or 1 by the KPSS test (as `auto.arima` chooses it), p in 0..5 and q in 0..2
    by AIC; a season m > 1 enters as regressors, the sines and cosines of
    min(3, (m - 1) // 2) harmonics of period m (a dynamic harmonic regression, which
    suits the long periods, such as 52 weeks, that a seasonal ARIMA fits slowly).
    At each origin the fitted parameters filter the series up to it and forecast.
    """
    sarimax = require("statsmodels.tsa.statespace.sarimax", "the ARIMA baseline")
    stattools = require("statsmodels.tsa.stattools", "the ARIMA baseline")
    m, end, h = problem.series.season, problem.train_end, problem.horizon
    steps = np.arange(len(problem.series) + h)
    harmonics = range(1, min(3, (m - 1) // 2) + 1)  # below m / 2, where the sine is 0
    exog = np.column_stack(
        [f(2 * np.pi * k * steps / m) for k in harmonics for f in (np.sin, np.cos)] or None
    )
    out = np.empty((len(origins), h, problem.channels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter of the grid's poor fits
        for j in range(problem.channels):
            y = problem.values[:, j]
            d = int(stattools.kpss(y[:end], regression="c", nlags="auto")[1] < 0.05)
            fits = [
                sarimax.SARIMAX(
                    y[:end],
                    exog=None if exog is None else exog[:end],
                    order=(p, d, q),
                    trend="c" if d == 0 else "t",
                ).fit(disp=False)
                for p in range(6)
                for q in range(3)
                if p + q
            ]
            best = min(fits, key=lambda f: f.aic)
            for i, o in enumerate(origins):
                x = None if exog is None else exog[:o]
                out[i, :, j] = best.apply(y[:o], exog=x).forecast(
                    h, exog=None if exog is None else exog[o : o + h]
                )
    return problem.inverse(out)


def ets(problem: series_lib.Forecasting, origins: np.ndarray) -> np.ndarray:
    """`[n, H, c]`: each channel's additive Holt-Winters (ETS(A,Ad,A); no season when
    m = 1) forecasts from `origins`: smoothing and initial states fitted once on the
    training part by statsmodels, then run with them fixed up to each origin."""
    holtwinters = require("statsmodels.tsa.holtwinters", "the ETS baseline")
    m, end, h = problem.series.season, problem.train_end, problem.horizon
    seasonal = dict(seasonal="add", seasonal_periods=m) if m > 1 else {}
    out = np.empty((len(origins), h, problem.channels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(problem.channels):
            y = problem.values[:, j]
            fit = holtwinters.ExponentialSmoothing(
                y[:end], trend="add", damped_trend=True, initialization_method="estimated", **seasonal
            ).fit()
            p = fit.params
            known = dict(initial_level=p["initial_level"], initial_trend=p["initial_trend"])
            if m > 1:
                known["initial_seasonal"] = p["initial_seasons"]
            smoothing = {
                k: p[k]
                for k in ("smoothing_level", "smoothing_trend", "smoothing_seasonal", "damping_trend")
                if k in p and not np.isnan(p[k])
            }
            for i, o in enumerate(origins):
                model = holtwinters.ExponentialSmoothing(
                    y[:o], trend="add", damped_trend=True, initialization_method="known", **seasonal, **known
                )
                out[i, :, j] = model.fit(**smoothing, optimized=False).forecast(h)
    return problem.inverse(out)


def _score_runs(name: str, strategy: str, curves: dict, model, state, group_rows: list[dict]) -> None:
    """Adds each run's test-tail scores to its summary row; keeps the first seed's
    forecasts from every horizon-th origin in `curves` for the plot."""
    problem = _problem(name)
    origins = problem.origins("test")
    for r, row in enumerate(group_rows):
        forecasts = _forecast(problem, strategy, model, _run_params(state, r), origins)
        row.update(series=name, strategy=strategy, **problem.scores(forecasts, origins))
        if r == 0:
            curves[f"{row['model']} ({strategy})"] = forecasts[:: problem.horizon]


def baselines(problem: series_lib.Forecasting, origins: np.ndarray, classical: bool) -> dict[str, np.ndarray]:
    """The reference methods' `[n, H, c]` forecasts from `origins`."""
    methods = {"naive": problem.naive(origins)}
    if problem.series.season > 1:
        methods[f"seasonal naive (m={problem.series.season})"] = problem.naive(origins, problem.series.season)
    if classical:
        methods["ARIMA"] = arima(problem, origins)
        methods["ETS"] = ets(problem, origins)
    return methods


def markdown_table(rows: list[dict], reference: dict[str, dict[str, dict[str, float]]]) -> str:
    """Series x method: test MASE, MAE and RMSE, seqjax's as mean ± 95% interval over
    seeds (each model at its rate chosen on validation)."""
    lines = ["| series | method | MASE | MAE | RMSE |", "|---|---|---|---|---|"]
    for name, methods in reference.items():
        chosen = common.selected([r for r in rows if r["series"] == name])
        for method in dict.fromkeys(f"{r['model']} ({r['strategy']})" for r in chosen):
            runs = [r for r in chosen if f"{r['model']} ({r['strategy']})" == method]
            cells = [statistics.format_interval([r[k] for r in runs]) for k in ("mase", "mae", "rmse")]
            lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
        for method, scores in methods.items():
            lines.append(
                f"| {name} | {method} | {scores['mase']:.3f} | {scores['mae']:.3g} | {scores['rmse']:.3g} |"
            )
    lines += [
        "",
        "Rolling-origin forecasts over the test tail; seqjax's rows: mean ± 95% t interval over seeds.",
    ]
    return "\n".join(lines)


def plot(path: pathlib.Path, curves: dict[str, dict[str, np.ndarray]]) -> None:
    """forecasts.png: per series, its test tail and each method's forecasts from every
    horizon-th origin (seqjax's models: their first seed), channel 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(curves), 1, figsize=(9, 3.4 * len(curves)), squeeze=False)
    for ax, (name, methods) in zip(axes[:, 0], curves.items(), strict=True):
        problem = _problem(name)
        origins = problem.origins("test")[:: problem.horizon]
        span = np.arange(origins[0] - problem.context, origins[-1] + problem.horizon)
        time = problem.series.time
        ax.plot(time[span], problem.series.values[span, 0], "k", lw=2, label="observed")
        for i, (method, forecasts) in enumerate(methods.items()):
            for n, o in enumerate(origins):
                steps = np.arange(o, o + problem.horizon)
                ax.plot(time[steps], forecasts[n, :, 0], color=f"C{i}", lw=1, label=None if n else method)
        ax.axvline(time[origins[0]], color="grey", ls=":")
        ax.set_title(
            f"{name}: forecasts of {problem.horizon} steps from every {problem.horizon}th test origin"
        )
        ax.set_ylabel(problem.series.columns[0])
        ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(
    series_names: list[str], strategies: list[str], settings: common.Settings, classical: bool
) -> list[dict]:
    """Trains every model on each series with each strategy, scores the test tail's
    rolling-origin forecasts, and writes the summary, table and plot; returns the rows."""
    workdir = pathlib.Path(settings.workdir)
    rows, reference, curves = [], {}, {}
    for name in series_names:
        problem = _problem(name)
        origins = problem.origins("test")
        methods = baselines(problem, origins, classical)
        reference[name] = {method: problem.scores(f, origins) for method, f in methods.items()}
        curves[name] = {
            method: f[:: problem.horizon] for method, f in methods.items() if "naive" not in method
        }
        for strategy in strategies:
            one = experiment(name, strategy)
            data_settings = dataclasses.replace(
                settings,
                lengths=one.lengths,
                steps=steps_of(name, settings),
                workdir=str(workdir / f"{name}_{strategy}"),
            )
            common.check_settings(one, data_settings)

            scored = functools.partial(_score_runs, name, strategy, curves[name])
            rows += common.run(one, data_settings, on_trained=scored)
            if jax.process_index() == 0:  # after every group: a later failure loses none of these
                common.write_summary(workdir, rows)
                (workdir / "results.md").write_text(markdown_table(rows, reference) + "\n")
    table = markdown_table(rows, reference)
    if jax.process_index() == 0:
        plot(workdir / "forecasts.png", curves)
        print(f"\nforecasting: results in {workdir}\n\n{table}\n")
    return rows


def _sweep(_: common.Experiment, settings: common.Settings) -> list[dict]:
    return run(names(), [s.strip() for s in FLAGS.strategies], settings, FLAGS.classical)


if __name__ == "__main__":
    flags.FLAGS.set_default("models", list(MODELS))
    flags.FLAGS.set_default("batch_size", 32)
    common.main(EXPERIMENT, _sweep)
