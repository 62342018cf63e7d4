"""Argument types shared by the optimizer, schedule, loss and metric declarations (no torch).

`Optional(inner)` accepts `none` (written bare in a spec, or the Python default None) besides
what `inner` accepts, so a parameter such as `weight = none` can mean "not given".
"""
from __future__ import annotations

from typing import Any, Mapping

from nnspec.registry.types import ArgError, Float, Int, Optional, Param

Beta = Float(0, 1, max_open=True)                   # a moving-average coefficient: 0 ≤ b < 1
NonNegativeFloat = Float(min=0)
Factor = Float(0, 1, min_open=True, max_open=True)  # a strict shrink factor: 0 < f < 1


# `Optional` lives in nnspec.registry.types; re-exported here for the declarations that import it from here.


def duration_params(what: str = "runs") -> tuple[Param, Param]:
    """`steps` / `epochs`: how long a schedule runs (its length as a link of a chain)."""
    return (Param("steps", Optional(Int(min=1)), None, keyword_only=True,
                  doc=f"how many optimizer steps it {what} (none: until the end of training)"),
            Param("epochs", Optional(Int(min=1)), None, keyword_only=True,
                  doc=f"how many epochs it {what}, instead of steps"))


def at_most_one_duration(args) -> None:
    if args.get("steps") is not None and args.get("epochs") is not None:
        raise ArgError("give steps or epochs, not both", "remove one of them")


def link_length(args: Mapping[str, Any], steps_per_epoch: int) -> int | None:
    """A schedule's own length in steps from its `steps`/`epochs` arguments; None if open-ended."""
    if args.get("steps") is not None:
        return int(args["steps"])
    if args.get("epochs") is not None:
        return int(args["epochs"]) * steps_per_epoch
    return None
