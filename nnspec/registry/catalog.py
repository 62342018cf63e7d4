"""One registry mechanism for every kind of component, fed by entry points.

A `Component` is a declaration: name, parameters, capability flags and (for layers) pure-Python
shape rules and the trainable parameters (names and shapes) a layer has. Its implementation is named by a "module:attr" string and only
imported when something is built, so checking a spec never imports torch or a plugin's runtime.

Distributions (nnspec itself included) register in the entry-point groups `nnspec.<kind>`. An
entry point may name one Component (its entry-point name is the component's name, so listing
names imports nothing) or a list of Components (a catalog, loaded when its names are needed).
Discovery happens on first use and is cached per `Catalog`; tests build isolated catalogs with
`Catalog.from_components`.
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable, Mapping

from nnspec.errors import NnspecError
from nnspec.registry.types import CountRule, Param, ParamRule, ShapeRule

KINDS = ("layers", "optimizers", "schedules", "losses", "metrics", "datasets", "augmentations")

# Capability flags a component may declare.
NEEDS_CLOSURE = "closure"            # optimizer.step(closure) re-evaluates the loss (lbfgs)
CREATE_GRAPH = "create_graph"        # backward(create_graph=True): second-order optimizers
MULTI_INPUT = "multi_input"          # a merge layer: takes the flow plus named tensors
PER_EPOCH = "per_epoch"              # a schedule whose lr only changes between epochs: a chain of
#                                      such links sets the lr once per epoch (ScheduleConfig.interval)
NEEDS_METRIC = "needs_metric"        # a schedule driven by the monitored metric: observe() each epoch
FULL_BATCH = "full_batch"            # an optimizer fed the whole training split as one batch (gd)
CLASSIFICATION = "classification"    # a loss/metric whose targets are class indices (int64); a metric
#                                      with it needs a loss with it (or BINARY with one output)
BINARY = "binary"                    # a loss of 0/1 targets scored by logits (bce_with_logits): with a
#                                      single output, classification metrics threshold it at 0
NORM = "norm"                        # a normalization layer: `group norm` selects its parameters


@dataclass(frozen=True)
class Reported:
    """One key a metric reports (its row in metrics.jsonl is `train_<name>` / `val_<name>`).
    `better` is "max" or "min" for a number that should rise or fall (the default `mode` when it
    is monitored), "" for a number without a direction, None for a value that is not one number
    (a confusion matrix, per-class lists), which cannot be monitored."""
    name: str
    better: str | None = ""


@dataclass(frozen=True, eq=False)
class Component:
    """A registry entry: everything the checker needs, and where the implementation lives."""
    name: str
    kind: str
    params: tuple[Param, ...] = ()
    summary: str = ""
    impl: str | Callable | None = None           # "module:attr", or the object itself
    flags: frozenset[str] = frozenset()
    # layers only:
    shape: ShapeRule | None = None               # (args, inputs) -> TensorType, pure Python
    parameters: ParamRule | None = None          # (args, inputs) -> {name: shape} of the module's
    #                                            named_parameters(); the parameter count is their sum
    count: CountRule | None = None               # (args, inputs) -> (parameter, buffer elements); with
    #                                            `parameters` declared only its buffer count is read
    inputs: tuple[int, int | None] = (1, 1)      # how many input tensors (min, max or None)
    meta_shapes: bool = False                    # opt-in: infer shapes on torch's meta device
    check: Callable[[Any], None] | None = None   # cross-argument checks, raise ArgError
    warn: Callable[[Any], str | None] | None = None   # a legal but suspicious use (e.g. dropout 0)
    info: Mapping[str, Any] = field(default_factory=dict)   # kind-specific facts, e.g. optimizer
    #                                            "state_slots" (tensors of state per parameter)
    # metrics only: the keys compute() returns, or a function of the checked args giving them
    reports: "tuple[Reported, ...] | Callable[[Any], tuple[Reported, ...]] | None" = None
    # filled in by the registry:
    distribution: str = field(default="", compare=False)
    version: str = field(default="", compare=False)

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    def reported(self, args: Any) -> tuple[Reported, ...]:
        """The keys this metric reports for `args`; undeclared: one number under its own name."""
        if self.reports is None:
            return (Reported(self.name),)
        return tuple(self.reports(args) if callable(self.reports) else self.reports)

    def load(self) -> Any:
        """Import and return the implementation (torch lives here, not in the declaration).
        An implementation that does not import raises PluginBuildError naming the component."""
        if isinstance(self.impl, str):
            module, _, attr = self.impl.partition(":")
            try:
                obj = importlib.import_module(module)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except Exception as cause:        # a plugin's import can raise anything
                raise PluginBuildError(self, "failed to import", cause) from cause
            return obj
        if self.impl is None:
            raise LookupError(f"{self.kind[:-1]} `{self.name}` declares no implementation")
        return self.impl

    def build(self, *args: Any, **kwargs: Any) -> Any:
        """`load()(*args, **kwargs)`. ValueError and TypeError (arguments the implementation
        refuses) pass through for the caller to locate; anything else is a broken implementation
        and raises PluginBuildError naming the component and its distribution."""
        factory = self.load()
        try:
            return factory(*args, **kwargs)
        except (ValueError, TypeError, NnspecError):       # refused arguments; nnspec's own located errors
            raise
        except Exception as cause:
            raise PluginBuildError(self, "failed while being built", cause) from cause


class PluginBuildError(Exception):
    """A component's implementation failed to import or to build: a broken plugin (or nnspec
    bug), not a mistake in the spec; says which component and distribution."""

    def __init__(self, component: Component, what: str, cause: BaseException):
        self.component, self.cause = component, cause
        where = f" from {component.distribution} {component.version}".rstrip() if component.distribution else ""
        impl = f" [{component.impl}]" if isinstance(component.impl, str) else ""
        super().__init__(f"the implementation of {component.kind[:-1]} `{component.name}`{where}{impl} {what}: "
                         f"{type(cause).__name__}: {cause} (reinstall or update that plugin; "
                         f"`nnspec plugins --check` checks every plugin)")


class PluginLoadError(Exception):
    """A plugin's declaration failed to import; says which distribution and entry point."""

    def __init__(self, kind: str, name: str, distribution: str, version: str, entry_point: str, cause: BaseException):
        self.kind, self.name, self.distribution, self.version = kind, name, distribution, version
        self.entry_point, self.cause = entry_point, cause
        super().__init__(f"plugin `{name}` ({kind}) from {distribution} {version} failed to load "
                         f"[{entry_point}]: {type(cause).__name__}: {cause}")


class Conflict(Exception):
    def __init__(self, kind: str, name: str, providers: list[Component]):
        self.kind, self.name, self.providers = kind, name, providers
        who = " and ".join(f"{c.distribution or '?'} {c.version}".strip() for c in providers)
        super().__init__(f"{kind[:-1]} `{name}` is registered by more than one distribution: {who}")
        self.hint = "choose one by qualifying the name: " + " or ".join(
            f"`{_norm(c.distribution).replace('-', '_')}::{name}`" for c in providers)


@dataclass
class _Source:
    """One entry point not yet loaded (or a component given directly)."""
    name: str | None               # None for a catalog whose names are unknown until loaded
    distribution: str
    version: str
    entry_point: Any = None
    component: Component | None = None
    loaded: list[Component] | None = None
    error: BaseException | None = None

    def load(self, kind: str) -> list[Component]:
        if self.loaded is not None:
            return self.loaded
        if self.error is not None:
            raise self.error
        if self.component is not None:
            self.loaded = [self.component]
            return self.loaded
        try:
            obj = self.entry_point.load()
        except BaseException as cause:  # a plugin's import can raise anything
            if isinstance(cause, (KeyboardInterrupt, SystemExit)):
                raise
            self.error = PluginLoadError(kind, self.name or self.entry_point.name, self.distribution,
                                         self.version, self.entry_point.value, cause)
            raise self.error from cause
        items = list(obj) if isinstance(obj, (list, tuple)) else [obj]
        bad = [x for x in items if not isinstance(x, Component) or x.kind != kind]
        if bad:
            self.error = PluginLoadError(kind, self.name or self.entry_point.name, self.distribution, self.version,
                                         self.entry_point.value,
                                         TypeError(f"expected nnspec Component(s) of kind {kind!r}, got {bad[0]!r}"))
            raise self.error
        self.loaded = [_stamp(c, self.distribution, self.version) for c in items]
        return self.loaded


def _stamp(c: Component, distribution: str, version: str) -> Component:
    object.__setattr__(c, "distribution", distribution)
    object.__setattr__(c, "version", version)
    return c


class Registry:
    """The components of one kind."""

    def __init__(self, kind: str, sources: Iterable[_Source] = ()):
        self.kind = kind
        self._sources = list(sources)
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str | None], Component | None] = {}

    def _by_name(self, name: str) -> list[_Source]:
        named = [s for s in self._sources if s.name == name]
        catalogs = [s for s in self._sources if s.name is None]
        found = list(named)
        for s in catalogs:
            try:
                if any(c.name == name for c in s.load(self.kind)):
                    found.append(s)
            except PluginLoadError:
                continue
        return found

    def names(self) -> list[str]:
        """Every registered name. Loads catalogs (light declaration modules), never per-name plugins."""
        out = {s.name for s in self._sources if s.name is not None}
        for s in self._sources:
            if s.name is None:
                try:
                    out.update(c.name for c in s.load(self.kind))
                except PluginLoadError:
                    pass
        return sorted(out)

    def get(self, name: str, distribution: str | None = None) -> Component | None:
        """The component called `name`, or None. Raises PluginLoadError / Conflict."""
        key = (name, distribution)
        if key in self._cache:
            return self._cache[key]
        with self._lock:
            sources = self._by_name(name)
            if distribution is not None:
                sources = [s for s in sources if _norm(s.distribution) == _norm(distribution)]
            found = [c for s in sources for c in s.load(self.kind) if c.name == name]
        if len(found) > 1:
            raise Conflict(self.kind, name, found)
        self._cache[key] = found[0] if found else None
        return self._cache[key]

    def all(self) -> tuple[list[Component], list[PluginLoadError]]:
        """Load everything (for `nnspec plugins` and docs). Returns components and load failures."""
        out, errors = [], []
        for s in self._sources:
            try:
                out.extend(s.load(self.kind))
            except PluginLoadError as err:
                errors.append(err)
        return sorted(out, key=lambda c: (c.name, c.distribution)), errors

    def distributions(self, name: str) -> list[tuple[str, str]]:
        return [(s.distribution, s.version) for s in self._by_name(name)]


def _norm(dist: str) -> str:
    return dist.lower().replace("_", "-").replace(".", "-")


class Catalog:
    """All registries. `Catalog.default()` reads installed entry points once per process."""

    _default: "Catalog | None" = None
    _default_lock = threading.Lock()

    def __init__(self, registries: Mapping[str, Registry]):
        self.registries = dict(registries)
        for kind in KINDS:
            self.registries.setdefault(kind, Registry(kind))

    def __getitem__(self, kind: str) -> Registry:
        return self.registries[kind]

    def get(self, kind: str, name: str) -> Component | None:
        return self.registries[kind].get(name)

    @classmethod
    def default(cls) -> "Catalog":
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls.from_entry_points()
            return cls._default

    @classmethod
    def reset_default(cls) -> None:
        with cls._default_lock:
            cls._default = None

    @classmethod
    def from_entry_points(cls, kinds: Iterable[str] = KINDS) -> "Catalog":
        registries = {}
        all_eps = metadata.entry_points()
        for kind in kinds:
            sources = []
            for ep in all_eps.select(group=f"nnspec.{kind}"):
                dist = getattr(ep, "dist", None)
                dist_name = dist.metadata["Name"] if dist is not None else "?"
                version = dist.version if dist is not None else "?"
                # `name = "pkg.module:COMPONENT"` registers one name; a name starting with "@"
                # is a catalog whose value is a list of Components.
                name = None if ep.name.startswith("@") else ep.name
                sources.append(_Source(name, dist_name, version, entry_point=ep))
            registries[kind] = Registry(kind, sources)
        return cls(registries)

    @classmethod
    def from_components(cls, components: Iterable[Component], distribution: str = "test",
                        version: str = "0") -> "Catalog":
        """An isolated catalog for tests: no entry points, no globals touched."""
        by_kind: dict[str, list[_Source]] = {k: [] for k in KINDS}
        for c in components:
            by_kind[c.kind].append(_Source(c.name, distribution, version, component=c))
        return cls({k: Registry(k, v) for k, v in by_kind.items()})

    def with_components(self, components: Iterable[Component], distribution: str = "test") -> "Catalog":
        """This catalog plus extra components (tests of plugins without installing them)."""
        regs = {k: Registry(k, list(r._sources)) for k, r in self.registries.items()}
        for c in components:
            regs[c.kind]._sources.append(_Source(c.name, distribution, "0", component=c))
            regs[c.kind]._cache.clear()
        return Catalog(regs)
