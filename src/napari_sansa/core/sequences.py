"""Sequential runs through a stack with several frame axes: which frames run together.

A stack's frames are numbered in C order over its frame axes (e.g. T then Z). A
sequential run goes along one of them: :func:`sequential_groups` puts the frames in one
group per index of the other axes (in their order), each group's frames in order along
the chosen axis; each group is then one sequential run through the same references.
The dataset runner (``dataset/stacks.frame_groups``) and the napari worker group their
frames here; each says in its own words when the axis asked for is not a frame axis.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sequential_groups"]


def sequential_groups(sizes, along: int | None = None, frames=None) -> list[list[int]]:
    """The frame numbers of a stack whose frame axes have ``sizes``, grouped for
    sequential runs along frame axis ``along`` (its position among the frame axes;
    None: the last): one group per index of the other axes, in C order, each group's
    frames in order along ``along``. ``frames``: only these frame numbers (default:
    all); groups with none of them are left out."""
    sizes = tuple(int(s) for s in sizes)
    if not sizes:
        return [[0]] if frames is None else [sorted(int(f) for f in frames)]
    along = len(sizes) - 1 if along is None else int(along)
    if not 0 <= along < len(sizes):
        raise ValueError(f"frame axis {along} is not among the {len(sizes)} frame axes")
    numbers = np.arange(int(np.prod(sizes)))
    if frames is not None:
        numbers = np.asarray(sorted({int(f) for f in frames}), dtype=np.int64)
    index = np.unravel_index(numbers, sizes)
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for k, f in enumerate(numbers):
        key = tuple(int(index[a][k]) for a in range(len(sizes)) if a != along)
        groups.setdefault(key, []).append((int(index[along][k]), int(f)))
    return [[f for _, f in sorted(members)] for _, members in sorted(groups.items())]
