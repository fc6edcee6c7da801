"""SAM2's memory rule, without torch: which earlier frames a frame attends to.

The memory bank holds ``num_maskmem`` (7) frames: frame 0 and the six before the current
one; object pointers come from frame 0 and the fifteen before (``max_pointers`` = 16), as
in the authors' code. The engine applies the rule; the napari plan reads it to tell the
person, before a run, which reference frames reach the targets only through pointers.
"""

from __future__ import annotations

NUM_MASKMEM = 7
MAX_POINTERS = 16


def frames_for(
    t: int, available, num_maskmem: int = NUM_MASKMEM, max_pointers: int = MAX_POINTERS
) -> tuple[list[tuple[int, int]], list[int]]:
    """Which earlier frames a frame at episode index ``t`` attends to:
    ``([(temporal slot, frame)], [frames whose object pointer it uses])``, among the
    ``available`` frame indices (frame 0 always)."""
    slots = [(0, 0)]
    for slot in range(1, num_maskmem):
        j = t - (num_maskmem - slot)
        if j > 0 and j in available:
            slots.append((slot, j))
    pointers = [0]
    for d in range(1, min(t + 1, max_pointers)):
        j = t - d
        if j <= 0:
            break
        if j in available:
            pointers.append(j)
    return slots, pointers


def reach(
    k: int, num_maskmem: int = NUM_MASKMEM, max_pointers: int = MAX_POINTERS
) -> dict[str, tuple[int, ...]]:
    """How a target after ``k`` references sees each of them: ``{"memory": ...,
    "pointer": ... (only through object pointers), "none": ...}``, reference indices."""
    slots, pointers = frames_for(k, range(k), num_maskmem, max_pointers)
    memory = {j for _, j in slots}
    return {
        "memory": tuple(sorted(memory)),
        "pointer": tuple(sorted(set(pointers) - memory)),
        "none": tuple(sorted(set(range(k)) - memory - set(pointers))),
    }
