"""`cellblock`: the command line. Each subcommand imports only what it needs.

cellblock run [OPTIONS] -- COMMAND [ARGS...]   one command in a fresh cell
cellblock doctor [--json]                       what this host allows
cellblock judge SOURCE --tests DIR [OPTIONS]    compile once, run tests, verdicts
cellblock languages [--json]                    the languages installed here
cellblock serve [--host H] [--port P]           the HTTP API (+ its own Redis and workers)
cellblock worker [--redis-url URL] [--cells N]  RQ workers judging queued submissions
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

# Exit codes of `cellblock run` without --json (like timeout(1) and env(1)):
EXIT_USAGE = 2  # bad options: nothing ran
EXIT_TLE = 124
EXIT_INTERNAL = 125


def _run_parser(sub: argparse._SubParsersAction) -> None:
    from sandbox.spec import limit_fields, limit_flag

    p = sub.add_parser(
        "run",
        help="run one command in a fresh cell",
        description="Run COMMAND in a fresh rootless cell and report what it did.",
        epilog="Sizes take K/M/G suffixes (binary). Times are seconds. "
        "Without --json the program's output is passed through and a summary goes to stderr; "
        "the exit code is the program's (128+N for signal N), 124 on TLE, 125 on IE.",
    )
    p.add_argument("--json", action="store_true", help="print one RunResult as JSON, nothing else")
    for limit in limit_fields():  # one flag per limit of sandbox.spec.Limits
        flag, metavar, help_text = limit_flag(limit)
        p.add_argument(flag, metavar=metavar, help=help_text)
    p.add_argument("--stdin", metavar="FILE", help="file fed to standard input (default: empty)")
    p.add_argument(
        "--copy-in",
        metavar="SRC:DEST",
        action="append",
        default=[],
        help="host file copied to /box/DEST before the start (repeatable)",
    )
    p.add_argument(
        "--copy-out",
        metavar="PATH",
        action="append",
        default=[],
        help="file under /box copied into --out-dir after the run (repeatable)",
    )
    p.add_argument(
        "--readonly",
        metavar="PATH",
        action="append",
        default=[],
        help="a --copy-in DEST the program may not change (repeatable)",
    )
    p.add_argument("--out-dir", metavar="DIR", default=".", help="where --copy-out files go")
    p.add_argument("--image", default="host", help="root filesystem image (default host)")
    p.add_argument("--seccomp", default="default", help="seccomp profile name or path")
    p.add_argument(
        "--env",
        metavar="K=V",
        action="append",
        default=[],
        help="environment variable (repeatable)",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")


def _cmd_run(args: argparse.Namespace) -> int:
    from sandbox import RunSpec, SpecError, Status, keep_warm, run_spec
    from sandbox.spec import Limits, limit_fields

    keep_warm(False)  # one cell per process: a warm successor would only be thrown away

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        env = {}
        for item in args.env:
            key, sep, value = item.partition("=")
            if not sep:
                raise SpecError(f"--env: {item!r} is not K=V")
            env[key] = value
        copy_in: dict[str, str] = {}
        for item in args.copy_in:
            src, sep, dest = item.rpartition(":")
            if not sep or not src or not dest:
                raise SpecError(f"--copy-in: {item!r} is not SRC:DEST")
            copy_in[dest] = src
        limits = Limits.build(**{limit.name: getattr(args, limit.name) for limit in limit_fields()})
        spec = RunSpec(
            argv=tuple(command),
            limits=limits,
            stdin=Path(args.stdin) if args.stdin else None,
            copy_in=copy_in,
            copy_out=tuple(args.copy_out),
            image=args.image,
            seccomp=args.seccomp,
            env=env,
            readonly=tuple(args.readonly),
        )
        out_dir = Path(args.out_dir)
        if spec.copy_out and not out_dir.is_dir():
            raise SpecError(f"--out-dir: {out_dir} is not a directory")
        result = run_spec(spec)
    except SpecError as error:
        print(f"cellblock run: error: {error}", file=sys.stderr)
        return EXIT_USAGE

    for path, data in result.files.items():
        _write_out(out_dir, path, data)
    missing = [p for p in spec.copy_out if p not in result.files]
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.write(result.stderr)
    summary = (
        f"cellblock: {result.status} · {result.message} · time {result.time:.3f} s · "
        f"wall {result.wall_time:.3f} s · memory {result.memory / (1 << 20):.1f} MiB"
    )
    print(summary, file=sys.stderr)
    for entry in result.degraded:  # the isolation's shortcomings (the figures' are in the message)
        if entry not in result.message:
            print(f"cellblock: degraded: {entry}", file=sys.stderr)
    for path in missing:
        print(
            f"cellblock: --copy-out {path}: not copied (missing or not a regular file)",
            file=sys.stderr,
        )
    if result.status == Status.IE:
        return EXIT_INTERNAL
    if result.status == Status.TLE:
        return EXIT_TLE
    if result.signal is not None:
        return 128 + result.signal
    if result.exit_code:
        return result.exit_code
    return 0 if result.status == Status.OK else 1


def _write_out(out_dir: Path, relative: str, data: bytes) -> None:
    """Write a copied-out file under out_dir without following symlinks in its path."""
    parts = relative.split("/")
    current = os.open(out_dir, os.O_PATH | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=current)
            child = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=current)
            os.close(current)
            current = child
        fd = os.open(
            parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=current
        )
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    finally:
        os.close(current)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from sandbox.doctor import run_doctor

    text, code = run_doctor(as_json=args.json)
    print(text)
    return code


def _setup_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "setup",
        help="as root: prepare USER to run cells with every protection (run once)",
        description="Give USER a cgroup subtree of its own so that its workers run cells "
        "with every limit, unprivileged (cgroup v2: /sys/fs/cgroup/cellblock/USER; "
        "v1: /sys/fs/cgroup/<controller>/cellblock/USER), and, if it has none, a range of "
        "subordinate ids (/etc/subuid, /etc/subgid) so that each cell's program runs as a "
        "host uid of its own. --remove removes the subtree; the range stays.",
    )
    p.add_argument("--user", required=True, help="the user the workers run as")
    p.add_argument("--remove", action="store_true", help="remove USER's subtree instead")


def _cmd_setup(args: argparse.Namespace) -> int:
    import subprocess

    from sandbox.cgroups import CgroupError
    from sandbox.cgroups.delegate import delegate, undelegate
    from sandbox.userns import add_subordinate_range

    if os.geteuid() != 0:
        print("cellblock setup: error: run it as root", file=sys.stderr)
        return 1
    try:
        if args.remove:
            done = undelegate(args.user)
        else:
            added = add_subordinate_range(args.user)
            done = ([added] if added else []) + delegate(args.user)
    except subprocess.CalledProcessError as error:
        detail = error.stderr.decode(errors="replace").strip() if error.stderr else ""
        print(f"cellblock setup: error: {error.cmd[0]} failed: {detail}", file=sys.stderr)
        return 1
    except (CgroupError, OSError) as error:
        print(f"cellblock setup: error: {error}", file=sys.stderr)
        return 1
    for line in done or ["nothing to do"]:
        print(line)
    return 0


def _judge_parsers(sub: argparse._SubParsersAction) -> None:
    from worker.command import add_judge_parser, add_languages_parser

    add_judge_parser(sub)
    add_languages_parser(sub)


def _cmd_judge(args: argparse.Namespace) -> int:
    """`cellblock judge` and `cellblock languages`: worker/command.py."""
    from worker.command import judge_main, languages_main

    return judge_main(args) if args.subcommand == "judge" else languages_main(args)


def _service_parsers(sub: argparse._SubParsersAction) -> None:
    from api.serve import add_parser as add_serve_parser
    from worker.supervisor import add_parser as add_worker_parser

    add_serve_parser(sub)
    add_worker_parser(sub)


def _cmd_service(args: argparse.Namespace) -> int:
    """`cellblock serve` (api/serve.py) and `cellblock worker` (worker/rq_worker.py)."""
    if args.subcommand == "serve":
        from api.serve import main as serve_main

        return serve_main(args)
    from worker.supervisor import main as worker_main

    return worker_main(args)


_COMMANDS = ("run", "doctor", "setup", "judge", "languages", "serve", "worker")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="cellblock", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    # The judge's and the service's parsers import worker/ and api/ (tens of ms):
    # built only when that command, or the full help, is asked for.
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    _run_parser(sub)
    doctor = sub.add_parser("doctor", help="check what this host allows and how to fix it")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    _setup_parser(sub)
    for names, build in (
        (("judge", "languages"), _judge_parsers),
        (("serve", "worker"), _service_parsers),
    ):
        if chosen in (None, *names) or chosen not in _COMMANDS:
            build(sub)
        else:
            for name in names:
                sub.add_parser(name)  # a name for argparse's list; never parsed
    args = parser.parse_args(argv)
    if args.subcommand == "run":
        if not args.command or args.command == ["--"]:
            parser.error("run: no command given (cellblock run [OPTIONS] -- COMMAND [ARGS...])")
        return _cmd_run(args)
    if args.subcommand == "setup":
        return _cmd_setup(args)
    if args.subcommand in ("serve", "worker"):
        return _cmd_service(args)
    try:
        if args.subcommand in ("judge", "languages"):
            return _cmd_judge(args)
        return _cmd_doctor(args)
    except BrokenPipeError:
        # `cellblock languages | head`: the reader left; not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
