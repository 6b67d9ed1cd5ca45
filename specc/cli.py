"""The `specc` command: check, summary, ir, train, eval, sample, plot.

`main(argv) -> int` returns the exit status: 0 clean; 1 when the user's files
or inputs have mistakes (spec diagnostics, or one `specc: error: ...` line
and an optional `hint:` line for a run-time `UserError`); 2 for a usage
error; 130 when interrupted; 3 for a bug in specc (an exception no user input
should cause), reported in one line that asks for a bug report, with the
traceback only under SPECC_DEBUG=1. No traceback escapes otherwise. The
front-end commands import neither jax nor torch; train, eval, sample and plot import
the runner only when they run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .commands import add_runner_commands
from .diagnostics import SpecError, suggestion
from .errors import UserError

EXIT_OK, EXIT_DIAGNOSTICS, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one error line, like every other error (argparse's usage block is long)
        print(f"specc: error: {message}\nhint: see '{self.prog} --help'", file=sys.stderr)
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

    add_runner_commands(sub)  # imports nothing heavy: each command imports the runner when it runs
    return p


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
    args.argv = list(sys.argv[1:] if argv is None else argv)  # a torch launch runs the command again per worker
    try:
        return args.run(args)
    except SpecError as err:
        if not _record_worker_error(err.render()):
            print(err.render(), file=sys.stderr)
        return EXIT_DIAGNOSTICS
    except _Usage as err:
        print(f"specc: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("specc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `specc ... | head`: the reader left; nothing to report
        _silence_stdout()
        return EXIT_OK
    except Exception as err:  # noqa: BLE001 - the one place every error becomes a message
        return _report(err)


def _report(err: Exception) -> int:
    """Print any other exception as one error line; returns the exit status."""
    user = _as_user_error(err)
    if user is not None:
        if not _record_worker_error(user.render()):
            print(user.render(), file=sys.stderr)
        return EXIT_DIAGNOSTICS
    if os.environ.get("SPECC_DEBUG") == "1":
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    detail = str(err).strip().splitlines()
    if _record_worker_error(f"internal error: {type(err).__name__}" + (f": {detail[0]}" if detail else "")):
        return EXIT_INTERNAL  # the launching process reports it
    print(f"specc: internal error: {type(err).__name__}" + (f": {detail[0]}" if detail else ""), file=sys.stderr)
    print("hint: this is a bug in specc; please report it with the command you ran "
          "(set SPECC_DEBUG=1 to see the traceback)", file=sys.stderr)
    return EXIT_INTERNAL


def _record_worker_error(message: str) -> bool:
    """In a worker of torch's elastic launcher, leave the error where the
    launcher reads it, so the run's one message names this rank's error.
    True when the launching process prints it (this worker must not)."""
    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return False
    from .backends.pytorch.launch import record_worker_error

    return record_worker_error(message)


def _lost_peer(err: Exception) -> UserError | None:
    """A torch worker's collective that failed because another worker died
    first: one line, not a bug report."""
    if "RANK" not in os.environ or "torch" not in sys.modules:
        return None
    from .backends.pytorch.launch import lost_peer

    return lost_peer(err)


def _as_user_error(err: Exception) -> UserError | None:
    """The user-fixable form of an exception, or None for a bug in specc.
    Files that cannot be read or written, and memory the run does not fit,
    are the user's to fix."""
    if isinstance(err, UserError):
        return err
    peer = _lost_peer(err)
    if peer is not None:
        return peer
    if isinstance(err, MemoryError) or _device_out_of_memory(err):
        return UserError("out of memory" + (f" ({_first_line(err)})" if _first_line(err) else ""),
                         "use a smaller --batch, or --limit the training samples")
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return UserError(f"{where}{err.strerror or _first_line(err) or type(err).__name__}")
    return None


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def _device_out_of_memory(err: Exception) -> bool:
    # torch.OutOfMemoryError, jax's RESOURCE_EXHAUSTED: named, not imported (no framework here)
    text = str(err)
    return "OutOfMemory" in type(err).__name__ or "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's exit-time flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
