"""The `andraeus` command line: a front end over ``andraeus_core``'s public names, outside the core."""

from .cli import build_parser, main

__all__ = ["build_parser", "main"]
