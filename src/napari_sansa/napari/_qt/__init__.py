"""The Qt dock widget: layout and wiring of the session only."""
