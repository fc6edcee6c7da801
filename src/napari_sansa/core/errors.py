"""Exceptions raised by napari-sansa.

Every error a user can cause is a :class:`ValueError` subclass whose message says
what to change, so that scripts can catch ``ValueError`` and the widget and the
command line can show the message as it is.
"""

from __future__ import annotations

import re


class SansaError(Exception):
    """Base class of napari-sansa's own errors."""


class InvalidInputError(SansaError, ValueError):
    """An image, a prompt or a setting cannot be used as given."""


def option_flag(option: str) -> str:
    """The command line's name of a run option: ``tile_size`` -> ``--tile-size``."""
    return "--" + option.replace("_", "-")


class _Names(dict):
    """``{keyword}`` -> the front end's name of that option (None: it has none)."""

    def __init__(self, name):
        super().__init__()
        self.name = name

    def __missing__(self, key):
        return self.name(key)


def _word(text: str, names: _Names, only=None) -> str:
    """``text`` with each ``{keyword}`` named (``only``: just these keywords, the rest is
    text, as a path in the message may hold braces); a ``[clause]`` naming an option
    that the front end does not have (its name is None) is left out, other such clauses
    are kept without their brackets (brackets without an option in them are text)."""
    word = r"{(\w+)}" if only is None else r"{(" + "|".join(only) + r")}"

    def clause(match) -> str:
        inner = match.group(1)
        used = re.findall(word, inner)
        if not used:
            return match.group(0)
        return "" if any(names[k] is None for k in used) else inner

    text = re.sub(r"\[([^\[\]]*)\]", clause, text)
    return re.sub(word, lambda m: str(names[m.group(1)]), text)


class OptionError(InvalidInputError):
    """An error about a run's options, as structured fields, so that each front end words
    the message with its own names for the options (the command line its flags, the
    widget its controls; ``str()`` uses the Python keywords unless said otherwise).

    ``option``: the option's keyword (``"tile_size"``); ``value``: the value given;
    ``allowed``: what it can be, in words; ``fix``: more advice (optional). Other options
    named in ``allowed`` or ``fix`` are written ``{keyword}`` and worded the same way; a
    ``[clause]`` naming an option that a front end does not have is left out there.
    ``template``: the whole message instead, for errors that are not about one value,
    e.g. an output folder that holds another run's outputs; it names ``{value}``, the
    option and ``{overwrite}`` only (the rest is text, paths included).
    ``default``: the naming of ``str()`` (default: the keywords). ``also``: other options
    a ``template`` names (``{keyword}``, worded as the option is).
    """

    def __init__(
        self,
        option: str,
        value,
        allowed: str = "",
        *,
        fix: str = "",
        template=None,
        default=None,
        also: tuple = (),
    ):
        self.option, self.value, self.allowed, self.fix = option, value, allowed, fix
        self.template, self.default, self.also = template, default, tuple(also)
        super().__init__(self.worded())

    def worded(self, name=None) -> str:
        """The message, with each option called ``name(keyword)`` (None: the front end has
        no such option); by default as ``str()`` words it."""
        names = _Names(name or self.default or str)
        if self.template is not None:
            names["value"] = str(self.value)
            only = ("value", self.option, "overwrite", *self.also)
            return _word(self.template, names, only=only)
        text = f"{names[self.option]} must be {_word(self.allowed, names)}, got {self.value!r}"
        return f"{text}: {_word(self.fix, names)}" if self.fix else text

    def __reduce__(self):  # raised on Dask workers: travels with its fields
        fields = (self.option, self.value, self.allowed, self.fix, self.template, self.default)
        return (_option_error, (type(self), *fields, self.also))


def _option_error(cls, option, value, allowed, fix, template, default, also=()):
    return cls(option, value, allowed, fix=fix, template=template, default=default, also=also)


def output_error(template: str, out) -> OptionError:
    """An :class:`OptionError` about the output folder ``out``: ``template`` names the
    options ``{out}`` and ``{overwrite}`` (worded by each front end; ``str()`` as the
    command line says them)."""
    return OptionError("out", out, template=template, default=option_flag)


class CheckpointError(SansaError, ValueError):
    """A weights file is missing, unreadable, or does not fit the model."""


class ModelNotFoundError(CheckpointError, FileNotFoundError):
    """A model's weights are not on disk and cannot be fetched right now."""


class DeviceMemoryError(SansaError, MemoryError):
    """An image does not fit in the device's memory even on its own."""
