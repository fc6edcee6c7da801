"""The Qt thread workers the sessions run in: napari's ``create_worker``.

The sessions (:mod:`..session`, :mod:`..folder`, :mod:`..training`) import no Qt: the
widget gives them this factory (``SansaSession(viewer, create_worker=create_worker)``,
``FolderRun(viewer, models, create_worker)``; the fine-tuning session uses its
session's). It takes a function and its arguments, and napari's ``_progress`` and
``_start_thread`` keywords, and returns a worker with the ``yielded``, ``returned``,
``errored``, ``aborted`` and ``finished`` signals, emitted on the main thread.
"""

from __future__ import annotations

from napari.qt.threading import create_worker

__all__ = ["create_worker"]
