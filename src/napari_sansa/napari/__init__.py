"""The napari adapter (no Qt): layers to prompts, run plans, output layers and the run
session. The dock widget and its panels live in ``_qt``."""
