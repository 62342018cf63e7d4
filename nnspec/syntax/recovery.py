"""Syntax errors: Lark's exceptions → located, friendly diagnostics, and recovery after the first.

Three parts: the message for one Lark error (an example-matched message or "unexpected …" with
what was expected), the bracket that was never closed (reported where it was opened, not where
the parser noticed), and recovery (one error per later broken top-level item).
"""
from __future__ import annotations

import dataclasses
import functools

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from nnspec.errors import Diagnostic, Span
from nnspec.syntax.examples import SYNTAX_EXAMPLES

MAX_SYNTAX_ERRORS = 20

_TOKEN_NAMES = {
    "_NL": "end of line", "$END": "end of file", "NAME": "a name", "NUMBER": "a number", "STRING": "a string",
    "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "LBRACE": "`{`", "RBRACE": "`}`",
    "COMMA": "`,`", "EQUAL": "`=`", "STAR": "`*`", "PLUS": "`+`", "MINUS": "`-`", "SLASH": "`/`",
    "PERCENT": "`%`", "_ARROW": "`->`", "_FLOORDIV": "`//`",
}
_CLOSING = {"(": ")", "[": "]", "{": "}"}


def _describe(tok_type: str) -> str:
    if tok_type in _TOKEN_NAMES:
        return _TOKEN_NAMES[tok_type]
    return f"`{tok_type.lower()}`"


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


# --- one error -----------------------------------------------------------------------------

def syntax_diagnostic(parser, err: UnexpectedInput, path: str, text: str) -> Diagnostic:
    line, col = max(err.line, 1), max(err.column, 1)
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        span = Span(path, line, col, line, col + 1, err.pos_in_stream, err.pos_in_stream + 1)
        if ch == '"':
            return Diagnostic("error", "E102", "unterminated string", span, 'close the string with `"` on the same line')
        shown = repr(ch) if not ch.isprintable() or ch == "'" else f"`{ch}`"
        return Diagnostic("error", "E101", f"unexpected character {shown}", span,
                          "names are letters, digits and `_`; strings use double quotes; comments start with `#`")
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        end_line, end_col = _position(text, len(text))
        span = Span(path, end_line, end_col, end_line, end_col + 1, len(text), len(text))
        message = _match_example(parser, err) or "unexpected end of file"
        expected = sorted(_describe(t) for t in getattr(err, "expected", ()) or ())
        hint = "expected " + ", ".join(expected[:8]) if expected else "a `{`, `(` or `[` is not closed"
        return Diagnostic("error", "E100", message, span, hint)
    tok = err.token
    span = Span(path, tok.line, tok.column, tok.end_line or tok.line,
                tok.end_column or tok.column + 1, tok.start_pos or 0, tok.end_pos or 0)
    found = "end of line" if tok.type == "_NL" else f"`{str(tok)[:40]}`"
    message = _match_example(parser, err) or f"unexpected {found}"
    expected = sorted({_describe(t) for t in err.accepts or err.expected})
    hint = "expected " + ", ".join(expected[:8]) + (", …" if len(expected) > 8 else "")
    return Diagnostic("error", "E100", message, span, hint)


@functools.lru_cache(maxsize=1)
def _example_index(parser) -> dict:
    """(LALR state, acceptable tokens) → friendly message, from SYNTAX_EXAMPLES.

    Lark's own match_examples also compares parser stack depth, so an example would only match
    at the nesting depth it was written at; the state number alone is what identifies a mistake."""
    index: dict = {}
    for message, examples in SYNTAX_EXAMPLES.items():
        for example in examples:
            try:
                parser.parse(example)
            except UnexpectedInput as err:
                key = _error_key(err)
                if key is not None:
                    index.setdefault(key, message)
    return index


def _error_key(err: UnexpectedInput):
    state = getattr(err, "state", None)
    if state is None:
        return None
    accepts = getattr(err, "accepts", None) or getattr(err, "expected", None) or ()
    return state.position, frozenset(accepts)


def _match_example(parser, err: UnexpectedInput) -> str | None:
    key = _error_key(err)
    return _example_index(parser).get(key) if key is not None else None


# --- brackets ------------------------------------------------------------------------------

def _code_chars(text: str):
    """(offset, char) of every bracket and newline outside strings and comments."""
    i, size = 0, len(text)
    while i < size:
        ch = text[i]
        if ch == "#":
            i = text.find("\n", i)
            if i < 0:
                return
            continue
        if ch == '"':
            i += 1
            while i < size and text[i] not in '"\n':
                i += 2 if text[i] == "\\" else 1
            i += 1 if i < size and text[i] == '"' else 0
            continue
        if ch in "{([])}\n":
            yield i, ch
        i += 1


def _brackets(text: str, stop: int | None = None) -> tuple[list[int], list[int]]:
    """(brackets open at `stop`, brackets closed over before it), as offsets. A closer that
    matches an outer bracket closes over the inner ones (`linear(3 -> relu }` leaves the `(`
    unclosed); a stray closer, with no opener of its kind, is left to the parser."""
    stack: list[int] = []
    closed_over: list[int] = []
    open_of = {closer: 0 for closer in _CLOSING.values()}    # open brackets of each kind, by closer
    for at, ch in _code_chars(text):
        if stop is not None and at >= stop:
            break
        if ch in _CLOSING:
            stack.append(at)
            open_of[_CLOSING[ch]] += 1
        elif ch != "\n" and open_of[ch]:                    # pop down to the nearest opener of its kind
            while True:
                opener = stack.pop()
                open_of[_CLOSING[text[opener]]] -= 1
                if _CLOSING[text[opener]] == ch:
                    break
                closed_over.append(opener)
    return stack, closed_over


def _unclosed_diagnostic(first: Diagnostic, path: str, text: str) -> Diagnostic | None:
    """"`(` opened here is never closed" when the bracket around the first syntax error is never
    closed: always for `(` and `[` (they hold one expression); for a `{` body only where a missing
    `}` shows (the end of the file, a closer of another kind, a later unindented line), not for a
    mistake inside an indented body. The parser itself notices lines later, with an unrelated message."""
    if first.code != "E100":                       # a bad character or string is its own mistake
        return None
    error_at = first.span.start
    open_here, _ = _brackets(text, error_at)
    if not open_here:
        return None
    at = open_here[-1]
    still_open, closed_over = _brackets(text)
    if at not in still_open and at not in closed_over:
        return None
    line, col = _position(text, at)
    bracket = text[at]
    error_line_start = text.rfind("\n", 0, error_at) + 1
    at_end = not text[error_at:].strip()
    at_closer = error_at < len(text) and text[error_at] in ")]}"
    unindented = first.span.line > line and text[error_line_start:error_line_start + 1].strip() != ""
    if bracket == "{" and not (at_end or at_closer or unindented):
        return None
    where = "" if at_end else f" (the parser stopped at {first.span.line}:{first.span.column}: {first.message})"
    return Diagnostic("error", "E105", f"`{bracket}` opened here is never closed",
                      Span(path, line, col, line, col + 1, at, at + 1), f"close it with `{_CLOSING[bracket]}`{where}")


# --- recovery ------------------------------------------------------------------------------

def _top_level_starts(text: str) -> list[int]:
    """Offsets of lines that begin a top-level item: a name in the first column, outside every
    bracket, string and comment (and not `then`, which continues a schedule)."""
    def begins_item(at: int) -> bool:
        ch = text[at:at + 1]
        return (ch.isalpha() or ch == "_") and not text.startswith("then", at)

    starts, depth = [0] if begins_item(0) else [], 0
    for at, ch in _code_chars(text):
        if ch == "\n":
            if depth == 0 and begins_item(at + 1):
                starts.append(at + 1)
        elif ch in _CLOSING:
            depth += 1
        else:
            depth = max(0, depth - 1)
    return starts


def syntax_errors(parser, text: str, path: str, first: UnexpectedInput) -> list[Diagnostic]:
    """The first syntax error, then the first of each later top-level item that has one.

    Lark's token-skipping recovery mostly produced follow-on noise. Instead every top-level
    item after the first error's line (from one item start to the next) is parsed on its own
    and its error moved to where the item sits in the file: one error per broken item, none
    after an unclosed bracket (no item starts there), and linear work however long the file."""
    found = [syntax_diagnostic(parser, first, path, text)]
    line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    after = line_starts[found[0].span.line] if found[0].span.line < len(line_starts) else len(text)
    found[0] = _unclosed_diagnostic(found[0], path, text) or found[0]
    starts = _top_level_starts(text)
    items = [s for s in starts if s >= after]
    for begin, end in zip(items, items[1:] + [len(text)]):
        if len(found) >= MAX_SYNTAX_ERRORS:
            break
        chunk = text[begin:end]
        try:
            parser.parse(chunk)
        except UnexpectedInput as err:
            d = syntax_diagnostic(parser, err, path, chunk)
            lines = text.count("\n", 0, begin)
            span = dataclasses.replace(d.span, line=d.span.line + lines, end_line=d.span.end_line + lines,
                                       start=d.span.start + begin, end=d.span.end + begin)
            found.append(dataclasses.replace(d, span=span))
    return found
