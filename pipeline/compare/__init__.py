"""``make compare``: listen to two generators side by side on one self-contained HTML page.

    python -m pipeline.compare                                     # A=@champion, B=latest
    python -m pipeline.compare --a @champion --b 7
    python -m pipeline.compare --a models:/wavegan-generator/3 --b ray_results/tiny/checkpoint_2026-.../
    python -m pipeline.compare --b tiny registry.checkpoint=best    # a training run under train.storage_path
    python -m pipeline.compare --blind --n 3 --label seven,zero

A model is a model URI (models:/NAME/7, models:/NAME@alias, models:/NAME/latest; the shorthands @alias,
latest and 7 mean the registered model registry.model_name), a training checkpoint folder (state.pt), or a
training run: a Ray run folder, or its name under train.storage_path, whose checkpoint is chosen as
registry.checkpoint says (last, or best by registry.metric).

Both models generate from the same latents (and, when class-conditional, the same labels: --n clips of
each, the label names as row headings). The page holds every clip as an embedded WAV with a small
spectrogram, a few real clips of the training shards (the model's data.dir) as reference, and a header
with both models' identity and evaluation tags; it loads nothing from anywhere, so it works as a file,
in the MLflow UI's artifact view, or attached to a mail. --blind shuffles the sides per row and writes
the key to a separate file.

The page is written to --out (outputs/compare/v3_vs_v7.html), logged to B's MLflow run (artifact
compare/v3_vs_v7.html) and tagged on B's registered version (compare.vs.v3), where make promote finds it.
A B without an MLflow run (a bare checkpoint) gets the local page only.
"""

from __future__ import annotations

COMPARISON_TAG_PREFIX = "compare.vs."


class CompareError(ValueError):
    """A comparison that cannot be made as asked; the message names the bad value and what to do."""


def comparison_tag(slug: str) -> str:
    """The tag on B's registered version that holds the artifact URI of its comparison against ``slug``
    (``v3``: version 3 of the same registered model), so promotion finds it after aliases have moved."""
    return f"{COMPARISON_TAG_PREFIX}{slug}"
