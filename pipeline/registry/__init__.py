"""The MLflow model registry: registered generators, the evaluation classifier, the serving wrapper."""
