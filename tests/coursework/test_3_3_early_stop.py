"""Exercise 3.3: early_stop_index (minilottery/train.py), the early-stop evaluation:
the index of the minimum validation loss, the first one on ties.

Checked by hand, then on random loss curves drawn from a few values (so that ties
are common) by the definition: the loss there is <= every loss, and every earlier
loss is larger."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.exercise_3_3


def check(early_stop_index, val_loss):
    val_loss = np.asarray(val_loss, np.float64)
    got = early_stop_index(val_loss.copy())
    assert isinstance(got, (int, np.integer)) and not isinstance(got, bool), \
        f"early_stop_index should return an int index, got {got!r}"
    got = int(got)
    assert 0 <= got < len(val_loss), f"index {got} is outside the {len(val_loss)} evaluations"
    smaller = np.flatnonzero(val_loss < val_loss[got])
    assert smaller.size == 0, (f"index {got} (loss {val_loss[got]:g}) is not the minimum: "
                               f"evaluation {smaller[0]} has loss {val_loss[smaller[0]]:g}")
    tie = np.flatnonzero(val_loss[:got] == val_loss[got])
    assert tie.size == 0, (f"index {got} is a minimum, but evaluation {tie[0]} before it has the "
                           f"same loss {val_loss[got]:g}; ties go to the first")


def test_by_hand(student):
    function = student("3.3").early_stop_index
    assert int(function(np.array([2.3, 0.9, 0.4, 0.5, 0.7]))) == 2, \
        "losses 2.3, 0.9, 0.4, 0.5, 0.7 turn up after index 2: expected 2"
    assert int(function(np.array([1.0, 0.5, 0.5, 0.6]))) == 1, \
        "losses 1.0, 0.5, 0.5, 0.6: the minimum 0.5 first occurs at index 1"
    assert int(function(np.array([0.8]))) == 0, "a single evaluation is the early-stop one: expected 0"
    assert int(function(np.array([3.0, 2.0, 1.0]))) == 2, \
        "a loss that keeps falling stops at the last evaluation: expected 2"


@settings(max_examples=60, deadline=None, database=None)
@given(val_loss=st.lists(st.sampled_from([0.1, 0.25, 0.25, 0.5, 1.0, 2.3]), min_size=1, max_size=30))
def test_random_curves(student, val_loss):
    check(student("3.3").early_stop_index, val_loss)


def test_a_later_equal_minimum_does_not_move_the_early_stop(student):
    # The loss returns to its minimum after rising: the early stop stays at the first visit.
    function = student("3.3").early_stop_index
    assert int(function(np.array([0.9, 0.5, 0.8, 0.5, 0.5]))) == 1, \
        "losses 0.9, 0.5, 0.8, 0.5, 0.5: the minimum 0.5 is first reached at index 1"
    assert int(function(np.array([0.4, 0.6, 0.4]))) == 0, \
        "losses 0.4, 0.6, 0.4: the first evaluation is already the minimum: expected 0"
