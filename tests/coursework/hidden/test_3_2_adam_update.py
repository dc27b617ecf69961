"""Exercise 3.2, hidden: ten masked and unmasked Adam steps against the update in float64."""

import numpy as np
import pytest

from ..oracles import rel_error

pytestmark = pytest.mark.exercise_3_2

F = np.float32


def adam_reference(w, g, m, v, mask, lr, beta1, beta2, eps, weight_decay, t):
    w, g, m, v = (np.asarray(a, np.float64) for a in (w, g, m, v))
    g = g + weight_decay * w
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    w = w - lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
    if mask is not None:
        w, m, v = w * (mask != 0), m * (mask != 0), v * (mask != 0)
    return w, m, v


@pytest.mark.parametrize("masked", [False, True])
def test_ten_steps_against_float64(student, masked):
    rng = np.random.default_rng(11 + masked)
    size = 50
    mask = (rng.random(size) < 0.6).astype(F) if masked else None
    w, m, v = rng.standard_normal(size).astype(F), np.zeros(size, F), np.zeros(size, F)
    lr, beta1, beta2, eps, weight_decay = F(1e-2), F(0.9), F(0.999), F(1e-8), F(1e-3)
    for t in range(1, 11):
        g = rng.standard_normal(size).astype(F)
        expected = adam_reference(w, g, m, v, mask, lr, beta1, beta2, eps, weight_decay, t)
        bc1, bc2 = F(1 - float(beta1) ** t), F(1 - float(beta2) ** t)
        student("3.2").adam_update(w, g, m, v, mask, lr, beta1, beta2, eps, weight_decay, bc1, bc2)
        for name, got, want in zip("wmv", (w, m, v), expected):
            error = rel_error(got, want)
            assert error < 1e-5, f"{name} relative error {error:.1e} after step {t} (masked: {masked})"
