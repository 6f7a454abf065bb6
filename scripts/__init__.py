"""Experiments built on the pipeline's entry points (``python -m scripts.<name>``)."""

import argparse


def doc_parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The command line of ``python -m <module>``: its docstring's first paragraph as the description, the rest (the
    usage examples and what it does) as the epilog."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=doc.split("\n\n", 1)[1])
