"""`nnspec eval` and `nnspec predict`: trained weights + the spec they came from.

The spec rebuilds the model and, through its data section, the same splits and normalization
(both are seeded), so evaluation sees exactly the test split training saw, and predictions see
inputs normalized with the training statistics."""
from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from nnspec.spec.settings import Spec
from nnspec.errors import Diagnostic, NnspecError, Span


def _flag_error(flag: str, value: str, message: str, hint: str | None = None) -> NnspecError:
    text = f"{flag} {value}"
    return NnspecError(Diagnostic("error", "E950", message, Span(text, 1, len(flag) + 2, 1, len(text) + 1), hint),
                       {text: text})


def _built_with_weights(spec: Spec, weights: str | os.PathLike):
    from safetensors import SafetensorError
    from nnspec.runtime.assemble import assemble, spec_errors
    from nnspec.runtime.outputs import load_checkpoint, load_weights
    path = Path(weights)
    if path.is_dir():
        path = path / "weights.safetensors"
    if not path.is_file():
        raise _flag_error("--weights", str(weights), f"no such weights file: {path}",
                          "pass a run folder, its weights.safetensors or one of its checkpoints/*.pt")
    with spec_errors(spec):
        built = assemble(spec)
    try:
        if path.suffix.lower() == ".pt":       # a checkpoint: tensors and plain data only (weights_only)
            state = load_checkpoint(path, map_location=built.device)
            if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
                raise ValueError("not an nnspec checkpoint (no model state)")
            built.model.load_state_dict(state["model"], strict=True)
        else:
            load_weights(built.model, path, device=built.device)
    except (SafetensorError, RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise _flag_error("--weights", str(weights), f"these weights do not fit the spec's model: {err}"[:600],
                          "use the weights of a run of this spec (its run folder has spec.nn)") from None
    built.model.eval()
    return built


def evaluate(spec: Spec, weights: str | os.PathLike, split: str = "test") -> dict:
    """Loss and metrics of `split` ("train", "val" or "test") with the given weights."""
    from nnspec.runtime.evaluation import evaluate_split
    built = _built_with_weights(spec, weights)
    if built.data is None or built.loss is None:
        raise NnspecError(Diagnostic("error", "E900", "evaluation needs the spec's `data` and `loss` sections",
                                     Span.unknown(spec.path)), spec.source_texts)
    data = getattr(built.data, split)
    if data is None:
        raise _flag_error("--split", split, f"the spec's data has no {split} split",
                          "choose train, val or test; the split fractions are in the data section")
    batch = spec.data.eval_batch_size or spec.data.batch_size
    return evaluate_split(built.model, built.model, data, built.loss, list(built.metrics.values()), built, batch)


def _read_inputs(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".csv":
            return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2,
                              skiprows=1 if _has_header(path) else 0)
        if suffix == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
            obj = obj.get("x") if isinstance(obj, dict) else obj
            if not isinstance(obj, torch.Tensor):
                raise ValueError("expected a tensor or a dict with a tensor under \"x\"")
            return obj.numpy()
    except (OSError, ValueError, RuntimeError) as err:
        raise _flag_error("--input", str(path), f"cannot read {path}: {err}"[:400]) from None
    raise _flag_error("--input", str(path), f"unsupported input format `{suffix}`", "use .npy, .csv or .pt")


def _has_header(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    try:
        [float(c) for c in first.strip().split(",") if c.strip()]
        return False
    except ValueError:
        return True


def default_output(inputs: str | os.PathLike) -> Path:
    """Where predictions go without --output: INPUT.predictions.csv beside the input."""
    src = Path(inputs)
    return src.with_name(src.stem + ".predictions.csv")


def predict(spec: Spec, weights: str | os.PathLike, inputs: str | os.PathLike,
            output: str | os.PathLike | None = None) -> Path:
    """Model outputs for every row of `inputs`; CSV (prediction + scores for classifiers) or NPY."""
    from nnspec.runtime.data import normalize_tensor
    src = Path(inputs)
    if not src.is_file():
        raise _flag_error("--input", str(inputs), f"no such file: {src}")
    built = _built_with_weights(spec, weights)
    x = _read_inputs(src)
    model_in = spec.model.input
    per_sample = int(np.prod(model_in.shape))
    if x.ndim == 1 and x.size == per_sample and per_sample > 1:
        raise _flag_error("--input", str(inputs), f"inputs of shape {list(x.shape)} are one flat vector: one sample "
                          f"without its batch dimension", f"save it as one row of shape [1, {x.size}] (numpy: "
                          f"x.reshape(1, -1); CSV: one line), or stack several samples as rows")
    if x.ndim < 1 or x.size % per_sample or (x.shape[1:] != model_in.shape and int(np.prod(x.shape[1:])) != per_sample):
        raise _flag_error("--input", str(inputs), f"inputs of shape {list(x.shape)} do not fit the model input "
                          f"{list(model_in.shape)} (one row per sample)",
                          f"give an array of shape [N, {', '.join(map(str, model_in.shape))}]: one row per sample")
    dtype = torch.int64 if model_in.dtype == "long" else torch.float32
    xt = torch.as_tensor(x.reshape((-1, *model_in.shape))).to(dtype)
    if built.data is not None and model_in.dtype != "long":
        xt = normalize_tensor(xt, built.data.norm)
    outs = []
    with torch.no_grad(), built.runtime.autocast():
        for i in range(0, len(xt), 1024):
            outs.append(built.model(xt[i:i + 1024].to(built.device)).float().cpu())
    out = torch.cat(outs) if outs else torch.empty(0)
    dest = Path(output) if output else default_output(src)
    if dest.suffix.lower() == ".npy":
        np.save(dest, out.numpy())
        return dest
    classify = spec.loss is not None and "classification" in spec.loss.component.flags and out.dim() == 2
    with open(dest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if classify:
            probs = torch.softmax(out, dim=1)
            w.writerow(["prediction"] + [f"p{k}" for k in range(out.shape[1])])
            for label, row in zip(out.argmax(1).tolist(), probs.tolist()):
                w.writerow([label] + [f"{p:.6g}" for p in row])
        else:
            flat = out.reshape(len(out), -1)
            w.writerow([f"y{k}" for k in range(flat.shape[1])])
            for row in flat.tolist():
                w.writerow([f"{v:.6g}" for v in row])
    return dest
