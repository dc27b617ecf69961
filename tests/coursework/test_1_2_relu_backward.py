"""Exercise 1.2: relu_backward(x, dout) in tutorials/01-layers-by-hand.ipynb.

dx = dout where x > 0, else 0, elementwise: checked entry by entry against
that definition; the inputs are drawn from a few values, zero among them, so the
kink at x = 0 (where dx must be 0) is hit often."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.exercise_1_2


def check(relu_backward, x, dout):
    x_before, dout_before = x.copy(), dout.copy()
    got = np.asarray(relu_backward(x, dout))
    assert got.shape == dout.shape, f"dx has shape {got.shape}, should be {dout.shape} like dout"
    assert np.array_equal(x, x_before) and np.array_equal(dout, dout_before), \
        "relu_backward changed its input x or dout in place; return a new array instead"
    for wrong, should in (((x > 0) & (got != dout), "dout (x > 0)"),
                          ((x <= 0) & (got != 0), "0 (x <= 0)")):
        if wrong.any():
            index = tuple(int(i) for i in np.argwhere(wrong)[0])
            raise AssertionError(f"dx{list(index)} is {got[index]:g}, should be {should} "
                                 f"(x = {x[index]:g}, dout = {dout[index]:g}; "
                                 f"{int(wrong.sum())} of {got.size} entries wrong)")


def test_by_hand(student):
    # x = 0 exactly gets 0, like every x < 0.
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 2.0]], np.float32)
    dout = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]], np.float32)
    check(student("1.2").relu_backward, x, dout)


@st.composite
def cases(draw):
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple))
    size = int(np.prod(shape))
    values = st.sampled_from([-1.5, -0.25, 0.0, 0.0, 0.3, 2.0])
    x = np.array(draw(st.lists(values, min_size=size, max_size=size)), np.float32)
    dout = np.array(draw(st.lists(st.floats(-3, 3, width=32), min_size=size, max_size=size)),
                    np.float32)
    return x.reshape(shape), dout.reshape(shape)


@settings(max_examples=60, deadline=None, database=None)
@given(case=cases())
def test_random_shapes(student, case):
    check(student("1.2").relu_backward, *case)


def test_float32_stays_float32(student):
    x = np.array([[-1.0, 1.0]], np.float32)
    dx = np.asarray(student("1.2").relu_backward(x, np.ones_like(x)))
    assert dx.dtype == np.float32, f"dx has dtype {dx.dtype} for float32 inputs, should be float32"
