"""Exercise 1.3: softmax_cross_entropy(logits, labels) in minilottery/losses.py.

The loss is checked on examples worked out by hand and on logits far outside
exp()'s range; the gradient against central differences of the loss itself (in
float64, where a correct pair agrees to about 1e-9), and by its two properties:
each row of dlogits sums to 0, and shifting a row of logits changes nothing."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .oracles import assert_close, numerical_gradient

pytestmark = pytest.mark.exercise_1_3


def call(softmax_cross_entropy, logits, labels):
    result = softmax_cross_entropy(logits, labels)
    assert isinstance(result, tuple) and len(result) == 2, \
        f"softmax_cross_entropy should return (loss, dlogits), got {type(result).__name__}"
    loss, dlogits = result
    assert np.ndim(loss) == 0, f"the loss should be one number (the batch mean), got shape {np.shape(loss)}"
    return float(loss), np.asarray(dlogits)


def test_uniform_logits_give_log_c(student):
    # Equal logits: p = 1/C for every class, loss = log C, dlogits = (1/C - onehot) / N.
    logits, labels = np.zeros((2, 4), np.float64), np.array([1, 3])
    loss, dlogits = call(student("1.3").softmax_cross_entropy, logits, labels)
    assert abs(loss - math.log(4)) < 1e-12, f"loss is {loss!r}, should be log 4 = {math.log(4)!r}"
    expected = np.array([[0.25, -0.75, 0.25, 0.25], [0.25, 0.25, 0.25, -0.75]]) / 2
    assert_close("dlogits", dlogits, expected, 1e-12, "zero logits, N = 2, C = 4")


def test_by_hand(student):
    # Row 1: z = (0, log 3), p = (1/4, 3/4), label 1: loss -log(3/4), gradient (1/4, -1/4).
    # Row 2: the same logits, label 0: loss -log(1/4) = log 4, gradient (-3/4, 3/4).
    logits = np.array([[0.0, math.log(3)], [0.0, math.log(3)]])
    loss, dlogits = call(student("1.3").softmax_cross_entropy, logits, np.array([1, 0]))
    expected_loss = (-math.log(0.75) + math.log(4)) / 2
    assert abs(loss - expected_loss) < 1e-12, \
        f"loss is {loss!r}, should be the batch mean (-log 3/4 + log 4) / 2 = {expected_loss!r}"
    assert_close("dlogits", dlogits, np.array([[0.25, -0.25], [-0.75, 0.75]]) / 2, 1e-12,
                 "logits (0, log 3), labels 1 and 0")


def test_huge_logits_stay_finite(student):
    # Without subtracting max z, exp(1000) overflows to inf and the loss becomes nan.
    logits = np.array([[1000.0, 0.0, -1000.0], [1000.0, 0.0, -1000.0]], np.float32)
    loss, dlogits = call(student("1.3").softmax_cross_entropy, logits, np.array([0, 1]))
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits)), \
        f"logits of +-1000 gave loss {loss} and dlogits {dlogits.tolist()}; subtract max z first"
    # Row 1 is certain and right (loss ~ 0), row 2 certain and wrong by 1000 (loss ~ 1000).
    assert abs(loss - 500.0) < 1e-3, f"loss is {loss}, should be (0 + 1000) / 2 = 500"
    assert_close("dlogits", dlogits, np.array([[0, 0, 0], [1, -1, 0]]) / 2, 1e-6, "logits of +-1000")


def test_logits_beyond_float32_range_of_the_difference(student):
    # z_y - max z = -6e38 does not fit in float32 (max 3.4e38); the promised stability
    # "for any finite logits" needs that term in float64.
    logits = np.array([[3e38, -3e38]], np.float32)
    loss, _ = call(student("1.3").softmax_cross_entropy, logits, np.array([1]))
    assert np.isfinite(loss) and abs(loss / 6e38 - 1) < 1e-6, \
        f"loss is {loss}, should be logsumexp(z) - z_1 = 3e38 + 3e38 = 6e38 (finite)"


@st.composite
def batches(draw):
    n, c = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal((n, c)), rng.integers(0, c, size=n)


@settings(max_examples=15, deadline=None, database=None)
@given(batch=batches())
def test_gradient_matches_finite_differences(student, batch):
    logits, labels = batch
    function = student("1.3").softmax_cross_entropy
    _, dlogits = call(function, logits.copy(), labels)
    numeric = numerical_gradient(lambda: call(function, logits, labels)[0], logits, h=1e-5)
    assert_close("dlogits", dlogits, numeric, 1e-6, f"float64 logits {logits.shape} against "
                 f"central differences of your loss")


@settings(max_examples=15, deadline=None, database=None)
@given(batch=batches(), shift=st.sampled_from([-50.0, 3.0, 100.0]))
def test_rows_sum_to_zero_and_a_shift_changes_nothing(student, batch, shift):
    logits, labels = batch
    function = student("1.3").softmax_cross_entropy
    loss, dlogits = call(function, logits, labels)
    assert loss >= 0, f"loss is {loss}, but -log p is never negative"
    sums = dlogits.sum(axis=1)
    assert np.max(np.abs(sums)) < 1e-12, \
        f"the rows of dlogits sum to {sums.tolist()}, should be 0: sum_j (p_j - onehot_j) / N = 0"
    shifted_loss, shifted = call(function, logits + shift, labels)
    assert abs(shifted_loss - loss) < 1e-9 * max(1.0, loss), \
        f"adding {shift} to every logit changed the loss from {loss} to {shifted_loss}"
    assert_close("dlogits after a shift", shifted, dlogits, 1e-9, f"logits + {shift}")


def test_float32_stays_float32(student):
    logits = np.array([[0.5, -1.0, 2.0]], np.float32)
    loss, dlogits = call(student("1.3").softmax_cross_entropy, logits, np.array([2]))
    assert dlogits.dtype == np.float32, \
        f"dlogits has dtype {dlogits.dtype} for float32 logits, should be float32"
    assert dlogits.shape == logits.shape, f"dlogits has shape {dlogits.shape}, should be (1, 3)"
