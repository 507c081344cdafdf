"""In-memory datasets through the training engine, character text, the packaged
classification sets, and one output per sequence (readouts), against NumPy and
plain-Python references."""

import collections
import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.data import classification, datasets, text
from seqjax.data.datasets import Dataset, Split
from seqjax.models.sequence_model import SequenceModel
from seqjax.training import TrainConfig, dataset_indices, make_evaluate, train


@pytest.fixture(autouse=True)
def standard_promotion():  # optax's schedules mix Python floats and int32 steps
    with jax.numpy_dtype_promotion("standard"):
        yield


@dataclasses.dataclass(frozen=True)
class Echo:
    """Outputs its one parameter at every step: with it at 0, the squared-error loss of a
    batch is the mean square of its targets, which name the examples gathered."""

    output_size: int = 1
    input_size: int = 1

    def init(self, key, dtype=jnp.float32):
        return {"w": jnp.zeros((), dtype)}

    def apply(self, params, inputs, *, lengths=None, key=None, deterministic=True):
        return jnp.zeros((*inputs.shape[:2], 1)) + params["w"]


def indexed(n: int, t: int = 3, lengths: bool = False, offset: int = 0) -> Split:
    """Examples whose every target is their index (+ offset)."""
    inputs = np.zeros((n, t, 1), np.float32)
    targets = np.repeat(np.arange(offset, offset + n, dtype=np.float32)[:, None], t, axis=1)
    return Split(inputs, targets, (np.arange(n) % t + 1).astype(np.int32) if lengths else None)


def test_each_epoch_is_a_permutation_and_seeds_see_different_orders():
    n, b = 11, 3  # 3 batches an epoch; 2 examples sit each epoch out
    for seed in (0, 5):
        for epoch in range(3):
            drawn = np.concatenate([dataset_indices(seed, epoch * 3 + s, n, b) for s in range(3)])
            assert len(set(drawn.tolist())) == 9 and drawn.min() >= 0 and drawn.max() < n
    orders = [np.concatenate([dataset_indices(seed, s, n, b) for s in range(3)]) for seed in (0, 1)]
    assert not np.array_equal(*orders)
    epochs = [np.concatenate([dataset_indices(0, e * 3 + s, n, b) for s in range(3)]) for e in (0, 1)]
    assert not np.array_equal(*epochs)


def test_the_compiled_step_gathers_the_indices_and_resumes_exactly(tmp_path):
    data = Dataset("indexed", indexed(13), indexed(4), indexed(5), output_size=1, loss="mse")
    config = TrainConfig(length=3, steps=8, batch_size=4, log_every=1, eval_every=4, checkpoint_every=4)
    config = dataclasses.replace(config, optimizer="sgd", warmup_steps=1, clip_norm=None)
    seeds, rates = [0, 1], [1e-30, 1e-30]  # the parameter stays 0: the loss names the batch
    _, history = train(Echo(), data, config, seeds, rates, tmp_path / "full")
    for line in history:
        indices = dataset_indices(line["seed"], line["step"] - 1, 13, 4)
        assert line["loss"] == pytest.approx(np.mean(data.train.targets[indices] ** 2), rel=1e-6)
    # Interrupted after step 4, then resumed: the same lines.
    train(Echo(), data, dataclasses.replace(config, steps=4), seeds, rates, tmp_path / "part")
    _, resumed = train(Echo(), data, config, seeds, rates, tmp_path / "part", resume=True)
    timing = ("seconds", "tokens_per_second")
    assert [{k: v for k, v in x.items() if k not in timing} for x in resumed] == [
        {k: v for k, v in x.items() if k not in timing} for x in history
    ]


@pytest.mark.parametrize("lengths", [False, True])
def test_evaluation_scores_every_example_of_the_split_exactly_once(lengths):
    test = indexed(10, lengths=lengths, offset=1)
    data = Dataset("indexed", indexed(8, lengths=lengths), indexed(3, lengths=lengths), test, 1, loss="mse")
    config = TrainConfig(length=3, batch_size=4, eval_batches=1)  # eval_batches is for generated tasks
    model = Echo()
    params = jax.tree.map(lambda x: x[None], model.init(None))
    loss, accuracy = make_evaluate(model, data, config, split="test")(params, jnp.zeros(1, jnp.int32), 3)
    mask = data.test.masks()
    expected = np.sum(test.targets**2 * mask) / mask.sum()  # 3 batches, the last padded
    assert float(loss[0]) == pytest.approx(expected, rel=1e-6)
    assert float(accuracy[0]) == 0.0


def test_dataset_errors_name_the_argument():
    good = indexed(4)
    cases = [
        (dict(train=Split(np.zeros((4, 3)), np.zeros(4))), r"train.inputs must be \[n, t, d\] features"),
        (dict(test=Split(np.zeros((4, 5, 1)), np.zeros(4))), "test must have the train split's layout"),
        (dict(train=Split(good.inputs, np.zeros(5))), r"train.targets must be \[n\]=\(4,\)"),
        (
            dict(train=Split(good.inputs, good.targets, np.array([1, 2, 3, 4]))),
            r"lengths must lie in \[1, t=3\]",
        ),
        (
            dict(validation=Split(good.inputs, good.targets, np.ones(4, np.int32))),
            "exactly when train.lengths",
        ),
        (dict(train=Split(good.inputs * np.nan, good.targets)), "train.inputs must be finite"),
        (dict(loss="mse", output_size=2), r"targets must be \[n, o\]=\(4, 2\) .* \[n, t, o\]=\(4, 3, 2\)"),
        (dict(train=Split(good.inputs, good.targets, mask=np.ones(4))), r"train.mask must be \[4, 3\] of 0s"),
        (dict(loss="hinge"), "loss must be one of"),
    ]
    base = dict(name="d", train=good, validation=good, test=good, output_size=1, loss="mse")
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            Dataset(**(base | change))
    tokens = Split(np.array([[0, 5]]), np.array([0]))
    with pytest.raises(ValueError, match=r"train.inputs must be tokens in \[0, vocab_size=5\)"):
        Dataset("d", tokens, tokens, tokens, output_size=2, vocab_size=5)
    with pytest.raises(
        ValueError, match=r"train.targets must be classes in \[0, output_size=2\); got values in \[2, 2\]"
    ):
        Dataset("d", Split(good.inputs, np.full(4, 2)), good, good, output_size=2)
    data = Dataset(**base)
    with pytest.raises(ValueError, match="length must be the d dataset's 3 steps; got 4"):
        data.num_steps(4)
    with pytest.raises(ValueError, match=r"config.batch_size=5 is more than the d dataset's 4 training"):
        train(Echo(), data, TrainConfig(length=3, batch_size=5, steps=50), [0], [1e-3], "/nonexistent/x")


def test_character_windows_vocabulary_and_entropies_against_python():
    corpus = "abracadabra, said the cat; " * 40 + "éz"
    data = text.char_dataset(corpus, 8)
    n = len(corpus)
    cut = round(0.9 * n)
    train_text = corpus[:cut]
    assert data.vocabulary.chars == "".join(sorted(set(train_text)))
    split = data.dataset.train
    assert data.vocabulary.decode(split.inputs[3]) == train_text[24:32]
    assert data.vocabulary.decode(split.targets[3]) == train_text[25:33]
    assert len(split) == (cut - 1) // 8
    assert data.vocabulary.decode(data.vocabulary.encode("a€")) == "a\ufffd"  # unseen: unknown
    counts = collections.Counter(train_text)
    unigram = -sum(c / cut * math.log2(c / cut) for c in counts.values())
    assert data.unigram_bits == pytest.approx(unigram)
    pairs = collections.Counter(itertools.pairwise(train_text))
    firsts = collections.Counter(a for a, _ in pairs.elements())
    bigram = -sum(c / (cut - 1) * math.log2(c / firsts[a]) for (a, _), c in pairs.items())
    assert data.bigram_bits == pytest.approx(bigram)
    targets = collections.Counter(train_text[1 : len(split) * 8 + 1])  # what the windows predict
    total = sum(targets.values())
    assert data.dataset.baseline(8).loss == pytest.approx(
        -sum(c / total * math.log(c / total) for c in targets.values())
    )


def test_text_errors_name_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--text_file: no such file"):
        text.read_text_file(tmp_path / "missing.txt", "--text_file")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match=r"--text_file: .*empty.txt is empty"):
        text.read_text_file(tmp_path / "empty.txt", "--text_file")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match=r"--text_file: .*binary.bin is not UTF-8 text"):
        text.read_text_file(tmp_path / "binary.bin", "--text_file")
    with pytest.raises(ValueError, match="--text_file: 300 characters are too few for windows of 16"):
        text.char_dataset("x" * 300, 16, name="--text_file", min_train_windows=32)


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.normal(size=(3, 6, 2)), jnp.float32), jnp.array([6, 1, 4], jnp.int32)


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_one_output_per_sequence_reads_the_per_step_outputs(readout, features):
    inputs, lengths = features
    steps = SequenceModel("gru", output_size=3, hidden_size=5, input_size=2)
    pooled = dataclasses.replace(steps, readout=readout)
    params = steps.init(jax.random.key(0))
    per_step = np.asarray(steps.apply(params, inputs, lengths=lengths))
    if readout == "last":
        expected = per_step[np.arange(3), np.asarray(lengths) - 1]
    else:  # the readout is affine: the mean of the outputs is the output of the mean
        expected = np.stack([per_step[i, :n].mean(0) for i, n in enumerate(np.asarray(lengths))])
    np.testing.assert_allclose(pooled.apply(params, inputs, lengths=lengths), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="step needs readout='steps'"):
        pooled.step(params, pooled.initial_state(3), inputs[:, 0])


def test_a_bidirectional_classifier_reads_both_directions_final_states(features):
    inputs, lengths = features
    model = SequenceModel(
        "lstm", output_size=3, hidden_size=5, input_size=2, bidirectional=True, readout="last"
    )
    params = model.init(jax.random.key(1))
    _, (h_n, _) = model.backbone.apply(params["backbone"], inputs, lengths=lengths)  # [L*n, b, h]
    final = jnp.concatenate([h_n[0], h_n[1]], axis=-1)
    expected = final @ params["head"]["w"] + params["head"]["b"]
    np.testing.assert_allclose(model.apply(params, inputs, lengths=lengths), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="bidirectional=True needs a cell family; 'transformer'"):
        SequenceModel("transformer", output_size=3, hidden_size=8, input_size=2, bidirectional=True)
    with pytest.raises(ValueError, match="readout must be one of 'steps', 'last', 'mean'"):
        SequenceModel("gru", output_size=3, hidden_size=5, input_size=2, readout="first")


def test_packaged_classification_sets():
    vowels = classification.japanese_vowels()
    assert (len(vowels.train), len(vowels.validation), len(vowels.test)) == (216, 54, 370)
    assert vowels.train.inputs.shape[1:] == (29, 12) and vowels.test.lengths.min() >= 7
    assert sorted(set(vowels.test.targets.tolist())) == list(range(9))
    frames = np.concatenate([x[:n] for x, n in zip(vowels.train.inputs, vowels.train.lengths, strict=True)])
    np.testing.assert_allclose(frames.mean(0), 0, atol=1e-5)  # standardised on training frames
    assert not vowels.train.inputs[vowels.train.lengths == 7][:, 7:].any()  # zero past a length
    pixels, permuted, rows = (classification.digits(k) for k in classification.DIGIT_LAYOUTS)
    assert pixels.train.inputs.shape == (1257, 64, 1) and rows.train.inputs.shape == (1257, 8, 8)
    np.testing.assert_array_equal(pixels.train.inputs[:, :, 0], rows.train.inputs.reshape(1257, 64))
    np.testing.assert_array_equal(np.sort(permuted.test.inputs, 1), np.sort(pixels.test.inputs, 1))
    assert not np.array_equal(permuted.test.inputs, pixels.test.inputs)


def test_a_missing_extra_names_it(monkeypatch):
    import importlib

    real = importlib.import_module

    def without_sklearn(name, *args):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_sklearn)
    with pytest.raises(ImportError, match=r"digits needs sklearn, of seqjax's \[apps\] extra: pip install"):
        classification.digits("rows")


def test_evaluation_batches_pad_with_zero_masks():
    arrays = Dataset("d", indexed(5), indexed(5), indexed(5), 1, loss="mse").arrays("test")
    batch = datasets.evaluation_batch(jax.device_put(arrays), 1, 4)
    np.testing.assert_array_equal(batch.targets[:, 0], [4, 0, 0, 0])
    np.testing.assert_array_equal(batch.loss_mask[:, 0], [1, 0, 0, 0])
