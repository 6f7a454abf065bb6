"""Launching training elsewhere: a Ray job on a cluster, a local multi-node Ray cluster."""
