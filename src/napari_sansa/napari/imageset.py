"""Image sets: one stack, or several image layers of any sizes, labelled in one run.

References are the images (frames) that carry prompts, targets the others. With
several images, each prompt layer belongs to one of them: the image it was made
for by the widget (``layer.metadata[META_IMAGE]``), else the one image it fits (a
Labels layer of that image's shape and placement; Points or Shapes whose items all
lie on that image). Every image keeps its own size: its output is a Labels layer
of its own shape, placed on it in the viewer. Main thread only; values are frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from napari_sansa.core.fusion import label_dtype
from napari_sansa.napari.geometry import (
    FrameStack,
    PromptError,
    apply_matrix,
    fit_problem,
    image_data,
    image_geometry,
    layer_to_image,
)
from napari_sansa.napari.layers import quoted_names
from napari_sansa.napari.plan import NO_IMAGE, RunPlan, make_plan, no_layers_problem, plan_image

__all__ = ["META_IMAGE", "SetPlan", "assign_prompt_layers", "make_set_plan"]

#: key in a prompt layer's metadata naming the image it was made for
META_IMAGE = "napari-sansa-image"


@dataclass(frozen=True, eq=False)
class SetPlan:
    """One run over an image set: one :class:`RunPlan` per image (``parts``)."""

    parts: tuple[RunPlan, ...]

    @property
    def references(self) -> tuple[tuple[int, object], ...]:
        """(part, FramePrompts) of every reference, image by image."""
        return tuple((i, r) for i, p in enumerate(self.parts) for r in p.references)

    @property
    def targets(self) -> tuple[tuple[int, int], ...]:
        """(part, frame) of every target, image by image."""
        return tuple((i, f) for i, p in enumerate(self.parts) for f in p.targets)

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted({c for p in self.parts for c in p.classes}))

    @property
    def labels_dtype(self):
        return label_dtype(max(self.classes))

    @property
    def total(self) -> int:
        return sum(p.total for p in self.parts)

    def shared_intensity_range(self) -> tuple[bool, tuple[float, float] | None]:
        """(True, range) when every image is scaled the same way, else (False, None)."""
        ranges = {p.intensity_range for p in self.parts}
        return (True, ranges.pop()) if len(ranges) == 1 else (False, None)


def _kind(layer) -> str:
    return type(layer).__name__.lower()


def _items_on(layer, image) -> bool | None:
    """Whether every item of a Points/Shapes layer lies on ``image`` (None: no items)."""
    from napari.layers import Points

    if layer.ndim != image.ndim:
        return False
    if isinstance(layer, Points):
        coords = np.asarray(layer.data, dtype=float).reshape(-1, layer.ndim)
    else:
        parts = [np.asarray(v, dtype=float) for v in layer.data]
        coords = np.concatenate(parts) if parts else np.zeros((0, layer.ndim))
    if not len(coords):
        return None
    geometry = image_geometry(image)
    rc = apply_matrix(layer_to_image(layer, image), coords)
    h, w = geometry.hw
    lead = np.rint(rc[:, :-2])
    inside = (rc[:, -2] >= -0.5) & (rc[:, -2] <= h) & (rc[:, -1] >= -0.5) & (rc[:, -1] <= w)
    if lead.shape[1]:
        inside &= np.all((lead >= 0) & (lead < np.asarray(geometry.leading)), axis=1)
    return bool(inside.all())


def _fits(layer, image) -> bool | None:
    from napari.layers import Labels

    if isinstance(layer, Labels):
        return fit_problem(image, layer) is None
    return _items_on(layer, image)


def assign_prompt_layers(images, layers) -> list[list]:
    """For each image of the set, the prompt layers that belong to it (see module)."""
    names = [image.name for image in images]
    out: list[list] = [[] for _ in images]
    for layer in layers:
        linked = (getattr(layer, "metadata", None) or {}).get(META_IMAGE)
        if linked in names:
            out[names.index(linked)].append(layer)
            continue
        fits = [_fits(layer, image) for image in images]
        if all(f is None for f in fits):
            continue  # an empty Points/Shapes layer: no prompts to place
        where = [i for i, f in enumerate(fits) if f]
        if len(where) == 1:
            out[where[0]].append(layer)
            continue
        kind = _kind(layer)
        how = (
            "make prompt layers with the '+ points', '+ shapes' and '+ labels' buttons while "
            "their image is chosen under 'image' (such a layer remembers its image)"
        )
        if not where:
            raise PromptError(
                f"the {kind} layer '{layer.name}' lies on none of the images "
                f"{quoted_names(names)} (its shape or its items do not fit any of them): {how}"
            )
        raise PromptError(
            f"the {kind} layer '{layer.name}' fits several images "
            f"({quoted_names(names[i] for i in where)}), so it is not clear which one it "
            f"marks: {how}, or move the images apart in the viewer (their translate)"
        )
    return out


class ChannelLayers:
    """Two or three image layers of one shape read as the red, green (and blue) channels
    of one image (napari's way to show channels: one layer each), lazily, each scaled
    to [0, 1] by its own contrast limits."""

    def __init__(self, layers):
        from napari_sansa.napari.plan import intensity_range

        self.parts = [(image_data(layer), intensity_range(layer), layer.name) for layer in layers]
        data = self.parts[0][0]
        self.shape = (*data.shape, 3)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, index):
        from napari_sansa.core.images import to_float_rgb

        planes = [
            to_float_rgb(np.asarray(data[index]), rng, name)[..., 0]
            for data, rng, name in self.parts
        ]
        while len(planes) < 3:
            planes.append(np.zeros_like(planes[0]))
        return np.stack(planes, axis=-1)


def _channels_plan(images, layers, frame_range) -> SetPlan:
    """One image made of 2 or 3 same-shape layers as its channels: the first layer's
    frames, prompts and output."""
    names = quoted_names(image.name for image in images)
    shapes = {image_geometry(image).shape for image in images}
    if len(images) > 3 or len(shapes) != 1 or any(image.rgb for image in images):
        raise PromptError(
            f"channel layers must be two or three gray image layers of one shape (the "
            f"layers {names} are not): choose them under 'image' and 'with images'"
        )
    plan = make_plan(images[0], layers, frame_range)
    geometry = replace(plan.geometry, rgb=True)
    stack = FrameStack(ChannelLayers(images), geometry, name=images[0].name)
    return SetPlan((RunPlan(stack, plan.references, plan.targets, None),))


def make_set_plan(
    images,
    prompt_layers,
    frame_range: tuple[int, int] | None = None,
    as_channels: bool = False,
) -> SetPlan:
    """Plan a run over ``images`` (one stack, or several image layers), or raise
    PromptError. ``frame_range`` applies to a single stack only. ``as_channels``: the
    images are the channels (red, green, blue) of one image, labelled into the first
    one's output."""
    images = [image for image in images if image is not None]
    if not images:
        raise PromptError(NO_IMAGE)
    layers = list(prompt_layers)
    if as_channels and len(images) > 1:
        return _channels_plan(images, layers, frame_range)
    if len(images) == 1:
        return SetPlan((make_plan(images[0], layers, frame_range),))
    if not layers:
        raise PromptError(no_layers_problem())
    assigned = assign_prompt_layers(images, layers)
    parts = tuple(plan_image(image, own) for image, own in zip(images, assigned, strict=True))
    names = quoted_names(image.name for image in images)
    if not any(p.references for p in parts):
        raise PromptError(
            f"the prompt layers ({quoted_names(layer.name for layer in layers)}) hold no prompts "
            f"for any of the images {names}: mark the objects on one or a few of them"
        )
    if not any(p.targets for p in parts):
        raise PromptError(
            f"every image of the set ({names}) has prompts, so nothing is left to label: "
            "add the images SANSA should label, without prompts, under 'with images'"
        )
    return SetPlan(parts)
