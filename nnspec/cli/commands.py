"""`nnspec` command line. Validation paths never import torch; user mistakes exit 1 (spec) or 2
(usage) with located messages, never a traceback."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from nnspec.errors import Diagnostic, NnspecError, render_text

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_STOPPED = 3        # SIGINT/SIGTERM: checkpoint written after the current step; --resume continues


def _color(stream) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR")


def _spec_files(paths: Sequence[str]) -> tuple[list[Path], list[str]]:
    files, missing = [], []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*.nn") if q.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            missing.append(raw)
    return files, missing


def _print_diagnostics(diags: list[Diagnostic], sources: dict[str, str], fmt: str, out=sys.stdout) -> None:
    if fmt == "json":
        return
    if fmt == "github":
        for d in diags:
            s = d.span
            msg = d.message + (f" ({d.hint})" if d.hint else "")
            msg = msg.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
            kind = "error" if d.severity == "error" else "warning"
            print(f"::{kind} file={s.file},line={s.line},col={s.column},endLine={s.end_line},"
                  f"endColumn={s.end_column},title={d.code}::{msg}", file=out)
        return
    if diags:
        print(render_text(diags, sources, color=_color(out)), file=out)


# --- commands --------------------------------------------------------------------------------

def cmd_validate(args) -> int:
    from nnspec.check.checker import check_file
    files, missing = _spec_files(args.paths)
    if missing:
        print(f"nnspec validate: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    if not files:
        print("nnspec validate: no .nn files found", file=sys.stderr)
        return EXIT_USAGE
    all_diags: list[Diagnostic] = []
    failed = 0
    for f in files:
        result = check_file(f, overrides=args.set, allow_outside=args.allow_outside_imports)
        diags = result.diagnostics
        all_diags.extend(diags)
        bad = any(d.severity == "error" for d in diags) or (args.strict and diags)
        failed += bool(bad)
        _print_diagnostics(diags, result.sources, args.format)
    if args.format == "json":
        print(json.dumps([d.to_json() for d in all_diags], indent=2))
    elif args.format == "text":
        errors = sum(d.severity == "error" for d in all_diags)
        warnings = len(all_diags) - errors
        ok = len(files) - failed
        print(f"{len(files)} file{'s' * (len(files) != 1)} checked: {ok} valid, {failed} invalid "
              f"({errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)})")
    return EXIT_INVALID if failed else EXIT_OK


def _load_or_report(path: str, overrides, args):
    from nnspec.check.checker import check_file
    if not Path(path).is_file():
        print(f"nnspec: no such file: {path}", file=sys.stderr)
        return None, EXIT_USAGE
    result = check_file(path, overrides=overrides, allow_outside=getattr(args, "allow_outside_imports", False))
    _print_diagnostics(result.diagnostics, result.sources, "text", out=sys.stderr)
    if not result.ok or result.spec is None:
        return None, EXIT_INVALID
    return result.spec, EXIT_OK


def cmd_summary(args) -> int:
    spec, code = _load_or_report(args.spec, args.set, args)
    if spec is None:
        return code
    if spec.model is None:
        print(f"nnspec summary: {args.spec} has no model", file=sys.stderr)
        return EXIT_INVALID
    summary = spec.model.summary()
    from nnspec.check.memory import estimate
    summary["memory"] = estimate(spec)
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    from nnspec.cli.summary_view import print_summary
    print_summary(spec, summary)
    return EXIT_OK


def cmd_fmt(args) -> int:
    from nnspec.syntax.fmt import format_file
    files, missing = _spec_files(args.paths)
    if missing:
        print(f"nnspec fmt: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    changed, failed = [], 0
    for f in files:
        try:
            text, did_change = format_file(f)
        except NnspecError as err:
            _print_diagnostics(err.diagnostics, err.sources, "text", out=sys.stderr)
            failed += 1
            continue
        if did_change:
            changed.append(f)
            if not args.check:
                f.write_text(text, encoding="utf-8")
    verb = "would reformat" if args.check else "reformatted"
    for f in changed:
        print(f"{verb} {f}", file=sys.stderr)
    if failed:
        return EXIT_INVALID
    return EXIT_INVALID if (args.check and changed) else EXIT_OK


def cmd_train(args) -> int:
    spec, code = _load_or_report(args.spec, args.set, args)
    if spec is None:
        return code
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:     # checked once here, then N workers
        from nnspec.cli.launch import launch, strip_nproc
        return launch(args.nproc, strip_nproc(args.argv))
    from nnspec.api import train
    from nnspec.runtime.signals import TrainingInterrupted
    progress = None if not args.quiet else False
    try:
        train(spec, out_dir=args.out, progress=progress, resume=args.resume,
              allow_changed_spec=args.allow_changed_spec, force=args.force, _handle_signals=True)
    except NnspecError as err:
        _print_diagnostics(err.diagnostics, {**spec.sources, **err.sources}, "text", out=sys.stderr)
        return EXIT_INVALID
    except TrainingInterrupted as stop:
        if os.environ.get("RANK", "0") != "0":          # rank 0 speaks for the run
            return EXIT_STOPPED
        print(f"nnspec: {stop}", file=sys.stderr)
        if stop.run_dir is not None:
            import shlex
            nproc = os.environ.get("NNSPEC_NPROC")       # set by `--nproc`; torchrun users rerun torchrun
            again = ["nnspec", "train", args.spec, *(f"--set={s}" for s in args.set), "--resume", str(stop.run_dir),
                     *(["--nproc", nproc] if nproc else [])]
            how = " (under the same torchrun command)" if "WORLD_SIZE" in os.environ and not nproc else ""
            print(f"resume with: {shlex.join(again)}{how}", file=sys.stderr)
        return EXIT_STOPPED
    return EXIT_OK


def cmd_eval(args) -> int:
    spec, code = _load_or_report(args.spec, args.set, args)
    if spec is None:
        return code
    from nnspec.runtime.inference import evaluate
    result = evaluate(spec, args.weights, args.split)       # its errors carry their sources; main() prints them
    if args.json:
        print(json.dumps({f"{args.split}_{k}": v for k, v in result.items()}, indent=2))
    else:
        for key, value in result.items():
            shown = f"{value:.4f}" if isinstance(value, float) else json.dumps(value)
            print(f"{args.split}_{key}: {shown}")
    return EXIT_OK


def cmd_predict(args) -> int:
    spec, code = _load_or_report(args.spec, args.set, args)
    if spec is None:
        return code
    from nnspec.runtime.inference import predict
    dest = predict(spec, args.weights, args.input, args.output)
    print(f"wrote {dest}", file=sys.stderr)
    return EXIT_OK


def cmd_plugins(args) -> int:
    from nnspec.cli.plugins_view import show_plugins
    return show_plugins(args.kind, check=args.check)


# --- parser ----------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnspec", description="Declarative neural-network training for PyTorch.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add_set(q):
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a value, e.g. --set optimizer.lr=3e-4 --set train.epochs=5 --set model.width=64")
        q.add_argument("--allow-outside-imports", action="store_true",
                       help="allow `import` of files outside the spec's folder")

    q = sub.add_parser("validate", help="check specs (names, arguments, shapes) without running anything")
    q.add_argument("paths", nargs="+", metavar="PATH", help=".nn files or folders (searched recursively)")
    q.add_argument("--format", choices=["text", "json", "github"], default="text")
    q.add_argument("--strict", action="store_true", help="warnings fail too")
    add_set(q)
    q.set_defaults(fn=cmd_validate)

    q = sub.add_parser("summary", help="layers, output shapes, parameter counts and memory")
    q.add_argument("spec", metavar="SPEC")
    q.add_argument("--json", action="store_true", help="print JSON")
    add_set(q)
    q.set_defaults(fn=cmd_summary)

    q = sub.add_parser("fmt", help="format specs canonically (keeps comments)")
    q.add_argument("paths", nargs="+", metavar="PATH")
    q.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    q.set_defaults(fn=cmd_fmt)

    q = sub.add_parser("train", help="train the spec's model")
    q.add_argument("spec", metavar="SPEC")
    add_set(q)
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
    q.set_defaults(fn=cmd_train)

    q = sub.add_parser("eval", help="loss and metrics of trained weights on a split (default: test)")
    q.add_argument("spec", metavar="SPEC")
    q.add_argument("--weights", required=True, metavar="PATH", help="a run folder or its weights.safetensors")
    q.add_argument("--split", choices=["train", "val", "test"], default="test")
    q.add_argument("--json", action="store_true", help="print JSON")
    add_set(q)
    q.set_defaults(fn=cmd_eval)

    q = sub.add_parser("predict", help="model outputs for new inputs (CSV with predictions, or NPY)")
    q.add_argument("spec", metavar="SPEC")
    q.add_argument("--weights", required=True, metavar="PATH", help="a run folder or its weights.safetensors")
    q.add_argument("--input", required=True, metavar="FILE", help="inputs, one row per sample: .npy, .csv or .pt")
    q.add_argument("--output", metavar="FILE", help="where to write (.csv or .npy; default INPUT.predictions.csv)")
    add_set(q)
    q.set_defaults(fn=cmd_predict)

    q = sub.add_parser("plugins", help="list installed components and the distributions providing them")
    q.add_argument("kind", nargs="?", help="layers, optimizers, schedules, losses, metrics, datasets, augmentations")
    q.add_argument("--check", action="store_true", help="import every plugin and verify its declaration")
    q.set_defaults(fn=cmd_plugins)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)     # what `--nproc` workers re-run
    try:
        return args.fn(args)
    except NnspecError as err:
        _print_diagnostics(err.diagnostics, err.sources, "text", out=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModuleNotFoundError as err:
        if err.name != "torch":
            raise
        print(f"nnspec {args.command}: needs PyTorch, which is not installed: pip install 'nnspec[torch]' "
              "(or the torch build for your CUDA version, see pytorch.org)", file=sys.stderr)
        return EXIT_INVALID
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
