"""``make bench``: measurements of the production training step, data path, generation and evaluation."""
