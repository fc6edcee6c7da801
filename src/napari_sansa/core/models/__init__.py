"""Building SANSA models: SAM2 with adapters, checkpoints, the registry and downloads,
device and precision, and ``load_model``."""
