"""Exercise 1.3, hidden: the loss and gradient against an independent float64 reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ..oracles import assert_close

pytestmark = pytest.mark.exercise_1_3


def reference(logits, labels):
    z = np.asarray(logits, np.float64)
    log_z = np.logaddexp.reduce(z, axis=1)
    p = np.exp(z - log_z[:, None])
    p[np.arange(len(z)), labels] -= 1
    return float(np.mean(log_z - z[np.arange(len(z)), labels])), p / len(z)


@settings(max_examples=25, deadline=None, database=None)
@given(n=st.integers(1, 6), c=st.integers(2, 8), scale=st.sampled_from([0.01, 1.0, 30.0, 300.0]),
       seed=st.integers(0, 2**32 - 1))
def test_against_a_float64_reference(student, n, c, scale, seed):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal((n, c))).astype(np.float32)
    labels = rng.integers(0, c, size=n)
    loss, dlogits = student("1.3").softmax_cross_entropy(logits, labels)
    expected_loss, expected = reference(logits, labels)
    assert abs(float(loss) - expected_loss) <= 1e-5 * max(1.0, abs(expected_loss)), \
        f"loss is {float(loss)!r}, should be {expected_loss!r} (logits {logits.shape}, scale {scale})"
    assert_close("dlogits", dlogits, expected, 1e-5, f"float32 logits {logits.shape}, scale {scale}")
