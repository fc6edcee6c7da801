"""Headless whole-dataset runs: discovery, reference and prompt files, resume records,
streaming and writing, Dask. The entry point is ``segment_dataset``."""
