"""Plugins as real distributions.

The slow tests pip-install plugins/nnspec-* (and throwaway packages built in tmp_path) into one
fresh venv that also sees the current environment's site directories, so torch and this
checkout's editable nnspec come from the current environment, and drive the real `nnspec` command there: listing, validation
errors, training, a broken plugin, a name conflict, uninstalling. No entry point is faked.

The smoke tests (not slow) train one step with every registered optimizer and schedule:
`Catalog.default()` plus the in-tree plugins of plugins/ that are not installed here.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import site
import subprocess
import sys
import textwrap
import tomllib
import warnings
from importlib import metadata
from pathlib import Path

import pytest
import torch

from nnspec.registry.binding import bind
from nnspec.spec.settings import OptimizerConfig, ScheduleConfig, Use
from nnspec.errors import Span
from nnspec.registry.catalog import CREATE_GRAPH, NEEDS_CLOSURE, NEEDS_METRIC, Catalog, Component

REPO = Path(__file__).resolve().parent.parent
PLUGINS = REPO / "plugins"
OURS = ("nnspec-lion", "nnspec-adahessian", "nnspec-squeeze-excite")


# --- registry-parametrized smoke tests ---------------------------------------------------------

def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def _in_tree_plugin_components() -> list[Component]:
    """Declarations of plugins/*/ not installed in this environment, read from their pyproject
    entry points with src/ on sys.path (appended, so an installed copy still wins)."""
    import importlib
    found = []
    for project in sorted(PLUGINS.glob("*/pyproject.toml")):
        meta = tomllib.loads(project.read_text())["project"]
        if _installed(meta["name"]):
            continue                                  # Catalog.default() has it
        src = str(project.parent / "src")
        if src not in sys.path:
            sys.path.append(src)
        for group, points in meta.get("entry-points", {}).items():
            if group in ("nnspec.optimizers", "nnspec.schedules"):
                for value in points.values():
                    module, _, attr = value.partition(":")
                    component = getattr(importlib.import_module(module), attr)
                    object.__setattr__(component, "distribution", meta["name"])
                    object.__setattr__(component, "version", meta["version"])
                    found.append(component)
    return found


def _registered(kind: str) -> list[Component]:
    components, _ = Catalog.default()[kind].all()      # load errors: test_installed_declarations_load
    return components + [c for c in _in_tree_plugin_components() if c.kind == kind]


@pytest.mark.parametrize("kind", ["optimizers", "schedules"])
def test_installed_declarations_load(kind):
    _, errors = Catalog.default()[kind].all()
    assert not errors, [str(e) for e in errors]


# sensible values for required arguments (like timm's registry tests); `steps` for schedules
# whose check wants a length
SAMPLE = {"lr": 1e-3, "step_size": 2, "milestones": (2, 4), "gamma": 0.5, "decay": 0.1}


def _sample_args(c: Component):
    values = [(p.name, SAMPLE[p.name]) for p in c.params if p.required]
    missing = [p.name for p in c.params if p.required and p.name not in SAMPLE]
    assert not missing, f"{c.name}: add a sample value for required argument(s) {missing} to SAMPLE"
    args, errors = bind(c.params, (), values, c.name, c.check)
    if errors and c.param("steps") is not None:
        args, errors = bind(c.params, (), values + [("steps", 4)], c.name, c.check)
    assert not errors, errors
    return args


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _train_step(opt: torch.optim.Optimizer, model, flags, x, y) -> float:
    """One step the way the trainer takes it: a closure for NEEDS_CLOSURE optimizers,
    backward(create_graph=True) for CREATE_GRAPH ones, grads set to None afterwards."""
    def closure():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        with warnings.catch_warnings():         # the grad ↔ graph cycle is broken by set_to_none below
            warnings.filterwarnings("ignore", "Using backward.. with create_graph=True", UserWarning)
            loss.backward(create_graph=CREATE_GRAPH in flags)
        return loss
    if NEEDS_CLOSURE in flags:
        loss = opt.step(closure)
    else:
        loss = closure()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


@pytest.fixture
def one_thread():
    """Tiny models: extra intra-op threads only add synchronisation (badly so on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("component", _registered("optimizers"), ids=lambda c: f"{c.distribution}:{c.name}")
def test_every_optimizer_trains_one_step(component, one_thread):
    from nnspec.lower.optim import build_optimizer
    model = _tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    use = Use(component, _sample_args(component), Span.unknown())
    opt = build_optimizer(OptimizerConfig(use), model)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    loss = _train_step(opt, model, component.flags, x, y)
    assert math.isfinite(loss)
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, after)), "no parameter moved"
    # state per parameter: never more parameter-sized tensors than the memory estimate assumes
    slots = component.info.get("state_slots", 2)
    for p in after:
        same = [v for v in opt.state[p].values() if isinstance(v, torch.Tensor) and v.shape == p.shape]
        assert len(same) <= slots, f"{component.name} keeps {len(same)} tensors per parameter, declares {slots}"
    # a checkpointed optimizer continues exactly like the original
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())     # state_dict() holds the live tensors
    torch.manual_seed(1)
    _train_step(opt, model, component.flags, x, y)
    want = [p.detach().clone() for p in model.parameters()]
    model.load_state_dict(saved_model)
    fresh = build_optimizer(OptimizerConfig(use), model)
    fresh.load_state_dict(saved_opt)
    torch.manual_seed(1)
    _train_step(fresh, model, component.flags, x, y)
    for a, b in zip(want, model.parameters()):
        assert torch.allclose(a, b.detach(), atol=1e-6)


@pytest.mark.parametrize("component", _registered("schedules"), ids=lambda c: f"{c.distribution}:{c.name}")
def test_every_schedule_drives_an_optimizer(component, one_thread):
    from nnspec.lower.optim import build_optimizer, build_schedule
    model = _tiny_model()
    sgd = Catalog.default().get("optimizers", "sgd")
    opt = build_optimizer(OptimizerConfig(Use(sgd, _sample_args(sgd), Span.unknown())), model)
    schedule = build_schedule(ScheduleConfig((Use(component, _sample_args(component), Span.unknown()),)),
                              total_steps=10, steps_per_epoch=5)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    lrs = []
    for step in range(10):
        for g in opt.param_groups:
            g["lr"] = schedule.lr(step, g["initial_lr"])
        lrs.append(opt.param_groups[0]["lr"])
        assert math.isfinite(_train_step(opt, model, frozenset(), x, y))
        if NEEDS_METRIC in component.flags and step % 5 == 4:
            schedule.observe(1.0)                    # never improves: plateau schedules reduce
    assert all(math.isfinite(lr) and lr >= 0 for lr in lrs), lrs
    state = json.loads(json.dumps(schedule.state_dict()))        # checkpoints hold plain data
    schedule.load_state_dict(state)
    assert schedule.lr(9, 1e-3) == pytest.approx(lrs[-1])


# --- real distributions in a fresh venv --------------------------------------------------------

class Venv:
    """A venv that sees the current site-packages; runs its python and pip in subprocesses."""

    def __init__(self, root: Path):
        self.root = root
        self.copies = 0
        self.python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.env.update(NO_COLOR="1", COLUMNS="200", PYTHONDONTWRITEBYTECODE="1", PIP_NO_INDEX="1",
                        PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
                        OMP_NUM_THREADS="1")          # tiny models: one torch thread is fastest

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), *args], cwd=cwd or self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def nnspec(self, *args: str, **kw) -> subprocess.CompletedProcess:
        out = self.run("-m", "nnspec", *args, **kw)
        out.output = out.stdout + out.stderr          # type: ignore[attr-defined]
        return out

    def pip(self, *args: str) -> None:
        out = self.run("-m", "pip", *args, "--quiet", timeout=300)
        assert out.returncode == 0, f"pip {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"

    def install(self, *projects: Path) -> None:
        """Install from copies: an in-tree build would leave build/ and *.egg-info in plugins/."""
        targets = []
        for project in projects:
            self.copies += 1
            target = self.root / "src-copies" / f"{self.copies}-{project.name}"
            shutil.copytree(project, target, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            targets.append(str(target))
        self.pip("install", "--no-deps", "--no-build-isolation", "--no-index", *targets)

    def uninstall(self, *names: str) -> None:
        self.pip("uninstall", "-y", *names)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    here = [name for name in OURS + ("nnspec-signsgd",) if _installed(name)]
    if here:
        pytest.skip(f"{', '.join(here)} installed in this environment: the venv would see them through "
                    f"the current environment, so uninstalling there could not remove them")
    root = tmp_path_factory.mktemp("plugins") / "venv"
    # --without-pip: pip, setuptools, torch and nnspec come from the *current* environment (fast,
    # offline). `--system-site-packages` would expose the base interpreter's packages instead, which
    # in CI (itself a venv) hold neither torch nor this checkout; so a .pth file adds the current
    # environment's site directories (their own .pth files included, e.g. the editable install).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    v = Venv(root)
    own = v.run("-c", "import site; print(site.getsitepackages()[0])")
    assert own.returncode == 0, own.stderr
    outer = [d for d in site.getsitepackages() + [site.getusersitepackages()] if Path(d).is_dir()]
    (Path(own.stdout.strip()) / "zz_outer_environment.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in outer) + "\n")
    tools = v.run("-c", "import setuptools, pip")
    if tools.returncode != 0:
        pytest.skip(f"pip and setuptools are needed to install plugins: {tools.stderr.strip()}")
    where = v.run("-c", "import nnspec.cli.commands, sys; print(nnspec.cli.commands.__file__); print(sys.prefix)")
    assert where.returncode == 0, where.stderr
    cli, prefix = where.stdout.split()
    assert Path(cli).resolve().is_relative_to(REPO), f"the venv's nnspec is {cli}, not this checkout"
    assert Path(prefix).resolve() == root.resolve()
    v.install(*(PLUGINS / name for name in OURS))
    found = v.run("-c", "import nnspec_lion; print(nnspec_lion.__file__)")
    assert Path(found.stdout.strip()).resolve().is_relative_to(root.resolve()), found
    return v


def spec(tmp_path: Path, name: str, optimizer: str, requires: str = "", model: str = "",
         dataset: str = "digits") -> Path:
    """A small digits spec; returns its path."""
    model = model or "input [64]\n    linear(32) -> relu\n    linear(10)"
    text = f"""\
{requires}
model net {{
    {model}
}}
data {dataset} {{ split(train = 0.8, val = 0.1, test = 0.1); batch 128; normalize standard }}
loss cross_entropy
metrics accuracy
optimizer {optimizer}
train {{ epochs 1; seed 0; device cpu }}
"""
    path = tmp_path / f"{name}.nn"
    path.write_text(text)
    return path


def located(path: Path, needle: str) -> str:
    """`file:line:col` of the first occurrence of `needle` in a spec."""
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return f"{path}:{i}:{line.index(needle) + 1}"
    raise AssertionError(f"{needle!r} not in {path}")


def table_row(output: str, *cells: str) -> bool:
    """Whether a rich table row holds these cells in this order."""
    pattern = r"\s*│\s*".join(re.escape(c) for c in cells)
    return re.search(pattern, output) is not None


def tiny_package(root: Path, dist: str, version: str, entry_points: dict[str, dict[str, str]],
                 modules: dict[str, str]) -> Path:
    """A throwaway distribution: pyproject.toml plus modules under src/<package>/."""
    package = dist.replace("-", "_")
    groups = "\n".join(f'[project.entry-points."{group}"]\n' + "\n".join(f'{k} = "{v}"' for k, v in points.items())
                       for group, points in entry_points.items())
    project = root / dist
    (project / "src" / package).mkdir(parents=True)
    (project / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{dist}"
        version = "{version}"
        dependencies = ["nnspec"]
        [tool.setuptools.packages.find]
        where = ["src"]
        """) + groups + "\n")
    (project / "src" / package / "__init__.py").write_text("")
    for name, text in modules.items():
        (project / "src" / package / name).write_text(textwrap.dedent(text))
    return project


@pytest.mark.slow
def test_installed_plugins_are_listed_and_check_clean(venv):
    out = venv.nnspec("plugins", "--check")
    assert out.returncode == 0, out.output
    assert table_row(out.output, "lion", "optimizers", "nnspec-lion", "0.1.0")
    assert table_row(out.output, "adahessian", "optimizers", "nnspec-adahessian", "0.1.0")
    assert table_row(out.output, "squeeze_excite", "layers", "nnspec-squeeze-excite", "0.1.0")
    assert table_row(out.output, "adamw", "optimizers", "nnspec", "0.1.0")
    assert "all implementations import and match their declarations" in out.output
    only = venv.nnspec("plugins", "optimizers")
    assert only.returncode == 0 and "lion" in only.output and "squeeze_excite" not in only.output


@pytest.mark.slow
def test_validate_uses_the_plugin_declaration(venv, tmp_path):
    good = spec(tmp_path, "good", "lion(lr = 3e-4)", requires='requires "nnspec-lion>=0.1"')
    out = venv.nnspec("validate", str(good))
    assert out.returncode == 0, out.output
    assert "1 valid, 0 invalid (0 errors, 0 warnings)" in out.output

    bad = spec(tmp_path, "bad", "lion(lr = -1, betaz = [0.9, 0.99])")
    out = venv.nnspec("validate", str(bad))
    assert out.returncode == 1
    assert f"{located(bad, '-1')}: error[E304]: `lion` argument `lr`: -1 is out of range" in out.output
    assert "allowed: lr > 0" in out.output
    assert f"{located(bad, 'betaz')}: error[E301]: `lion` has no argument `betaz`" in out.output
    assert "did you mean `betas`?" in out.output

    loud = spec(tmp_path, "loud", "lion(lr = 1e-2)")
    out = venv.nnspec("validate", str(loud))
    assert out.returncode == 0 and "warning[W301]" in out.output and "smaller than AdamW" in out.output

    newer = spec(tmp_path, "newer", "lion(lr = 3e-4)", requires='requires "nnspec-lion>=0.2"')
    out = venv.nnspec("validate", str(newer))
    assert out.returncode == 1 and "error[E530]" in out.output
    assert "requires nnspec-lion>=0.2 but nnspec-lion 0.1.0 is installed" in out.output


@pytest.mark.slow
def test_train_with_plugins_records_their_versions(venv, tmp_path):
    se = ("input [1, 8, 8]\n    conv2d(8, 3, padding = same) -> relu\n"
          "    squeeze_excite(reduction = 4)\n    flatten -> linear(10)")
    path = spec(tmp_path, "lion_se", "lion(lr = 1e-3)", model=se, dataset="digits(shape = [1, 8, 8])")
    out = venv.nnspec("train", str(path), "--out", str(tmp_path / "run"), "--quiet", timeout=300)
    assert out.returncode == 0, out.output
    versions = json.loads((tmp_path / "run" / "versions.json").read_text())
    assert versions["plugins"]["nnspec-lion"] == "0.1.0"
    assert versions["plugins"]["nnspec-squeeze-excite"] == "0.1.0"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and math.isfinite(rows[0]["train_loss"])
    assert rows[0]["val_accuracy"] > 0.3, rows          # ten classes: chance is 0.1


@pytest.mark.slow
def test_plugin_test_suites_pass_against_the_installed_distributions(venv):
    """Each plugin's own tests, importing the installed wheels (not src/); they include AdaHessian
    training through the nnspec trainer, which must call backward(create_graph=True) for it."""
    suites = [str(PLUGINS / name / "tests") for name in OURS]
    out = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *suites,
                   cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert re.search(r"\d+ passed", out.stdout) and "failed" not in out.stdout


@pytest.mark.slow
def test_broken_plugin_is_named_and_does_not_break_other_specs(venv, tmp_path):
    broken = tiny_package(tmp_path, "nnspec-broken", "0.3.0",
                          {"nnspec.optimizers": {"shaky": "nnspec_broken.declare:SHAKY"}},
                          {"declare.py": 'raise ImportError("needs the fancy_optim package")\n'})
    venv.install(broken)
    try:
        listing = venv.nnspec("plugins", "optimizers")
        assert listing.returncode == 1
        assert "plugin `shaky` (optimizers) from nnspec-broken 0.3.0 failed to load" in listing.output
        assert "ImportError: needs the fancy_optim package" in listing.output
        assert table_row(listing.output, "lion", "optimizers", "nnspec-lion")       # the others still listed

        fine = venv.nnspec("validate", str(spec(tmp_path, "fine", "lion(lr = 3e-4)")))
        assert fine.returncode == 0, fine.output

        uses = spec(tmp_path, "uses", "shaky(lr = 0.1)")
        out = venv.nnspec("validate", str(uses))
        assert out.returncode == 1
        assert (f"{located(uses, 'shaky')}: error[E210]: plugin `shaky` (optimizers) from nnspec-broken 0.3.0 "
                f"failed to load [nnspec_broken.declare:SHAKY]: ImportError: needs the fancy_optim package") \
            in out.output and "Traceback" not in out.output
    finally:
        venv.uninstall("nnspec-broken")
    assert "[nnspec_broken.declare:SHAKY]" in listing.output, "plugin text must not be read as rich markup"


@pytest.mark.slow
def test_two_distributions_with_one_name_need_a_qualified_name(venv, tmp_path):
    fork = tiny_package(tmp_path, "nnspec-lion-fork", "0.2.0",
                        {"nnspec.optimizers": {"lion": "nnspec_lion_fork.declare:LION"}},
                        {"declare.py": """\
                            from nnspec.registry.catalog import Component
                            from nnspec.registry.types import Float, Param
                            LR = Param("lr", Float(min=0, min_open=True), doc="learning rate")
                            LION = Component("lion", "optimizers", params=(LR,), summary="A fork.",
                                             impl="nnspec_lion_fork.optim:lion")
                            """})
    venv.install(fork)
    try:
        plain = spec(tmp_path, "plain", "lion(lr = 3e-4)")
        out = venv.nnspec("validate", str(plain))
        assert out.returncode == 1
        assert (f"{located(plain, 'lion')}: error[E211]: optimizer `lion` is registered by more than one "
                f"distribution: ") in out.output, out.output
        assert "nnspec-lion 0.1.0" in out.output and "nnspec-lion-fork 0.2.0" in out.output
        assert "`nnspec_lion::lion`" in out.output and "`nnspec_lion_fork::lion`" in out.output

        ours = spec(tmp_path, "ours", "nnspec_lion::lion(lr = 3e-4, betas = [0.9, 0.98])")
        assert venv.nnspec("validate", str(ours)).returncode == 0
        # the fork's declaration has no `betas`: the qualified name really picks the fork
        theirs = spec(tmp_path, "theirs", "nnspec_lion_fork::lion(lr = 3e-4, betas = [0.9, 0.98])")
        out = venv.nnspec("validate", str(theirs))
        assert out.returncode == 1 and "error[E301]: `nnspec_lion_fork::lion` has no argument `betas`" in out.output
        nobody = spec(tmp_path, "nobody", "nnspec_nope::lion(lr = 3e-4)")
        out = venv.nnspec("validate", str(nobody))
        assert out.returncode == 1 and "error[E212]" in out.output
    finally:
        venv.uninstall("nnspec-lion-fork")


@pytest.mark.slow
def test_uninstalled_plugin_is_reported_as_not_installed(venv, tmp_path):
    venv.uninstall("nnspec-lion")
    try:
        path = spec(tmp_path, "gone", "lion(lr = 3e-4)")
        out = venv.nnspec("validate", str(path))
        assert out.returncode == 1
        assert f"{located(path, 'lion')}: error[E201]: unknown optimizer `lion` (not installed)" in out.output

        pinned = spec(tmp_path, "pinned", "lion(lr = 3e-4)", requires='requires "nnspec-lion>=0.1"')
        out = venv.nnspec("validate", str(pinned))
        assert out.returncode == 1
        where = located(pinned, '"nnspec-lion')
        assert f"{where}: error[E530]: requires nnspec-lion>=0.1, which is not " \
               f"installed" in out.output
        assert "pip install 'nnspec-lion>=0.1'" in out.output
        assert "lion" not in venv.nnspec("plugins", "optimizers").stdout
    finally:
        venv.install(PLUGINS / "nnspec-lion")


def _doc_block(text: str, caption: str) -> str:
    """The fenced block right after a `caption` line of docs/plugins.md."""
    after = text[text.index(caption):]
    return after.split("```", 2)[1].split("\n", 1)[1]


@pytest.mark.slow
def test_the_documented_template_is_a_working_plugin(venv, tmp_path):
    """docs/plugins.md: the ~30-line template installs, imports, and gives the errors shown there."""
    doc = (REPO / "docs" / "plugins.md").read_text()
    project = tmp_path / "nnspec-signsgd"
    package = project / "src" / "nnspec_signsgd"
    package.mkdir(parents=True)
    (project / "pyproject.toml").write_text(_doc_block(doc, "`pyproject.toml`:"))
    (package / "__init__.py").write_text("")
    (package / "declare.py").write_text(_doc_block(doc, "`src/nnspec_signsgd/declare.py`:"))
    (package / "optim.py").write_text(_doc_block(doc, "`src/nnspec_signsgd/optim.py`:"))
    venv.install(project)
    try:
        check = venv.nnspec("plugins", "optimizers", "--check")
        assert check.returncode == 0, check.output
        assert table_row(check.output, "signsgd", "optimizers", "nnspec-signsgd", "0.1.0")
        (tmp_path / "mnist.nn").write_text(
            "model net {\n    input [64]\n    linear(64) -> relu\n    linear(10)\n}\n"
            "data digits { batch 64 }\nloss cross_entropy\noptimizer signsgd(lr = 0, momentm = 0.9)\n")
        out = venv.nnspec("validate", "mnist.nn", cwd=tmp_path)
        shown = _doc_block(doc, "Real output of `nnspec validate`").split("\n", 1)[1]   # minus the $ line
        assert out.returncode == 1 and out.stdout == shown, out.stdout
    finally:
        venv.uninstall("nnspec-signsgd")
