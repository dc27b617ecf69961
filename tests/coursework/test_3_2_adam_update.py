"""Exercise 3.2: adam_update (minilottery/optim.py), the masked Adam update.

The kernel updates w, m, v in place, one entry at a time, in float32. These tests
check properties that any correct Adam step has, not a second copy of it: from
zero moments the first step is (1 - beta1) g and (1 - beta2) g^2 and moves every
weight by about lr; with a constant gradient every step moves it by about lr;
weight decay acts as the gradient lambda * w; a masked run equals the unmasked
run on the surviving entries, and is exactly 0 elsewhere. (The teacher's hidden
tests compare whole runs with a float64 reference.)"""

import numpy as np
import pytest

from .oracles import rel_error

pytestmark = pytest.mark.exercise_3_2

F = np.float32
LR, BETA1, BETA2, EPS = F(1e-2), F(0.9), F(0.999), F(1e-8)


def corrections(t):
    """1 - beta^t from the float32 betas, handed over as float32, as Adam.step does."""
    return F(1 - float(BETA1) ** t), F(1 - float(BETA2) ** t)


def step(adam_update, w, g, m, v, mask, t, weight_decay=F(0.0)):
    adam_update(w, g, m, v, mask, LR, BETA1, BETA2, EPS, F(weight_decay), *corrections(t))


def gradient(rng, size):
    """Entries of size at least 0.1, so that eps is negligible against |g|."""
    g = rng.standard_normal(size).astype(F)
    return np.where(np.abs(g) < 0.1, F(0.1) * np.sign(g + F(1e-3)), g).astype(F)


def test_the_first_step_from_zero_moments(student):
    rng = np.random.default_rng(0)
    w, g = rng.standard_normal(40).astype(F), gradient(rng, 40)
    before, m, v = w.copy(), np.zeros(40, F), np.zeros(40, F)
    step(student("3.2").adam_update, w, g, m, v, None, t=1)
    for name, got, want in (("m", m, (1 - BETA1) * g), ("v", v, (1 - BETA2) * g * g)):
        error = rel_error(got, want)
        assert error < 1e-6, f"{name} after the first step: relative error {error:.1e} " \
                             f"against {name} = (1 - beta) * ..., should be below 1e-6"
    moved = before - w
    error = rel_error(moved, LR * np.sign(g))
    assert error < 1e-4, (f"the first step moves w by {moved[:3]}..., should be lr * sign(g) = "
                          f"{(LR * np.sign(g))[:3]}... (relative error {error:.1e}): the bias "
                          f"correction makes Adam's first step lr long")


def test_a_constant_gradient_moves_every_weight_by_lr_at_every_step(student):
    rng = np.random.default_rng(1)
    w, g = rng.standard_normal(30).astype(F), gradient(rng, 30)
    m, v = np.zeros(30, F), np.zeros(30, F)
    for t in range(1, 6):
        before = w.copy()
        step(student("3.2").adam_update, w, g, m, v, None, t)
        error = rel_error(before - w, LR * np.sign(g))
        assert error < 1e-4, f"step {t} with a constant gradient: relative error {error:.1e} " \
                             f"against lr * sign(g), should be below 1e-4"


def test_weight_decay_acts_as_the_gradient_lambda_w(student):
    rng = np.random.default_rng(2)
    weight_decay = F(0.5)
    w = rng.standard_normal(20).astype(F)
    decayed = [w.copy(), np.zeros(20, F), np.zeros(20, F)]
    as_gradient = [w.copy(), np.zeros(20, F), np.zeros(20, F)]
    step(student("3.2").adam_update, decayed[0], np.zeros(20, F), *decayed[1:], None, 1,
         weight_decay)
    step(student("3.2").adam_update, as_gradient[0], weight_decay * w, *as_gradient[1:], None, 1)
    for name, got, want in zip("wmv", decayed, as_gradient):
        error = rel_error(got, want)
        assert error < 1e-6, f"{name}: weight decay lambda with g = 0 should equal g = lambda * w " \
                             f"without decay (relative error {error:.1e})"


def test_a_masked_run_equals_the_unmasked_run_on_the_survivors(student):
    """Adam works entry by entry, so a survivor's history cannot depend on the pruned entries."""
    rng = np.random.default_rng(3)
    mask = (rng.random(40) < 0.6).astype(F)
    w = rng.standard_normal(40).astype(F)
    masked = [w.copy(), np.zeros(40, F), np.zeros(40, F)]
    plain = [w.copy(), np.zeros(40, F), np.zeros(40, F)]
    for t in range(1, 6):
        g = rng.standard_normal(40).astype(F)
        step(student("3.2").adam_update, masked[0], g, *masked[1:], mask, t, F(1e-2))
        step(student("3.2").adam_update, plain[0], g, *plain[1:], None, t, F(1e-2))
    kept = mask != 0
    for name, got, want in zip("wmv", masked, plain):
        assert np.array_equal(got[kept], want[kept]), \
            f"{name} at the surviving entries differs from the same five steps with mask=None"
        assert not np.any(got[~kept]), f"{name} is nonzero where the mask is 0"


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
