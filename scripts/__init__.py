"""Experiments built on the pipeline's entry points (``python -m scripts.<name>``)."""
