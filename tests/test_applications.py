"""Forecasting and translation: series windows and scores, encoder-decoders, decoding, data, experiments."""

import dataclasses
import datetime
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import common
from seqjax.data import series as series_lib
from seqjax.data import translation
from seqjax.data.datasets import Dataset, Split
from seqjax.models import seq2seq
from seqjax.training.loop import scored_sums

TINY = dict(
    seeds=(0,), learning_rates=(3e-3,), steps=2, batch_size=4, hidden_size=8, log_every=1, eval_every=1
)


def _series(n=120, season=7):
    t = np.arange(n)
    values = np.stack([0.05 * t + np.sin(2 * np.pi * t / season), np.cos(t / 3.0)], -1)
    return series_lib.Series("toy", values, ("a", "b"), season)


def test_windows_naive_forecasts_and_scores_against_numpy_loops():
    s = _series()
    problem = series_lib.Forecasting(s, 10, 5, test_size=20, validation_size=15, scaling="last")
    y, origins = s.values, problem.origins("test")
    assert list(origins) == list(range(100, 116)) and problem.train_end == 85
    assert list(problem.origins("train")) == list(range(10, 81))
    scale = y[:85].std(0)
    data = problem.dataset("direct")
    for i, o in enumerate(origins):
        np.testing.assert_allclose(data.test.inputs[i], (y[o - 10 : o] - y[o - 1]) / scale, rtol=1e-5)
        np.testing.assert_allclose(
            data.test.targets[i].reshape(5, 2), (y[o : o + 5] - y[o - 1]) / scale, 1e-5
        )
        for k in range(5):
            np.testing.assert_array_equal(problem.naive(origins, 1)[i, k], y[o - 1])
            np.testing.assert_array_equal(problem.naive(origins, 7)[i, k], y[o + k - 7])
    np.testing.assert_allclose(problem.unscale(data.test.targets, origins), problem.truth(origins), atol=1e-5)
    # Standard scaling: the training part's mean and deviation only.
    standard = dataclasses.replace(problem, scaling="standard")
    shifted = series_lib.Series("toy", np.concatenate([y[:85], y[85:] + 100.0]), ("a", "b"), 7)
    moved = dataclasses.replace(standard, series=shifted)
    np.testing.assert_allclose(moved.contexts(np.array([50])), standard.contexts(np.array([50])), rtol=1e-6)
    np.testing.assert_allclose(
        standard.contexts(np.array([50]))[0], (y[40:50] - y[:85].mean(0)) / scale, 1e-5
    )
    # Window scaling: each context's own mean and deviation, also for its targets;
    # an affine change of the series changes no input.
    window = dataclasses.replace(problem, scaling="window")
    direct = window.dataset("direct")
    for i, o in enumerate(origins):
        mean, std = y[o - 10 : o].mean(0), y[o - 10 : o].std(0)
        np.testing.assert_allclose(direct.test.inputs[i], (y[o - 10 : o] - mean) / std, rtol=1e-5)
        np.testing.assert_allclose(direct.test.targets[i].reshape(5, 2), (y[o : o + 5] - mean) / std, 1e-5)
    np.testing.assert_allclose(window.unscale(direct.test.targets, origins), window.truth(origins), atol=1e-5)
    affine = dataclasses.replace(window, series=series_lib.Series("toy", 3.0 * y - 40.0, ("a", "b"), 7))
    np.testing.assert_allclose(affine.dataset("direct").test.inputs, direct.test.inputs, atol=1e-5)
    # Scores: MAE, RMSE pooled; MASE per channel over the in-sample seasonal-naive MAE.
    forecasts = problem.truth(origins) + np.random.default_rng(0).normal(size=(16, 5, 2))
    error = forecasts - problem.truth(origins)
    in_sample = [np.mean([abs(y[t, c] - y[t - 7, c]) for t in range(7, 85)]) for c in range(2)]
    got = problem.scores(forecasts, origins)
    assert got["mae"] == pytest.approx(np.abs(error).mean())
    assert got["rmse"] == pytest.approx(np.sqrt((error**2).mean()))
    assert got["mase"] == pytest.approx(
        np.mean([np.abs(error[..., c]).mean() / in_sample[c] for c in range(2)])
    )
    # A square-root transform: the models read sqrt(y); forecasts come back in y's units.
    positive = series_lib.Series("toy", y + 5.0, ("a", "b"), 7)
    rooted = series_lib.Forecasting(positive, 10, 5, 20, 15, "last", transform="sqrt")
    np.testing.assert_allclose(
        rooted.dataset("direct").test.inputs[0],
        (np.sqrt(y[90:100] + 5) - np.sqrt(y[99] + 5)) / np.sqrt(y[:85] + 5).std(0),
        1e-5,
    )
    np.testing.assert_allclose(
        rooted.unscale(rooted.dataset("direct").test.targets, origins),
        y[origins[:, None] + np.arange(5)] + 5,
        1e-4,
    )
    with pytest.raises(ValueError, match="--transform=log needs positive values"):
        series_lib.Forecasting(s, 10, 5, 20, 15, transform="log")
    ar = problem.dataset("autoregressive")
    assert ar.train.inputs.shape == (71, 14, 2) and ar.train.targets.shape == (71, 14, 2)
    np.testing.assert_allclose(ar.train.targets[:, :-1], ar.train.inputs[:, 1:])


def test_multi_output_regression_loss_is_the_mean_square_over_the_values():
    rng = np.random.default_rng(1)
    split = Split(rng.normal(size=(6, 4, 1)), rng.normal(size=(6, 3)))
    data = Dataset("multi", split, split, split, output_size=3, loss="mse", tolerance=0.5)
    batch = data.arrays("train")
    outputs = rng.normal(size=(6, 3)).astype(np.float32)
    sums = np.asarray(scored_sums(data, jnp.asarray(outputs), jax.tree.map(jnp.asarray, batch)))
    error = outputs - split.targets
    assert sums[0] / sums[1] == pytest.approx(np.mean(error**2), rel=1e-5)
    assert sums[2] / sums[3] == pytest.approx(np.mean(np.abs(error) < 0.5), rel=1e-6)
    assert data.baseline(4).loss == pytest.approx(np.mean(split.targets.var(axis=0)), rel=1e-5)


def test_series_errors_name_the_flag_and_the_line(tmp_path):
    path = tmp_path / "load.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i % 5}\n" for i in range(60)))
    s = series_lib.from_csv(path, ["b", "a"], season=5)
    assert s.values.shape == (60, 2) and s.values[7, 0] == 2.0 and s.season == 5
    with pytest.raises(ValueError, match=r"--columns: 'c' not in .*header \['a', 'b'\]"):
        series_lib.from_csv(path, ["a", "c"])
    path.write_text("a,b\n1,2\n3,x\n")
    with pytest.raises(ValueError, match=r"line 3, column 'b': 'x' is not a number"):
        series_lib.from_csv(path, ["a", "b"])
    with pytest.raises(ValueError, match="--csv: no file"):
        series_lib.from_csv(tmp_path / "none.csv", ["a"])
    with pytest.raises(ValueError, match=r"--horizon=30 is longer than the held-out test tail of 20 steps"):
        series_lib.Forecasting(_series(), 10, 30, 20, 40)
    with pytest.raises(ValueError, match=r"training part has 20 steps .* need 57"):
        series_lib.Forecasting(_series(), 40, 10, 50, 50)
    with pytest.raises(ValueError, match="--strategies must be among direct, autoregressive"):
        series_lib.Forecasting(_series(), 10, 5, 20, 20).dataset("recursive")


@pytest.fixture(scope="module")
def models():
    """A trained-looking set of encoder-decoders: random weights, vocabulary 6, S=5, T=3."""
    sizes = dict(vocab_size=6, hidden_size=8, source_steps=5, target_steps=3)
    built = {
        "gru": seq2seq.build("gru", **sizes),
        "lstm:attention=False": seq2seq.build("lstm", attention=False, **sizes),
        "transformer": seq2seq.build("transformer", num_layers=1, num_heads=2, **sizes),
    }
    return {name: (m, m.init(jax.random.key(i))) for i, (name, m) in enumerate(built.items())}


SOURCES = jnp.array([[3, 4, 5, 3, 4], [5, 3, 0, 0, 0], [4, 0, 0, 0, 0]], jnp.int32)


def _sequence_logprob(model, params, source, tokens):
    """log p(tokens | source) from teacher forcing, up to and including the first EOS."""
    decoder_inputs = np.concatenate([[seq2seq.BOS], tokens[:-1]])
    inputs = jnp.asarray(np.concatenate([source, decoder_inputs])[None], jnp.int32)
    logp = jax.nn.log_softmax(model.apply(params, inputs)[0, model.source_steps :])
    total = 0.0
    for i, token in enumerate(tokens):
        total += float(logp[i, token])
        if token == seq2seq.EOS:
            break
    return total


@pytest.mark.parametrize("name", ["gru", "lstm:attention=False", "transformer"])
def test_beam_search_is_exact_when_wide_and_greedy_when_narrow(models, name):
    model, params = models[name]
    greedy = np.asarray(seq2seq.greedy(model, params, SOURCES))
    one, _ = seq2seq.beam_search(model, params, SOURCES, width=1)
    np.testing.assert_array_equal(np.asarray(one), greedy)
    # Width 36 >= 6**2 keeps every prefix: the best of all 6**3 sequences, found by enumeration.
    tokens, score = seq2seq.beam_search(model, params, SOURCES, width=36)
    for b, source in enumerate(np.asarray(SOURCES)):
        best, best_score = None, -np.inf
        for candidate in itertools.product(range(6), repeat=3):
            candidate = list(candidate)
            if seq2seq.EOS in candidate:  # PAD after the end, as the decoder writes it
                end = candidate.index(seq2seq.EOS)
                if any(c != seq2seq.PAD for c in candidate[end + 1 :]):
                    continue
            value = _sequence_logprob(model, params, source, candidate)
            if value > best_score:
                best, best_score = candidate, value
        np.testing.assert_array_equal(np.asarray(tokens[b]), best)
        assert float(score[b]) == pytest.approx(best_score, abs=1e-4)


@pytest.mark.parametrize("name", ["gru", "lstm:attention=False", "transformer"])
def test_a_padded_batch_decodes_as_its_examples_alone(models, name):
    model, params = models[name]
    batch_tokens, batch_scores = seq2seq.beam_search(model, params, SOURCES, width=3)
    batch_greedy = seq2seq.greedy(model, params, SOURCES)
    targets = jnp.array([[3, 4, 2]] * 3, jnp.int32)
    batch_weights = model.attention(params, SOURCES, targets)
    for b in range(3):
        alone = SOURCES[b : b + 1]
        np.testing.assert_array_equal(seq2seq.greedy(model, params, alone)[0], batch_greedy[b])
        tokens, scores = seq2seq.beam_search(model, params, alone, width=3)
        np.testing.assert_array_equal(tokens[0], batch_tokens[b])
        np.testing.assert_allclose(scores[0], batch_scores[b], rtol=1e-5)
        np.testing.assert_allclose(
            model.attention(params, alone, targets[:1])[0], batch_weights[b], atol=1e-6
        )


def test_attention_weights_sum_to_one_over_the_valid_source_only(models):
    targets = jnp.array([[3, 4, 2]] * 3, jnp.int32)
    lengths = np.array([5, 2, 1])
    for name in ("gru", "transformer"):
        model, params = models[name]
        weights = np.asarray(model.attention(params, SOURCES, targets))
        assert weights.shape == (3, 3, 5)
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
        valid = np.broadcast_to(np.arange(5)[None, None, :] < lengths[:, None, None], weights.shape)
        assert (weights[~valid] == 0).all() and (weights[valid] > 0).all()
    model, params = models["lstm:attention=False"]
    assert not np.asarray(model.attention(params, SOURCES, targets)).any()


def test_additive_attention_against_numpy(models):
    model, params = models["gru"]
    state = model.start(params, SOURCES)
    state, _, weights = model.decode_step(params, state, jnp.full((3,), seq2seq.BOS, jnp.int32))
    state0 = model.start(params, SOURCES)
    a = jax.tree.map(np.asarray, params["attention"])
    keys, query = np.asarray(state0.memory) @ a["w_k"], np.asarray(state0.previous) @ a["w_q"] + a["b"]
    scores = np.tanh(keys + query[:, None]) @ a["v"]
    for b, n in enumerate([5, 2, 1]):
        e = np.exp(scores[b, :n] - scores[b, :n].max())
        np.testing.assert_allclose(np.asarray(weights[b, :n]), e / e.sum(), rtol=1e-5)


def test_stepping_the_decoder_equals_teacher_forcing(models):
    tokens = jnp.array([[3, 4, 2], [5, 5, 3], [2, 0, 0]], jnp.int32)
    for model, params in models.values():
        decoder_inputs = jnp.concatenate([jnp.full((3, 1), seq2seq.BOS), tokens[:, :-1]], 1)
        forced = model.apply(params, jnp.concatenate([SOURCES, decoder_inputs], 1))
        assert not np.asarray(forced[:, :5]).any()
        state = model.start(params, SOURCES)
        for i in range(3):
            state, logits, _ = model.decode_step(params, state, decoder_inputs[:, i])
            np.testing.assert_allclose(np.asarray(logits), np.asarray(forced[:, 5 + i]), atol=1e-5)


def test_generated_pairs_against_hand_written_references():
    cases = {
        0: "zero",
        13: "thirteen",
        40: "forty",
        99: "ninety-nine",
        100: "one hundred",
        101: "one hundred one",
    }
    cases |= {342017: "three hundred forty-two thousand seventeen", 1_000_000: "one million"}
    cases |= {7_000_000_007: "seven billion seven", 20_015: "twenty thousand fifteen"}
    for value, words in cases.items():
        assert translation.number_words(value) == words
    day = datetime.date(1987, 5, 23)
    written = [f(day) for f in translation.DATE_FORMATS]
    assert written == [
        "23 May 1987", "23 May 1987", "May 23, 1987", "May 23 1987", "Saturday, May 23, 1987",
        "Sat 23 May 87", "the 23rd of May 1987", "23rd may 1987", "MAY 23, 1987", "5/23/1987", "5/23/87",
        "23.05.1987", "23.5.87", "1987/05/23", "23-MAY-1987", "19870523",
    ]  # fmt: skip
    for source, target in translation.dates(300, seed=3):
        date = datetime.date.fromisoformat(target)
        assert source in {f(date) for f in translation.DATE_FORMATS} and 1950 <= date.year <= 2049
    for source, target in translation.numbers(300, seed=3, max_digits=9):
        assert translation.number_words(int(target)) == source


def test_corpus_packs_source_and_target_and_scores_only_the_target(tmp_path):
    pairs = translation.numbers(200, seed=1, max_digits=4)
    corpus = translation.Corpus.split("numbers", pairs)
    assert not {s for s, _ in corpus.train} & {s for s, _ in corpus.test}
    data = corpus.dataset()
    s, t = corpus.source_steps, corpus.target_steps
    split = data.test
    assert corpus.decode(split.inputs[:, :s]) == [x for x, _ in corpus.test]
    assert corpus.decode(split.targets[:, s:]) == [y for _, y in corpus.test]
    assert corpus.decode(split.inputs[:, s + 1 :]) == [y[: t - 1] for _, y in corpus.test]
    assert (split.inputs[:, s] == seq2seq.BOS).all()
    np.testing.assert_array_equal(split.mask.sum(1), [len(y) + 1 for _, y in corpus.test])
    assert not split.mask[:, :s].any()
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{a}\t{b}\n" for a, b in pairs[:20]) + "only a source\n")
    with pytest.raises(ValueError, match=r"--pairs_file: .* line 21 must be a source and a target"):
        translation.read_pairs(path)
    path.write_text("a\tb\n")
    with pytest.raises(ValueError, match="holds 1 pairs; at least 10"):
        translation.read_pairs(path)


def test_translation_metrics_against_hand_computed_values():
    from experiments import translation as experiment

    assert experiment.character_error_rate(["sitting", "abc"], ["kitten", "abc"]) == pytest.approx(3 / 9)
    assert experiment.chrf(["abc"], ["abc"]) == pytest.approx(100.0)
    assert experiment.chrf(["xyz"], ["abc"]) == 0.0
    # "ab" against "abc": unigrams P=1, R=2/3; bigrams P=1, R=1/2; no trigram in the hypothesis.
    p, r = 1.0, (2 / 3 + 1 / 2) / 2
    assert experiment.chrf(["ab"], ["abc"], order=3) == pytest.approx(100 * 5 * p * r / (4 * p + r))


@pytest.fixture
def standard_promotion():
    """optax's updates mix Python floats and int32 steps, as in tests/test_experiments.py."""
    with jax.numpy_dtype_promotion("standard"):
        yield


@pytest.mark.usefixtures("standard_promotion")
def test_forecasting_experiment_on_a_csv_with_the_classical_peers(tmp_path, capsys):
    from experiments import forecasting

    rng = np.random.default_rng(0)
    t = np.arange(150)
    values = 10 + np.sin(2 * np.pi * t / 6) + 0.1 * rng.normal(size=150)
    path = tmp_path / "load.csv"
    path.write_text("demand\n" + "".join(f"{v}\n" for v in values))
    flags.FLAGS(["prog"])
    overrides = dict(csv=str(path), columns="demand", horizon="4", context="12", season="6", test_size="20")
    with flagsaver.as_parsed(**overrides):
        forecasting._problem.cache_clear()
        settings = common.Settings(models=("gru",), lengths=(1,), workdir=str(tmp_path / "out"), **TINY)
        rows = forecasting.run(["load"], ["direct", "autoregressive"], settings, classical=True)
        forecasting._problem.cache_clear()
    assert [(r["strategy"], r["model"]) for r in rows] == [("direct", "gru"), ("autoregressive", "gru")]
    table = (tmp_path / "out" / "results.md").read_text()
    for method in ("gru (direct)", "gru (autoregressive)", "naive", "seasonal naive (m=6)", "ARIMA", "ETS"):
        assert f"| load | {method} |" in table
    # The classical peers forecast a clean seasonal series far better than the naive forecast.
    mase = {line.split("|")[2].strip(): float(line.split("|")[3]) for line in table.splitlines()[2:8]}
    assert mase["ARIMA"] < 0.5 * mase["naive"] and mase["ETS"] < 0.5 * mase["naive"]
    assert (tmp_path / "out" / "forecasts.png").exists()


@pytest.mark.usefixtures("standard_promotion")
def test_translation_experiment_on_a_pairs_file(tmp_path, capsys):
    from experiments import translation as experiment

    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{a}\t{b}\n" for a, b in translation.numbers(60, seed=0, max_digits=3)))
    flags.FLAGS(["prog"])
    with flagsaver.as_parsed(pairs_file=str(path), beam_width="2"):
        settings = common.Settings(
            models=("gru:attention=False", "gru"), lengths=(1,), workdir=str(tmp_path / "out"), **TINY
        )
        rows = experiment.run(settings)
    assert [r["model"] for r in rows] == ["gru:attention=False", "gru"]
    assert all(0 <= r["exact_match"] <= 1 and r["cer"] >= 0 for r in rows)
    report = (tmp_path / "out" / "results.md").read_text()
    assert "| model | params | exact match | CER | chrF |" in report and "| source length |" in report
    assert (tmp_path / "out" / "attention.png").exists()
    assert (tmp_path / "out" / "accuracy_vs_source_length.png").exists()
