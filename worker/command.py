"""The `cellblock judge` and `cellblock languages` commands (cellblock/cli.py adds the parsers).

Exit codes of `cellblock judge`: 0 the verdict is AC, 1 another verdict
(WA, TLE, MLE, OLE, RE, CE), 2 bad input (nothing was judged), 125 IE (the
sandbox or a checker failed). With --batch: 0 once every item has its line,
2 when the batch file cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 125


def add_judge_parser(sub: argparse._SubParsersAction) -> None:
    from sandbox.spec import limit_flag

    from .pipeline import JUDGE_DEFAULTS, judge_limit_fields
    from .results import FEEDBACK_LEVELS

    p = sub.add_parser(
        "judge",
        help="compile a submission once and judge it against tests",
        description="Compile SOURCE once (in a cell) and run it on every test of DIR, each in "
        "a fresh cell; check outputs; report verdicts and scores.",
        epilog="Tests: NAME.in + NAME.out (or NAME.ans), natural order, optional scores.txt "
        "('NAME SCORE' lines). Checkers: exact, lines (default), tokens, float[:EPS], or a "
        "testlib-style program (source or executable). Exit code: 0 AC, 1 other verdict, "
        "2 bad input, 125 internal error.",
    )
    p.add_argument("source", nargs="?", help="the submission's source file")
    p.add_argument(
        "--lang",
        "--language",
        dest="lang",
        metavar="LANG",
        help="language id (default: from the file extension; see `cellblock languages`)",
    )
    p.add_argument("--tests", metavar="DIR", help="directory of NAME.in / NAME.out pairs")
    p.add_argument("--checker", metavar="C", help="exact, lines, tokens, float[:EPS] or a path")
    p.add_argument(
        "--interactor",
        metavar="PROG",
        help="interactive problem: the interactor's source or executable",
    )
    for limit in judge_limit_fields():  # sandbox.spec.Limits's, with a test's defaults
        flag, metavar, help_text = limit_flag(limit, JUDGE_DEFAULTS[limit.name])
        p.add_argument(flag, metavar=metavar, help=f"per test: {help_text}")
    p.add_argument(
        "--stop-on-failure",
        action="store_true",
        help="stop at the first test that is not AC (default: run every test)",
    )
    p.add_argument(
        "--recheck-tle",
        action="store_true",
        help="run a test once more when it ends just over its CPU limit (within 20%%); "
        "the second run decides",
    )
    p.add_argument(
        "--feedback",
        choices=FEEDBACK_LEVELS,
        default=None,
        help="what results reveal of the tests: verdicts and figures only, plus "
        "the checker's message without test data, or plus where the output differs "
        "and the program's output (default diff; batch: each item's, else this)",
    )
    p.add_argument("--json", action="store_true", help="print the JudgeResult as JSON")
    p.add_argument(
        "--format",
        choices=("table", "json", "gradescope"),
        default=None,
        help="output format (default table; --json is --format json)",
    )
    p.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write the report to FILE instead of stdout (e.g. results.json)",
    )
    p.add_argument(
        "--batch",
        metavar="JSONL",
        help="judge many programs: a JSONL file of items ('-' for stdin), one "
        "result line each (see worker/batch.py)",
    )
    p.add_argument(
        "--jobs",
        "-j",
        metavar="N",
        type=int,
        help="batch: items judged at once (default: the number of cores)",
    )
    p.add_argument(
        "--deadline",
        metavar="S",
        type=float,
        help="batch: seconds per item, compile and tests together (default 60)",
    )


def judge_main(args: argparse.Namespace) -> int:
    from sandbox import SpecError

    from .checkers import CheckerError, get_checker, load_program
    from .formats import ProgressBar, gradescope, table, to_json
    from .languages import LanguageError, get_language, language_for_path
    from .pipeline import JudgeOptions, RunLimits, judge
    from .results import DEFAULT_FEEDBACK, Verdict
    from .testsets import TestSetError, load_dir

    fmt = "json" if args.json else (args.format or "table")
    if args.batch:
        return _batch(args)
    try:
        if not args.source:
            raise SpecError("give a SOURCE file (or --batch FILE)")
        source_path = Path(args.source)
        if not source_path.is_file():
            raise SpecError(f"source {source_path} does not exist")
        lang_id = args.lang or language_for_path(source_path)
        if not lang_id:
            raise SpecError(f"cannot tell the language of {source_path} from its name: give --lang")
        language = get_language(lang_id)
        if not args.tests:
            raise SpecError("give --tests DIR")
        tests = load_dir(Path(args.tests), answers_required=not args.interactor)
        limits = RunLimits.build(**_limit_args(args))
        if args.interactor and args.checker:
            raise SpecError("--interactor decides the verdict itself: drop --checker")
        checker = get_checker(args.checker)
        interactor = load_program(Path(args.interactor), "interactor") if args.interactor else None
        source = source_path.read_bytes()
    except (SpecError, LanguageError, TestSetError, CheckerError, OSError) as error:
        print(f"cellblock judge: error: {error}", file=sys.stderr)
        return EXIT_USAGE

    progress = ProgressBar() if fmt == "table" and not args.output else None
    options = JudgeOptions(
        limits=limits,
        checker=checker,
        stop_on_failure=args.stop_on_failure,
        recheck_tle=args.recheck_tle,
        interactor=interactor,
        progress=progress,
        feedback=args.feedback or DEFAULT_FEEDBACK,
    )
    try:
        result = judge(language, source, tests, options)
    finally:
        if progress:
            progress.clear()
    if fmt == "json":
        text = to_json(result)
    elif fmt == "gradescope":
        text = json.dumps(gradescope(result), indent=2)
    else:
        text = table(result)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    if result.verdict == Verdict.AC:
        return 0
    return EXIT_INTERNAL if result.verdict == Verdict.IE else EXIT_FAILED


def _limit_args(args: argparse.Namespace) -> dict[str, object]:
    """The judged test's limits given on the command line (None: the default)."""
    from .pipeline import judge_limit_fields

    return {limit.name: getattr(args, limit.name) for limit in judge_limit_fields()}


def _batch(args: argparse.Namespace) -> int:
    from sandbox import SpecError

    from .batch import run_batch
    from .checkers import CheckerError, get_checker
    from .pipeline import RunLimits, judge_limit_fields, request_name

    given = _limit_args(args)
    limits = {
        request_name(limit): given[limit.name]
        for limit in judge_limit_fields()
        if given[limit.name] is not None
    }
    try:
        if args.source or args.tests or args.interactor:
            raise SpecError(
                "--batch takes its programs and tests from the JSONL file: "
                "drop SOURCE, --tests and --interactor"
            )
        RunLimits.from_request(limits)
        get_checker(args.checker)
        if args.jobs is not None and args.jobs < 1:
            raise SpecError("--jobs must be at least 1")
        if args.deadline is not None and not args.deadline > 0:
            raise SpecError("--deadline must be a positive number of seconds")
        stream = sys.stdin if args.batch == "-" else open(args.batch)  # noqa: SIM115
    except (SpecError, CheckerError, OSError) as error:
        print(f"cellblock judge: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    defaults = {
        "limits": limits,
        "checker": args.checker,
        "stop_on_failure": args.stop_on_failure,
        "recheck_tle": args.recheck_tle,
        "feedback": args.feedback,
    }
    if args.deadline is not None:
        defaults["deadline"] = args.deadline
    out = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115
    try:
        counts = run_batch(stream, out, jobs=args.jobs, defaults=defaults)
    finally:
        if out is not sys.stdout:
            out.close()
        if stream is not sys.stdin:
            stream.close()
    summary = " · ".join(f"{key} {value}" for key, value in sorted(counts.items()))
    print(f"cellblock judge: {sum(counts.values())} items: {summary}", file=sys.stderr)
    return 0


def add_languages_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "languages",
        help="list the languages whose toolchain is installed",
        description="List the languages cellblock can judge on this machine, "
        "with the toolchain's version.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument(
        "--all", action="store_true", help="also list known languages whose toolchain is missing"
    )


def languages_main(args: argparse.Namespace) -> int:
    from .languages import LanguageError, all_languages

    try:
        known = all_languages()
    except LanguageError as error:
        print(f"cellblock languages: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    rows: list[dict[str, Any]] = []
    for language in known.values():
        installed = language.installed()
        if not installed and not args.all:
            continue
        rows.append(
            {
                "id": language.id,
                "name": language.name,
                "installed": installed,
                "image": language.image,
                "version": language.version() if installed else "",
                "source": language.source,
                "compile": list(language.compile) if language.compile else None,
                "run": list(language.run),
            }
        )
    if args.json:
        print(json.dumps(rows))
        return 0
    width = max((len(row["id"]) for row in rows), default=2)
    name_width = max((len(row["name"]) for row in rows), default=4)
    for row in rows:
        version = row["version"] if row["installed"] else "(not installed)"
        where = "" if row["image"] == "host" else f"  [image {row['image']}]"
        print(f"{row['id'].ljust(width)}  {row['name'].ljust(name_width)}  {version}{where}")
    return 0
