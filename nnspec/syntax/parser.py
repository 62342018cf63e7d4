"""Source text → `nnspec.syntax.nodes.Module`.

The grammar lives in nnspec/syntax/nnspec.lark (package data). Building
LALR tables takes ~0.4 s, so the tables are shipped pre-built as JSON next to the grammar
(`python -m nnspec.syntax.parser --write-tables` regenerates them; a stale table is detected by hash and
rebuilt in memory). JSON, not pickle: loading the parser never unpickles anything.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
import threading
from pathlib import Path

import lark
from lark import Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedInput, VisitError

from nnspec.syntax import nodes as n
from nnspec.errors import Diagnostic, NnspecError, Span
from nnspec.limits import LIMITS
from nnspec.syntax.source_text import strip_bom
from nnspec.syntax.recovery import syntax_errors

_OPTIONS = dict(parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True)


def _grammar_dir() -> Path:
    """The grammar is package data beside this module (plain paths: importlib.resources costs
    ~10 ms of start-up)."""
    return Path(__file__).resolve().parent


def grammar_text() -> str:
    return (_grammar_dir() / "nnspec.lark").read_text(encoding="utf-8")


def _tables_key(grammar: str) -> str:
    return hashlib.sha256((grammar + "|" + lark.__version__ + "|" + repr(sorted(_OPTIONS.items()))).encode()).hexdigest()


def _int_keys(obj: dict) -> dict:
    return {int(k) if k.isdigit() else k: v for k, v in obj.items()}


def build_tables(grammar: str) -> dict:
    parser = lark.Lark(grammar, **_OPTIONS)
    data, memo = parser.memo_serialize([lark.lexer.TerminalDef, lark.grammar.Rule])
    return {"key": _tables_key(grammar), "data": data, "memo": memo}


@functools.lru_cache(maxsize=1)
def lark_parser() -> lark.Lark:
    grammar = grammar_text()
    tables_path = _grammar_dir() / "nnspec.tables.json"
    try:
        tables = json.loads(tables_path.read_text(encoding="utf-8"), object_hook=_int_keys)
    except (OSError, ValueError):
        tables = None
    if tables is None or tables.get("key") != _tables_key(grammar):
        tables = json.loads(json.dumps(build_tables(grammar)), object_hook=_int_keys)
    return lark.Lark._load_from_dict(tables["data"], tables["memo"], postlex=_Newlines(),
                                     lexer_callbacks={"COMMENT": _on_comment, "_NL": _on_newline})


class _Newlines:
    """Drops statement-ending newlines where a statement cannot end.

    LALR states are shared between contexts, so the contextual lexer may offer _NL inside
    brackets (after a number, a string or `)`); a newline inside () or [] is always whitespace."""

    always_accept = ()      # the contextual lexer offers _NL only where the parser state may take it
    _OPEN = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}

    def process(self, stream):
        stack: list[str] = []            # open brackets; a `{` body inside `( )` has statements again
        for tok in stream:
            if tok.type == "_NL":
                if stack and stack[-1] != "LBRACE":
                    continue
            elif tok.type in self._OPEN:
                stack.append(tok.type)
            elif stack and tok.type == self._OPEN[stack[-1]]:
                stack.pop()
            yield tok


class _CommentSink(threading.local):
    found: list | None = None


_comments = _CommentSink()


def _on_comment(tok: Token) -> Token:
    if _comments.found is not None:
        _comments.found.append((tok.start_pos, str(tok)))
    return tok


def _on_newline(tok: Token) -> Token:
    """_NL swallows end-of-line and whole-line comments; keep them for `nnspec fmt`."""
    if _comments.found is not None and "#" in tok:
        for m in _COMMENT_RE.finditer(str(tok)):
            _comments.found.append((tok.start_pos + m.start(), m.group()))
    return tok


_COMMENT_RE = re.compile(r"#[^\n]*")


# --- tree → AST ----------------------------------------------------------------------------

class _Tagged:
    """Wraps optional parts of a `setting` so the builder can tell them apart."""
    __slots__ = ("tag", "value", "span")

    def __init__(self, tag, value, span=None):
        self.tag, self.value, self.span = tag, value, span


_NO_SHORTCUT = object()


def _binop(op):
    def build(self, meta, children):
        return self._node(n.BinOp(op, children[0], children[1], self._span(meta)))
    return build


@v_args(meta=True)
class _Builder(Transformer_NonRecursive):
    """Builds frozen AST nodes bottom-up without recursion, enforcing the nesting limit."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.depth: dict[int, int] = {}

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", False):
            return Span(self.path, 1, 1, 1, 1)
        return Span(self.path, meta.line, meta.column, meta.end_line, meta.end_column,
                    meta.start_pos, meta.end_pos)

    def _tok_span(self, tok: Token) -> Span:
        return Span(self.path, tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)

    def _node(self, node):
        """Records the node's depth; refuses trees deeper than the limit (later passes recurse)."""
        depth = 1 + max((self.depth.get(id(c), 0) for c in self._kids(node)), default=0)
        if depth > LIMITS.max_depth:
            raise NnspecError(Diagnostic(
                "error", "E601", f"nesting deeper than {LIMITS.max_depth} levels", node.span,
                "flatten the expression or the graph; define a block or a const for inner parts"))
        self.depth[id(node)] = depth
        return node

    @staticmethod
    def _kids(node):
        for name in node.__slots__:
            value = getattr(node, name)
            if isinstance(value, tuple):
                yield from value
            elif value is not None and not isinstance(value, (str, int, float, Span)):
                yield value

    # top level
    def start(self, meta, children):
        return [c for c in children if c is not None]

    def import_stmt(self, meta, c):
        return n.Import(self._string(c[0]), self._span(meta))

    def const_stmt(self, meta, c):
        return self._node(n.Const(str(c[0]), c[1], self._span(meta), self._tok_span(c[0])))

    def _graph_def(self, kind, meta, c):
        name, rest = c[0], c[1:]
        params = rest[0] if len(rest) == 2 else ()
        return self._node(n.GraphDef(kind, str(name), tuple(params), rest[-1], self._span(meta), self._tok_span(name)))

    def block_def(self, meta, c):
        return self._graph_def("block", meta, c)

    def model_def(self, meta, c):
        return self._graph_def("model", meta, c)

    def param_list(self, meta, c):
        return tuple(p for p in c if p is not None)

    def param(self, meta, c):
        return self._node(n.Param(str(c[0]), c[1] if len(c) > 1 else None, self._span(meta)))

    # graphs
    def graph_body(self, meta, c):
        return tuple(s for s in c if s is not None)

    def input_decl(self, meta, c):
        return self._node(n.InputDecl(c[0], str(c[1]) if len(c) > 1 and c[1] is not None else None, self._span(meta)))

    def shared_decl(self, meta, c):
        return self._node(n.Shared(str(c[0]), c[1], self._span(meta), self._tok_span(c[0])))

    def bind(self, meta, c):
        return self._node(n.Bind(str(c[0]), c[1], self._span(meta), self._tok_span(c[0])))

    def chain(self, meta, c):
        return self._node(n.Chain(tuple(c), self._span(meta)))

    def repeat(self, meta, c):
        return self._node(n.Repeat(c[0], c[1], self._span(meta)))

    def ref(self, meta, c):
        return n.Ref(str(c[0]), self._tok_span(c[0]))

    def residual(self, meta, c):
        if len(c) > 1 and c[1] is _NO_SHORTCUT:
            return self._node(n.Residual(c[0], None, self._span(meta), no_shortcut=True))
        return self._node(n.Residual(c[0], c[1] if len(c) > 1 else None, self._span(meta)))

    def no_shortcut(self, meta, c):
        return _NO_SHORTCUT

    def parallel(self, meta, c):
        return self._node(n.Parallel(c[0], c[1], self._span(meta)))

    # settings
    def setting(self, meta, c):
        name, args, values, body = c[0], None, (), None
        for part in c[1:]:
            if part.tag == "args":
                args = part.value
            elif part.tag == "values":
                values = part.value
            else:
                body = part.value
        return self._node(n.Setting(str(name), args, values, body, self._span(meta), self._tok_span(name)))

    def settings_body(self, meta, c):
        return _Tagged("body", tuple(s for s in c if s is not None))

    def values(self, meta, c):
        return _Tagged("values", tuple(c))

    def then(self, meta, c):
        return self._node(n.Then(tuple(c), self._span(meta)))

    # expressions
    def call(self, meta, c):
        return self._node(n.Call(str(c[0]), c[1].value, self._span(meta), self._tok_span(c[0])))

    def call_args(self, meta, c):
        return _Tagged("args", tuple(a for a in c if a is not None))

    def arg(self, meta, c):
        return self._node(n.Arg(None, c[0], self._span(meta)))

    def kwarg(self, meta, c):
        return self._node(n.Arg(str(c[0]), c[1], self._span(meta), self._tok_span(c[0])))

    add, sub, mul = _binop("+"), _binop("-"), _binop("*")
    div, floordiv, mod = _binop("/"), _binop("//"), _binop("%")

    def neg(self, meta, c):
        return self._node(n.Neg(c[0], self._span(meta)))

    def number(self, meta, c):
        text = str(c[0])
        span = self._span(meta)
        try:
            if any(ch in text for ch in ".eE"):
                value = float(text)
                if value in (float("inf"), float("-inf")):
                    raise ValueError
            else:
                value = int(text)
        except ValueError:
            raise NnspecError(Diagnostic("error", "E104", f"malformed or out-of-range number `{text[:40]}`", span,
                                         "write numbers like 64, 0.5, 1e-3 or 1_000")) from None
        return n.Number(value, span)

    def string(self, meta, c):
        return n.String(self._string(c[0]), self._span(meta))

    def true(self, meta, c):
        return n.Bool(True, self._span(meta))

    def false(self, meta, c):
        return n.Bool(False, self._span(meta))

    def name(self, meta, c):
        return n.Name(str(c[0]), self._span(meta))

    def list(self, meta, c):
        return self._node(n.ListExpr(tuple(x for x in c if x is not None), self._span(meta)))

    _ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}

    def _string(self, tok: Token) -> str:
        raw, out, i = str(tok)[1:-1], [], 0
        while i < len(raw):
            ch = raw[i]
            if ch == "\\":
                esc = raw[i + 1]
                if esc not in self._ESCAPES:
                    raise NnspecError(Diagnostic("error", "E103", f"unknown escape `\\{esc}` in string",
                                                 self._tok_span(tok), 'use \\" \\\\ \\n or \\t'))
                out.append(self._ESCAPES[esc])
                i += 2
            else:
                out.append(ch)
                i += 1
        return "".join(out)


def _check_size(text: str, path: str) -> None:
    if len(text) > LIMITS.max_file_bytes:
        raise NnspecError(Diagnostic("error", "E600", f"file is larger than {LIMITS.max_file_bytes // 1_000_000} MB",
                                     Span(path, 1, 1, 1, 2), "a spec is a short text; split it into files joined with `import`"))
    if "\x00" in text:
        at = text.index("\x00")
        line = text.count("\n", 0, at) + 1
        col = at - (text.rfind("\n", 0, at) + 1) + 1
        raise NnspecError(Diagnostic("error", "E101", "file contains a NUL byte (is it binary?)",
                                     Span(path, line, col, line, col + 1, at, at + 1)))


def parse(text: str, path: str = "<string>") -> n.Module:
    """Parse one file. Raises `NnspecError` with its syntax errors (the first one, then the first
    of each later top-level item that has one). A leading byte order mark is dropped.

    The AST is immutable, so a file parsed before (a block library imported by many specs in one
    `nnspec validate` run) is returned from a small cache."""
    text = strip_bom(text)
    key = (path, text)
    cached = _parsed.get(key)
    if cached is None:
        cached = _parse(text, path)
        if len(_parsed) >= 64:
            _parsed.pop(next(iter(_parsed)))
        _parsed[key] = cached
    return cached


_parsed: dict[tuple[str, str], n.Module] = {}


def _parse(text: str, path: str) -> n.Module:
    _check_size(text, path)
    parser = lark_parser()
    _comments.found = comments = []
    try:
        tree = parser.parse(text)
    except UnexpectedInput as err:
        raise NnspecError(syntax_errors(parser, text, path, err), {path: text}) from None
    except RecursionError:  # belt and braces: the grammar and builder do not recurse
        raise NnspecError([Diagnostic("error", "E601", "nesting too deep", Span(path, 1, 1, 1, 2))],
                          {path: text}) from None
    finally:
        _comments.found = None
    try:
        items = _Builder(path).transform(tree)
    except VisitError as err:    # lark wraps what a builder callback raised
        if isinstance(err.orig_exc, NnspecError):
            raise NnspecError(err.orig_exc.diagnostics, {path: text}) from None
        raise
    return n.Module(path, tuple(items), tuple(sorted(comments)), text)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--write-tables"]:
        grammar = grammar_text()
        path = _grammar_dir() / "nnspec.tables.json"
        path.write_text(json.dumps(build_tables(grammar), separators=(",", ":")), encoding="utf-8")
        print(f"wrote {path}")
        return 0
    print("usage: python -m nnspec.syntax.parser --write-tables", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
