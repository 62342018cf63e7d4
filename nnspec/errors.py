"""Diagnostics: every user-facing problem is a located `Diagnostic`; only `NnspecError` escapes.

Passes collect diagnostics into a `Diagnostics` list and keep going, so one run reports every
problem of a file; the CLI renders them (text, json, github) from here.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence


@dataclass(frozen=True, slots=True)
class Span:
    """A range in a source file: 1-based line/column, end exclusive, plus character offsets."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    start: int = 0
    end: int = 0

    @classmethod
    def unknown(cls, file: str = "<unknown>") -> "Span":
        return cls(file, 1, 1, 1, 1)

    def to(self, other: "Span") -> "Span":
        """The span from the start of self to the end of other."""
        return Span(self.file, self.line, self.column, other.end_line, other.end_column,
                    self.start, other.end)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: str          # "error" | "warning"
    code: str              # e.g. "E201"; see docs/language.md#errors
    message: str
    span: Span
    hint: str | None = None

    def sort_key(self):
        return (self.span.file, self.span.line, self.span.column, self.code)

    def to_json(self) -> dict:
        s = self.span
        return {"file": s.file, "line": s.line, "column": s.column, "end_line": s.end_line,
                "end_column": s.end_column, "severity": self.severity, "code": self.code,
                "message": self.message, "hint": self.hint}


class NnspecError(Exception):
    """The one exception type user mistakes surface as. Carries one or more diagnostics."""

    def __init__(self, diagnostics: Sequence[Diagnostic] | Diagnostic, sources: dict[str, str] | None = None):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        self.sources = dict(sources or {})
        super().__init__(self.render())

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def render(self) -> str:
        return render_text(self.diagnostics, self.sources)


class DataError(Exception):
    """A problem with the data (not the spec's syntax), found by a data rule when training loads
    the data or when `validate` reads its headers. `span`, when set, says where in the spec to
    point; otherwise the dataset's span is used. Reported as E903."""

    def __init__(self, message: str, hint: str | None = None, *, span=None):
        super().__init__(message)
        self.message, self.hint, self.span = message, hint, span


def error(code: str, message: str, span: Span, hint: str | None = None) -> NnspecError:
    """Shorthand for raising a single located error."""
    return NnspecError([Diagnostic("error", code, message, span, hint)])


class Diagnostics:
    """A collector passed through the check passes."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def error(self, code: str, message: str, span: Span, hint: str | None = None) -> None:
        self.items.append(Diagnostic("error", code, message, span, hint))

    def warning(self, code: str, message: str, span: Span, hint: str | None = None) -> None:
        self.items.append(Diagnostic("warning", code, message, span, hint))

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.items.extend(diagnostics)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(sorted(self.items, key=Diagnostic.sort_key))

    def __len__(self) -> int:
        return len(self.items)


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str | None:
    """A hint naming the closest known names, or None when nothing is close."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=n, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"`{c}`" for c in close) + "?"


def render_text(diagnostics: Iterable[Diagnostic], sources: dict[str, str] | None = None,
                color: bool = False) -> str:
    """`path:line:col: error[code]: message`, the source line, a caret under the span, the hint."""
    sources = sources or {}
    out: list[str] = []
    for d in diagnostics:
        s = d.span
        sev = d.severity
        if color:
            sev = ("\x1b[1;31m" if sev == "error" else "\x1b[1;33m") + sev + "\x1b[0m"
        out.append(f"{s.file}:{s.line}:{s.column}: {sev}[{d.code}]: {d.message}")
        text = sources.get(s.file)
        if text is not None:
            lines = text.splitlines()
            if 1 <= s.line <= len(lines):
                src = lines[s.line - 1].replace("\t", " ")
                if len(src) > 200:
                    src = src[:200] + "…"
                width = (s.end_column - s.column) if s.end_line == s.line else len(src) - s.column + 1
                width = max(1, min(width, max(1, len(src) - s.column + 1)))
                gutter = f"{s.line:>4} | "
                out.append(gutter + src)
                out.append(" " * (len(gutter) + s.column - 1) + "^" * width)
        if d.hint:
            out.append(f"  = hint: {d.hint}")
    return "\n".join(out)
