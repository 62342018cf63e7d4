"""The checker: files → imports → consts → model graph → sections → parameter groups → data files → a
checked `Spec`.

`check_file` never raises for a user mistake: it returns every diagnostic it found, in source
order. `load` is the strict form used by training and the Python API.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from nnspec.syntax import nodes as n
from nnspec.spec.settings import Override, Spec
from nnspec.errors import Diagnostic, Diagnostics, NnspecError, Span, did_you_mean
from nnspec.check.expressions import Names
from nnspec.check.block_calls import check_params_declared_once
from nnspec.check.consts import evaluate_consts
from nnspec.check.model_graph import GraphChecker
from nnspec.limits import LIMITS
from nnspec.syntax.parser import parse
from nnspec.syntax.source_text import HINT, decode_spec, position, strip_bom
from nnspec.check.param_groups import resolve_groups
from nnspec.registry.catalog import Catalog
from nnspec.check.sections import SECTIONS, SectionChecker


@dataclass
class CheckResult:
    path: str
    spec: Spec | None
    diagnostics: list[Diagnostic]
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)

    def raise_for_errors(self) -> Spec:
        if not self.ok or self.spec is None:
            raise NnspecError(self.diagnostics or [Diagnostic("error", "E000", "spec is not valid",
                                                              Span.unknown(self.path))], self.sources)
        return self.spec


def load(path: str | Path, overrides: Sequence[str] | dict | None = None, *, catalog: Catalog | None = None,
         allow_outside: bool = False, open_data: bool = True) -> Spec:
    """Parse and check a spec; raise NnspecError listing every problem."""
    return check_file(path, overrides=overrides, catalog=catalog, allow_outside=allow_outside,
                      open_data=open_data).raise_for_errors()


def check_file(path: str | Path, *, overrides: Sequence[str] | dict | None = None, catalog: Catalog | None = None,
               allow_outside: bool = False, open_data: bool = True) -> CheckResult:
    """Check a spec file. `open_data=False` skips reading the data's headers (CI without the data)."""
    shown = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        d = Diagnostic("error", "E001", f"cannot read {shown}: {err.strerror or err}", Span.unknown(shown))
        return CheckResult(shown, None, [d])
    if len(data) > LIMITS.max_file_bytes:
        d = Diagnostic("error", "E600", f"file is larger than {LIMITS.max_file_bytes // 1_000_000} MB",
                       Span(shown, 1, 1, 1, 2), "a spec is a short text; split it into files joined with `import`")
        return CheckResult(shown, None, [d])
    try:
        text = decode_spec(data, shown)
    except NnspecError as err:
        return CheckResult(shown, None, err.diagnostics)
    return check_source(text, shown, overrides=overrides, catalog=catalog, allow_outside=allow_outside,
                        open_data=open_data)


def check_source(text: str, path: str = "<string>", *, overrides: Sequence[str] | dict | None = None,
                 catalog: Catalog | None = None, allow_outside: bool = False, open_data: bool = True) -> CheckResult:
    checker = _Checker(catalog or Catalog.default(), Path(path).resolve().parent if path != "<string>" else Path.cwd(),
                       allow_outside, open_data)
    text = strip_bom(text)
    checker.sources[path] = text
    try:
        spec = checker.run(text, path, _override_list(overrides))
    except NnspecError as err:        # a pass that could not continue (syntax, limits)
        checker.diags.extend(err.diagnostics)
        checker.sources.update(err.sources)
        spec = None
    diags = _dedupe(checker.diags)
    if any(d.severity == "error" for d in diags):
        spec = None
    return CheckResult(path, spec, diags, checker.source_texts())


def _override_list(overrides) -> list[str]:
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return [f"{k}={_literal(v)}" for k, v in overrides.items()]
    return list(overrides)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value.replace("_", "").isalnum() else '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def _dedupe(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for d in sorted(diags, key=Diagnostic.sort_key):
        k = (d.span.file, d.span.line, d.span.column, d.code, d.message)
        if k not in seen:
            seen.add(k)
            out.append(d)
    return out


class _Checker:
    def __init__(self, catalog: Catalog, root: Path, allow_outside: bool, open_data: bool = True):
        self.catalog = catalog
        self.root = root
        self.allow_outside = allow_outside
        self.diags = Diagnostics()
        self.sources: dict[str, str] = {}          # every file read
        self.overrides: tuple[Override, ...] = ()
        self.model_args: list[n.Arg] = []          # --set model.PARAM=VALUE, as arguments of the model
        self.modules: list[n.Module] = []
        self.loaded: set[Path] = set()
        self.open_data = open_data          # read the data files' headers (validate --no-data: no)

    # --- files and imports ------------------------------------------------------------------

    def run(self, text: str, path: str, overrides: list[str]) -> Spec | None:
        main = parse(text, path)
        self._imports(main, [Path(path).resolve()] if path != "<string>" else [])
        main = self._apply_overrides(main, overrides)      # consts set by --set are read from here
        self.modules.append(main)
        return self._check(main)

    def _imports(self, module: n.Module, stack: list[Path]) -> None:
        base = stack[-1].parent if stack else self.root
        for item in module.items:
            if not isinstance(item, n.Import):
                continue
            raw = item.path
            if "://" in raw or raw.startswith("\\\\"):
                self.diags.error("E701", "imports take relative file paths, not URLs", item.span)
                continue
            try:
                target = (base / raw).resolve()
                exists = target.is_file()
            except (OSError, ValueError) as err:      # a name too long, a loop of links, ...
                self.diags.error("E704", f"cannot import `{raw[:80]}`: {getattr(err, 'strerror', None) or err}",
                                 item.span)
                continue
            if not self.allow_outside and not target.is_relative_to(self.root):
                self.diags.error("E702", f"`{raw}` is outside the spec's folder", item.span,
                                 "pass --allow-outside-imports to nnspec to allow it")
                continue
            if target in stack:
                cycle = " → ".join(p.name for p in stack[stack.index(target):] + [target])
                self.diags.error("E703", f"import cycle: {cycle}", item.span)
                continue
            if target in self.loaded:
                continue
            if len(self.loaded) >= LIMITS.max_imports:
                self.diags.error("E604", f"more than {LIMITS.max_imports} imported files", item.span)
                continue
            if not exists:
                self.diags.error("E704", f"cannot import `{raw}`: no such file", item.span, f"looked for {target}")
                continue
            self.loaded.add(target)
            try:
                data = target.read_bytes()
                if len(data) > LIMITS.max_file_bytes:
                    raise NnspecError(Diagnostic("error", "E600", "imported file is too large", item.span))
                shown = str(target)
                text = strip_bom(data.decode("utf-8"))
                self.sources[shown] = text
                sub = parse(text, shown)
            except UnicodeDecodeError as err:
                line, column = position(data, err.start)
                self.diags.error("E002", f"`{raw}` is not UTF-8 text: byte {err.start} (line {line}, column "
                                 f"{column}) is 0x{data[err.start]:02x}", item.span, HINT)
                continue
            except NnspecError as err:
                self.diags.extend(err.diagnostics)
                self.sources.update(err.sources)
                continue
            for other in sub.items:
                if isinstance(other, (n.Setting,)) or (isinstance(other, n.GraphDef) and other.kind == "model"):
                    self.diags.error("E705", "an imported file may only hold blocks, consts and imports",
                                     getattr(other, "name_span", other.span))
            self._imports(sub, stack + [target])
            self.modules.append(sub)

    # --- overrides --------------------------------------------------------------------------

    def _apply_overrides(self, main: n.Module, overrides: list[str]) -> n.Module:
        from nnspec.check.overrides import apply_overrides
        if not overrides:
            return main
        main, self.model_args, diags, given = apply_overrides(main, overrides)
        self.diags.extend(diags)
        self.overrides = tuple(given)
        return main

    def source_texts(self) -> dict[str, str]:
        """The files and the --set pseudo-files: every text a diagnostic can point into."""
        return {**self.sources, **{o.text: o.text for o in self.overrides}}

    # --- the whole spec -----------------------------------------------------------------------

    def _check(self, main: n.Module) -> Spec | None:
        """The passes, in order; each reports what it finds and the later ones still run."""
        names, blocks = self._definitions()
        graph = GraphChecker(self.catalog, self.diags, blocks, names)
        sections = self._sections(main)
        models = [i for i in main.items if isinstance(i, n.GraphDef) and i.kind == "model"]
        model = self._model(main, models, sections, blocks, graph)
        settings = self._settings(sections, names)
        self._cross_checks(main, model, sections, settings)
        if self.diags.has_errors or (models and model is None):
            return None
        return self._spec(main, model, settings)

    def _cross_checks(self, main: n.Module, model, sections: dict[str, n.Setting], settings: dict[str, Any]) -> None:
        """Rules between parts: the data files against the model and loss, what metrics report and
        what is monitored, losses against metrics and the model output, schedule chains, optimizer
        capabilities, group selectors (resolved to parameter paths), memory."""
        from nnspec.check.data_files import check_data
        from nnspec.check.memory import check_memory
        from nnspec.check.training_rules import check_training
        s = settings
        described = None
        if s["data"] is not None:
            described = check_data(s["data"], model, s["loss"], s["metrics"], self._base_dir(main), self.diags,
                                   open_data=self.open_data)
        s["train"], s["schedule"] = check_training(self.diags, sections, model, described, s["loss"], s["metrics"],
                                                   s["schedule"], s["train"])
        self._check_capabilities(s["optimizer"], s["train"])
        if model is not None and s["optimizer"] is not None:
            s["optimizer"] = resolve_groups(s["optimizer"], model, self.diags)
        if model is not None:
            check_memory(self.diags, model, s["optimizer"], s["data"], s["metrics"])

    def _definitions(self) -> tuple[Names, dict[str, n.GraphDef]]:
        """Every file's consts (evaluated, dependencies first) and blocks; each name defined once."""
        consts: dict[str, n.Const] = {}
        blocks: dict[str, n.GraphDef] = {}
        for module in self.modules:
            for item in module.items:
                if isinstance(item, n.GraphDef):
                    check_params_declared_once(item, self.diags)
                if isinstance(item, n.Const):
                    self._define_once(consts, "const", item)
                elif isinstance(item, n.GraphDef) and item.kind == "block":
                    self._define_once(blocks, "block", item)
        names = Names()
        evaluate_consts(list(consts.values()), names, self.diags)
        return names, blocks

    def _define_once(self, defined: dict, kind: str, item) -> None:
        if item.name in defined:
            first = defined[item.name].name_span
            self.diags.error("E209", f"{kind} `{item.name}` is defined twice", item.name_span,
                             f"first defined at {first.file}:{first.line}")
        else:
            defined[item.name] = item

    def _sections(self, main: n.Module) -> dict[str, n.Setting]:
        sections: dict[str, n.Setting] = {}
        for item in main.items:
            if not isinstance(item, n.Setting):
                continue
            if item.name not in SECTIONS:
                self.diags.error("E500", f"unknown section `{item.name}`", item.name_span,
                                 did_you_mean(item.name, SECTIONS) or "sections: " + ", ".join(SECTIONS))
            elif item.name in sections:
                self.diags.error("E502", f"section `{item.name}` appears twice", item.name_span,
                                 f"first at line {sections[item.name].span.line}")
            else:
                sections[item.name] = item
        return sections

    def _model(self, main: n.Module, models: list[n.GraphDef], sections: dict[str, n.Setting],
               blocks: dict[str, n.GraphDef], graph: GraphChecker):
        """The model graph IR (None without a model or after an error in it); unused blocks warned of."""
        for extra in models[1:]:
            self.diags.error("E520", "a spec has one model", extra.name_span,
                             "move other models to their own files; share blocks with `import`")
        if not models:
            if self.model_args:
                self.diags.error("E521", "--set model.* given but the spec has no model", Span.unknown(main.path))
            if sections:
                first = next(iter(sections.values()))
                self.diags.error("E521", "the spec has settings but no `model`", first.name_span,
                                 "add `model name { input [...] ... }`")
            self._names_only(blocks, graph)
            return None
        model = graph.check_model(models[0], self.model_args)
        for name, b in blocks.items():
            if name not in graph.used_blocks and b.span.file == main.path:
                self.diags.warning("W101", f"block `{name}` is never used", b.name_span)
        return model

    def _settings(self, sections: dict[str, n.Setting], names: Names) -> dict[str, Any]:
        """Each settings section checked into its spec part (None, or () for lists, when absent)."""
        sc = SectionChecker(self.catalog, self.diags, names)
        out: dict[str, Any] = {"metrics": (), "requires": ()}
        for name in ("data", "loss", "metrics", "optimizer", "schedule", "train", "requires"):
            out.setdefault(name, None)
            if name in sections or name == "train":        # train has defaults for everything
                out[name] = getattr(sc, name)(sections.get(name))
        return out

    def _spec(self, main: n.Module, model, settings: dict[str, Any]) -> Spec:
        digest = hashlib.sha256("\0".join(f"{k}\0{v}" for k, v in sorted(self.source_texts().items())).encode()
                                ).hexdigest()
        return Spec(main.path, model, settings["data"], settings["loss"], settings["metrics"], settings["optimizer"],
                    settings["schedule"], settings["train"], settings["requires"], dict(self.sources), digest,
                    self._base_dir(main), self.overrides)

    def _base_dir(self, main: n.Module) -> str:
        """The folder relative data paths start from."""
        return str(Path(main.path).resolve().parent) if main.path != "<string>" else str(self.root)

    def _names_only(self, blocks: dict[str, n.GraphDef], graph: GraphChecker) -> None:
        """A block library without a model: check that every name in its blocks resolves."""
        for block in blocks.values():
            local = {p.name for p in block.params}
            for name, span in _graph_names(block.body, local):
                if name not in blocks and graph._layer(name, span, quiet=True) is None:
                    graph._layer(name, span)     # reports unknown / plugin errors

    def _check_capabilities(self, optimizer, train) -> None:
        """Combinations an optimizer's capability flags rule out, known before anything runs."""
        from nnspec.registry.catalog import CREATE_GRAPH
        if optimizer is None or CREATE_GRAPH not in optimizer.optimizer.component.flags:
            return
        name = optimizer.optimizer.name
        if train.compile:
            self.diags.error("E531", f"`{name}` needs second derivatives (backward with create_graph), "
                             "which torch.compile does not support", optimizer.optimizer.span,
                             "remove `compile true` from the train section")
        if train.precision == "fp16":
            self.diags.error("E531", f"`{name}` needs second derivatives, which fp16 loss scaling would scale",
                             optimizer.optimizer.span, "use `precision bf16` or fp32")


def _graph_names(stmts, local: set[str]):
    """(name, span) of every layer/block reference in a graph body, minus local tensors/shared."""
    local = set(local)
    for s in stmts:
        if isinstance(s, (n.Bind, n.Shared, n.Const)):
            local.add(s.name)
    for s in stmts:
        nodes = s.chain.nodes if isinstance(s, n.Bind) else s.nodes if isinstance(s, n.Chain) else \
            (s.node,) if isinstance(s, n.Shared) else ()
        for node in nodes:
            yield from _node_names(node, local)


def _node_names(node, local):
    if isinstance(node, n.Chain):
        for inner in node.nodes:
            yield from _node_names(inner, local)
    elif isinstance(node, n.Repeat):
        yield from _node_names(node.node, local)
    elif isinstance(node, n.Residual):
        yield from _graph_names(node.body, local)
        yield from _graph_names(node.shortcut or (), local)
    elif isinstance(node, n.Parallel):
        yield from _node_names(node.merge, local)
        yield from _graph_names(node.branches, local)
    elif node.name not in local:
        yield node.name, getattr(node, "name_span", node.span)
