"""The checked spec: what the check passes produce and lowering/runtime consume.

Everything here is plain data (no torch): components resolved to registry entries, arguments
bound and range-checked, every part keeping the span it came from so runtime errors (bad data,
a diverging loss) can still point into the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from nnspec.errors import Span
from nnspec.registry.catalog import Component
from nnspec.registry.types import Args


@dataclass(frozen=True)
class Use:
    """One use of a registry component with its checked arguments."""
    component: Component
    args: Args
    span: Span
    arg_spans: Mapping[str, Span] = field(default_factory=dict, compare=False)   # where each given
    #                                      argument's value is written, for errors about one argument

    def span_of(self, arg: str) -> Span:
        """Where argument `arg` is written, or the whole use when it was left at its default."""
        return self.arg_spans.get(arg, self.span)

    @property
    def name(self) -> str:
        return self.component.name


@dataclass(frozen=True)
class DataConfig:
    dataset: Use
    split: Mapping[str, float]            # {"train": .8, "val": .1, "test": .1}; fractions sum to 1
    batch_size: int = 32
    eval_batch_size: int | None = None    # None: same as batch_size
    normalize: str = "none"               # "standard" | "minmax" | "none"; fitted on train only
    shuffle: bool = True
    drop_last: bool = False
    augment: tuple[Use, ...] = ()          # applied to training batches only, on the device
    span: Span = field(default_factory=Span.unknown)


@dataclass(frozen=True)
class ParamGroup:
    """`group bias, norm { weight_decay 0 }`: params matching any selector get the overrides.

    Selectors: `bias` (every bias), `norm` (every parameter of a normalization layer),
    `weights` (every non-bias parameter), a layer kind (e.g. `embedding`: every layer of it),
    a block or layer name in the model (e.g. `encoder`, `head`), or a quoted glob over
    parameter paths (e.g. "stage4.*").

    The check (nnspec/check/param_groups.py) resolves the selectors: `params` are the exact
    `named_parameters()` paths of the lowered model this group takes (a parameter selected by
    several groups belongs to the first), `whole_layers` the module paths of plugin layers that
    declare no parameter names, taken whole."""
    selectors: tuple[str, ...]
    overrides: Mapping[str, Any]
    span: Span
    selector_spans: tuple[Span, ...] = ()
    params: tuple[str, ...] = ()
    whole_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class OptimizerConfig:
    optimizer: Use
    groups: tuple[ParamGroup, ...] = ()
    span: Span = field(default_factory=Span.unknown)


@dataclass(frozen=True)
class ScheduleConfig:
    """`warmup(steps = 100) then cosine(min_lr = 1e-5)`: links run one after another."""
    links: tuple[Use, ...]
    interval: str = "step"                 # "step" | "epoch": when the lr is updated ("epoch" when every
    #                                        link is declared PER_EPOCH)
    span: Span = field(default_factory=Span.unknown)


@dataclass(frozen=True)
class EarlyStop:
    monitor: str = "val_loss"
    mode: str = "min"                      # "min" | "max"
    patience: int = 5
    min_delta: float = 0.0
    span: Span = field(default_factory=Span.unknown)


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int | None = None
    every_epochs: int | None = 1
    keep_last: int = 2
    span: Span = field(default_factory=Span.unknown)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int | None = 10
    steps: int | None = None               # stop after this many optimizer steps
    seed: int = 0
    device: str = "auto"                   # auto | cpu | cuda | cuda:N | mps
    precision: str = "fp32"                # fp32 | bf16 | fp16
    compile: bool = False
    clip_grad_norm: float | None = None
    clip_grad_value: float | None = None
    clip_weights: float | None = None      # clamp every parameter to [-c, c] after each step
    accumulate: int = 1                    # gradient accumulation steps
    early_stop: EarlyStop | None = None
    monitor: str = "val_loss"              # which metric picks the best checkpoint
    monitor_mode: str = "min"
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    on_nan: str = "stop"                   # "stop" | "skip"
    log_every: int = 0                     # steps between progress refreshes (0: auto)
    threads: int | str = "auto"            # CPU intra-op threads: N, "auto" or "measure" (runtime/threads.py)
    span: Span = field(default_factory=Span.unknown)


@dataclass(frozen=True)
class Override:
    """One `--set KEY=VALUE` the spec was checked with. `text` is the flag as given; it is also the
    name of the one-line pseudo-file that the override's spans (and errors) point into."""
    key: str                               # "optimizer.lr"
    value: str                             # "3e-4", as written
    text: str                              # "--set optimizer.lr=3e-4"


@dataclass(frozen=True)
class Spec:
    """A fully checked spec. `model` is the graph IR (nnspec.spec.graph_ir.Model)."""
    path: str
    model: Any
    data: DataConfig | None
    loss: Use | None
    metrics: tuple[Use, ...]
    optimizer: OptimizerConfig | None
    schedule: ScheduleConfig | None
    train: TrainConfig
    requires: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)   # every file read, path → text
    digest: str = ""                                         # hash of the checked content (files and overrides)
    base_dir: str = "."                                      # relative data paths start here
    overrides: tuple[Override, ...] = ()                     # the --set values, in the order given

    @property
    def source_texts(self) -> dict[str, str]:
        """Every text a span of this spec can point into (to render an error): the files and the
        --set pseudo-files."""
        return {**self.sources, **{o.text: o.text for o in self.overrides}}


# What `nnspec train` needs besides the model: section, and an example for the error's hint. The check
# warns of a spec that has settings but misses one of these (W522); a spec with a model alone
# describes a model (`nnspec summary`) and training says what it lacks (E900).
REQUIRED_FOR_TRAINING = (("data", "data digits { batch 64 }"), ("loss", "loss cross_entropy"),
                         ("optimizer", "optimizer adam(lr = 1e-3)"))
