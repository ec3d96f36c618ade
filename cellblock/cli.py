"""`cellblock`: the command line. Each subcommand imports only what it needs.

cellblock run [OPTIONS] -- COMMAND [ARGS...]   one command in a fresh cell
cellblock run-server [--idle-exit S]            serve `cellblock run` from one process
cellblock doctor [--json]                       what this host allows
cellblock judge SOURCE --tests DIR [OPTIONS]    compile once, run tests, verdicts
cellblock languages [--json]                    the languages installed here
cellblock serve [--host H] [--port P]           the HTTP API (+ its own Redis and workers)
cellblock worker [--redis-url URL] [--cells N]  RQ workers judging queued submissions
cellblock image pull|ls|inspect|rm|prune        OCI images in the layer store
"""

from __future__ import annotations

import os
import sys

# Not typing.TYPE_CHECKING: importing typing costs ~8 ms that `cellblock run` does
# not spend. mypy takes any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:  # argparse is imported when a command needs it: `cellblock run` may not
    import argparse

    from cellblock.protocol import RunOptions


def _run_parser(sub: argparse._SubParsersAction) -> None:
    import argparse

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
    p.add_argument(
        "--stderr-to-stdout",
        action="store_true",
        help="the program's stderr goes into its stdout, in the order written",
    )
    p.add_argument(
        "--image",
        default="host",
        help="root filesystem: host (default), a pulled image (NAME[:TAG], NAME@sha256:..., "
        "sha256:ID) or a root directory's absolute path; with no COMMAND, the image's own",
    )
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
    """Handed to a run server if one is up (cellblock/client.py), else run here."""
    from cellblock import client

    options = run_options(args)
    code = client.hand_off(options)
    if code is not None:
        return code
    from cellblock.runcmd import run_in_process

    return run_in_process(options)


def run_options(args: argparse.Namespace) -> RunOptions:
    """`cellblock run`'s parsed arguments as the options both paths take."""
    from cellblock.protocol import RunOptions
    from sandbox.spec import limit_fields

    return RunOptions(
        command=args.command,
        json=args.json,
        limits={
            limit.name: getattr(args, limit.name)
            for limit in limit_fields()
            if getattr(args, limit.name) is not None
        },
        stdin=args.stdin,
        copy_in=args.copy_in,
        copy_out=args.copy_out,
        readonly=args.readonly,
        out_dir=args.out_dir,
        image=args.image,
        seccomp=args.seccomp,
        env=args.env,
        stderr_to_stdout=args.stderr_to_stdout,
    )


def _run_server_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run-server",
        help="serve `cellblock run` for this user from one long-lived process (warm cells)",
        description="Listen on a socket of this user's own; `cellblock run` then hands its "
        "run here (to a warm cell, without starting the sandbox) and prints exactly what it "
        "would have printed. Runs in the foreground until SIGTERM/SIGINT or --idle-exit "
        "(cellblock/server.py).",
    )
    p.add_argument(
        "--idle-exit",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="exit after this many seconds without a run (default 0: never)",
    )


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
    if not args.remove:
        from sandbox.cgroups import dynmods

        try:
            favored = dynmods.favor()
        except OSError as error:  # a speed-up only: the delegation above stands
            print(f"cellblock setup: note: {dynmods.FLAG} not set: {error}", file=sys.stderr)
        else:
            done += [favored] if favored else []
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


def _image_parser(sub: argparse._SubParsersAction) -> None:
    from cellblock.imagecmd import add_parser

    add_parser(sub)


def _cmd_service(args: argparse.Namespace) -> int:
    """`cellblock serve` (api/serve.py) and `cellblock worker` (worker/rq_worker.py)."""
    if args.subcommand == "serve":
        from api.serve import main as serve_main

        return serve_main(args)
    from worker.supervisor import main as worker_main

    return worker_main(args)


_COMMANDS = (
    "run", "run-server", "doctor", "setup", "judge", "languages", "serve", "worker", "image"
)  # fmt: skip


def _full_site() -> None:
    if sys.flags.no_site and "site" not in sys.modules:
        # Started with -S, which spares the hand-off ~2 ms of site-packages it
        # does not need: everything else does (pyseccomp, .pth files).
        import site

        site.main()


def main(argv: list[str] | None = None) -> int:
    entry = argv is None  # the process's own command line, not a caller's list
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        # A run server takes the run before anything heavy is imported (argparse
        # included): its whole cost is then the interpreter and one round trip.
        from cellblock import client

        options = client.parse(argv[1:])
        if options is not None:
            code = client.hand_off(options)
            if code is not None:
                if entry:
                    client.exit_now(code)
                return code
            # No server took it: run it here with the options just read, which
            # are argparse's (tests/test_handoff.py); argparse only for what
            # client.parse leaves to it (~2 ms beyond the re and json a run
            # imports anyway).
            _full_site()
            from cellblock.runcmd import run_in_process

            return run_in_process(options)
    _full_site()
    import argparse

    parser = argparse.ArgumentParser(prog="cellblock", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    # The judge's and the service's parsers import worker/ and api/ (tens of ms):
    # built only when that command, or the full help, is asked for.
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    _run_parser(sub)
    doctor = sub.add_parser("doctor", help="check what this host allows and how to fix it")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    _setup_parser(sub)
    _run_server_parser(sub)
    for names, build in (
        (("judge", "languages"), _judge_parsers),
        (("serve", "worker"), _service_parsers),
        (("image",), _image_parser),
    ):
        if chosen in (None, *names) or chosen not in _COMMANDS:
            build(sub)
        else:
            for name in names:
                sub.add_parser(name)  # a name for argparse's list; never parsed
    args = parser.parse_args(argv)
    if args.subcommand == "run":
        if args.command[:1] == ["--"]:
            args.command = args.command[1:]
        if not args.command and args.image == "host":  # another image may have its own
            parser.error("run: no command given (cellblock run [OPTIONS] -- COMMAND [ARGS...])")
        return _cmd_run(args)
    if args.subcommand == "setup":
        return _cmd_setup(args)
    if args.subcommand == "run-server":
        from cellblock.server import main as run_server_main

        return run_server_main(args)
    if args.subcommand in ("serve", "worker"):
        return _cmd_service(args)
    if args.subcommand == "image":
        from cellblock.imagecmd import main as image_main

        return image_main(args)
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
