"""MLflow: the run lifecycle, the buffered rank-0 logger, audio previews, the local UI server."""
