"""Hidden tests of exercise 1.2 (relu_backward): run when grading and by the teacher's
pytest, never handed out (``build`` leaves tests/coursework/hidden/ out).

"else 0" means exactly 0: where x <= 0 the result is 0 even when dout there is inf
or NaN (a product dout * (x > 0) gives NaN there); where x > 0 it is dout, NaN
included. Shapes of four axes, as a convolution's activations have."""

import numpy as np
import pytest

pytestmark = pytest.mark.exercise_1_2


def test_four_axes_in_float64(student):
    rng = np.random.default_rng(12)
    x = rng.choice([-1.5, -0.0, 0.0, 0.25, 3.0], size=(2, 3, 4, 5))
    dout = rng.standard_normal(x.shape)
    got = np.asarray(student("1.2").relu_backward(x, dout))
    assert got.shape == x.shape and got.dtype == np.float64, \
        f"dx has shape {got.shape} and dtype {got.dtype}, should be {x.shape} float64"
    expected = np.where(x > 0, dout, 0.0)
    assert np.array_equal(got, expected), \
        f"{int(np.sum(got != expected))} of {x.size} entries of dx wrong for x of shape {x.shape}"


@pytest.mark.weight(2)
def test_zero_where_x_is_not_positive_whatever_dout_is(student):
    x = np.array([-1.0, 0.0, -0.0, 2.0, 3.0], np.float32)
    dout = np.array([np.inf, np.nan, -np.inf, np.nan, 4.0], np.float32)
    got = np.asarray(student("1.2").relu_backward(x, dout))
    for i in range(3):
        assert got[i] == 0, (f"dx[{i}] is {got[i]:g} for x = {x[i]:g}, dout = {dout[i]:g}; "
                             f"should be exactly 0 where x <= 0 (not dout * 0)")
    assert np.isnan(got[3]) and got[4] == 4.0, \
        f"dx[3:] is {got[3:].tolist()}, should be [nan, 4.0]: dout where x > 0"
