"""softmax_cross_entropy: value, gradient (finite differences), stability, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import seeds
from minilottery.gradcheck import check_loss, numerical_gradient
from minilottery.losses import softmax_cross_entropy

FAST = settings(deadline=None, max_examples=25)


def _naive(logits, labels):
    """Textbook formula in float64, fine for moderate logits."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return -np.mean(np.log(p[np.arange(len(labels)), labels]))


@FAST
@given(n=st.integers(1, 6), c=st.integers(2, 8), scale=st.sampled_from([0.1, 1.0, 5.0]), seed=seeds)
def test_gradient_matches_finite_differences(n, c, scale, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, c)) * scale
    labels = rng.integers(0, c, n)
    if scale <= 1.0:
        assert check_loss(softmax_cross_entropy, logits, labels) < 1e-7
    # Saturated softmax (p[y] near 1): the gradient is tiny and the loss value
    # logsumexp(z) - z[y] loses digits to cancellation, so central differences
    # carry ~1e-10 of absolute noise. Compare entrywise above that floor.
    _, analytic = softmax_cross_entropy(logits, labels)
    numeric = numerical_gradient(lambda: softmax_cross_entropy(logits, labels)[0], logits)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


@FAST
@given(n=st.integers(1, 6), c=st.integers(2, 8), seed=seeds)
def test_value_matches_textbook_formula_and_float32(n, c, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, c)).astype(np.float32) * 3
    labels = rng.integers(0, c, n)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    assert isinstance(loss, float)
    # float32: relative 1e-5, or 1e-6 absolute for tiny losses (found by hypothesis)
    assert loss == pytest.approx(_naive(logits, labels), rel=1e-5, abs=1e-6)
    assert dlogits.dtype == np.float32 and dlogits.shape == (n, c)
    np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=1e-6)   # rows of p - onehot sum to 0


def test_uniform_logits_give_log_c():
    loss, dlogits = softmax_cross_entropy(np.zeros((4, 10), np.float32), np.array([0, 3, 9, 1]))
    assert loss == pytest.approx(np.log(10), rel=1e-6)
    assert dlogits[0, 0] == pytest.approx((0.1 - 1) / 4) and dlogits[0, 1] == pytest.approx(0.1 / 4)


def test_stable_for_huge_logits():
    logits = np.array([[1e30, -1e30, 0.0], [-3e38, 3e38, 1.0]], np.float32)
    loss, dlogits = softmax_cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    assert loss == pytest.approx(6e38 / 2, rel=1e-5)        # example 1 is right, example 2 off by 6e38
    np.testing.assert_allclose(dlogits, [[0, 0, 0], [-0.5, 0.5, 0]], atol=1e-7)


@pytest.mark.parametrize("logits, labels, message", [
    (np.zeros(3), np.array([0]), r"logits of shape \(N, C\)"),
    (np.zeros((2, 3)), np.array([0]), r"labels of shape \(2,\)"),
    (np.zeros((2, 3)), np.array([0, 3]), r"\[0, 3\)"),
    (np.zeros((2, 3)), np.array([-1, 0]), r"\[0, 3\)"),
    (np.zeros((2, 3)), np.array([0.0, 1.0]), "integers"),
    (np.zeros((0, 3)), np.zeros(0, int), "empty"),
])
def test_bad_input_raises(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        softmax_cross_entropy(logits, labels)
