"""`nnspec` command line. Validation paths never import torch; user mistakes exit 1 (spec) or 2
(usage) with located messages, never a traceback."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

from nnspec.cli.output import guard_streams
from nnspec.cli.paths import folder_problem, output_file_problem
from nnspec.errors import Diagnostic, NnspecError, render_text
from nnspec.registry.catalog import PluginBuildError

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


def _print_diagnostics(diags: list[Diagnostic], sources: dict[str, str], fmt: str, out=None) -> None:
    out = out or sys.stdout
    if fmt == "json":
        return
    if fmt == "github":
        from nnspec.cli.output import github_annotation
        for d in diags:
            print(github_annotation(d), file=out)
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
        result = check_file(f, overrides=args.set, allow_outside=args.allow_outside_imports,
                            open_data=not args.no_data)
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
        checked = "checked (data not opened)" if args.no_data else "checked"
        print(f"{len(files)} file{'s' * (len(files) != 1)} {checked}: {ok} valid, {failed} invalid "
              f"({errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)})")
    return EXIT_INVALID if failed else EXIT_OK


def _load_or_report(path: str, overrides, args, open_data: bool = True):
    from nnspec.check.checker import check_file
    if not Path(path).is_file():
        print(f"nnspec: no such file: {path}", file=sys.stderr)
        return None, EXIT_USAGE
    result = check_file(path, overrides=overrides, allow_outside=getattr(args, "allow_outside_imports", False),
                        open_data=open_data)
    _print_diagnostics(result.diagnostics, result.sources, "text", out=sys.stderr)
    if not result.ok or result.spec is None:
        return None, EXIT_INVALID
    return result.spec, EXIT_OK


def cmd_summary(args) -> int:
    spec, code = _load_or_report(args.spec, args.set, args, open_data=False)   # the model only
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
    write = not (args.check or args.diff)
    changed, failed = [], 0
    for f in files:
        try:
            text, did_change = format_file(f)
        except NnspecError as err:
            _print_diagnostics(err.diagnostics, err.sources, "text", out=sys.stderr)
            failed += 1
            continue
        if not did_change:
            continue
        changed.append(f)
        if args.diff:
            import difflib
            old = f.read_text(encoding="utf-8")
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(keepends=True), text.splitlines(keepends=True),
                                                       f"{f} (now)", f"{f} (formatted)"))
        if write:
            f.write_text(text, encoding="utf-8")
    verb = "reformatted" if write else "would reformat"
    for f in changed:
        print(f"{verb} {f}", file=sys.stderr)
    if failed:
        return EXIT_INVALID
    return EXIT_INVALID if (args.check and changed) else EXIT_OK


def _torch_missing(command: str) -> bool:
    """True (after saying how to install it) when torch cannot be imported."""
    try:
        import torch  # noqa: F401
    except (ImportError, OSError) as err:       # OSError: a torch build whose libraries fail to load
        print(f"nnspec {command}: error: needs PyTorch to {command}, but `import torch` failed "
              f"({type(err).__name__}: {err}).\n  Install a torch build for this machine "
              "(https://pytorch.org/get-started/locally/), or `pip install 'nnspec[torch]'` for the CPU/default build, then run the command again; "
              "`validate`, `fmt` and `summary` work without torch.", file=sys.stderr)
        return True
    return False


def cmd_train(args) -> int:
    spec, code = _load_or_report(args.spec, args.set, args)
    if spec is None:
        return code
    if _torch_missing("train"):
        return EXIT_INVALID
    if args.out is not None and (problem := folder_problem(args.out, f"the run folder --out {args.out}")):
        print(f"nnspec train: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
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
        _print_diagnostics(err.diagnostics, {**spec.source_texts, **err.sources}, "text", out=sys.stderr)
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
    if spec is None or _torch_missing("eval"):
        return code or EXIT_INVALID
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
    if spec is None or _torch_missing("predict"):
        return code or EXIT_INVALID
    from nnspec.runtime.inference import default_output, predict
    output = args.output or default_output(args.input)
    if Path(args.input).is_file() and (problem := output_file_problem(output, args.input, args.force)):
        print(f"nnspec predict: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    dest = predict(spec, args.weights, args.input, output)
    print(f"wrote {dest}", file=sys.stderr)
    return EXIT_OK


def cmd_plugins(args) -> int:
    from nnspec.cli.plugins_view import show_plugins
    return show_plugins(args.kind, check=args.check, as_json=args.json)


def cmd_completion(args) -> int:
    from nnspec.cli.arguments import completion_script
    sys.stdout.write(completion_script(_parser(), args.shell))
    return EXIT_OK


def _parser():
    from nnspec.cli.arguments import build_parser
    return build_parser({"validate": cmd_validate, "summary": cmd_summary, "fmt": cmd_fmt, "train": cmd_train,
                         "eval": cmd_eval, "predict": cmd_predict, "plugins": cmd_plugins,
                         "completion": cmd_completion})


def main(argv: Sequence[str] | None = None) -> int:
    saved = sys.stdout, sys.stderr
    guard_streams()                 # a reader that goes away early never changes the exit code
    try:
        args = _parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)     # what `--nproc` workers re-run
        return _run(args)
    finally:
        sys.stdout, sys.stderr = saved


def _run(args) -> int:
    try:
        return args.fn(args)
    except NnspecError as err:
        _print_diagnostics(err.diagnostics, err.sources, "text", out=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:           # the file system said no (a full disk, a permission): one line
        where = f": {err.filename}" if err.filename else ""
        print(f"nnspec {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return EXIT_INVALID
    except PluginBuildError as err:
        print(f"nnspec {args.command}: error: {err}", file=sys.stderr)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
