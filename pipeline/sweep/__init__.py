"""Sweeps: many training runs on Ray Tune, ranked by the in-training evaluation (``make sweep``)."""
