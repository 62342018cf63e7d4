"""Generate the reference lists in docs/language.md from the registry, so docs cannot drift.

`python -m nnspec.cli.docs` rewrites the text between the `<!-- generated:... -->` markers;
`python -m nnspec.cli.docs --check` exits 1 when the file is stale (a test runs it).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from nnspec.registry.binding import _show
from nnspec.registry.catalog import KINDS, Catalog
from nnspec.check.sections import DATA_KEYS, TRAIN_KEYS
from nnspec.registry.types import Number, Param

DOC = Path(__file__).resolve().parents[2] / "docs" / "language.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _param(p: Param) -> str:
    text = f"`{p.name}`" if p.required else f"`{p.name} = {_show(p.default)}`"
    kind = str(p.type)
    if isinstance(p.type, Number) and p.type.range_text(p.name):
        kind += f", {p.type.range_text(p.name)}"
    return f"{text} ({kind})" + (f": {p.doc}" if p.doc else "")


def components_table(kind: str, catalog: Catalog) -> str:
    components, _ = catalog[kind].all()
    rows = ["| name | arguments | what it does |", "|---|---|---|"]
    for c in components:
        if c.distribution != "nnspec":
            continue
        args = "<br>".join(_cell(_param(p)) for p in c.params) or "—"
        flags = f" *[{', '.join(sorted(c.flags))}]*" if c.flags else ""
        rows.append(f"| `{c.name}` | {args} | {_cell(c.summary)}{flags}{_reports(c)} |")
    return "\n".join(rows)


def _reports(c) -> str:
    """A metric's reported keys with its default arguments (monitored as train_/val_<key>)."""
    if c.kind != "metrics" or any(p.required for p in c.params):
        return ""
    from nnspec.registry.types import Args
    keys = c.reported(Args({p.name: p.default for p in c.params}))
    shown = [f"`{k.name}`" + (f" ({k.better})" if k.better else " (not a number)" if k.better is None else "")
             for k in keys]
    return " Reports " + ", ".join(shown) + "."


def keys_table(schema: dict) -> str:
    rows = ["| key | value | meaning |", "|---|---|---|"]
    for name, (params, doc) in schema.items():
        if len(params) == 1 and params[0].name == name:
            value = str(params[0].type)
        else:
            value = f"`{name}(" + ", ".join(_param(p).split(":")[0].replace("`", "") for p in params) + ")`"
        rows.append(f"| `{name}` | {_cell(value)} | {_cell(doc)} |")
    return "\n".join(rows)


def generated(catalog: Catalog | None = None) -> dict[str, str]:
    catalog = catalog or Catalog.default()
    out = {kind: components_table(kind, catalog) for kind in KINDS}
    out["train-keys"] = keys_table(TRAIN_KEYS)
    out["data-keys"] = keys_table(DATA_KEYS)
    return out


MARK = re.compile(r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end:(?P=name) -->)", re.S)


def render(text: str, parts: dict[str, str]) -> str:
    return MARK.sub(lambda m: m.group(1) + parts.get(m.group("name"), m.group("body").rstrip("\n")) + "\n" +
                    m.group(4), text)


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    new = render(text, generated())
    if "--check" in argv:
        if new != text:
            print("docs/language.md is stale: run `python -m nnspec.cli.docs`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
