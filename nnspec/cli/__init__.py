"""Stage 5, the command line: the commands (commands.py), their argument parser and shell
completion (arguments.py), pipe-safe printing and unwrapped tables (output.py), checks of the
paths a command writes (paths.py), the --nproc launcher, and the summary and plugin views."""
from nnspec.cli.commands import main

__all__ = ["main"]
