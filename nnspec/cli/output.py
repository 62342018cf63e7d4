"""Printing that a closed pipe cannot cut short, and tables that do not wrap in a pipe.

`nnspec validate specs/ | head -1` closes stdout after one line. Python then raises
BrokenPipeError from the next print; left alone it ends the command early (with exit 0 if
caught, a traceback otherwise) — a CI step with `pipefail` would pass on invalid specs, and
`nnspec train spec.nn | head -2` would stop training without weights. `guard_streams()` wraps
stdout and stderr so that once the reader is gone every later write is dropped (the stream's
descriptor is pointed at os.devnull, so the interpreter's final flush is quiet too): the command
finishes its work and exits with its real code.
"""
from __future__ import annotations

import errno
import os
import sys
from typing import TextIO


class PipeSafeStream:
    """A text stream that drops writes once its reader has gone (EPIPE), instead of raising."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except OSError as err:
                self._lost(err)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except OSError as err:
                self._lost(err)

    def _lost(self, err: OSError) -> None:
        if not isinstance(err, BrokenPipeError) and err.errno not in (errno.EPIPE, errno.EINVAL):
            raise err
        self.reader_gone = True
        try:        # later writes (and the final flush at exit) go nowhere, quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def isatty(self) -> bool:
        return not self.reader_gone and self._stream.isatty()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def guard_streams() -> None:
    """Make sys.stdout and sys.stderr pipe-safe (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, PipeSafeStream):
            setattr(sys, name, PipeSafeStream(stream))


def console(stream: TextIO | None = None):
    """A rich Console on stdout; when it is not a terminal (a pipe, a file) rows never wrap: the
    width is unlimited, so a long row stays one line for grep and friends."""
    from rich.console import Console
    stream = stream or sys.stdout
    if stream.isatty():
        return Console(file=stream)
    return Console(file=stream, width=100_000, soft_wrap=True)



def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotation(d) -> str:
    """A GitHub Actions workflow command (`::error file=…,line=…::message`) for a Diagnostic,
    escaped as GitHub's runner unescapes it: property values (file, title) escape % CR LF : and
    `,`; the message escapes % CR LF."""
    s = d.span
    kind = "error" if d.severity == "error" else "warning"
    message = d.message + (f" ({d.hint})" if d.hint else "")
    return (f"::{kind} file={_escape_property(s.file)},line={s.line},col={s.column},endLine={s.end_line},"
            f"endColumn={s.end_column},title={_escape_property(d.code)}::{_escape_data(message)}")
