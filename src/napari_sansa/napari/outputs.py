"""The layers the widget makes and the prompt defaults it sets (main thread only).

Output "<image> [sansa]" (Labels), probability maps "<image> [sansa p<class>]"
(Image, float32), references "<image> [sansa references]" (Labels, a prompt
layer) and new Points/Shapes prompt layers: all with the image's placement in
the world, found again by name (and role) so that re-runs update them in place.
"""

from __future__ import annotations

import numpy as np

from napari_sansa.napari.geometry import (
    META_KEY,
    at_level,
    chosen_level,
    image_geometry,
    labels_array,
    layer_role,
    level_count,
    level_factors,
)
from napari_sansa.napari.imageset import META_IMAGE, SetPlan
from napari_sansa.napari.plan import RunPlan

__all__ = [
    "defaults_event",
    "find_output",
    "mark_sizes",
    "labels_array",
    "output_pyramid",
    "set_labels_array",
    "new_points_layer",
    "new_shapes_layer",
    "points_layer_kwargs",
    "output_name",
    "prepare_output",
    "prepare_probabilities",
    "probability_name",
    "read_prompt_defaults",
    "references_layer",
    "references_name",
    "shapes_layer_kwargs",
    "write_prompt_defaults",
]


POSITIVE_COLOR = "lime"
NEGATIVE_COLOR = "red"


def output_name(image_name: str) -> str:
    return f"{image_name} [sansa]"


def level_output_name(image) -> str:
    """The output layer's name for the level a run labels: "<image> [sansa]" at the full
    resolution, "<image> [sansa] (level k)" at a coarser level (its own layer, on that
    level's pixels; found again by the next run at that level)."""
    return at_level(output_name(image.name), image)


def probability_name(image_name: str, label: int) -> str:
    return f"{image_name} [sansa p{label}]"


def references_name(image_name: str) -> str:
    return f"{image_name} [sansa references]"


def transform_kwargs(layer) -> dict:
    """The image's placement in the world, for the layers made for it: on the pixels of
    the level a run labels of a multiscale image (each of its pixels spans
    ``level_factors`` full-resolution pixels, where napari shows that level)."""
    scale = np.asarray(layer.scale, dtype=float)
    if getattr(layer, "multiscale", False) and chosen_level(layer):
        scale = scale * level_factors(layer)
    return {
        "scale": scale,
        "translate": layer.translate,
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine,
    }


#: the output of a multiscale image is a multiscale Labels layer when the frames it labels
#: are larger than this on a side (napari then shows the level that fits the screen);
#: smaller, it is one array, which napari shows whole and lets you paint (napari does not
#: paint multiscale Labels layers)
SINGLE_SCALE_MAX = 4096


def output_pyramid(image, base: np.ndarray) -> list[np.ndarray] | None:
    """The levels of a multiscale output of ``image`` holding ``base`` (the labels at the
    level a run labels): views of ``base`` taking every ``f``-th row and column (nearest
    neighbour: the pixels where napari shows the image's coarser levels), one per coarser
    level of the image whose factor is a whole number; None when the output is one
    array (the image is not multiscale, its labelled frames are no larger than
    :data:`SINGLE_SCALE_MAX`, or it has no coarser level). The views share ``base``'s
    memory: what is written there shows at every level."""
    if not getattr(image, "multiscale", False):
        return None
    level = chosen_level(image)
    hw = base.shape[-2:]
    if max(hw) <= SINGLE_SCALE_MAX:
        return None
    levels, last = [base], 1
    here = level_factors(image, level)[-2:]
    for k in range(level + 1, level_count(image)):
        ratio = level_factors(image, k)[-2:] / here
        step = np.rint(ratio).astype(int)
        if step.min() <= last or not np.allclose(step, ratio, rtol=0.02):
            continue  # not coarser, or not a whole-number factor (napari would misplace it)
        index = (Ellipsis, slice(None, None, int(step[0])), slice(None, None, int(step[1])))
        levels.append(base[index])
        last = int(step.min())
    return levels if len(levels) > 1 else None


def set_labels_array(layer, base: np.ndarray, image=None) -> None:
    """Give ``layer`` the labels ``base`` (e.g. widened to a larger dtype), with its
    pyramid made again when it is multiscale."""
    if getattr(layer, "multiscale", False) and image is not None:
        levels = output_pyramid(image, base)
        if levels is not None:
            layer.data = levels
            return
    layer.data = base


def _find(viewer, name: str, kind, shape, role: str | None = None):
    for layer in viewer.layers:
        if (
            layer.name == name
            and isinstance(layer, kind)
            and tuple(layer.data.shape) == tuple(shape)
            and (role is None or layer_role(layer) == role)
        ):
            return layer
    return None


def find_output(viewer, image):
    """The output Labels layer of ``image``, if there is one that fits it."""
    from napari.layers import Labels

    shape = image_geometry(image).shape
    return _find(viewer, level_output_name(image), Labels, shape, "output")


def prepare_output(viewer, image, plan: SetPlan | RunPlan, part: int = 0):
    """The output layer of the plan's image ``part``: the existing one (widened if the
    run's classes need it), or a new one of zeros of that image's shape."""
    dtype = plan.labels_dtype
    shape = _part(plan, part).geometry.shape
    layer = find_output(viewer, image)
    if layer is None:
        base = np.zeros(shape, dtype=dtype)
        levels = output_pyramid(image, base)
        return viewer.add_labels(
            base if levels is None else levels,
            multiscale=levels is not None,
            name=level_output_name(image),
            metadata={META_KEY: "output"},
            opacity=0.6,
            **transform_kwargs(image),
        )
    if np.iinfo(layer.data.dtype).max < max(plan.classes):
        set_labels_array(layer, np.asarray(labels_array(layer)).astype(dtype), image)
    return layer


def _part(plan, part: int) -> RunPlan:
    return plan.parts[part] if isinstance(plan, SetPlan) else plan


def prepare_probabilities(viewer, image, plan: SetPlan | RunPlan, part: int = 0) -> dict:
    """One float32 Image layer per class of the run, existing ones reused."""
    from napari.layers import Image

    layers = {}
    shape = _part(plan, part).geometry.shape
    for c in plan.classes:
        name = at_level(probability_name(image.name, c), image)
        layer = _find(viewer, name, Image, shape, role="probability")
        if layer is None:
            layer = viewer.add_image(
                np.zeros(shape, dtype=np.float32),
                name=name,
                metadata={META_KEY: "probability"},
                colormap="inferno",
                contrast_limits=(0.0, 1.0),
                blending="additive",
                opacity=0.7,
                **transform_kwargs(image),
            )
        layers[c] = layer
    return layers


def references_layer(viewer, image, dtype=np.uint8):
    """The image's "[sansa references]" Labels layer, made if there is none."""
    from napari.layers import Labels

    geometry = image_geometry(image)
    layer = _find(viewer, references_name(image.name), Labels, geometry.shape)
    if layer is None:
        layer = viewer.add_labels(
            np.zeros(geometry.shape, dtype=dtype),
            name=references_name(image.name),
            metadata={META_KEY: "references", META_IMAGE: image.name},
            **transform_kwargs(image),
        )
    return layer


def mark_sizes(image) -> dict:
    """Point size and line width (in the image's pixels) for the prompt layers made for
    ``image``: 8 and 2 up to 512 pixels a side, then growing with the frame, so that
    clicks stay visible on a large image seen whole (napari sizes them in pixels)."""
    try:
        side = max(image_geometry(image).hw)
    except ValueError:
        side = 0
    return {"size": max(8, side // 64), "edge_width": max(2, side // 256)}


def new_points_layer(viewer, image, label: int, positive: bool):
    layer = viewer.add_points(
        name=f"{image.name} [sansa points]",
        metadata={META_KEY: "points", META_IMAGE: image.name},
        **{**points_layer_kwargs(image.ndim, label, positive), "size": mark_sizes(image)["size"]},
        **transform_kwargs(image),
    )
    layer.mode = "add"
    return layer


def new_shapes_layer(viewer, image, label: int):
    layer = viewer.add_shapes(
        name=f"{image.name} [sansa shapes]",
        metadata={META_KEY: "shapes", META_IMAGE: image.name},
        **{**shapes_layer_kwargs(image.ndim, label), "edge_width": mark_sizes(image)["edge_width"]},
        **transform_kwargs(image),
    )
    layer.mode = "add_rectangle"
    return layer


def points_layer_kwargs(ndim: int, label: int = 1, positive: bool = True) -> dict:
    """Keyword arguments of a Points layer set up for prompts: class and polarity
    features, green positive and red negative clicks, the class id as text."""
    import pandas as pd

    return {
        "ndim": ndim,
        "features": pd.DataFrame(
            {"label": pd.Series([], dtype="int64"), "positive": pd.Series([], dtype=bool)}
        ),
        "feature_defaults": {"label": int(label), "positive": bool(positive)},
        "face_color": "positive",
        "face_color_cycle": {True: POSITIVE_COLOR, False: NEGATIVE_COLOR},
        "border_color": "white",
        "size": 8,
        "text": {"string": "{label}", "color": "white", "anchor": "upper_left", "size": 9},
    }


def shapes_layer_kwargs(ndim: int, label: int = 1) -> dict:
    """Keyword arguments of a Shapes layer set up for prompts (class feature shown as text)."""
    import pandas as pd

    return {
        "ndim": ndim,
        "features": pd.DataFrame({"label": pd.Series([], dtype="int64")}),
        "feature_defaults": {"label": int(label)},
        "face_color": "transparent",
        "edge_color": "yellow",
        "edge_width": 2,
        "text": {"string": "{label}", "color": "yellow", "anchor": "upper_left", "size": 9},
    }


# -- what the next prompt gets ---------------------------------------------------------


def defaults_event(layer):
    """The event a prompt layer emits when its next item's class changes (or None)."""
    from napari.layers import Labels, Points, Shapes

    if isinstance(layer, Labels):
        return layer.events.selected_label
    if isinstance(layer, (Points, Shapes)):
        return layer.events.feature_defaults
    return None


def read_prompt_defaults(layer) -> tuple[int | None, bool | None]:
    """(class, positive) that ``layer`` gives its next item; None where it does not say."""
    from napari.layers import Labels, Points, Shapes

    label, positive = None, None
    if isinstance(layer, (Points, Shapes)):
        defaults = layer.feature_defaults
        if "label" in defaults.columns:
            label = defaults["label"][0]
        if isinstance(layer, Points) and "positive" in defaults.columns:
            positive = defaults["positive"][0]
    elif isinstance(layer, Labels):
        label = layer.selected_label
    try:
        label = int(label) if label is not None and int(label) >= 1 else None
    except (TypeError, ValueError):
        label = None
    positive = bool(positive) if isinstance(positive, (bool, np.bool_)) else None
    return label, positive


def write_prompt_defaults(layer, label: int, positive: bool) -> None:
    """Make ``layer``'s next item of class ``label`` (and, for points, ``positive``)."""
    from napari.layers import Labels, Points, Shapes

    if isinstance(layer, Points):
        _set_feature_defaults(layer, label=int(label), positive=bool(positive))
    elif isinstance(layer, Shapes):
        _set_feature_defaults(layer, label=int(label))
    elif isinstance(layer, Labels):
        layer.selected_label = int(label)


def _set_feature_defaults(layer, **values) -> None:
    """Set what the layer gives its next item, adding missing feature columns (with
    the values that the prompts take when the column is absent: class 1, positive)."""
    import pandas as pd

    features = layer.features
    missing = {k: v for k, v in values.items() if k not in features.columns}
    if missing:
        implicit = {"label": 1, "positive": True}
        features = features.copy()
        for k, v in missing.items():
            dtype = bool if isinstance(v, bool) else "int64"
            features[k] = pd.Series([implicit.get(k, v)] * len(features), dtype=dtype)
        layer.features = features
    defaults = {c: layer.feature_defaults[c][0] for c in layer.features.columns}
    defaults.update(values)
    layer.feature_defaults = defaults
