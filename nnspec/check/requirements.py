"""`requires "nnspec-lion>=0.1"`: check that a spec's plugin distributions are installed.

A small subset of PEP 440 (==, !=, >=, <=, >, <, ~=, comma-separated; release numbers compared
numerically, pre/post/dev suffixes ignored) — enough for plugin pins without a dependency."""
from __future__ import annotations

import re
from importlib import metadata

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*((?:[<>=!~]=?|===)\s*[\w.*+!-]+"
                  r"(?:\s*,\s*(?:[<>=!~]=?|===)\s*[\w.*+!-]+)*)?\s*$")
_CLAUSE = re.compile(r"(~=|==|!=|>=|<=|>|<)\s*([\w.*+!-]+)")


def _release(version: str) -> tuple[int, ...]:
    m = re.match(r"(\d+(?:\.\d+)*)", version)
    return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


def _satisfies(version: str, op: str, target: str) -> bool:
    if op in ("==", "!=") and target.endswith(".*"):
        prefix = _release(target[:-2])
        same = _release(version)[:len(prefix)] == prefix
        return same if op == "==" else not same
    c = _cmp(_release(version), _release(target))
    if op == "~=":
        t = _release(target)
        return c >= 0 and _release(version)[:max(1, len(t) - 1)] == t[:max(1, len(t) - 1)]
    return {"==": c == 0, "!=": c != 0, ">=": c >= 0, "<=": c <= 0, ">": c > 0, "<": c < 0}[op]


def parse_requirement(text: str) -> tuple[str, list[tuple[str, str]]] | None:
    m = _REQ.match(text)
    if not m:
        return None
    return m.group(1), _CLAUSE.findall(m.group(2) or "")


def check_requirement(text: str) -> tuple[str, str] | None:
    """None when satisfied, else (message, hint)."""
    parsed = parse_requirement(text)
    if parsed is None:
        return f"`{text}` is not a requirement", 'write a distribution name and optional versions: "nnspec-lion>=0.1"'
    name, clauses = parsed
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        return f"requires {text}, which is not installed", f"pip install '{text}'"
    bad = [f"{op}{v}" for op, v in clauses if not _satisfies(version, op, v)]
    if bad:
        return f"requires {text} but {name} {version} is installed", f"pip install --upgrade '{text}'"
    return None
