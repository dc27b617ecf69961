"""Exercise 3.1, hidden: several masked steps against the update in float64."""

import numpy as np
import pytest

from ..oracles import rel_error

pytestmark = pytest.mark.exercise_3_1

F = np.float32


def sgd_formula(w, g, velocity, mask, lr, momentum, weight_decay):
    w, g, velocity = (np.asarray(a, np.float64) for a in (w, g, velocity))
    velocity = momentum * velocity + g + weight_decay * w
    w = w - lr * velocity
    if mask is not None:
        w, velocity = w * (mask != 0), velocity * (mask != 0)
    return w, velocity


@pytest.mark.parametrize("masked", [False, True])
def test_ten_steps_against_float64(student, masked):
    rng = np.random.default_rng(7 + masked)
    size = 60
    mask = (rng.random(size) < 0.6).astype(F) if masked else None
    w, velocity = rng.standard_normal(size).astype(F), np.zeros(size, F)
    lr, momentum, weight_decay = F(0.05), F(0.9), F(1e-3)
    for t in range(1, 11):
        g = rng.standard_normal(size).astype(F)
        expected = sgd_formula(w, g, velocity, mask, lr, momentum, weight_decay)
        student("3.1").sgd_update(w, g, velocity, mask, lr, momentum, weight_decay)
        for name, got, want in zip(("w", "velocity"), (w, velocity), expected):
            error = rel_error(got, want)
            assert error < 1e-5, f"{name} relative error {error:.1e} after step {t} (masked: {masked})"
