"""Sequential runs along one axis of a stack: the frames of each run, in order."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sansa.core.sequences import sequential_groups


def test_groups_go_along_the_chosen_axis_within_each_index_of_the_others():
    # frames of a (T=2, Z=3) stack: 0..5 in C order (Z fastest)
    assert sequential_groups((2, 3)) == [[0, 1, 2], [3, 4, 5]]  # along the last (Z)
    assert sequential_groups((2, 3), along=1) == [[0, 1, 2], [3, 4, 5]]
    assert sequential_groups((2, 3), along=0) == [[0, 3], [1, 4], [2, 5]]  # T for each Z


def test_three_axes_and_a_subset_of_frames():
    sizes = (2, 3, 4)
    frames = np.arange(24).reshape(sizes)
    for along in range(3):
        want = np.moveaxis(frames, along, -1).reshape(-1, sizes[along]).tolist()
        assert sequential_groups(sizes, along) == want
    # only some frames (a napari run of selected frames): empty groups are left out
    assert sequential_groups((2, 3), along=0, frames=[5, 0, 3]) == [[0, 3], [5]]
    assert sequential_groups((), frames=[0]) == [[0]]


def test_an_axis_that_is_not_a_frame_axis_is_refused():
    with pytest.raises(ValueError, match="frame axis 2"):
        sequential_groups((2, 3), along=2)
