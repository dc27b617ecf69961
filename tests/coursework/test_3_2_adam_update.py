"""Exercise 3.2: adam_update (minilottery/optim.py), the masked Adam update.

The kernel updates w, m, v in place, one entry at a time, in float32. We compare
it with the formulas of the module docstring evaluated with NumPy in float64,
over several steps, and check the pruning invariant: where the mask is 0,
w, m and v are exactly 0 afterwards, whatever the gradient."""

import numpy as np
import pytest

from .oracles import rel_error

pytestmark = pytest.mark.exercise_3_2

TOLERANCE = 1e-5     # float32 arithmetic against a float64 reference
F = np.float32


def adam_formula(w, g, m, v, mask, lr, beta1, beta2, eps, weight_decay, t):
    """One Adam step in float64 on whole arrays; pruned entries (mask 0) become 0."""
    w, g, m, v = (np.asarray(a, np.float64) for a in (w, g, m, v))
    g = g + weight_decay * w
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    w = w - lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
    if mask is not None:
        kept = mask != 0
        w, m, v = w * kept, m * kept, v * kept
    return w, m, v


def run_steps(adam_update, steps, mask, weight_decay, seed, size=40):
    rng = np.random.default_rng(seed)
    lr, beta1, beta2, eps = 1e-2, 0.9, 0.999, 1e-8
    w = rng.standard_normal(size).astype(F)
    m, v = np.zeros(size, F), np.zeros(size, F)
    where = "mask=None (a bias)" if mask is None else "a masked weight"
    for t in range(1, steps + 1):
        g = rng.standard_normal(size).astype(F)
        expected = adam_formula(w, g, m, v, mask, lr, F(beta1), F(beta2), F(eps),
                                F(weight_decay), t)
        # as Adam.step does: 1 - beta^t from the float32 betas, handed over as float32
        bc1, bc2 = F(1 - float(F(beta1)) ** t), F(1 - float(F(beta2)) ** t)
        adam_update(w, g, m, v, mask, F(lr), F(beta1), F(beta2), F(eps), F(weight_decay),
                    bc1, bc2)
        for name, got, want in zip("wmv", (w, m, v), expected):
            error = rel_error(got, want)
            assert error < TOLERANCE, (f"{name} relative error {error:.1e} after step {t} "
                                       f"({where}, weight_decay {weight_decay}), "
                                       f"should be below {TOLERANCE:.0e}")


def test_first_step_of_a_bias(student):
    run_steps(student("3.2").adam_update, steps=1, mask=None, weight_decay=0.0, seed=0)


def test_five_steps_of_a_bias_with_weight_decay(student):
    run_steps(student("3.2").adam_update, steps=5, mask=None, weight_decay=1e-2, seed=1)


def test_five_steps_of_a_masked_weight(student):
    mask = (np.random.default_rng(2).random(40) < 0.6).astype(F)
    run_steps(student("3.2").adam_update, steps=5, mask=mask, weight_decay=1e-2, seed=3)


def test_pruned_entries_stay_exactly_zero(student):
    """Even with stale nonzero w, m, v at pruned positions and a nonzero gradient there."""
    rng = np.random.default_rng(4)
    size = 30
    mask = (rng.random(size) < 0.5).astype(F)
    w, g, m, v = (rng.standard_normal(size).astype(F) for _ in range(4))
    v = np.abs(v)
    student("3.2").adam_update(w, g, m, v, mask, F(1e-2), F(0.9), F(0.999), F(1e-8), F(1e-2),
                               F(0.1), F(0.001))
    for name, array in zip("wmv", (w, m, v)):
        leaked = np.flatnonzero((mask == 0) & (array != 0))
        assert leaked.size == 0, (f"{name}[{leaked[0]}] is {array[leaked[0]]:.3g} where the mask "
                                  f"is 0, should be exactly 0 (a pruned weight and its state "
                                  f"stay 0)")
    kept = np.flatnonzero(mask)
    assert np.all(m[kept] != 0), "m is 0 at a surviving entry after a step with a nonzero gradient"
