"""What a run shows while it trains.

The trainer calls these hooks only at log points (every `log_every` steps and at epoch ends),
with numbers it already pulled to the host, so the display costs nothing per step. With a TTY:
a rich progress bar for the current epoch (loss, lr, samples/s, last val metrics), one line per
finished epoch above it, and a table of final metrics. Without one: one plain line per epoch.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Mapping, TextIO

_SKIP = {"epoch", "step", "lr", "seconds", "train_seconds", "samples_per_s", "nan_skips"}


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}"


def epoch_line(row: Mapping[str, Any], epochs: int | None) -> str:
    """`epoch 3/30  step 69  train_loss 0.1234  val_loss …  lr 1.000e-03  12,345 samples/s  0.4s`."""
    total = f"/{epochs}" if epochs else ""
    parts = [f"epoch {row['epoch']}{total}", f"step {row['step']:,}"]
    for k, v in row.items():
        if k in _SKIP or isinstance(v, (list, dict)) or v is None:
            continue
        parts.append(f"{k} {_num(v)}")
    if row.get("lr") is not None:
        parts.append(f"lr {row['lr']:.3e}")
    if row.get("samples_per_s"):
        parts.append(f"{row['samples_per_s']:,.0f} samples/s")
    parts.append(f"{row.get('seconds', 0.0):.2f}s")
    return "  ".join(parts)


def final_rows(summary: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """(metric, [train, val, test]) rows of scalar metrics, for the final table."""
    names: list[str] = []
    for split in ("train", "val", "test"):
        for k, v in (summary.get(split) or {}).items():
            if k not in names and isinstance(v, (int, float)) and not isinstance(v, bool):
                names.append(k)
    out = []
    for k in names:
        cells = []
        for split in ("train", "val", "test"):
            v = (summary.get(split) or {}).get(k)
            cells.append("" if v is None else _num(v))
        out.append((k, cells))
    return out


class Progress:
    """The silent display (`progress=False`); also the interface the others implement."""

    def start(self, *, epochs: int | None, steps_per_epoch: int, info: str = "") -> None:
        pass

    def epoch_start(self, epoch: int) -> None:
        pass

    def update(self, *, batch: int, loss: float, lr: float | None, samples_per_s: float) -> None:
        pass

    def epoch_end(self, row: Mapping[str, Any]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def finish(self, summary: Mapping[str, Mapping[str, Any]]) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress(Progress):
    """One line per epoch, for logs and pipes."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.epochs: int | None = None

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, *, epochs: int | None, steps_per_epoch: int, info: str = "") -> None:
        self.epochs = epochs
        if info:
            self._print(info)

    def epoch_end(self, row: Mapping[str, Any]) -> None:
        self._print(epoch_line(row, self.epochs))

    def message(self, text: str) -> None:
        self._print(text)

    def finish(self, summary: Mapping[str, Mapping[str, Any]]) -> None:
        for split in ("train", "val", "test"):
            values = {k: v for k, v in (summary.get(split) or {}).items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if values:
                self._print(f"{split}: " + "  ".join(f"{k} {_num(v)}" for k, v in values.items()))


class RichProgress(Progress):
    """A live bar for the current epoch; finished epochs print as lines above it."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn)
        self.console = console or Console()
        self.bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
                       console=self.console, transient=True, refresh_per_second=4)
        self.task = None
        self.epochs: int | None = None
        self.last_val = ""

    def start(self, *, epochs: int | None, steps_per_epoch: int, info: str = "") -> None:
        self.epochs, self.steps = epochs, steps_per_epoch
        if info:
            self.console.print(info, highlight=False)
        self.bar.start()
        self.task = self.bar.add_task("", total=steps_per_epoch, stats="")

    def epoch_start(self, epoch: int) -> None:
        total = f"/{self.epochs}" if self.epochs else ""
        self.bar.reset(self.task, total=self.steps, description=f"epoch {epoch}{total}", stats=self.last_val)

    def update(self, *, batch: int, loss: float, lr: float | None, samples_per_s: float) -> None:
        stats = f"loss {_num(loss)}"
        if lr is not None:
            stats += f"  lr {lr:.2e}"
        stats += f"  {samples_per_s:,.0f} samples/s"
        if self.last_val:
            stats += "  " + self.last_val
        self.bar.update(self.task, completed=batch, stats=stats)

    def epoch_end(self, row: Mapping[str, Any]) -> None:
        self.last_val = "  ".join(f"{k} {_num(v)}" for k, v in row.items()
                                  if k.startswith("val_") and isinstance(v, (int, float)))
        self.bar.update(self.task, completed=self.steps)
        self.bar.console.print(epoch_line(row, self.epochs), highlight=False)

    def message(self, text: str) -> None:
        self.bar.console.print(text, highlight=False)

    def finish(self, summary: Mapping[str, Mapping[str, Any]]) -> None:
        from rich.table import Table
        self.close()
        rows = final_rows(summary)
        if not rows:
            return
        table = Table(title="final metrics")
        table.add_column("metric")
        for split in ("train", "val", "test"):
            table.add_column(split, justify="right")
        for name, cells in rows:
            table.add_row(name, *cells)
        self.console.print(table)

    def close(self) -> None:
        if self.bar.live.is_started:
            self.bar.stop()


def make_progress(setting: "bool | None | Progress" = None, stream: TextIO | None = None) -> Progress:
    """None: rich on a terminal, plain lines otherwise; False: silent; True: rich; or a Progress."""
    if isinstance(setting, Progress):
        return setting
    if setting is False:
        return Progress()
    stream = stream or sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    if setting is True or tty:
        from rich.console import Console
        return RichProgress(Console(file=stream, force_terminal=bool(setting is True or tty)))
    return PlainProgress(stream)
