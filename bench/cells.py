"""Benchmark (not a test): what one run in a cell costs, next to bare process start-up
and next to bubblewrap.

    .venv/bin/python bench/cells.py [--iterations 100] [--warmup 5] [--cli-runs 20] [--json]
                                    [--rounds 10] [--block 20]
    runuser -u nobody -- /opt/cellblock/venv/bin/python bench/cells.py   # unprivileged

Part 1, from this one long-lived process: each workload (/bin/true, a static C hello
world, `python3 -c pass`) by each method, interleaved: every iteration runs every
workload by every method, in an order that rotates from one iteration to the next, so
all methods see the same machine state. The methods:

    sandbox.run   in-process call of the working tree's sandbox.run with warm cells
                  (what a process's 2nd to 10th runs get by default, and all its
                  runs after recycle_cells(False)): each made while the previous
                  such run's program ran; every run gets a new cell
    cold cell     the same with warm cells off (sandbox.keep_warm(False), or
                  CELLBLOCK_WARM=0): each cell made for its run, as a process's first
                  run is
    recycled      the same with recycled cells (what a process's runs after its
                  tenth get by default; the service's workers and the run server
                  from their first): the cell of a run that ended is renewed for
                  the next one instead of ended
    fork+exec     os.fork + os.execve, then read the output to EOF and waitpid
    posix_spawn   os.posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK)), read, waitpid
    bwrap         bubblewrap started with os.posix_spawn, with the isolation of BWRAP

Part 1b, /bin/true by each method alone: `--rounds` rounds, in each a block of
`--block` runs in a row by every method (the methods' order rotating from one round to
the next). A block's first run follows another method's and is not counted; the rest
see only their own method's work beside them (a warm cell's refill, a recycled cell's
renewal, bwrap's namespaces torn down by kernel workers), as a caller that runs one
way back to back does. Part 1 mixes every method's leftovers into every other's runs.

Part 2: whole-process cost, a fresh interpreter each time: the installed
`cellblock run -- /bin/true` against `bwrap ... /bin/true`, and the CLI's interpreter
alone (`python -c pass`) as the floor under the CLI.

Every run must succeed (status OK, or exit 0) and print what it should: a failed run
stops the benchmark with an error, it is never counted as a timing. Timings are only
reported, never judged. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gc
import json
import math
import os
import platform
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # time the working tree's sandbox, not an installed copy

from bench.conditions import cgroup_moves_line  # noqa: E402
from cellblock import native  # noqa: E402
from sandbox import run as sandbox_run  # noqa: E402
from sandbox import warm as sandbox_warm  # noqa: E402
from sandbox.cgroups.dynmods import moves_wait  # noqa: E402
from sandbox.spec import BASE_ENV, Status  # noqa: E402

HELLO_SOURCE = REPO / "bench" / "programs" / "hello.c"
HELLO_OUTPUT = "hello, world\n"
PYTHON = "/usr/bin/python3"  # absolute, so every method runs the same interpreter
DEFAULT_CLI = "/opt/cellblock/venv/bin/cellblock"
MERGED_USR = {"/bin": "usr/bin", "/lib": "usr/lib", "/lib64": "usr/lib64", "/sbin": "usr/sbin"}

# bubblewrap with isolation comparable to a cell's: every namespace, the host's /usr and
# /etc read-only, fresh /proc, /dev and /tmp. A cell does more: an overlay root, a seccomp
# filter, rlimits, every capability dropped (bwrap run by root keeps them in its namespaces).
BWRAP = (
    "/usr/bin/bwrap",
    "--unshare-all",
    "--die-with-parent",
    "--new-session",
    "--ro-bind",
    "/usr",
    "/usr",
    "--symlink",
    "usr/bin",
    "/bin",
    "--symlink",
    "usr/lib",
    "/lib",
    "--symlink",
    "usr/lib64",
    "/lib64",
    "--symlink",
    "usr/sbin",
    "/sbin",
    "--ro-bind",
    "/etc",
    "/etc",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
    "--chdir",
    "/tmp",
)

# The environment of every program, whatever the method: the cell's own.
ENV = dict(BASE_ENV)


class BenchError(Exception):
    """A run failed: the benchmark is wrong or the machine is, and no timing is reported."""


@dataclass(frozen=True)
class Workload:
    name: str
    argv: tuple[str, ...]  # as fork+exec, posix_spawn and bwrap run it (absolute path)
    cell_argv: tuple[str, ...]  # as the cell runs it
    output: str = ""  # expected stdout + stderr
    cell_copy_in: dict[str, bytes] = field(default_factory=dict)
    bwrap_binds: tuple[str, ...] = ()  # host directories bwrap binds read-only, same path


Method = Callable[[Workload], None]


# --- the methods: each runs one workload once, and raises BenchError if it failed ---------


# The recycled method's cells are of a birth of their own (one more inode
# allowed), so a renewed cell never serves the default method's run, nor a
# fresh one the recycled method's.
RECYCLED_BIRTH = {"tmpfs_inodes": 16385}


def run_sandbox(
    workload: Workload, warm_setting: bool | None = None, recycled: bool = False
) -> None:
    # None: automatic (so on here). Set as the pool's own flags, without
    # releasing the cell that waits for the next such run: a cold run neither
    # uses nor makes warm cells, and only the recycled method recycles.
    sandbox_warm._chosen = warm_setting
    sandbox_warm._recycle = recycled
    birth = RECYCLED_BIRTH if recycled else {}
    result = sandbox_run(workload.cell_argv, copy_in=workload.cell_copy_in, **birth)
    output = result.stdout + result.stderr
    if result.status != Status.OK or output != workload.output:
        raise BenchError(
            f"sandbox.run {list(workload.cell_argv)}: status {result.status}, "
            f"{result.message!r}, output {output!r}"
        )


def run_fork_exec(workload: Workload) -> None:
    devnull = _devnull()
    read_fd, write_fd = os.pipe()  # close-on-exec, like every descriptor Python opens
    pid = os.fork()
    if pid == 0:  # the child: stdin from /dev/null, stdout and stderr to the pipe
        try:
            os.dup2(devnull, 0)
            os.dup2(write_fd, 1)
            os.dup2(write_fd, 2)
            os.execve(workload.argv[0], workload.argv, ENV)
        finally:
            os._exit(127)
    os.close(write_fd)
    _check_exit("fork+exec", workload.argv, *_collect(pid, read_fd), workload.output)


def run_posix_spawn(workload: Workload) -> None:
    _check_exit("posix_spawn", workload.argv, *_spawn(workload.argv), workload.output)


def run_bwrap(workload: Workload) -> None:
    argv = bwrap_argv(workload.argv, workload.bwrap_binds)
    _check_exit("bwrap", argv, *_spawn(argv), workload.output)


METHODS: dict[str, Method] = {
    "sandbox.run": run_sandbox,
    "cold cell": functools.partial(run_sandbox, warm_setting=False),
    "recycled": functools.partial(run_sandbox, recycled=True),
    "fork+exec": run_fork_exec,
    "posix_spawn": run_posix_spawn,
    "bwrap": run_bwrap,
}


def bwrap_argv(argv: Sequence[str], binds: Sequence[str] = ()) -> tuple[str, ...]:
    bind_args = [arg for path in binds for arg in ("--ro-bind", path, path)]
    return (*BWRAP, *bind_args, *argv)


@functools.cache
def _devnull() -> int:
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def _spawn(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[int, bytes]:
    """posix_spawn argv with stdin from /dev/null and stdout+stderr into one pipe."""
    read_fd, write_fd = os.pipe()
    actions = [
        (os.POSIX_SPAWN_DUP2, _devnull(), 0),
        (os.POSIX_SPAWN_DUP2, write_fd, 1),
        (os.POSIX_SPAWN_DUP2, write_fd, 2),
    ]
    try:
        pid = os.posix_spawn(argv[0], list(argv), env or ENV, file_actions=actions)
    except OSError as error:
        os.close(read_fd)
        raise BenchError(f"cannot start {list(argv)}: {error.strerror}") from None
    finally:
        os.close(write_fd)
    return _collect(pid, read_fd)


def _collect(pid: int, read_fd: int) -> tuple[int, bytes]:
    """Read the child's output to EOF, then reap it: (exit code, output)."""
    chunks = []
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)


def _check_exit(method: str, argv: Sequence[str], code: int, output: bytes, want: str) -> None:
    if code != 0 or output.decode(errors="replace") != want:
        raise BenchError(f"{method} {list(argv)}: exit code {code}, output {output!r}")


# --- set-up ---------------------------------------------------------------------------


def check_host(cli: str) -> None:
    """Fail early, with the fix, when a tool the benchmark needs is not there."""
    if not os.access(BWRAP[0], os.X_OK):
        raise BenchError(f"{BWRAP[0]} not found: apt-get install -y bubblewrap")
    if shutil.which("gcc") is None:
        raise BenchError("gcc not found: apt-get install -y gcc libc6-dev")
    for path, target in MERGED_USR.items():
        if not os.path.islink(path) or os.readlink(path) != target:
            raise BenchError(f"{path} is not a symlink to {target}: BWRAP assumes merged /usr")
    if not os.access(cli, os.X_OK):
        raise BenchError(f"{cli} not found: install it with scripts/install, or pass --cli")


def build_hello(directory: Path) -> Path:
    binary = directory / "hello"
    subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(binary), str(HELLO_SOURCE)],
        check=True,
        capture_output=True,
    )
    return binary


def make_workloads(hello: Path) -> list[Workload]:
    return [
        Workload("true", ("/bin/true",), ("/bin/true",)),
        Workload(
            "hello (static C)",
            (str(hello),),
            ("./hello",),
            output=HELLO_OUTPUT,
            cell_copy_in={"hello": hello.read_bytes()},  # the only way into a cell
            bwrap_binds=(str(hello.parent),),
        ),
        Workload("python3 -c pass", (PYTHON, "-c", "pass"), (PYTHON, "-c", "pass")),
    ]


# --- measuring ------------------------------------------------------------------------


Samples = dict[tuple[str, str], list[float]]  # (workload, method) -> milliseconds


def time_ms(action: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    action()
    return (time.perf_counter_ns() - start) / 1e6


def measure_alone(workload: Workload, rounds: int, block: int) -> dict[str, list[float]]:
    """Blocks of `block` runs in a row by one method, every method each round (the
    order rotating); a block's first run, which follows another method, not kept."""
    names = list(METHODS)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        gc.collect()
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            for index in range(block + 1):
                elapsed = time_ms(lambda n=name: METHODS[n](workload))
                if index > 0:
                    samples[name].append(elapsed)
    return samples


def measure_in_process(workloads: Sequence[Workload], iterations: int, warmup: int) -> Samples:
    """Run every workload by every method per iteration, the methods' order rotating."""
    names = list(METHODS)
    samples: Samples = {(w.name, m): [] for w in workloads for m in names}
    for i in range(warmup + iterations):
        gc.collect()  # outside the timed region, so no method pays for another's garbage
        shift = i % len(names)
        order = names[shift:] + names[:shift]
        for workload in workloads:
            for name in order:
                elapsed = time_ms(lambda w=workload, n=name: METHODS[n](w))
                if i >= warmup:
                    samples[(workload.name, name)].append(elapsed)
    return samples


SERVED_PYTHON = "served, Python client"
SERVED_NATIVE = "served, native client"


def measure_cli(cli: str, runs: int, warmup: int) -> dict[str, list[float]]:
    """Whole processes: the CLI (a fresh interpreter each), bwrap, the CLI's
    interpreter, and the CLI with a run server up, by the Python command and by
    the native one (cellblock/launcher.c, built for this CLI as scripts/install
    builds it)."""
    interpreter = _shebang(cli)
    runtime = Path(tempfile.mkdtemp(prefix="cellblock-bench-run-"))
    served = {**ENV, "XDG_RUNTIME_DIR": str(runtime)}  # the other commands: no server there
    server = subprocess.Popen(
        [cli, "run-server"], env=served, stderr=subprocess.PIPE, text=True, cwd="/"
    )
    try:
        assert server.stderr is not None
        if "serving on" not in (line := server.stderr.readline()):
            raise BenchError(f"cellblock run-server did not start: {line}")
        package = subprocess.run(
            [interpreter, "-I", "-c", "from cellblock import protocol; print(protocol.package())"],
            capture_output=True, text=True, check=True, cwd="/",
        ).stdout.strip()  # fmt: skip
        launcher = native.build(runtime / "cellblock-native", cli, package)
        commands: dict[str, tuple[tuple[str, ...], str]] = {
            "cellblock run -- /bin/true": ((cli, "run", "--", "/bin/true"), "cellblock: OK"),
            SERVED_PYTHON: ((cli, "run", "--", "/bin/true"), "cellblock: OK"),
            SERVED_NATIVE: ((str(launcher), "run", "--", "/bin/true"), "cellblock: OK"),
            "bwrap ... /bin/true": (bwrap_argv(["/bin/true"]), ""),
            "python -c pass (the CLI's interpreter)": ((interpreter, "-c", "pass"), ""),
        }
        environments = {SERVED_PYTHON: served, SERVED_NATIVE: served}
        return _whole_processes(commands, environments, runs, warmup)
    finally:
        server.terminate()
        server.wait(60)
        shutil.rmtree(runtime, ignore_errors=True)


def _whole_processes(
    commands: dict[str, tuple[tuple[str, ...], str]],
    environments: dict[str, dict[str, str]],
    runs: int,
    warmup: int,
) -> dict[str, list[float]]:
    names = list(commands)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + runs):
        gc.collect()
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            argv, want = commands[name]
            start = time.perf_counter_ns()
            code, output = _spawn(argv, environments.get(name))
            elapsed = (time.perf_counter_ns() - start) / 1e6
            text = output.decode(errors="replace")
            if code != 0 or not text.startswith(want) or (not want and text):
                raise BenchError(f"{list(argv)}: exit code {code}, output {text!r}")
            if i >= warmup:
                samples[name].append(elapsed)
    return samples


def installed_copy(cli: str) -> str:
    """Where the CLI's sandbox package comes from, and whether it matches the working tree."""
    code = "import sandbox, os; print(os.path.dirname(sandbox.__file__))"
    done = subprocess.run(
        [_shebang(cli), "-c", code], capture_output=True, text=True, cwd="/", check=False
    )
    installed = Path(done.stdout.strip())
    if done.returncode != 0 or not installed.is_dir():
        return f"unknown ({done.stderr.strip().splitlines()[-1:]})"
    if installed == REPO / "sandbox":
        return f"{installed} (the working tree)"
    differ = sorted(
        path.name
        for path in (REPO / "sandbox").glob("*.py")
        if not (installed / path.name).is_file()
        or (installed / path.name).read_bytes() != path.read_bytes()
    )
    return f"{installed}" + (
        f" (differs from the working tree: {', '.join(differ)})"
        if differ
        else " (same as the working tree)"
    )


def _shebang(script: str) -> str:
    with open(script, "rb") as file:
        first = file.readline().decode().strip()
    if not first.startswith("#!"):
        raise BenchError(f"{script}: no #! line to find its interpreter")
    return first[2:].split()[0]


CpuSnapshot = tuple[float, float, float, float]  # wall, machine busy, steal, this tree: seconds


def cpu_snapshot() -> CpuSnapshot:
    """The machine's busy and stolen CPU seconds, and this process's with its reaped children."""
    with open("/proc/stat") as file:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (
            int(x) for x in file.readline().split()[1:9]
        )
    hz = os.sysconf("SC_CLK_TCK")
    own = os.times()
    own_cpu = own.user + own.system + own.children_user + own.children_system
    busy = (user + nice + system + irq + softirq) / hz
    return time.monotonic(), busy, steal / hz, own_cpu


def cpu_use(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Average CPUs in between: busy (this benchmark's, everything else's) and stolen."""
    wall = after[0] - before[0]
    busy, steal, own = ((after[i] - before[i]) / wall for i in (1, 2, 3))
    return {
        "wall_s": round(wall, 1),
        "busy_cpus": round(busy, 2),
        "benchmark_cpus": round(own, 2),
        "other_cpus": round(busy - own, 2),
        "steal_cpus": round(steal, 2),
    }


# --- reporting ------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest rank
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(p95, 3),
        "min_ms": round(ordered[0], 3),
        "max_ms": round(ordered[-1], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
        "stdev_ms": round(statistics.stdev(ordered), 3) if len(ordered) > 1 else 0.0,
    }


def machine(cli: str) -> dict[str, object]:
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "bwrap": _first_line([BWRAP[0], "--version"]),
        "gcc": _first_line(["gcc", "--version"]),
        "user": f"{pwd.getpwuid(os.getuid()).pw_name} (uid {os.getuid()})",
        "sandbox": str(Path(sys.modules["sandbox"].__file__ or "").parent),
        "git": _git_revision(),
        "cli": f"{cli}, sandbox from {installed_copy(cli)}",
        "rss_mib": round(_rss_kib() / 1024, 1),
        "cgroup_moves_wait": moves_wait(),
    }


def _rss_kib() -> int:
    """This process's resident size: each os.fork copies its page tables."""
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _first_line(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else ""


def _git_revision() -> str:
    head = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    if not head or " " in head:  # not a repository, or git refused (another user's tree)
        return "unknown"
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "sandbox"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return head + (" + uncommitted changes in sandbox/" if dirty else "")


NOTES = [
    "fork+exec is os.fork + os.execve; posix_spawn is os.posix_spawn (glibc uses "
    "clone(CLONE_VM|CLONE_VFORK), no page-table copy); bwrap is started by posix_spawn. "
    "Each reads the output to EOF and reaps with waitpid.",
    "sandbox.run is the default of a long-lived caller: warm cells, automatic from a "
    "process's second run; cold cell is warm cells off (a process's first run); recycled "
    "is recycled cells (as the service's workers and the run server have): a run's cell, "
    "renewed, serves the next run.",
    "hello: the cells copy the binary in (copy_in, written to the cell's "
    "tmpfs on every run: a cell cannot see the host's temporary directory); the other "
    "methods exec it from the temporary directory (bwrap: --ro-bind of that directory).",
    "bwrap does less than a cell: no seccomp filter, no rlimits, no overlay root, and run "
    "by root its program keeps root's capabilities inside its namespaces.",
    "every program gets the cell's environment (PATH, HOME=/box, TMPDIR, LANG, LC_ALL) and "
    "stdin from /dev/null (the cell: empty stdin).",
]


def build_report(
    samples: Samples,
    alone: dict[str, list[float]],
    cli_samples: dict[str, list[float]],
    cpu: dict[str, dict[str, float]],
    info: dict[str, object],
    args: argparse.Namespace,
) -> dict[str, object]:
    results = [
        {
            "workload": workload,
            "method": method,
            **summarize(values),
            "samples_ms": [round(v, 3) for v in values],
        }
        for (workload, method), values in samples.items()
    ]
    medians = {(r["workload"], r["method"]): r["median_ms"] for r in results}
    workloads = list(dict.fromkeys(w for w, _ in samples))
    ratios = {w: round(medians[(w, "sandbox.run")] / medians[(w, "bwrap")], 2) for w in workloads}
    cold_ratios = {
        w: round(medians[(w, "cold cell")] / medians[(w, "bwrap")], 2) for w in workloads
    }
    recycled_ratios = {
        w: round(medians[(w, "recycled")] / medians[(w, "bwrap")], 2) for w in workloads
    }
    alone_rows = [
        {"method": name, **summarize(values), "samples_ms": [round(v, 3) for v in values]}
        for name, values in alone.items()
    ]
    bwrap_alone = statistics.median(alone["bwrap"])
    cli = [
        {"command": name, **summarize(values), "samples_ms": [round(v, 3) for v in values]}
        for name, values in cli_samples.items()
    ]
    medians_cli = {row["command"]: row["median_ms"] for row in cli}
    bwrap = medians_cli["bwrap ... /bin/true"]
    return {
        "machine": info,
        "config": {
            "iterations": args.iterations,
            "warmup": args.warmup,
            "cli_runs": args.cli_runs,
            "rounds": args.rounds,
            "block": args.block,
            "cli": args.cli,
            "bwrap": list(BWRAP),
        },
        "notes": NOTES,
        "cpu": cpu,
        "in_process": results,
        "ratio_sandbox_to_bwrap_median": ratios,
        "ratio_cold_to_bwrap_median": cold_ratios,
        "ratio_recycled_to_bwrap_median": recycled_ratios,
        "alone": alone_rows,
        "ratio_alone_to_bwrap_median": {
            name: round(statistics.median(values) / bwrap_alone, 2)
            for name, values in alone.items()
        },
        "whole_process": cli,
        "ratio_cli_to_bwrap_median": round(medians_cli["cellblock run -- /bin/true"] / bwrap, 2),
        "ratio_served_python_to_bwrap_median": round(medians_cli[SERVED_PYTHON] / bwrap, 2),
        "ratio_served_native_to_bwrap_median": round(medians_cli[SERVED_NATIVE] / bwrap, 2),
    }


def print_table(report: dict[str, object]) -> None:
    info = report["machine"]
    assert isinstance(info, dict)
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), kernel {info['kernel']}, "
        f"Python {info['python']}, {info['bwrap']}"
    )
    print(
        f"run as {info['user']} on {info['date']}; sandbox from {info['sandbox']} "
        f"(git {info['git']}); RSS of this process {info['rss_mib']} MiB"
    )
    print(f"CLI: {info['cli']}")
    print(cgroup_moves_line(bool(info["cgroup_moves_wait"])))
    config = report["config"]
    assert isinstance(config, dict)
    print(
        f"\n1. In-process, interleaved: {config['iterations']} iterations "
        f"(+{config['warmup']} warm-up) per workload and method; milliseconds per run"
    )
    _print_cpu(report["cpu"]["in_process"])  # type: ignore[index]
    header = f"  {'workload':<18}{'method':<14}{'median':>9}{'p95':>9}{'min':>9}{'max':>9}"
    print(header)
    ratios = report["ratio_sandbox_to_bwrap_median"]
    cold_ratios = report["ratio_cold_to_bwrap_median"]
    recycled_ratios = report["ratio_recycled_to_bwrap_median"]
    assert isinstance(ratios, dict) and isinstance(cold_ratios, dict)
    assert isinstance(recycled_ratios, dict)
    previous = ""
    for row in report["in_process"]:  # type: ignore[union-attr]
        workload = row["workload"] if row["workload"] != previous else ""
        extra = ""
        if row["method"] == "sandbox.run":
            extra = f"   sandbox.run / bwrap = {ratios[row['workload']]:.2f}x"
        elif row["method"] == "cold cell":
            extra = f"   cold cell / bwrap = {cold_ratios[row['workload']]:.2f}x"
        elif row["method"] == "recycled":
            extra = f"   recycled / bwrap = {recycled_ratios[row['workload']]:.2f}x"
        print(
            f"  {workload:<18}{row['method']:<14}{row['median_ms']:>9.2f}{row['p95_ms']:>9.2f}"
            f"{row['min_ms']:>9.2f}{row['max_ms']:>9.2f}{extra}"
        )
        previous = row["workload"]
    print(
        f"\n1b. /bin/true by each method alone: {config['rounds']} rounds of "
        f"{config['block']} runs in a row per method (a block's first run not counted); "
        f"milliseconds per run"
    )
    _print_cpu(report["cpu"]["alone"])  # type: ignore[index]
    print(f"  {'method':<32}{'median':>9}{'p95':>9}{'min':>9}{'max':>9}   / bwrap")
    alone_ratios = report["ratio_alone_to_bwrap_median"]
    assert isinstance(alone_ratios, dict)
    for row in report["alone"]:  # type: ignore[union-attr]
        print(
            f"  {row['method']:<32}{row['median_ms']:>9.2f}{row['p95_ms']:>9.2f}"
            f"{row['min_ms']:>9.2f}{row['max_ms']:>9.2f}   {alone_ratios[row['method']]:.2f}x"
        )
    print(
        f"\n2. Whole process, a fresh interpreter each time: {config['cli_runs']} runs "
        f"each, interleaved; milliseconds per run"
    )
    _print_cpu(report["cpu"]["whole_process"])  # type: ignore[index]
    print(f"  {'command':<42}{'median':>9}{'p95':>9}{'min':>9}{'max':>9}")
    for row in report["whole_process"]:  # type: ignore[union-attr]
        print(
            f"  {row['command']:<42}{row['median_ms']:>9.2f}{row['p95_ms']:>9.2f}"
            f"{row['min_ms']:>9.2f}{row['max_ms']:>9.2f}"
        )
    print(
        f"  cellblock run / bwrap = {report['ratio_cli_to_bwrap_median']:.2f}x; with a run "
        f"server up: {report['ratio_served_python_to_bwrap_median']:.2f}x (Python client), "
        f"{report['ratio_served_native_to_bwrap_median']:.2f}x (native client) (medians)"
    )
    print("\nnotes:")
    for note in report["notes"]:  # type: ignore[union-attr]
        print(f"  - {note}")


def _print_cpu(use: dict[str, float]) -> None:
    print(
        f"  ({use['wall_s']:g} s; CPUs busy on average {use['busy_cpus']:.2f}: this benchmark's "
        f"processes {use['benchmark_cpus']:.2f}, the rest {use['other_cpus']:.2f} (kernel "
        f"workers tearing down namespaces, other users); stolen by the hypervisor "
        f"{use['steal_cpus']:.2f})"
    )


# --- main -----------------------------------------------------------------------------


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{text}: must be at least {low}")
        return value

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark: sandbox.run against fork+exec, posix_spawn and bubblewrap.",
        epilog="Not a test: timings are reported, never judged. See bench/README.md.",
    )
    parser.add_argument(
        "--iterations",
        type=_at_least(1),
        default=100,
        help="timed runs per workload and method (default 100)",
    )
    parser.add_argument(
        "--warmup",
        type=_at_least(0),
        default=5,
        help="untimed runs first, per workload and method (default 5)",
    )
    parser.add_argument(
        "--cli-runs",
        type=_at_least(1),
        default=20,
        help="timed runs of each whole-process command (default 20)",
    )
    parser.add_argument(
        "--rounds",
        type=_at_least(1),
        default=10,
        help="part 1b: rounds of blocks, every method each round (default 10)",
    )
    parser.add_argument(
        "--block",
        type=_at_least(1),
        default=20,
        help="part 1b: runs in a row by one method, counted (default 20)",
    )
    parser.add_argument(
        "--cli", default=DEFAULT_CLI, help=f"the installed cellblock CLI (default {DEFAULT_CLI})"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the results as JSON (with every sample), no table",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_host(args.cli)
        info = machine(args.cli)
        with tempfile.TemporaryDirectory(prefix="cellblock-bench-") as directory:
            os.chmod(directory, 0o755)
            workloads = make_workloads(build_hello(Path(directory)))
            print(
                f"cells.py: {args.iterations} iterations of {len(workloads)} workloads x "
                f"{len(METHODS)} methods...",
                file=sys.stderr,
            )
            start = cpu_snapshot()
            samples = measure_in_process(workloads, args.iterations, args.warmup)
            middle = cpu_snapshot()
            print(
                f"cells.py: /bin/true alone, {args.rounds} rounds of {args.block} runs "
                f"x {len(METHODS)} methods...",
                file=sys.stderr,
            )
            alone = measure_alone(workloads[0], args.rounds, args.block)
            after_alone = cpu_snapshot()
        print(f"cells.py: {args.cli_runs} whole-process runs x 3 commands...", file=sys.stderr)
        cli_samples = measure_cli(args.cli, args.cli_runs, min(args.warmup, 2))
        end = cpu_snapshot()
    except (BenchError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", None)
        print(
            f"cells.py: error: {error}" + (f"\n{detail.decode()}" if detail else ""),
            file=sys.stderr,
        )
        return 1
    cpu = {
        "in_process": cpu_use(start, middle),
        "alone": cpu_use(middle, after_alone),
        "whole_process": cpu_use(after_alone, end),
    }
    report = build_report(samples, alone, cli_samples, cpu, info, args)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
