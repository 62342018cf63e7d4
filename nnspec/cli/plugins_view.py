"""`nnspec plugins [KIND] [--check]`: what is installed, from which distribution."""
from __future__ import annotations

import sys

from nnspec.registry.catalog import KINDS, Catalog


def show_plugins(kind: str | None, check: bool = False, as_json: bool = False) -> int:
    if kind is not None and kind not in KINDS:
        from nnspec.errors import did_you_mean
        hint = did_you_mean(kind, KINDS) or "kinds: " + ", ".join(KINDS)
        print(f"nnspec plugins: unknown kind `{kind}` ({hint})", file=sys.stderr)
        return 2
    catalog = Catalog.default()
    rows, failures = [], []
    for k in ([kind] if kind else KINDS):
        components, errors = catalog[k].all()
        failures.extend(errors)
        for c in components:
            rows.append((c.name, k, c.distribution, c.version, c.summary))
    if as_json:
        import json
        keys = ("name", "kind", "distribution", "version", "summary")
        print(json.dumps({"components": [dict(zip(keys, row)) for row in rows],
                          "errors": [str(err) for err in failures]}, indent=2))
        return 1 if failures else 0
    from rich.markup import escape
    from rich.table import Table
    from nnspec.cli.output import console as make_console
    console = make_console()
    table = Table(show_lines=False)
    for col in ("name", "kind", "distribution", "version", "summary"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(escape(str(cell)) for cell in row))     # summaries are text, not markup
    console.print(table)
    status = 0
    for err in failures:
        console.print(f"[red]error:[/] {escape(str(err))}")
        status = 1
    if check:
        status = max(status, _check_all(catalog, [kind] if kind else list(KINDS), console))
    return status


def _check_all(catalog: Catalog, kinds: list[str], console) -> int:
    from rich.markup import escape

    """Import each implementation and check it is callable (plugin authors run this in CI)."""
    bad = 0
    for k in kinds:
        components, _ = catalog[k].all()
        for c in components:
            try:
                impl = c.load()
                if not callable(impl):
                    raise TypeError(f"implementation {c.impl!r} is not callable")
                if k == "layers" and c.shape is None and not c.meta_shapes:
                    raise TypeError("a layer must declare a shape rule or opt in to meta_shapes")
            except Exception as err:  # report every broken plugin, keep going
                bad += 1
                console.print("[red]✗[/] " + escape(f"{k}/{c.name} ({c.distribution} {c.version}): "
                                                    f"{type(err).__name__}: {err}"))
    if not bad:
        console.print("[green]all implementations import and match their declarations[/]")
    return 1 if bad else 0
