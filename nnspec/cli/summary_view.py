"""`nnspec summary` as a rich table, like Keras's model.summary()."""
from __future__ import annotations

from rich.table import Table

from nnspec.check.memory import human


def print_summary(spec, summary: dict) -> None:
    from nnspec.cli.output import console as make_console
    console = make_console()
    table = Table(title=f"model {summary['name']}  (input {summary['input_shape']})", title_justify="left")
    table.add_column("layer", style="cyan")
    table.add_column("kind")
    table.add_column("output shape", justify="right")
    table.add_column("params", justify="right")
    for row in summary["layers"]:
        table.add_row(row["name"], row["kind"], str(row["output_shape"]), f"{row['params']:,}")
    console.print(table)
    mem = summary["memory"]
    console.print(f"params: [bold]{summary['params']:,}[/] (trainable {summary['trainable_params']:,}, "
                  f"buffers {summary['buffers']:,})")
    console.print(f"output shape: {summary['output_shape']}")
    console.print(f"estimated training memory: [bold]{human(mem['total'])}[/] = parameters "
                  f"{human(mem['parameters'])} + gradients {human(mem['gradients'])} + optimizer state "
                  f"{human(mem['optimizer_state'])} + buffers {human(mem['buffers'])} + activations "
                  f"{human(mem['activations'])} (one batch)")
