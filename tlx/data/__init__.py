"""Datasets tlx reads: their manifest, and fetching them into a data root (`python -m tlx.data`)."""
