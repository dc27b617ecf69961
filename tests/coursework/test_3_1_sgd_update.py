"""Exercise 3.1: sgd_update (minilottery/optim.py), the masked SGD-with-momentum kernel.

The kernel updates w and velocity in place, in float32. Checked on steps worked
out by hand (momentum, weight decay, plain SGD), and on the pruning invariant:
where the mask is 0, w and velocity are exactly 0 afterwards, whatever the
gradient, while the surviving entries move exactly as an unmasked update moves them."""

import numpy as np
import pytest

from .oracles import assert_close

pytestmark = pytest.mark.exercise_3_1

F = np.float32
TOLERANCE = 1e-6


def step(sgd_update, w, g, velocity, mask, lr, momentum, weight_decay):
    sgd_update(w, g, velocity, mask, F(lr), F(momentum), F(weight_decay))


def test_two_steps_with_momentum_by_hand(student):
    # lr 0.1, momentum 0.9, g = (0.5, 1, -1) twice. Step 1: v = g, w -= 0.1 g.
    # Step 2: v = 0.9 g + g = 1.9 g, w -= 0.19 g.
    w = np.array([1.0, -2.0, 0.5], F)
    g = np.array([0.5, 1.0, -1.0], F)
    velocity = np.zeros(3, F)
    sgd = student("3.1").sgd_update
    step(sgd, w, g, velocity, None, 0.1, 0.9, 0.0)
    assert_close("w", w, [0.95, -2.1, 0.6], TOLERANCE, "after step 1 (lr 0.1, momentum 0.9)")
    assert_close("velocity", velocity, [0.5, 1.0, -1.0], TOLERANCE, "after step 1: v = g")
    step(sgd, w, g, velocity, None, 0.1, 0.9, 0.0)
    assert_close("velocity", velocity, [0.95, 1.9, -1.9], TOLERANCE, "after step 2: v = 0.9 v + g")
    assert_close("w", w, [0.855, -2.29, 0.79], TOLERANCE, "after step 2: w -= 0.1 v")


def test_weight_decay_by_hand(student):
    # g = 0, weight decay 0.1: g' = 0.1 w; with momentum 0, w = w - 0.5 * 0.1 w = 0.95 w.
    w, velocity = np.array([2.0, -4.0], F), np.zeros(2, F)
    step(student("3.1").sgd_update, w, np.zeros(2, F), velocity, None, 0.5, 0.0, 0.1)
    assert_close("w", w, [1.9, -3.8], TOLERANCE, "g 0, weight decay 0.1, lr 0.5, momentum 0")
    assert_close("velocity", velocity, [0.2, -0.4], TOLERANCE, "v = g + weight_decay w")


def test_momentum_zero_is_plain_sgd(student):
    rng = np.random.default_rng(0)
    w, g = rng.standard_normal(50).astype(F), rng.standard_normal(50).astype(F)
    velocity = rng.standard_normal(50).astype(F)        # stale velocity must not matter
    expected = w - F(0.01) * g
    step(student("3.1").sgd_update, w, g, velocity, None, 0.01, 0.0, 0.0)
    assert_close("w", w, expected, TOLERANCE, "momentum 0: w -= lr g, whatever v was")


def test_pruned_entries_stay_exactly_zero(student):
    """Even with stale nonzero w and velocity at pruned positions and a nonzero gradient."""
    rng = np.random.default_rng(1)
    size = 40
    mask = (rng.random(size) < 0.5).astype(F)
    w, g, velocity = (rng.standard_normal(size).astype(F) for _ in range(3))
    free_w, free_v = w.copy(), velocity.copy()
    sgd = student("3.1").sgd_update
    step(sgd, w, g, velocity, mask, 0.05, 0.9, 1e-2)
    step(sgd, free_w, g, free_v, None, 0.05, 0.9, 1e-2)
    for name, array in (("w", w), ("velocity", velocity)):
        leaked = np.flatnonzero((mask == 0) & (array != 0))
        assert leaked.size == 0, (f"{name}[{leaked[0]}] is {array[leaked[0]]:.3g} where the mask is "
                                  f"0, should be exactly 0 (a pruned weight and its velocity stay 0)")
    kept = mask != 0
    assert np.array_equal(w[kept], free_w[kept]) and np.array_equal(velocity[kept], free_v[kept]), \
        "the surviving entries should move exactly as they do without a mask"


def test_float32_in_place(student):
    w, g, velocity = np.ones(5, F), np.ones(5, F), np.zeros(5, F)
    result = student("3.1").sgd_update(w, g, velocity, None, F(0.1), F(0.9), F(0.0))
    assert result is None, "sgd_update updates w and velocity in place and returns None"
    assert np.all(w != 1), "w did not change in place"
