"""The widget's keyboard loop, in napari's own shortcut system (its action manager).

Each action is registered once per process as ``napari-sansa:<name>`` with napari's
viewer as its key map provider, so it is listed (and can be rebound) in napari's
Preferences > Shortcuts, under the viewer's key bindings, and a binding saved there
wins over the defaults below. The defaults are also added to napari's own default
shortcuts, so that "Restore All Keybindings" there gives them back. An action acts on the
SANSA widget docked in the viewer that has the focus; the buttons' tooltips show the keys.
"""

from __future__ import annotations

import weakref

__all__ = ["ACTIONS", "register_shortcuts", "shortcut_text"]

PREFIX = "napari-sansa"

#: name -> (description, default keys, what it does on a SansaWidget)
ACTIONS = {
    "run": ("SANSA: run", "Shift+R", lambda w: w.run()),
    "stop": ("SANSA: stop the run, folder run or fine-tuning", "Shift+S", lambda w: w.stop()),
    "use_shown_frame": (
        "SANSA: take the shown frame as a reference",
        "Shift+U",
        lambda w: w.use_current_frame_as_reference(),
    ),
    "next_class": ("SANSA: next class", "Shift+Up", lambda w: w.step_class(1)),
    "previous_class": ("SANSA: previous class", "Shift+Down", lambda w: w.step_class(-1)),
    "positive_click": (
        "SANSA: positive clicks (on the object)",
        "Shift+I",
        lambda w: setattr(w.polarity, "value", "positive"),
    ),
    "negative_click": (
        "SANSA: negative clicks (not the object)",
        "Shift+O",
        lambda w: setattr(w.polarity, "value", "negative"),
    ),
    "clear_class": (
        "SANSA: clear the chosen class's prompts on the shown frame",
        "Shift+C",
        lambda w: w.preview_panel.clear_class(),
    ),
    "fix_clicks": (
        "SANSA: a Points layer whose clicks redraw a class on a labelled frame",
        "Shift+F",
        lambda w: w.preview_panel.new_fix_layer(),
    ),
    "fix_box": (
        "SANSA: a Shapes layer whose rectangles redraw the chosen class on a labelled frame",
        "Shift+B",
        lambda w: w.preview_panel.new_fix_box_layer(),
    ),
    "next_uncertain_frame": (
        "SANSA: go to the next least certain frame",
        "Shift+N",
        lambda w: w.go_to_next_uncertain(),
    ),
}

#: the widgets that shortcuts can act on (one per viewer, usually)
_WIDGETS: list[weakref.ref] = []


def _widget_for(viewer):
    alive = [ref() for ref in _WIDGETS if ref() is not None]
    _WIDGETS[:] = [weakref.ref(w) for w in alive]
    alive = [w for w in alive if w.session.alive]
    for widget in reversed(alive):
        if widget.viewer is viewer:
            return widget
    # a viewer without the widget, or none (an action triggered from a script): the
    # last widget opened
    return alive[-1] if alive else None


def _command(name: str):
    from napari.viewer import Viewer

    act = ACTIONS[name][2]

    def command(viewer: Viewer | None = None):
        widget = _widget_for(viewer)
        if widget is not None:
            act(widget)

    command.__name__ = f"sansa_{name}"
    return command


def full_name(name: str) -> str:
    return f"{PREFIX}:{name}"


def shortcut_text(name: str) -> str:
    """The keys bound to action ``name`` now, as napari writes them ('' if none)."""
    from napari.utils.action_manager import action_manager
    from napari.utils.interactions import Shortcut

    keys = action_manager._shortcuts.get(full_name(name), [])
    return " or ".join(str(Shortcut(k)) for k in keys)


def _add_defaults() -> bool:
    """Add the actions' default keys to napari's own defaults (the dict that napari's
    shortcut settings take as their default value, and complete every value with), so
    that Preferences > Shortcuts > "Restore All Keybindings" gives them back (it resets
    the settings to those defaults, then binds what they hold). Returns False where the
    installed napari keeps its defaults elsewhere."""
    try:
        from napari.utils.key_bindings import coerce_keybinding
        from napari.utils.shortcuts import default_shortcuts
    except ImportError:  # another napari: the defaults are bound below only
        return False
    if not isinstance(default_shortcuts, dict):
        return False
    for name, (_, keys, _) in ACTIONS.items():
        default_shortcuts.setdefault(full_name(name), [coerce_keybinding(keys)])
    return True


def _register() -> None:
    from napari.components import ViewerModel
    from napari.settings import get_settings
    from napari.utils.action_manager import action_manager

    _add_defaults()
    saved = get_settings().shortcuts.shortcuts
    for name, (description, keys, _) in ACTIONS.items():
        full = full_name(name)
        if full not in action_manager._actions:
            action_manager.register_action(full, _command(name), description, ViewerModel)
        if full not in saved and not action_manager._shortcuts.get(full):
            action_manager.bind_shortcut(full, keys)  # the default, unless one was saved


#: widget attribute -> action whose keys its tooltip shows
TOOLTIPS = {
    "run_button": "run",
    "stop_button": "stop",
    "use_frame_button": "use_shown_frame",
    "class_id": "next_class",
    "polarity": "positive_click",
    "scores": "next_uncertain_frame",
    "preview_panel.clear_button": "clear_class",
    "preview_panel.fix_button": "fix_clicks",
}


def _show_keys(widget) -> None:
    """Put the keys of each action at the end of its control's tooltip."""
    for attr, name in TOOLTIPS.items():
        control = widget
        for part in attr.split("."):  # 'preview_panel.clear_button': a panel's control
            control = getattr(control, part)
        native = getattr(control, "native", control)
        base = native.property("sansa_tip")
        if base is None:
            base = native.toolTip() or ACTIONS[name][0].removeprefix("SANSA: ")
            native.setProperty("sansa_tip", base)
        keys = shortcut_text(name)
        if attr == "class_id":
            keys = f"{keys} / {shortcut_text('previous_class')}"
        elif attr == "polarity":
            keys = f"{keys} / {shortcut_text('negative_click')}"
        native.setToolTip(f"{base} [{keys}]" if keys.strip(" /") else base)


def register_shortcuts(widget) -> dict:
    """Register the actions (once), let them act on ``widget`` and show their keys in its
    tooltips. Returns ``{action name: napari action name}``."""
    from napari.utils.action_manager import action_manager

    _register()
    _WIDGETS.append(weakref.ref(widget))
    _show_keys(widget)
    ref = weakref.ref(widget)

    def update(event=None):
        w = ref()
        if w is not None and w.session.alive:
            _show_keys(w)

    action_manager.events.shortcut_changed.connect(update, until=widget.native.destroyed)
    return {name: full_name(name) for name in ACTIONS}
