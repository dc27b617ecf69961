"""The training loop: evaluation in chunks, the early-stop rule, checkpoints."""

import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minilottery.layers import Conv2d, Dense, Dropout, Flatten, MaxPool2d, ReLU
from minilottery.losses import softmax_cross_entropy
from minilottery.models import Sequential
from minilottery.optim import Adam
from minilottery.train import History, evaluate, train


def small_data(seed=0, n=240):
    rng = np.random.default_rng(seed)

    def split(size):
        x = rng.standard_normal((size, 1, 6, 6), dtype=np.float32)
        return x, (x.reshape(size, -1)[:, :4].argmax(axis=1)).astype(np.int64)

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = split(n), split(60), split(90)
    return SimpleNamespace(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
                           x_test=x_test, y_test=y_test)


def small_model(seed=0):
    model = Sequential(Flatten(), Dense(36, 16, name="fc1"), ReLU(), Dropout(0.5, seed=seed),
                       Dense(16, 4, name="out"))
    rng = np.random.default_rng(seed)
    for name, param in model.named_params().items():
        param[...] = 0.3 * rng.standard_normal(param.shape, dtype=np.float32)
    return model


class Stop(Exception):
    pass


def test_a_killed_training_continues_from_its_checkpoint_bit_for_bit(tmp_path):
    data = small_data()
    settings_ = dict(iterations=120, batch_size=20, seed=3, eval_every=10, snapshot_at=25)

    whole = small_model()
    expected = train(whole, Adam(whole, lr=1e-2), data, **settings_)

    def stop_at_70(iteration, history):
        if iteration == 70:
            raise Stop
    interrupted = small_model()
    checkpoint = tmp_path / "checkpoint.npz"
    with pytest.raises(Stop):
        train(interrupted, Adam(interrupted, lr=1e-2), data, **settings_, on_eval=stop_at_70,
              checkpoint=checkpoint, checkpoint_seconds=0)
    assert checkpoint.exists()

    resumed = small_model()  # a fresh process would rebuild the model from theta_0
    evaluated = []
    result = train(resumed, Adam(resumed, lr=1e-2), data, **settings_, checkpoint=checkpoint,
                   on_eval=lambda iteration, history: evaluated.append(iteration))
    assert evaluated[0] == 80, "training restarted instead of continuing"
    assert result.history.rows == expected.history.rows
    for name, param in whole.named_params().items():
        np.testing.assert_array_equal(resumed.named_params()[name], param)
    for name, value in expected.snapshot.items():
        np.testing.assert_array_equal(result.snapshot[name], value)


@settings(deadline=None, max_examples=20)
@given(n=st.integers(1, 70), chunk=st.integers(1, 80))
def test_evaluate_in_chunks_equals_one_pass(n, chunk):
    data = small_data(n=n)
    model = small_model()
    loss, accuracy = evaluate(model, data.x_train, data.y_train, batch_size=chunk)
    logits = model.forward(data.x_train, training=False)
    expected_loss, _ = softmax_cross_entropy(logits, data.y_train)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert accuracy == np.mean(logits.argmax(axis=1) == data.y_train)


def peak_bytes_of_evaluation(model, x, y, batch_size):
    """The most memory (NumPy's arrays included) evaluate allocates at once, beyond x and y."""
    tracemalloc.start()
    try:
        evaluate(model, x, y, batch_size)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@settings(deadline=None, max_examples=5)
@given(batch_size=st.integers(16, 64), factor=st.integers(8, 20))
def test_evaluation_memory_does_not_grow_with_the_set(batch_size, factor):
    model = Sequential(Conv2d(1, 4, 3, padding=1, name="conv"), ReLU(), MaxPool2d(2), Flatten(),
                       Dense(256, 10, name="out"))
    rng = np.random.default_rng(0)
    n = 4 * batch_size
    x = rng.standard_normal((factor * n, 1, 16, 16), dtype=np.float32)
    y = rng.integers(0, 10, factor * n)
    evaluate(model, x[:n], y[:n], batch_size)  # fills the layers' reusable buffers
    small = peak_bytes_of_evaluation(model, x[:n], y[:n], batch_size)
    large = peak_bytes_of_evaluation(model, x, y, batch_size)
    # One pass over the large set would hold its conv activations alone: 4 KiB an image.
    assert large <= small + 16 * 1024 < factor * n * 4096 // 4, (small, large)

def test_early_stop_is_the_minimum_validation_loss_not_the_best_test_accuracy():
    history = History()
    for iteration, val_loss, test_acc in [(100, 0.9, 0.80), (200, 0.5, 0.85), (300, 0.6, 0.95)]:
        history.append(iteration=iteration, train_loss=1.0, train_acc=0.5, val_loss=val_loss,
                       val_acc=0.8, test_loss=0.7, test_acc=test_acc)
    summary = history.summary()
    assert summary["early_stop_iteration"] == 200
    assert summary["test_acc_at_early_stop"] == 0.85
    assert summary["final_test_acc"] == 0.95


def test_training_runs_the_whole_budget_and_evaluates_on_schedule():
    data = small_data()
    model = small_model()
    result = train(model, Adam(model, lr=1e-2), data, iterations=55, batch_size=20, seed=0,
                   eval_every=20)
    assert list(result.history.column("iteration")) == [20, 40, 55]


@pytest.mark.parametrize("bad", [dict(iterations=0), dict(batch_size=-1), dict(eval_every=0),
                                 dict(snapshot_at=99)])
def test_bad_settings_are_named(bad):
    data = small_data()
    model = small_model()
    settings_ = dict(iterations=50, batch_size=20, seed=0, eval_every=10) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        train(model, Adam(model, lr=1e-2), data, **settings_)
