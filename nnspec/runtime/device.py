"""Device and precision, decided once per run.

The training loop asks this object, never torch, which device to use and whether to autocast,
so the per-step code has no branches on configuration strings. fp32 uses no autocast context
at all (entering one costs a few microseconds per step even when it does nothing).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from nnspec.errors import Span, error

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """Where and how a run computes."""
    device: torch.device
    precision: str                         # "fp32" | "bf16" | "fp16"
    autocast_dtype: torch.dtype | None     # None: plain fp32, no autocast
    use_scaler: bool                       # GradScaler (fp16 on CUDA)
    note: str | None = None                # shown when the run starts (e.g. a precision fallback)

    def autocast(self):
        """A fresh autocast context (or a no-op one for fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def scaler(self):
        """A GradScaler when fp16 needs loss scaling, else None."""
        if not self.use_scaler:
            return None
        return torch.amp.GradScaler(self.device.type)

    def describe(self) -> str:
        return f"{self.device} {self.precision}"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(name: str, span: Span | None = None) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device that is absent is a located error."""
    span = span or Span.unknown()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise error("E902", f"device `{name}` was asked for but CUDA is not available", span,
                        "use `device auto` or `device cpu`, or install a CUDA build of torch")
        index = int(name.split(":", 1)[1]) if ":" in name else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise error("E902", f"device `{name}` does not exist: this machine has "
                                f"{torch.cuda.device_count()} CUDA device(s)", span,
                        f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}")
        return torch.device("cuda", index)
    if name == "mps":
        if not _mps_available():
            raise error("E902", "device `mps` was asked for but MPS is not available", span,
                        "use `device auto` or `device cpu`")
        return torch.device("mps")
    raise error("E902", f"unknown device `{name}`", span, "use auto, cpu, cuda, cuda:N or mps")


def resolve(device: str, precision: str, span: Span | None = None) -> Runtime:
    """The run's device and precision. bf16 on a CUDA card without bf16 support is an error;
    fp16 gets a GradScaler on CUDA; on MPS it runs without loss scaling; on CPU it falls back to
    bf16 with a note (CPU fp16 kernels are slow and, unscaled, small gradients underflow; bf16
    has fp32's range and needs no scaling)."""
    span = span or Span.unknown()
    dev = pick_device(device, span)
    if precision == "fp32":
        return Runtime(dev, precision, None, False)
    if precision not in _DTYPES:
        raise error("E902", f"unknown precision `{precision}`", span, "use fp32, bf16 or fp16")
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise error("E902", f"{torch.cuda.get_device_name(dev)} does not support bf16", span,
                    "use `precision fp16` (with loss scaling) or fp32")
    if precision == "fp16" and dev.type == "cpu":
        return Runtime(dev, "bf16", torch.bfloat16, False,
                       "precision fp16 needs a CUDA device (loss scaling); on the CPU this run uses bf16 autocast")
    return Runtime(dev, precision, _DTYPES[precision], precision == "fp16" and dev.type == "cuda")
