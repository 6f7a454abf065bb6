"""Evaluation: real-data statistics, the in-training evaluator and early stopping, ``make eval``."""
