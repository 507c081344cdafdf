"""Smoke tests: each experiment runs end to end on a tiny sweep and writes its outputs."""

import csv
import dataclasses
import importlib
import json
import pathlib
import platform
import subprocess
import sys
import textwrap

import jax
import pytest
from absl import app, flags
from absl.testing import flagsaver

from experiments import common, statistics, user_modules
from seqjax import registry
from seqjax.models import transformer
from seqjax.recurrences import linear
from seqjax.training import Optimizer

TINY = dict(seeds=(0, 1), learning_rates=(1e-2,), steps=4, batch_size=4, hidden_size=8, num_heads=2)
TINY |= dict(log_every=2, eval_every=2, checkpoint_every=4)
# One model per experiment keeps the compile time down; every model appears in some
# experiment, and the slow test below runs all four on one task.
CASES = [
    ("copy_task", ("rnn",), (3,), ()),
    ("adding", ("lstm",), (6,), ()),
    ("selective_copy", ("mingru",), (6,), ()),
    ("associative_recall", ("lru",), (16,), ()),
    ("flip_flop", ("lstm",), (8,), (12,)),
]
COLUMNS = [
    "model",
    "length",
    "seed",
    "learning_rate",
    "steps",
    "test_loss",
    "test_accuracy",
    "val_loss",
    "val_accuracy",
]
COLUMNS += ["baseline_loss", "solved", "stopped_at", "stop_reason", "params", "seconds"]
USER_CELLS = pathlib.Path(__file__).with_name("user_cells.py")
TIMING = ("seconds", "tokens_per_second")


@pytest.fixture(scope="module")
def indrnn():
    """The user's cell family of tests/user_cells.py, registered as "indrnn"."""
    return user_modules.import_user_module(str(USER_CELLS)).IndRNN


@pytest.fixture(autouse=True)
def standard_promotion():
    with jax.numpy_dtype_promotion("standard"):
        yield


@pytest.mark.parametrize(
    ("name", "models", "lengths", "eval_lengths"),
    [
        *CASES,
        pytest.param("copy_task", ("rnn", "lstm", "gru", "transformer"), (3, 5), (), marks=pytest.mark.slow),
    ],
    ids=[c[0] for c in CASES] + ["copy_task_all_models"],
)
def test_experiment_runs_and_writes_outputs(name, models, lengths, eval_lengths, tmp_path, capsys):
    experiment = importlib.import_module(f"experiments.{name}").EXPERIMENT
    settings = common.Settings(
        models=models, lengths=lengths, eval_lengths=eval_lengths, workdir=str(tmp_path), **TINY
    )
    rows = common.run(experiment, settings)
    assert len(rows) == len(models) * len(lengths) * 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads(json.dumps(rows))
    with (tmp_path / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and set(COLUMNS) <= set(table[0])
    for row in rows:
        assert row["baseline_loss"] == pytest.approx(experiment.task.baseline(row["length"]).loss)
        assert row["params"] > 0 and row["steps"] == 4
        for n in eval_lengths:
            assert 0.0 <= row[f"accuracy_at_{n}"] <= 1.0
        for variant, _ in experiment.variants:
            assert 0.0 <= row[f"accuracy_{variant}"] <= 1.0
    printed = capsys.readouterr().out
    assert "| model | length |" in printed and all(f"| {m} |" in printed for m in models)
    for image in ("learning_curves.png", "accuracy_vs_length.png"):
        assert (tmp_path / image).read_bytes()[:4] == b"\x89PNG"
    for model in models:
        assert (tmp_path / f"{model}_len{lengths[0]}" / "metrics.jsonl").exists()


def test_chomsky_experiment_scores_longer_inputs_and_writes_the_table(tmp_path, capsys):
    from experiments import chomsky

    settings = common.Settings(
        models=("transformer",), lengths=(4,), eval_lengths=(7,), workdir=str(tmp_path), **TINY
    )
    rows = chomsky.run(["parity_check", "modular_arithmetic_brackets"], settings)
    names = ["parity_check", "modular_arithmetic_brackets"]
    assert [(r["task"], r["seed"]) for r in rows] == [(n, s) for n in names for s in (0, 1)]
    assert all(0.0 <= r["accuracy_at_7"] <= 1.0 for r in rows)
    # Validation (early stopping, the rate) scored the longer inputs, not the training ones.
    validation = json.loads((tmp_path / "parity_check" / "transformer_len4" / "run.json").read_text())
    assert validation["validation"]["length"] == 7 and validation["validation"]["task"]["min_length"] == 5
    table = (tmp_path / "results.md").read_text()
    assert "| parity_check | R | 0.500 |" in table and "| 1.000 | 1.000 | 0.520 |" in table
    assert "| modular_arithmetic_brackets | DCF | 0.200 |" in table and "0.325†" in table
    assert (tmp_path / "chomsky.png").read_bytes()[:4] == b"\x89PNG"
    assert (
        tmp_path / "parity_check" / "summary.json"
    ).exists() and "chomsky: results in" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--tasks: no task parity; the tasks are all, or even_pairs"):
        chomsky.task_names(["parity"])
    assert chomsky.task_names(["all"]) == list(chomsky.chomsky.CHOMSKY)
    with pytest.raises(
        ValueError, match=r"--eval_lengths .*the parity_check task must be an int >= 5; got 3"
    ):
        chomsky.run(["parity_check"], dataclasses.replace(settings, eval_lengths=(3,)))


def test_zoology_grid_over_widths(tmp_path, capsys, monkeypatch):
    import matplotlib.axes

    from experiments import zoology

    settings = common.Settings(models=("gru",), lengths=(32,), workdir=str(tmp_path), **TINY)
    settings = dataclasses.replace(
        settings, model_learning_rates=("gru=1e-2/3e-3",), task_options=("vocab_size=32",)
    )
    lines = []
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", lambda ax, y, **kw: lines.append(y))
    rows = zoology.run(zoology.EXPERIMENT, settings, (4, 8))
    # The grid's plot, drawn last, has the trained task's memoryless baseline: 16 values of
    # 32 tokens, not the default task's 8 of 16 (the per-width curves draw theirs first).
    assert lines[-1] == 1 / 16
    # Both rates of --model_learning_rates trained; the grid keeps the one chosen on validation.
    trained = json.loads((tmp_path / "d4" / "summary.json").read_text())
    assert sorted((r["seed"], r["learning_rate"]) for r in trained) == [
        (0, 3e-3),
        (0, 1e-2),
        (1, 3e-3),
        (1, 1e-2),
    ]
    assert [(r["width"], r["hidden_size"], r["length"]) for r in rows] == [(4, 4, 32)] * 2 + [(8, 8, 32)] * 2
    table = (tmp_path / "results.md").read_text()
    assert "| model | t=32 (2 pairs), d=4 | t=32 (2 pairs), d=8 |" in table
    assert (tmp_path / "zoology.png").read_bytes()[:4] == b"\x89PNG" and (
        tmp_path / "d8" / "summary.json"
    ).exists()


def test_intervals_against_the_t_table():
    # Student's t: t_{0.975, 2} = 4.303 and t_{0.975, 9} = 2.262 (printed tables).
    mean, half = statistics.interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.3027 / 3**0.5, rel=1e-4)
    values = [0.5, 0.7, 0.6, 0.9, 0.4, 0.8, 0.6, 0.7, 0.5, 0.3]
    sd = (sum((v - 0.6) ** 2 for v in values) / 9) ** 0.5
    assert statistics.interval(values)[1] == pytest.approx(2.2622 * sd / 10**0.5, rel=1e-4)
    assert statistics.interval([0.25])[0] == 0.25 and statistics.format_interval([0.25]) == "0.250"
    assert statistics.format_interval([1.0, 1.0, 1.0]) == "1.000 ± 0.000"


def test_the_table_reports_test_figures_at_the_rate_chosen_on_validation():
    def row(lr, seed, val, test):
        return dict(
            model="lstm", length=5, hidden_size=8, learning_rate=lr, seed=seed, val_accuracy=val,
            val_loss=1 - val, test_accuracy=test, test_loss=1 - test, baseline_accuracy=0.1, solved=False,
            steps_to_solve=None, stopped_at=None, params=1, seconds=1.0,
        )  # fmt: skip

    # lr 0.1 is better on validation and worse on test: the table must show lr 0.1.
    rows = [row(0.1, s, 0.8 + 0.01 * s, 0.3) for s in range(3)] + [row(0.01, s, 0.5, 0.9) for s in range(3)]
    table = common.markdown_table(rows)
    assert "| lstm | 5 | 0.1 | 0.300 ± 0.000 |" in table and "| lstm | 5 | 0.01 |" not in table
    assert "| model | length | lr 0.01 | lr 0.1 |" in table and "| lstm | 5 | 0.500 | 0.810 |" in table


def test_matched_parameter_counts(indrnn):
    experiment = importlib.import_module("experiments.copy_task").EXPERIMENT
    settings = common.Settings(models=("lstm",), lengths=(5,), **{**TINY, "hidden_size": 32})
    target = common._num_params(common.matched_model(experiment, settings, "lstm"))
    for spec in ("rnn", "gru", "transformer", "transformer:positional=sinusoidal", "indrnn"):
        matched = common.matched_model(experiment, settings, spec)
        assert abs(common._num_params(matched) - target) / target < 0.1, spec
    # Only widths the family accepts: 2 heads of an even (rotary) size divide the Transformer's.
    assert common.matched_model(experiment, settings, "transformer").hidden_size % 4 == 0


def test_model_specs_and_shared_options(indrnn):
    settings = common.Settings(models=("lstm",), lengths=(5,), **{**TINY, "positional": "learned"})
    assert common.model_options(settings, "transformer:num_heads=4") == (
        "transformer",
        {"num_heads": 4, "positional": "learned"},
    )
    assert common.model_options(settings, "lstm:forget_bias=None") == ("lstm", {"forget_bias": None})
    assert common.model_options(settings, "indrnn") == ("indrnn", {})  # names neither shared option
    assert common.parse_model("rnn:nonlinearity=relu:bias=False") == (
        "rnn",
        {"nonlinearity": "relu", "bias": False},
    )
    assert common.label("rnn:nonlinearity=relu") == "rnn_nonlinearity=relu"


def test_a_user_family_trains_from_the_command_line_and_reruns_from_its_config(tmp_path, indrnn):
    """`--user_module` is imported before the flags are read, so `--models` knows its family;
    the run's config.json reruns the same sweep (here in this process) to the same summary."""
    first, again = tmp_path / "first", tmp_path / "again"
    args = ["--models=indrnn", "--lengths=3", "--seeds=0,1", "--steps=4", "--batch_size=4", "--hidden_size=8"]
    args += ["--log_every=2", "--eval_every=2", "--checkpoint_every=0", "--optimizer=sgd", "--clip_norm=0.5"]
    args += ["--warmup_steps=1", "--tbptt=5", f"--user_module={USER_CELLS}", f"--workdir={first}"]
    args += ["--task_options=memory=2,alphabet=3", "--patience=1", "--learning_rates=1e-2"]
    args += ["--keep_freed_memory"] * (platform.libc_ver()[0] == "glibc")
    out = subprocess.run(
        [sys.executable, "-m", "experiments.copy_task", *args], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((first / "summary.json").read_text())
    assert [row["model"] for row in summary] == ["indrnn", "indrnn"]
    assert "| indrnn | 3 |" in out.stdout
    config = json.loads((first / "config.json").read_text())
    assert config["user_modules"] == [str(USER_CELLS.resolve())]
    assert config["environment"]["backend"] == jax.default_backend() and config["environment"]["jax"]
    if platform.libc_ver()[0] == "glibc":
        assert config["environment"]["malloc"] == "freed memory kept (seqjax.host)"

    experiment = importlib.import_module("experiments.copy_task").EXPERIMENT
    with flagsaver.as_parsed(config=str(first / "config.json"), workdir=str(again)):
        common.apply_config(flags.FLAGS.config, experiment.name)
        settings = common.settings_from_flags(experiment)
    assert (settings.models, settings.seeds, settings.workdir) == (("indrnn",), (0, 1), str(again))
    assert settings.task_options == ("memory=2", "alphabet=3") and settings.patience == 1
    train_config = common._train_config(settings, 3, experiment.solved_accuracy)
    assert (train_config.optimizer, train_config.clip_norm, train_config.warmup_steps) == (
        Optimizer.SGD,
        0.5,
        1,
    )
    rerun = json.loads(json.dumps(common.run(experiment, settings)))
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in rerun] == [
        {k: v for k, v in r.items() if k not in TIMING} for r in summary
    ]
    with flagsaver.as_parsed(config=str(first / "config.json")):
        with pytest.raises(app.UsageError, match="a config of 'copy_task', not of 'adding'"):
            common.apply_config(flags.FLAGS.config, "adding")


def test_gradient_flow_experiment(tmp_path, capsys, indrnn):
    from experiments import gradient_flow

    flags.FLAGS(["prog"])
    small = dict(length=6, hidden_size=8, batch_size=2, clip_steps=10)
    small["inits"] = ["orthogonal", "scaled"]
    models = ["rnn", "indrnn", "transformer"]
    with flagsaver.as_parsed(models=",".join(models)), flagsaver.flagsaver(**small, workdir=str(tmp_path)):
        gradient_flow.main(["prog"])
    rows = json.loads((tmp_path / "profiles.json").read_text())
    measured = {(r["model"], r["init"]) for r in rows}
    assert measured >= {
        ("rnn", "scaled"),
        ("indrnn", "scaled"),
        ("transformer", "scaled"),
    }
    # Families without a recurrent_init option have no orthogonal row.
    assert ("rnn", "orthogonal") in measured and ("indrnn", "orthogonal") not in measured
    assert ("transformer", "orthogonal") not in measured
    assert all(len(r["profile"]) == 6 for r in rows)
    assert set(json.loads((tmp_path / "clipping.json").read_text())) == {
        "no clipping",
        "clip_by_global_norm(1.0)",
    }
    assert "| indrnn | scaled |" in capsys.readouterr().out
    for image in ("gradient_flow.png", "clipping.png"):
        assert (tmp_path / image).read_bytes()[:4] == b"\x89PNG"


def test_throughput_benchmark_runs_and_reports(tmp_path):
    """A tiny sweep through the worker processes: every job reports, tables are written."""
    args = [
        "--configs=S=2x5x3x4",
        "--cells=gru,indrnn",
        f"--user_module={USER_CELLS}",
        "--stacks=1,2bi",
        "--modes=train,forward",
        "--systems=seqjax,flax_linen_GRUCell",
        "--malloc=default",
        "--repeats=2",
        "--scale_lengths=6",
        "--scale_batches=",
        "--scale_systems=seqjax",
        "--scale_cell=gru",
        "--transformer_configs=TS=2x6x4x1",
        "--transformer_heads=2",
        "--transformer_mlp=8",
        f"--workdir={tmp_path}",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "experiments.throughput", *args], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    timed = [r for r in rows if "median_ms" in r]
    # gru: 2 systems x 2 stacks x 2 modes; indrnn: seqjax's x 2 stacks x 2 modes; one scaling job;
    # the Transformer: seqjax's x 2 modes.
    assert len(timed) == 15
    assert all(r["median_ms"] > 0 for r in timed)
    assert all((r["gflops"] is None) == (r["cell"] == "indrnn") for r in timed)  # indrnn has no dense gates
    # The path column says which attention ran: the C++ kernel where it builds, else (144
    # scores: too few for the tiles) jax.nn's.
    q = jax.ShapeDtypeStruct((2, 6, 2, 2), "float32")
    path = "flash_cpu" if transformer.kernel_unavailable_reason(q, q, q) is None else "dot_product_attention"
    assert {r["path"] for r in timed if r["cell"] == "transformer"} == {path}
    assert {r["system"] for r in timed} == {"seqjax", "flax_linen_GRUCell"}
    report = (tmp_path / "results.md").read_text()
    assert "| gru | seqjax |" in report and "| indrnn | seqjax |" in report
    assert f"| transformer | seqjax | {path} |" in report
    assert "layers 2bi, train" in report and "Scaling" in report


def test_parallelism_benchmark_runs_and_reports(tmp_path):
    """A tiny sweep: every model and method is timed or listed as skipped, tables and plot written."""
    args = [
        "--models=gru,mingru,mamba,transformer",
        "--methods=parallel,auto",
        "--lengths=4,16",
        "--batches=2",
        "--sweep_batch=1",
        "--sweep_length=4",
        "--hidden_size=32",
        "--input_size=3",
        "--repeats=1",
        "--headline=6x2x4",
        # Mamba's parallel train step plans ~0.59 MB at t=16, b=1 ([t, b, E, N] arrays); its
        # fused loop 0.07, and every other step here under 0.3.
        "--max_memory_mb=0.4",
        f"--workdir={tmp_path}",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "experiments.parallelism", *args], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    # (gru, transformer: one path; mingru, mamba: 2 methods) x 3 configurations x 2 modes
    assert len(rows) == 6 * 3 * 2
    skipped = {(r["model"], r["method"], r["length"]) for r in rows if r["ms"] is None}
    # Skipped per method, on the compiled step's plan, which each skipped row reports.
    assert ("mamba", "parallel", 16) in skipped <= {("mamba", "parallel", 16), ("mamba", "auto", 16)}
    if linear.fused_unavailable_reason() is None:  # auto is the fused loop: no [t, b, E, N] array
        assert ("mamba", "auto", 16) not in skipped
    assert all(r["memory_mb"] > 0.4 for r in rows if r["ms"] is None)
    assert all(r["ms"] > 0 and r["memory_mb"] > 0 for r in rows if r["ms"] is not None)
    # One parameter budget: every width is matched to the GRU's count.
    params = {r["model"]: r["params"] for r in rows}
    assert max(params.values()) / min(params.values()) < 1.5
    report = (tmp_path / "results.md").read_text()
    assert "| minGRU auto |" in report and "What the numbers say" in report and "Skipped (memory)" in report
    assert (tmp_path / "parallelism.png").read_bytes()[:4] == b"\x89PNG"


def test_remat_benchmark_reports_less_memory_than_the_scan_it_chunks(tmp_path):
    args = ["--models=gru,lstm:proj_size=4", "--length=512", "--batch_size=2", "--input_size=3"]
    args += ["--hidden_size=8", "--chunks=sqrt,64", "--repeats=1", f"--workdir={tmp_path}"]
    out = subprocess.run(
        [sys.executable, "-m", "experiments.remat", *args], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {(r["model"], r["config"]): r for r in map(json.loads, (tmp_path / "results.jsonl").open())}
    assert len(rows) == 2 * 4
    for model in ("gru", "lstm:proj_size=4"):
        assert rows[model, "remat=sqrt"]["temp_mb"] < rows[model, "autodiff"]["temp_mb"] / 2
        assert rows[model, "remat=sqrt"]["path"] == "plain"
    assert "| lstm:proj_size=4 | remat=64 | plain |" in (tmp_path / "results.md").read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "experiments.remat", "--models=mingru", f"--workdir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode != 0 and "--models=mingru: remat chunks a scan of steps" in bad.stderr


def test_streaming_benchmark_runs_and_reports(tmp_path):
    """A tiny decode benchmark: fixed-size recurrent state, a KV cache that grows as its formula."""
    args = [
        "--models=gru,transformer",
        "--contexts=8,24",
        "--batches=1,2",
        "--hidden_size=8",
        "--num_layers=1",
        "--num_heads=2",
        "--vocab_size=5",
        "--steps=2",
        "--warmup=1",
        "--burst=2",
        "--prefill_chunk=16",  # the 24-token context is read in two chunks
        "--nocache_max_elements=2000",  # b*heads*c^2: no-cache Transformer skipped at b=2, c=24 only
        "--notorch",
        f"--workdir={tmp_path}",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "experiments.streaming", *args], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    by = {(r["model"], r["batch"], r["context"]): r for r in rows}
    assert len(rows) == 3 * 2 * 2  # gru, transformer with and without its cache
    assert all(r["median_ms"] > 0 and r["calls"] == 2 for r in rows if r["model"] != "transformer (no cache)")
    assert by["transformer (no cache)", 2, 24]["median_ms"] is None
    assert by["transformer (no cache)", 1, 24]["median_ms"] > 0
    for batch, context in [(1, 8), (2, 24)]:
        assert by["gru", batch, context]["state_bytes"] == 8 * 4  # h floats per sequence, at any context
        # Keys and values of every position the cache holds: the context and the decoded tokens
        # (warm-up 1, 2 timed, 1 untimed per round of 2).
        assert by["transformer (KV cache)", batch, context]["state_bytes"] == 2 * (context + 4) * 8 * 4 + 4
    report = (tmp_path / "results.md").read_text()
    assert "What the numbers say" in report and "| gru |" in report and "PyTorch peers: not run" in report
    assert (tmp_path / "streaming.png").read_bytes()[:4] == b"\x89PNG"


def test_zoology_full_is_the_papers_grid_where_flags_do_not_say_otherwise(monkeypatch):
    from experiments import zoology

    flags.FLAGS(["prog"])
    seen = {}
    monkeypatch.setattr(zoology, "run", lambda e, s, w: seen.update(experiment=e, settings=s, widths=w))
    with flagsaver.as_parsed(full="true", steps="100"):
        zoology._sweep(zoology.EXPERIMENT, common.settings_from_flags(zoology.EXPERIMENT))
    settings = seen["settings"]
    assert seen["widths"] == (64, 128, 256, 512) and settings.lengths == (64, 128, 256)
    assert settings.steps == 100 and len(settings.learning_rates) == 4 and settings.learning_rates[0] == 1e-4
    assert seen["experiment"].task.vocab_size == 8192 and set(settings.models) == set(registry.names())
    # Every family sweeps the four rates: the default's per-model rate does not apply.
    assert common.model_learning_rates(settings) == {}


def test_text_generation_on_a_users_file_reports_bits_per_character_and_samples(tmp_path, capsys):
    from experiments import text_generation

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(pathlib.Path(textwrap.__file__).read_text()[:6000])
    flags.FLAGS(["prog"])
    with flagsaver.as_parsed(text_file=str(corpus), lengths="16", batch_size="4"):
        experiment = text_generation._prepare(text_generation.EXPERIMENT)
    settings = common.Settings(
        models=("gru", "transformer"), lengths=(16,), workdir=str(tmp_path / "run"), **TINY
    )
    settings = dataclasses.replace(settings, match_params=True, match_reference="gru")
    rows, samples = text_generation.run(experiment, settings, [0.0, 1.0], 12)
    assert {r["model"] for r in rows} == {"gru", "transformer"} and len(rows) == 4
    table = (tmp_path / "run" / "results.md").read_text()
    assert "| model | params | lr | test bits/char |" in table and "bigram entropy" in table
    assert samples.count("--- temperature") == 2 and (tmp_path / "run" / "samples.txt").exists()
    continuation = samples.split("--- temperature 0 ---\n")[1].split("\n--- temperature")[0]
    assert len(continuation) == 12
    # config.json records the text file: --config reruns on the same text.
    config = tmp_path / "run" / "config.json"
    assert json.loads(config.read_text())["flags"]["text_file"] == str(corpus)
    with flagsaver.as_parsed():
        common.apply_config(str(config), "text_generation")
        assert flags.FLAGS.text_file == str(corpus) and flags.FLAGS["text_file"].present
    cases = [
        (dict(text_file=str(tmp_path / "none.txt")), "--text_file: no such file"),
        (dict(text_file=str(corpus), lengths="16,32"), "--lengths: text generation trains at one window"),
        (dict(text_file=str(corpus), lengths="1000"), "--text_file: 6000 characters are too few"),
        (dict(temperatures="0.5,-1"), "--temperatures must be numbers >= 0"),
        (dict(sample_length="0"), "--sample_length must be a positive int"),
    ]
    for overrides, message in cases:
        with flagsaver.as_parsed(**overrides), pytest.raises(ValueError, match=message):
            text_generation._prepare(text_generation.EXPERIMENT)


def test_classification_on_the_packaged_sets_with_the_classical_baselines(tmp_path, capsys):
    from experiments import classification

    models = ("gru", "transformer:causal=False")
    settings = common.Settings(models=models, lengths=(1,), workdir=str(tmp_path), **TINY)
    settings = dataclasses.replace(settings, bidirectional=True)
    rows = classification.run(["japanese_vowels"], settings)
    assert [(r["dataset"], r["model"]) for r in rows][::2] == [("japanese_vowels", m) for m in models]
    table = (tmp_path / "results.md").read_text()
    assert (
        "| data set | steps | chance | gru | transformer:causal=False | logistic regression | RBF SVM |"
        in table
    )
    assert "| japanese_vowels | 29 | 0.238 |" in table and "Kudo et al. 1999" in table
    assert (tmp_path / "japanese_vowels" / "summary.json").exists() and (tmp_path / "summary.csv").exists()
    with pytest.raises(ValueError, match="--datasets: unknown data set 'mnist'"):
        classification.load("mnist")
    with pytest.raises(ValueError, match="--batch_size=300 is more than the japanese_vowels dataset's 216"):
        common.check_settings(
            classification.experiment("japanese_vowels"),
            dataclasses.replace(settings, lengths=(29,), batch_size=300),
        )
    with pytest.raises(ValueError, match="--bidirectional reads the future: copy_task predicts every step"):
        common.check_settings(
            importlib.import_module("experiments.copy_task").EXPERIMENT,
            dataclasses.replace(settings, lengths=(3,), models=("gru",)),
        )
