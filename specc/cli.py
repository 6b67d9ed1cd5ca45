"""The `specc` command: check, summary, ir, train, eval, plot.

`main(argv) -> int` returns the exit status: 0 clean, 1 when the user's files
have mistakes (diagnostics on stderr), 2 for a usage error. The front-end
commands import neither jax nor torch; train, eval and plot import the runner
only when they run.
"""

from __future__ import annotations

import argparse
import json
import sys

from .diagnostics import SpecError, suggestion

EXIT_OK, EXIT_DIAGNOSTICS, EXIT_USAGE = 0, 1, 2


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 itself; keep the contract explicit
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _load(path: str):
    import specc

    return specc.load(path)


def _pick_models(program, name: str | None, path: str):
    if name is None:
        return list(program.models.values())
    if name not in program.models:
        hint = suggestion(name, program.models, "models")
        raise _Usage(f"{path} has no model '{name}'" + (f"; {hint}" if hint else ""))
    return [program.models[name]]


def cmd_check(args) -> int:
    status = EXIT_OK
    for path in args.files:
        try:
            program = _load(path)
        except SpecError as err:
            print(err.render(), file=sys.stderr)
            status = EXIT_DIAGNOSTICS
            continue
        if not args.quiet:
            models = ", ".join(f"{m.name} ({m.params:,} params)" for m in program.models.values())
            print(f"{path}: ok" + (f": {models}" if models else ""))
    return status


def cmd_summary(args) -> int:
    from .report import Report

    program = _load(args.file)
    reports = [Report.of(m) for m in _pick_models(program, args.model, args.file)]
    if args.format == "json":
        data = [r.to_dict() for r in reports]
        print(json.dumps(data[0] if len(data) == 1 else data, indent=2))
    elif args.format == "markdown":
        print("\n\n".join(r.markdown() for r in reports))
    else:
        print("\n\n".join(r.table() for r in reports))
    return EXIT_OK


def cmd_ir(args) -> int:
    program = _load(args.file)
    if args.model:
        print(_pick_models(program, args.model, args.file)[0].to_json())
    else:
        print(program.to_json())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="specc", description="Declarative model specs: check, report, lower and train.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("check", help="parse and check spec files; exit 1 on any diagnostic")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("-q", "--quiet", action="store_true", help="print nothing when the files are clean")
    c.set_defaults(run=cmd_check)

    s = sub.add_parser("summary", help="the parameter report (Keras's table, plus Mult-Adds and memory)")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--model", help="only this model of the file")
    s.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    s.set_defaults(run=cmd_summary)

    i = sub.add_parser("ir", help="the checked IR as JSON")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--model", help="only this model of the file")
    i.set_defaults(run=cmd_ir)

    _add_runner_commands(sub)
    return p


def _add_runner_commands(sub) -> None:
    try:
        from .commands import add_runner_commands
    except ImportError:  # pragma: no cover - the runner ships with the package
        return
    add_runner_commands(sub)


def _version() -> str:
    from . import __version__

    return f"specc {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors (2), --help and --version (0): a status, as promised
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.run(args)
    except SpecError as err:
        print(err.render(), file=sys.stderr)
        return EXIT_DIAGNOSTICS
    except _Usage as err:
        print(f"specc: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("specc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
