"""Stage 5, the command line: argument parsing and commands (commands.py), the --nproc launcher,
and the summary and plugin views."""
from nnspec.cli.commands import main

__all__ = ["main"]
