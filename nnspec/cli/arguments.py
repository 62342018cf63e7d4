"""The `nnspec` argument parser, `--version`, and shell completion scripts generated from the
parser (so every subcommand and flag completes, and a new flag needs no second list)."""
from __future__ import annotations

import argparse
import shlex
from importlib import metadata
from typing import Callable, Mapping

SHELLS = ("bash", "zsh", "fish")


def version_text() -> str:
    """`nnspec X` and, when installed, `torch Y`: read from the installed metadata, so asking for
    the version never imports torch."""
    parts = []
    for dist in ("nnspec", "torch"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            if dist == "nnspec":
                from nnspec import __version__
                parts.append(f"nnspec {__version__}")
            else:
                parts.append("torch not installed")
    return ", ".join(parts)


def _add_set(q: argparse.ArgumentParser) -> None:
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value, e.g. --set optimizer.lr=3e-4 --set train.epochs=5 --set model.width=64")
    q.add_argument("--allow-outside-imports", action="store_true",
                   help="allow `import` of files outside the spec's folder")


def _check_commands(sub) -> None:
    q = sub.add_parser("validate", help="check specs (names, arguments, shapes) without running anything")
    q.add_argument("paths", nargs="+", metavar="PATH", help=".nn files or folders (searched recursively)")
    q.add_argument("--format", choices=["text", "json", "github"], default="text")
    q.add_argument("--strict", action="store_true", help="warnings fail too")
    q.add_argument("--no-data", action="store_true",
                   help="do not open the data files (for CI without the data); see docs/data.md")
    _add_set(q)

    q = sub.add_parser("summary", help="layers, output shapes, parameter counts and memory")
    q.add_argument("spec", metavar="SPEC")
    q.add_argument("--json", action="store_true", help="print JSON")
    _add_set(q)

    q = sub.add_parser("fmt", help="format specs canonically in place (keeps comments)")
    q.add_argument("paths", nargs="+", metavar="PATH")
    q.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    q.add_argument("--diff", action="store_true", help="change nothing; print a unified diff of what would change")


def _run_commands(sub) -> None:
    q = sub.add_parser("train", help="train the spec's model")
    q.add_argument("spec", metavar="SPEC")
    _add_set(q)
    q.add_argument("--out", metavar="DIR", help="run folder (default runs/<spec>-<time>); one that already holds "
                   "files is refused unless --resume or --force")
    q.add_argument("--quiet", action="store_true", help="no progress output")
    q.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel training in N local processes (global batch = N × batch); "
                        "for several machines use torchrun (see README)")
    q.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="continue a run exactly: PATH is a checkpoint or run folder; alone, the --out folder "
                        "or the newest runs/<spec>-* folder, from its newest valid checkpoint (a corrupt one falls "
                        "back to an older one), or a fresh start when there is no checkpoint yet: one command line "
                        "for a preemptible job's first and later starts")
    q.add_argument("--force", action="store_true",
                   help="start afresh in an --out folder holding an earlier run: DELETES that run's files there "
                        "(spec.nn, versions.json, metrics.*, checkpoints/*.pt, weights.safetensors, summary.json); "
                        "other files are left alone")
    q.add_argument("--allow-changed-spec", action="store_true",
                   help="resume even though the spec or --set values changed (e.g. more epochs)")
    q.epilog = ("exit codes: 0 done, 1 spec or training error, 2 usage, 3 stopped by SIGINT/SIGTERM after "
                "writing a checkpoint (the message shows the command that resumes), 130 second Ctrl-C")

    weights = "a run folder, its weights.safetensors, or a checkpoint .pt of the run"
    q = sub.add_parser("eval", help="loss and metrics of trained weights on a split (default: test)")
    q.add_argument("spec", metavar="SPEC")
    q.add_argument("--weights", required=True, metavar="PATH", help=weights)
    q.add_argument("--split", choices=["train", "val", "test"], default="test")
    q.add_argument("--json", action="store_true", help="print JSON")
    _add_set(q)

    q = sub.add_parser("predict", help="model outputs for new inputs (CSV with predictions, or NPY)")
    q.add_argument("spec", metavar="SPEC")
    q.add_argument("--weights", required=True, metavar="PATH", help=weights)
    q.add_argument("--input", required=True, metavar="FILE", help="inputs, one row per sample: .npy, .csv or .pt")
    q.add_argument("--output", metavar="FILE", help="where to write (.csv or .npy; default INPUT.predictions.csv)")
    q.add_argument("--force", action="store_true", help="overwrite an existing --output file")
    _add_set(q)


def build_parser(handlers: Mapping[str, Callable]) -> argparse.ArgumentParser:
    """The parser; each subcommand's `fn` default is `handlers[name]`."""
    p = argparse.ArgumentParser(prog="nnspec", description="Declarative neural-network training for PyTorch.")
    p.add_argument("--version", action="version", version=version_text())
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _check_commands(sub)
    _run_commands(sub)
    q = sub.add_parser("plugins", help="list installed components and the distributions providing them")
    q.add_argument("kind", nargs="?", help="layers, optimizers, schedules, losses, metrics, datasets, augmentations")
    q.add_argument("--check", action="store_true", help="import every plugin and verify its declaration")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = sub.add_parser("completion", help="print a shell completion script (bash, zsh or fish)",
                       description="bash: source <(nnspec completion bash); zsh: the same in ~/.zshrc; "
                                   "fish: nnspec completion fish > ~/.config/fish/completions/nnspec.fish")
    q.add_argument("shell", choices=SHELLS)
    for name, q in sub.choices.items():
        q.set_defaults(fn=handlers[name])
    return p


# --- completion ----------------------------------------------------------------------------------

def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _command_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: choice.help or "" for choice in action._choices_actions}


def _options(q: argparse.ArgumentParser) -> list[tuple[list[str], list[str] | None, str]]:
    """(option strings, choices or None, help) of each flag; positional choices as ([], choices)."""
    out = []
    for a in q._actions:
        choices = [str(c) for c in a.choices] if a.choices else None
        long = [s for s in a.option_strings if s.startswith("--")]
        if long or choices:
            out.append((long, choices, (a.help or "").split(";")[0]))
    return out


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    if shell == "fish":
        return _fish(parser)
    script = _bash(parser)
    if shell == "zsh":                      # zsh runs bash completion functions through bashcompinit
        script = "autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n" + script
    return script


def _bash(parser: argparse.ArgumentParser) -> str:
    commands = _commands(parser)
    flags, values = [], []
    for name, q in commands.items():
        opts = [s for long, _, _ in _options(q) for s in long]
        flags.append(f"        {name}) opts={shlex.quote(' '.join(opts))} ;;")
        for long, choices, _ in _options(q):
            if choices:
                key = f"{name} {long[0]}" if long else f"{name} {name}"
                values.append(f"        {shlex.quote(key)}) words={shlex.quote(' '.join(choices))} ;;")
    top = " ".join([*commands, "--help", "--version"])
    return f"""\
# nnspec bash completion (generated by `nnspec completion bash`)
_nnspec() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" cmd="${{COMP_WORDS[1]}}"
    local opts="" words=""
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=( $(compgen -W {shlex.quote(top)} -- "$cur") )
        return
    fi
    case "$cmd" in
{chr(10).join(flags)}
    esac
    case "$cmd $prev" in
{chr(10).join(values)}
    esac
    if [ -z "$words" ] && [ "$COMP_CWORD" -eq 2 ]; then
        case "$cmd" in
            completion) words="{' '.join(SHELLS)}" ;;
        esac
    fi
    if [ -n "$words" ]; then
        COMPREPLY=( $(compgen -W "$words" -- "$cur") )
    elif [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "$opts --help" -- "$cur") )
    else
        COMPREPLY=( $(compgen -f -- "$cur") )
    fi
}}
complete -o default -F _nnspec nnspec
"""


def _fish(parser: argparse.ArgumentParser) -> str:
    lines = ["# nnspec fish completion (generated by `nnspec completion fish`)", "complete -c nnspec -f",
             "complete -c nnspec -n __fish_use_subcommand -l version -d 'show the version'"]
    commands, helps = _commands(parser), _command_help(parser)
    for name in commands:
        lines.append(f"complete -c nnspec -n __fish_use_subcommand -a {name} -d {shlex.quote(helps[name])}")
    for name, q in commands.items():
        cond = f"'__fish_seen_subcommand_from {name}'"
        for long, choices, help_text in _options(q):
            words = f" -xa {shlex.quote(' '.join(choices))}" if choices else ""
            if long:
                lines.append(f"complete -c nnspec -n {cond} -l {long[0][2:]}{words} -d {shlex.quote(help_text)}")
            elif choices:
                lines.append(f"complete -c nnspec -n {cond}{words}")
        lines.append(f"complete -c nnspec -n {cond} -F")
    return "\n".join(lines) + "\n"
