"""`nnspec fmt`: print a spec in one canonical style, keeping every comment.

The printer works from the AST, so layout is decided here and nowhere else; numbers and strings
are copied from the source so `1e-3` stays `1e-3`. Comments are not in the AST: the parser keeps
their offsets, and this module gives each one a *slot* in the printed layout:

- an own-line slot before a statement, before a `-> node` or `then item` continuation line, before a
  body's `}` or at the end of the file (any number of comments), or
- an end-of-line slot after a statement, a chain segment, a `then` item or a body's `{` (one comment).

Slots are listed in print order, which is source order. A comment goes to the slot that its place in
the source names (on its own line in the gap before X -> the own-line slot before X; at the end of the
line that Y ends -> the end-of-line slot after Y); a comment anywhere else (inside call arguments,
after `->`, ...) goes to the next slot after it, and a comment whose end-of-line slot is already taken
moves on to the next slot. Comments are placed in order, so their order is kept, and a printed
comment lands in the slot it was printed in, which makes formatting idempotent.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path

from nnspec.syntax import nodes as n
from nnspec.syntax.parser import parse
from nnspec.syntax.source_text import decode_spec

LINE = 100      # longest chain / `then` line before it is broken
INDENT = 4      # one nesting level
CONT = 8        # continuation lines (`-> node`, `then item`)

# expression precedence levels
_SUM, _PRODUCT, _UNARY, _ATOM = 1, 2, 3, 4
_LEVEL = {"+": _SUM, "-": _SUM, "*": _PRODUCT, "/": _PRODUCT, "//": _PRODUCT, "%": _PRODUCT}


def format_source(text: str, path: str = "<string>") -> str:
    """The canonical form of a spec. Raises `NnspecError` when the text does not parse."""
    return _Formatter(parse(text, path)).render()


def format_file(path: str | Path) -> tuple[str, bool]:
    """(canonical text, whether it differs from the file). Does not write: the caller decides."""
    data = Path(path).read_bytes()
    text = decode_spec(data, str(path)).replace("\r\n", "\n").replace("\r", "\n")  # as read_text
    new = format_source(text, str(path))
    return new, new != text or data.startswith(b"\xef\xbb\xbf")          # a byte order mark is dropped


@dataclass
class _Comment:
    text: str
    blank: bool         # a blank line before it in the source (kept for own-line comments)


@dataclass
class _Slot:
    key: tuple
    eol: bool           # end-of-line slot (holds one comment) or own-line slot (holds any number)
    lo: int             # own-line: the source gap [lo, hi) it stands for; end-of-line: lo == hi == y
    hi: int
    comments: list = field(default_factory=list)


class _Formatter:
    def __init__(self, module: n.Module):
        self.module = module
        self.text = module.source
        self.slots: list[_Slot] = []
        self.by_key: dict[tuple, _Slot] = {}
        self._collect()
        self._assign()

    # --- source helpers ----------------------------------------------------------------------

    def _src(self, node) -> str:
        return self.text[node.span.start:node.span.end]

    def _seek(self, pos: int, ch: str) -> int:
        """Offset of the next `ch` at or after pos, skipping comments and strings."""
        text = self.text
        while pos < len(text):
            c = text[pos]
            if c == ch:
                return pos
            if c == "#":
                pos = text.find("\n", pos)
                if pos < 0:
                    break
            elif c == '"':
                pos += 1
                while pos < len(text) and text[pos] != '"':
                    pos += 2 if text[pos] == "\\" else 1
            pos += 1
        raise AssertionError(f"no {ch!r} after offset {pos}")  # the parser accepted the text

    def _end(self, x) -> int:
        """Where a graph node ends; a grouped chain's span leaves out its own `)`."""
        return self._seek(x.span.end, ")") + 1 if isinstance(x, n.Chain) else x.span.end

    def _blank_before(self, pos: int) -> bool:
        newlines = 0
        while pos > 0 and self.text[pos - 1] in " \t\r\n\f":
            pos -= 1
            newlines += self.text[pos] == "\n"
        return newlines >= 2

    # --- slots -------------------------------------------------------------------------------

    def _add(self, key: tuple, eol: bool, lo: int, hi: int) -> None:
        slot = _Slot(key, eol, lo, hi)
        self.slots.append(slot)
        self.by_key[key] = slot

    def _c(self, key: tuple) -> list[_Comment]:
        slot = self.by_key.get(key)
        return slot.comments if slot else []

    def _collect(self) -> None:
        prev = 0
        for item in self.module.items:
            self._collect_stmt(item, prev)
            prev = item.span.end
        self._add(("end", "file"), False, prev, len(self.text))

    def _collect_stmt(self, s, prev: int) -> None:
        self._add(("lead", id(s)), False, prev, s.span.start)
        if isinstance(s, n.Chain):
            self._collect_seq("seg", s.nodes)
        elif isinstance(s, n.Bind):
            self._collect_seq("seg", s.chain.nodes)
        elif isinstance(s, n.Shared):
            self._collect_node(s.node)
        elif isinstance(s, n.GraphDef):
            self._collect_body((id(s), "body"), s.body, self._seek(s.name_span.end, "{"))
        elif isinstance(s, n.Setting):
            for value in s.values:
                if isinstance(value, n.Then):
                    self._collect_seq("then", value.items)
            if s.body is not None:
                self._collect_body((id(s), "body"), s.body, self._seek(s.name_span.end, "{"))
        self._add(("trail", id(s)), True, s.span.end, s.span.end)

    def _collect_seq(self, kind: str, items) -> None:
        """Slots of a `->` chain or a `then` sequence: own-line before, end-of-line after each link."""
        end = self._end if kind == "seg" else (lambda x: x.span.end)
        for i, x in enumerate(items):
            if i:
                self._add((kind, id(x)), False, end(items[i - 1]), x.span.start)
            if kind == "seg":
                self._collect_node(x)
            if i < len(items) - 1:
                self._add((kind + "trail", id(x)), True, end(x), end(x))

    def _collect_node(self, x) -> None:
        """Registers the slots inside a graph node's bodies."""
        if isinstance(x, n.Repeat):
            self._collect_node(x.node)
        elif isinstance(x, n.Chain):
            self._collect_seq("seg", x.nodes)
        elif isinstance(x, n.Residual):
            close = self._collect_body((id(x), "body"), x.body, self._seek(x.span.start, "{"))
            if x.shortcut is not None:
                self._collect_body((id(x), "shortcut"), x.shortcut, self._seek(close + 1, "{"))
        elif isinstance(x, n.Parallel):
            self._collect_body((id(x), "body"), x.branches, self._seek(x.merge.span.end, "{"))

    def _collect_body(self, key: tuple, stmts, open_pos: int) -> int:
        self._add(("open", key), True, open_pos + 1, open_pos + 1)
        prev = open_pos + 1
        for s in stmts:
            self._collect_stmt(s, prev)
            prev = s.span.end
        close = self._seek(prev, "}")
        self._add(("end", key), False, prev, close)
        return close

    def _assign(self) -> None:
        text, slots = self.text, self.slots
        anchors = [s.hi for s in slots]                       # nondecreasing: slots are in print order
        own = [i for i, s in enumerate(slots) if not s.eol]
        own_hi = [slots[i].hi for i in own]
        eol_at: dict[int, int] = {}
        for i, s in enumerate(slots):
            if s.eol:
                eol_at.setdefault(s.lo, i)
        last = 0
        for offset, raw in self.module.comments:
            comment = _Comment(raw.rstrip(), self._blank_before(offset))
            line_start = text.rfind("\n", 0, offset) + 1
            want = None
            if not text[line_start:offset].strip():           # on a line of its own
                k = bisect.bisect_right(own_hi, offset)
                if k < len(own) and slots[own[k]].lo <= offset:
                    want = own[k]
            else:                                              # after code on the same line
                y = offset
                while y > line_start and text[y - 1] in " \t;":
                    y -= 1
                want = eol_at.get(y)
            if want is None:                                   # inside a statement: the next slot
                want = bisect.bisect_right(anchors, offset)
            j = max(want, last)
            while slots[j].eol and slots[j].comments:
                j += 1
            slots[j].comments.append(comment)
            last = j

    # --- rendering ---------------------------------------------------------------------------

    def render(self) -> str:
        out: list[str] = []
        prev = None
        for item in self.module.items:
            if prev is not None and not _together(prev, item):
                _blank(out)
            self._put_stmt(out, item, 0)
            prev = item
        self._put_comments(out, self._c(("end", "file")), 0)
        while out and out[-1] == "":
            out.pop()
        return "\n".join(out) + "\n" if out else ""

    def _put_comments(self, out: list[str], comments, ind: int) -> None:
        for c in comments:
            if c.blank and out:
                _blank(out)
            out.append(" " * ind + c.text)

    def _put_stmt(self, out: list[str], s, ind: int) -> None:
        self._put_comments(out, self._c(("lead", id(s))), ind)
        if out and self._blank_before(s.span.start):
            _blank(out)
        lines = self._stmt(s, ind)
        self._trail(lines, ("trail", id(s)))
        out.extend(lines)

    def _trail(self, lines: list[str], key: tuple) -> None:
        for c in self._c(key):
            lines[-1] += "  " + c.text

    def _stmt(self, s, ind: int) -> list[str]:
        pad = " " * ind
        if isinstance(s, n.Chain):
            return self._chain(pad, s.nodes, ind)
        if isinstance(s, n.Bind):
            return self._chain(f"{pad}{s.name} = ", s.chain.nodes, ind)
        if isinstance(s, n.Shared):
            return _join([f"{pad}shared {s.name} = "], self._node(s.node, ind))
        if isinstance(s, n.InputDecl):
            return [f"{pad}input {self._expr(s.shape)}" + (f" {s.dtype}" if s.dtype else "")]
        if isinstance(s, n.Const):
            return [f"{pad}const {s.name} = {self._expr(s.value)}"]
        if isinstance(s, n.Import):
            start = s.span.start + len("import")
            while self.text[start] != '"':                      # skip blanks and comments
                start = self.text.find("\n", start) + 1 if self.text[start] == "#" else start + 1
            return [f"{pad}import {self.text[start:s.span.end]}"]
        if isinstance(s, n.GraphDef):
            params = ", ".join(p.name + (f" = {self._expr(p.default)}" if p.default is not None else "")
                               for p in s.params)
            head = f"{pad}{s.kind} {s.name}" + (f"({params})" if s.params else "")
            return _join([head + " "], self._body((id(s), "body"), s.body, ind))
        if isinstance(s, n.Setting):
            return self._setting(s, ind)
        raise TypeError(f"cannot format {type(s).__name__}")

    def _body(self, key: tuple, stmts, ind: int) -> list[str]:
        """`{}` or `{`, the statements one level deeper, `}`; the first line joins the header."""
        opening, ending = self._c(("open", key)), self._c(("end", key))
        if not stmts and not opening and not ending:
            return ["{}"]
        lines = ["{"]
        self._trail(lines, ("open", key))
        inner: list[str] = []
        for s in stmts:
            self._put_stmt(inner, s, ind + INDENT)
        self._put_comments(inner, ending, ind + INDENT)
        return lines + inner + [" " * ind + "}"]

    def _chain(self, head: str, nodes, ind: int, group: bool = False) -> list[str]:
        """`a -> b -> c` on one line, or broken before each `->` when long or commented inside.

        A group `(a -> b)` breaks only for comments: the chain around it breaks when it is long."""
        lines = _join([head], self._node(nodes[0], ind))
        if len(nodes) == 1:
            return lines
        interior = any(self._c(("seg", id(x))) for x in nodes[1:]) or \
            any(self._c(("segtrail", id(x))) for x in nodes[:-1])
        if not interior:
            flat, owned = list(lines), [0]
            for x in nodes[1:]:
                owned.append(len(flat) - 1)
                flat = _join(flat, [" -> "], self._node(x, ind))
            if group or max(len(flat[i]) for i in owned) <= LINE:
                return flat
        cont = " " * (ind + CONT)
        for i, x in enumerate(nodes):
            if i:
                lines.extend(cont + c.text for c in self._c(("seg", id(x))))
                lines.extend(_join([cont + "-> "], self._node(x, ind + CONT)))
            if i < len(nodes) - 1:
                self._trail(lines, ("segtrail", id(x)))
        return lines

    def _node(self, x, ind: int) -> list[str]:
        """A graph node; the first line is a fragment, later lines carry their own indentation."""
        if isinstance(x, n.Call):
            return [self._expr(x)]
        if isinstance(x, n.Ref):
            return [x.name]
        if isinstance(x, n.Repeat):
            return _join(self._node(x.node, ind), [f" * {self._expr(x.count, _ATOM)}"])
        if isinstance(x, n.Chain):
            return _join(self._chain("(", x.nodes, ind, group=True), [")"])
        if isinstance(x, n.Residual):
            lines = _join(["residual "], self._body((id(x), "body"), x.body, ind))
            if x.no_shortcut:
                lines[-1] += " shortcut none"
            elif x.shortcut is not None:
                lines = _join(lines, [" shortcut "], self._body((id(x), "shortcut"), x.shortcut, ind))
            return lines
        if isinstance(x, n.Parallel):
            merge = x.merge.name if isinstance(x.merge, n.Ref) else self._expr(x.merge)
            return _join([f"parallel {merge} "], self._body((id(x), "body"), x.branches, ind))
        raise TypeError(f"cannot format {type(x).__name__}")

    def _setting(self, s: n.Setting, ind: int) -> list[str]:
        head = " " * ind + s.name
        if s.args is not None:
            head += "(" + ", ".join(self._arg(a) for a in s.args) + ")"
        body = self._body((id(s), "body"), s.body, ind) if s.body is not None else None
        brace = "" if body is None else " {}" if body == ["{}"] else " {"
        thens = [v for v in s.values if isinstance(v, n.Then)]
        flat = head + (" " + ", ".join(self._value(v) for v in s.values) if s.values else "")
        interior = any(self._c(("then", id(t))) or self._c(("thentrail", id(t)))
                       for v in thens for t in v.items)
        if not thens or (not interior and len(flat + brace) <= LINE):
            lines = [flat]
        else:
            lines, cont = [head], " " * (ind + CONT)
            for k, v in enumerate(s.values):
                sep = " " if k == 0 else ", "
                if not isinstance(v, n.Then):
                    lines[-1] += sep + self._expr(v)
                    continue
                for i, t in enumerate(v.items):
                    if i == 0:
                        lines[-1] += sep + self._expr(t)
                    else:
                        lines.extend(cont + c.text for c in self._c(("then", id(t))))
                        lines.append(f"{cont}then {self._expr(t)}")
                    if i < len(v.items) - 1:
                        self._trail(lines, ("thentrail", id(t)))
        return lines if body is None else _join(lines, [" "], body)

    # --- expressions -------------------------------------------------------------------------

    def _value(self, v) -> str:
        if isinstance(v, n.Then):
            return " then ".join(self._expr(t) for t in v.items)
        return self._expr(v)

    def _arg(self, a: n.Arg) -> str:
        return (f"{a.name} = " if a.name is not None else "") + self._expr(a.value)

    def _expr(self, e, need: int = _SUM) -> str:
        """An expression with the fewest parentheses that keep its tree (`need`: context's level)."""
        if isinstance(e, (n.Number, n.String)):
            return self._src(e)
        if isinstance(e, n.Bool):
            return "true" if e.value else "false"
        if isinstance(e, n.Name):
            return e.name
        if isinstance(e, n.ListExpr):
            return "[" + ", ".join(self._expr(x) for x in e.items) + "]"
        if isinstance(e, n.Call):
            return e.name + "(" + ", ".join(self._arg(a) for a in e.args) + ")"
        if isinstance(e, n.Neg):
            text, level = "-" + self._expr(e.operand, _UNARY), _UNARY
        elif isinstance(e, n.BinOp):
            level = _LEVEL[e.op]
            text = f"{self._expr(e.left, level)} {e.op} {self._expr(e.right, level + 1)}"
        else:
            raise TypeError(f"cannot format {type(e).__name__}")
        return f"({text})" if level < need else text


def _join(*parts: list[str]) -> list[str]:
    """Concatenate multi-line fragments: each part's first line continues the previous last line."""
    out = list(parts[0])
    for part in parts[1:]:
        out[-1] += part[0]
        out.extend(part[1:])
    return out


def _blank(out: list[str]) -> None:
    if out and out[-1] != "":
        out.append("")


def _together(prev, item) -> bool:
    """Consecutive imports, consts, and one-line sections (`loss ...`, `metrics ...`) stay together;
    blank lines the user wrote between them are kept by the comment/blank-line pass."""
    if type(item) is type(prev) and isinstance(item, (n.Import, n.Const)):
        return True
    return isinstance(prev, n.Setting) and isinstance(item, n.Setting) and prev.body is None and item.body is None
