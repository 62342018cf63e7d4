"""Top-level consts: each is evaluated after the consts it refers to, wherever they are written
(a const may refer forward, or into an imported file); consts that refer to each other in a
cycle are one located error (E213), at the reference in the cycle's first const."""
from __future__ import annotations

from typing import Iterator, Sequence

from nnspec.check.expressions import Names, evaluate
from nnspec.errors import Diagnostics, NnspecError
from nnspec.syntax import nodes as n


def names_in(expr: n.Expr) -> Iterator[n.Name]:
    """Every bare name an expression refers to, in source order."""
    stack = [expr]
    found = []
    while stack:
        e = stack.pop()
        if isinstance(e, n.Name):
            found.append(e)
        elif isinstance(e, n.BinOp):
            stack += [e.left, e.right]
        elif isinstance(e, n.Neg):
            stack.append(e.operand)
        elif isinstance(e, n.ListExpr):
            stack += e.items
        elif isinstance(e, n.Call):
            stack += [a.value for a in e.args]
        elif isinstance(e, n.Then):
            stack += e.items
    return iter(sorted(found, key=lambda name: name.span.start))


def evaluate_consts(consts: Sequence[n.Const], names: Names, diags: Diagnostics) -> None:
    """Evaluate `consts` (each name once) into `names`, dependencies first. A const that fails is
    recorded in `names.failed`, so its uses say nothing more (its own error is the one to fix)."""
    by_name = {c.name: c for c in consts}
    done: set[str] = set()
    for root in consts:
        if root.name in done:
            continue
        path = [root.name]                               # the chain being followed (a DFS without recursion)
        pending = [iter([r for r in names_in(root.value) if r.name in by_name])]
        while pending:
            ref = next(pending[-1], None)
            if ref is None:
                pending.pop()
                _evaluate(by_name[path.pop()], names, diags, done)
                continue
            if ref.name in done:
                continue
            if ref.name in path:
                cycle = path[path.index(ref.name):] + [ref.name]
                at = next(r for r in names_in(by_name[cycle[0]].value) if r.name == cycle[1])   # where it starts
                diags.error("E213", "consts refer to each other in a cycle: " + " → ".join(cycle), at.span,
                            "a const can use only consts that do not use it back; give one of them a value")
                for name in cycle:
                    names.failed.add(name)
                    done.add(name)
                continue
            path.append(ref.name)
            pending.append(iter([r for r in names_in(by_name[ref.name].value) if r.name in by_name]))


def _evaluate(const: n.Const, names: Names, diags: Diagnostics, done: set[str]) -> None:
    if const.name in done:
        return
    done.add(const.name)
    try:
        names.values[const.name] = evaluate(const.value, names)
    except NnspecError as err:
        diags.extend(err.diagnostics)
        names.failed.add(const.name)
