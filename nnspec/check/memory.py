"""Memory estimates from the IR, before anything is allocated."""
from __future__ import annotations

import os

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def estimate(spec) -> dict:
    """Bytes for parameters, gradients, optimizer state, buffers, and activations of one batch.

    Optimizer state per trainable parameter comes from the optimizer's declaration
    (`info["state_slots"]`, e.g. 2 for Adam's two moments); unknown optimizers count 2."""
    model = spec.model
    params, trainable, buffers = model.params, model.trainable_params, model.buffers
    slots = 0
    if spec.optimizer is not None:
        slots = spec.optimizer.optimizer.component.info.get("state_slots", 2)
    act_per_sample = sum(layer.output.numel for layer in model.root.layers())
    batch = spec.data.batch_size if spec.data is not None else 1
    out = {
        "parameters": 4 * params,
        "gradients": 4 * trainable,
        "optimizer_state": 4 * trainable * slots,
        "buffers": 4 * buffers,
        "activations": 4 * act_per_sample * batch,
    }
    out["total"] = sum(out.values())
    return out


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
