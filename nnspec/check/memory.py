"""Memory estimates from the IR, before anything is allocated."""
from __future__ import annotations

import os

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def estimate(spec) -> dict:
    """Bytes for parameters, gradients, optimizer state, buffers, and activations of one batch."""
    return estimate_parts(spec.model, spec.optimizer, spec.data, spec.metrics)


def estimate_parts(model, optimizer, data, metrics=()) -> dict:
    """The one memory formula (the E610 check and `nnspec summary` both use it). Python ints, so
    nothing overflows however large a model is.

    Optimizer state per trainable parameter comes from the optimizer's declaration
    (`info["state_slots"]`, e.g. 2 for Adam's two moments); unknown optimizers count 2. A metric
    declares the state it keeps for the model's number of outputs (`info["state_bytes"]`)."""
    params, trainable, buffers = model.params, model.trainable_params, model.buffers
    slots = 0
    if optimizer is not None:
        slots = optimizer.optimizer.component.info.get("state_slots", 2)
    act_per_sample = sum(layer.output.numel for layer in model.root.layers())
    batch = data.batch_size if data is not None else 1
    out = {
        "parameters": 4 * params,
        "gradients": 4 * trainable,
        "optimizer_state": 4 * trainable * slots,
        "buffers": 4 * buffers,
        "activations": 4 * act_per_sample * batch,
        "metric_state": sum(m.component.info["state_bytes"](model.output.shape[-1]) for m in metrics
                            if "state_bytes" in m.component.info and model.output.shape),
    }
    out["total"] = sum(out.values())
    return out


def check_memory(diags, model, optimizer, data, metrics=()) -> None:
    """E610: training cannot fit this machine's memory even one sample at a time: parameters,
    gradients, optimizer state and buffers plus the activations of a single sample (by
    `estimate_parts`, whose activations term is for a whole batch)."""
    ram = physical_memory()
    if not ram:
        return
    parts = estimate_parts(model, optimizer, None, metrics)       # batch of one
    if parts["total"] <= ram:
        return
    if parts["metric_state"] > parts["total"] // 2:
        big = next(m for m in metrics if "state_bytes" in m.component.info)
        diags.error("E610", f"metric `{big.name}` keeps about {human(parts['metric_state'])} of counts for the "
                    f"model's {model.output.shape[-1]:,} outputs, more than this machine's {human(ram)} of memory",
                    big.span, "drop the metric, or check that the last layer's width is the number of classes")
        return
    layers = list(model.root.layers())
    if parts["activations"] > parts["total"] - parts["activations"]:
        biggest = max(layers, key=lambda layer: layer.output.numel)
        where, hint = biggest.span, f"`{biggest.kind}` outputs {biggest.output} per sample; make it smaller"
    else:
        biggest = max(layers, key=lambda layer: layer.params)
        where, hint = biggest.span, (f"`{biggest.kind}` alone has {biggest.params:,} parameters; reduce widths or "
                                     "depth (`nnspec summary` shows where the parameters are)")
    diags.error("E610", f"the model needs about {human(parts['total'])} for parameters, gradients, optimizer "
                f"state and one sample's activations, more than this machine's {human(ram)} of memory", where,
                hint)


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def human(n: float) -> str:
    """A byte count for people; exact for any int (model sizes are unbounded Python ints)."""
    if abs(n) >= 1024 ** 4:
        tib = n // 1024 ** 4 if isinstance(n, int) else n / 1024 ** 4
        return f"{tib:.1f} TiB" if abs(tib) < 10 ** 15 else f"10^{len(str(int(abs(tib)))) - 1} TiB"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
