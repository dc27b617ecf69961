"""Exercise 5.2: random_masks_like (minilottery/pruning.py), the random-pruning
control: for every layer a mask with as many ones as the given mask, at positions
drawn uniformly without replacement, from a seed.

Checked: shapes, dtype and 0/1 values, each layer's count, the same masks for the
same seed and different ones for another, and uniformity: over 400 seeds every
position of a small layer is kept about kept/size of the time."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.exercise_5_2


def check_masks(masks, new, setting):
    assert isinstance(new, dict) and list(new) == list(masks), \
        f"expected a dict with the layers {list(masks)}, got {list(new) if isinstance(new, dict) else type(new).__name__}"
    for name, mask in masks.items():
        got = np.asarray(new[name])
        assert got.shape == mask.shape, f"{name}: mask of shape {got.shape}, should be {mask.shape} ({setting})"
        assert got.dtype == np.float32, f"{name}: mask of dtype {got.dtype}, should be float32"
        assert np.all((got == 0) | (got == 1)), f"{name}: a mask holds only 0 and 1 ({setting})"
        assert np.count_nonzero(got) == np.count_nonzero(mask), \
            (f"{name}: {np.count_nonzero(got)} ones, should be {np.count_nonzero(mask)} like the "
             f"given mask ({setting})")


@st.composite
def mask_sets(draw):
    masks = {}
    for name in ("fc1.W", "fc2.W", "out.W")[:draw(st.integers(1, 3))]:
        shape = draw(st.sampled_from([(5,), (3, 4), (2, 3, 2, 2)]))
        size = int(np.prod(shape))
        ones = draw(st.integers(0, size))
        flat = np.zeros(size, np.float32)
        flat[draw(st.permutations(range(size)))[:ones]] = 1
        masks[name] = flat.reshape(shape)
    return masks


@settings(max_examples=30, deadline=None, database=None)
@given(masks=mask_sets(), seed=st.integers(0, 2**31 - 1))
def test_counts_shapes_and_values(student, masks, seed):
    check_masks(masks, student("5.2").random_masks_like(masks, seed), f"seed {seed}")


def test_the_same_seed_gives_the_same_masks(student):
    masks = {"fc1.W": (np.arange(300).reshape(20, 15) % 3 == 0).astype(np.float32),
             "out.W": np.ones((10, 4), np.float32)}
    function = student("5.2").random_masks_like
    first, again, other = function(masks, 5), function(masks, 5), function(masks, 6)
    check_masks(masks, first, "seed 5")
    for name in masks:
        assert np.array_equal(first[name], again[name]), f"{name}: seed 5 gave two different masks"
    assert not np.array_equal(first["fc1.W"], other["fc1.W"]), \
        "fc1.W: seeds 5 and 6 gave the same random mask (100 of 300 kept)"


def test_the_given_positions_do_not_matter(student):
    # Random pruning keeps a count, not the positions: a mask keeping the first half
    # of a layer must be scattered all over it.
    mask = {"fc1.W": np.repeat(np.array([1, 0], np.float32), 500)}
    new = np.asarray(student("5.2").random_masks_like(mask, 0)["fc1.W"])
    assert 150 < np.count_nonzero(new[500:]) < 350, \
        (f"{np.count_nonzero(new[500:])} of the 500 ones fall in the second half, where the given "
         f"mask has none; random positions put about 250 there")


def test_every_position_is_equally_likely(student):
    size, kept, seeds = 10, 3, 400
    mask = {"fc1.W": np.array([1] * kept + [0] * (size - kept), np.float32)}
    function = student("5.2").random_masks_like
    counts = sum(np.asarray(function(mask, seed)["fc1.W"]) for seed in range(seeds))
    expected = seeds * kept / size                         # 120, standard deviation ~9.2
    worst = int(np.argmax(np.abs(counts - expected)))
    assert np.all(np.abs(counts - expected) < 40), \
        (f"position {worst} was kept {int(counts[worst])} times in {seeds} draws of {kept} of "
         f"{size}, expected about {expected:.0f}: the positions are not uniform")
