"""Exceptions raised by napari-sansa.

Every error a user can cause is a :class:`ValueError` subclass whose message says
what to change, so that scripts can catch ``ValueError`` and the widget and the
command line can show the message as it is.
"""

from __future__ import annotations


class SansaError(Exception):
    """Base class of napari-sansa's own errors."""


class InvalidInputError(SansaError, ValueError):
    """An image, a prompt or a setting cannot be used as given."""


class CheckpointError(SansaError, ValueError):
    """A weights file is missing, unreadable, or does not fit the model."""


class ModelNotFoundError(CheckpointError, FileNotFoundError):
    """A model's weights are not on disk and cannot be fetched right now."""


class DeviceMemoryError(SansaError, MemoryError):
    """An image does not fit in the device's memory even on its own."""
