"""HumanEval through every door, against bare python3, interleaved in one run.

    .venv/bin/python bench/doors.py [--rounds N] [--jobs N] [--clients N] [--json]

The 164 canonical HumanEval programs (bench/data/humaneval, MIT, OpenAI), each
`python3 -c PROGRAM`, run to completion by each door in turn; every round runs
every door once, in an order rotated by one each round, so each door sees the
same machine. A run counts only if the program exits 0 and prints the sentinel
written after its asserts; a door that gets any other outcome fails the
benchmark (exit 1). Timings are reported, never judged.

    bare           `--jobs` threads, each running /usr/bin/python3 -c PROGRAM (subprocess)
    sandbox.run    `--jobs` worker processes, each calling sandbox.run (the default: warm
                   cells, recycled ones once a process has run ten)
    recycled       the same, each having called sandbox.for_many_runs() (recycled
                   cells from the first run, as the service's workers and the run
                   server have)
    cli            `--jobs` threads, each running `cellblock run --json -- python3 -c ...`
    cli served     the same with `cellblock run-server` up (the CLI hands the run over)
    cli native     the same server, and the native `cellblock` (cellblock/launcher.c,
                   built here as scripts/install builds it): no interpreter at all
    serve wait     `cellblock serve --cells JOBS` (its own Redis), `--clients` threads
                   POSTing /v1/submissions?wait=true (verl's way)
    serve poll     the same service, each client POSTs then GETs its submission
                   every 50 ms until it is done (Judge0 clients' way)
    serve pinned   `cellblock serve --cells JOBS --pin-cpus` (each worker and its cells
                   on a CPU of its own), the clients of `serve wait`
    bubblewrap     `--jobs` threads, each running the program under bubblewrap with the
                   isolation of bench/cells.py's baseline: a reference, the cost of a
                   sandbox process per program in C (no overlay, filter, cgroups or watchdog)
    fastapi+rq     a reference: the service's libraries with no cell (bench/plain_service.py:
                   uvicorn and FastAPI, `--jobs` RQ SimpleWorkers running each program as a
                   plain process, a Redis configured as `serve`'s), the clients of `serve
                   wait`: what a service built on them pays before any sandbox

For each door: samples/s, the ratio to bare in the same round (median over
rounds), and where the time goes: for the service, from the stored records,
the queue wait, the judging outside cells, and the cells, and its CPU per
submission by process (/proc: the API, Redis, the workers with their cell
makers, the cells' inits, the programs, and the rest of the machine's busy
time, kernel threads mostly; the clients apart); for `sandbox.run` and
`recycled`, the CPU per run the same way (the calling processes, their cell
makers, the inits, the programs, the rest; this process's own apart); for
the CLI, the interpreter's start-up (`python -c pass`) apart.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the real-service helpers the tests use

from service_support import free_port  # noqa: E402

from bench.cells import bwrap_argv  # noqa: E402
from bench.conditions import cgroup_moves_line  # noqa: E402
from bench.humaneval import DATA, load, program  # noqa: E402
from bench.plain_service import PlainService, answers, run_program  # noqa: E402
from cellblock import native  # noqa: E402
from sandbox.cgroups.dynmods import moves_wait  # noqa: E402
from worker.jobs import cell_seconds  # noqa: E402

PYTHON = "/usr/bin/python3"
CLI = Path(sys.executable).with_name("cellblock")
# The CLI and the service run this working tree's code (the installed copy may be older).
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
}


def programs(sentinel: str) -> list[str]:
    return [program(p, p["canonical_solution"], sentinel) for p in load(DATA)]


def passed(code: int, stdout: str, sentinel: str) -> bool:
    return code == 0 and stdout.rstrip().endswith(sentinel)


# --- the doors ----------------------------------------------------------------


def door_bare(
    sources: list[str],
    jobs: int,
    sentinel: str,
    wrap: Callable[[list[str]], Sequence[str]] = list,
) -> list[bool]:
    """Each program as a process (`wrap`: the command line that runs it)."""

    def one(source: str) -> bool:
        done = run_program(source, wrap)
        return passed(done["exit_code"], done["stdout"], sentinel)

    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(one, sources))


def _in_cell(source: str) -> tuple[int, str, float]:
    """(exit code, stdout, the program's CPU as its cgroup measured it)."""
    import sandbox

    result = sandbox.run([PYTHON, "-c", source], time=10)
    return (result.exit_code if result.exit_code is not None else -1), result.stdout, result.time


def _recycle() -> None:
    import sandbox

    sandbox.for_many_runs()


def door_sandbox(
    sources: list[str], pool: ProcessPoolExecutor, sentinel: str
) -> tuple[list[bool], float]:
    """Whether each program passed, and the programs' CPU seconds in all."""
    runs = list(pool.map(_in_cell, sources))
    return [passed(code, out, sentinel) for code, out, _ in runs], sum(t for _, _, t in runs)


class RunServer:
    """`cellblock run-server` in a runtime directory of its own."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cb-doors-run-"))
        self.env = {**ENV, "XDG_RUNTIME_DIR": str(self.dir)}
        self.process = subprocess.Popen(
            [str(CLI), "run-server"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        if "serving on" not in line:
            self.stop()
            raise RuntimeError(f"cellblock run-server did not start: {line}")
        # The native front for the working tree's server: its Python command is CLI.
        self.launcher = native.build(self.dir / "cellblock-native", CLI, REPO / "cellblock")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


def door_cli(
    sources: list[str],
    jobs: int,
    sentinel: str,
    env: dict[str, str] | None = None,
    command: Path = CLI,
) -> list[bool]:
    def one(source: str) -> bool:
        done = subprocess.run(
            [str(command), "run", "--json", "--time", "10", "--", PYTHON, "-c", source],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=env or ENV,
        )
        result = json.loads(done.stdout)
        return passed(result["exit_code"] or 0, result["stdout"], sentinel)

    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(one, sources))


class Service:
    """`cellblock serve` with its own Redis in a temporary directory."""

    def __init__(self, cells: int, pin_cpus: bool = False) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cb-doors-"))
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**ENV, "CELLBLOCK_RATE_LIMIT": "0", "CELLBLOCK_READ_RATE_LIMIT": "0"}
        self.process = subprocess.Popen(
            [str(CLI), "serve", "--port", str(self.port), "--cells", str(cells)]
            + ["--run-dir", str(self.dir / "state"), "--log-level", "warning"]
            + (["--pin-cpus"] if pin_cpus else []),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        if not answers(f"{self.url}/v1/health"):
            self.stop()
            raise RuntimeError("cellblock serve did not become healthy")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


def _body(source: str) -> dict:
    return {
        "language": "python3",
        "source": source,
        "stdin": "",
        "limits": {"time": 10, "wall_time": 30},
    }


POLL_INTERVAL = 0.05  # a polling client's pause between GETs


class Clients:
    """HTTP clients of `url`: an http.client connection kept open per thread,
    the cheapest client Python has (the clients share the machine with the
    service; their own CPU is reported apart)."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlsplit

        self.address = urlsplit(url)
        self.local = threading.local()

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        import http.client

        if not hasattr(self.local, "connection"):
            self.local.connection = http.client.HTTPConnection(
                self.address.hostname, self.address.port, timeout=120
            )
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        self.local.connection.request(method, path, body=payload, headers=headers)
        response = self.local.connection.getresponse()
        return json.loads(response.read())


def door_serve(
    sources: list[str], service: Service, clients: int, sentinel: str, poll: bool
) -> tuple[list[bool], list[dict]]:
    call = Clients(service.url).call

    def one(source: str) -> tuple[bool, dict]:
        if not poll:
            record = call("POST", "/v1/submissions?wait=true", _body(source))
        else:
            sub_id = call("POST", "/v1/submissions", _body(source))["id"]
            while True:
                record = call("GET", f"/v1/submissions/{sub_id}")
                if record["status"] in ("done", "failed"):
                    break
                time.sleep(POLL_INTERVAL)
        test = ((record.get("result") or {}).get("tests") or [{}])[0]
        ok = passed(test.get("exit_code") or 0, test.get("stdout") or "", sentinel) and (
            record["status"] == "done"
        )
        return ok, record

    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(one, sources))
    return [ok for ok, _ in outcomes], [record for _, record in outcomes]


def door_plain(
    sources: list[str], service: PlainService, clients: int, sentinel: str
) -> list[bool]:
    """The clients of `serve wait`, against bench/plain_service.py."""
    call = Clients(service.url).call

    def one(source: str) -> bool:
        result = call("POST", "/run", {"source": source})
        return passed(result.get("exit_code", -1), result.get("stdout") or "", sentinel)

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, sources))


# --- where the time goes -----------------------------------------------------


def service_stages(records: list[dict]) -> dict[str, float]:
    """Mean seconds per submission, from what GET shows: queued (created to
    started), the worker's judging outside its cells, and the cells' wall time."""
    queued, outside, cells = [], [], []
    for r in records:
        result = r.get("result") or {}
        cell = sum(float(t.get("wall_time") or 0) for t in result.get("tests") or [])
        cell += float((result.get("compile") or {}).get("wall_time") or 0)
        if r.get("started_at") and r.get("created_at") and r.get("finished_at"):
            queued.append(r["started_at"] - r["created_at"])
            outside.append(max(r["finished_at"] - r["started_at"] - cell, 0.0))
        cells.append(cell)
    return {
        "queued_s": statistics.mean(queued) if queued else 0.0,
        "judging outside cells_s": statistics.mean(outside) if outside else 0.0,
        "in cells_s": statistics.mean(cells),
    }


_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float, float, str] | None:
    """(parent, own CPU s, reaped children's CPU s, command line) of a live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    # proc(5): ppid, utime, stime, cutime, cstime are fields 4, 14-17.
    own = (int(fields[11]) + int(fields[12])) / _TICK
    return int(fields[1]), own, (int(fields[13]) + int(fields[14])) / _TICK, command


def _processes(roots: list[int]) -> list[tuple[int, float, float, str]]:
    """(pid, own CPU s, reaped children's CPU s, command line) of each live
    process at or under `roots`."""
    table = {
        pid: row
        for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        if (row := _stat(pid))
    }
    children: dict[int, list[int]] = {}
    for pid, row in table.items():
        children.setdefault(row[0], []).append(pid)
    found, todo = [], [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        found.append((pid, *table[pid][1:]))
    return found


def _machine_busy() -> float:
    """Every CPU's busy time so far (/proc/stat): all but idle and iowait."""
    with open("/proc/stat") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICK


def service_cpu(root: int) -> dict[str, float]:
    """CPU seconds so far of `cellblock serve` (pid `root`) and every process
    under it, by role. A program is reaped by its cell's init, so its CPU is
    in the init's children's figure; an init that ended (and its programs) is
    in its maker's. `machine` is every CPU's busy time."""
    roles = dict.fromkeys(("API", "Redis", "workers", "inits", "programs", "ended cells"), 0.0)
    for pid, own, reaped, command in _processes([root]):
        if pid == root:
            roles["API"] += own
        elif command.startswith("redis-server"):
            roles["Redis"] += own
        elif command.startswith("cellblock-init"):
            roles["inits"] += own
            roles["programs"] += reaped
        else:  # the supervisor, its workers, their cell makers and outer forks
            roles["workers"] += own
            if "worker --redis-url" not in command:
                roles["ended cells"] += reaped
    roles["machine"] = _machine_busy()
    return roles


def plain_cpu(service: PlainService) -> dict[str, float]:
    """CPU seconds so far of bench/plain_service.py's processes, by role as
    service_cpu counts them: the programs are the workers' reaped children."""
    roles = dict.fromkeys(("API", "Redis", "workers", "programs"), 0.0)
    assert service.redis.process is not None
    workers = {process.pid for process in service.workers}
    for pid, own, reaped, _ in _processes([service.api.pid, service.redis.process.pid, *workers]):
        if pid == service.api.pid:
            roles["API"] += own
        elif pid == service.redis.process.pid:
            roles["Redis"] += own
        elif pid in workers:
            roles["workers"] += own
            roles["programs"] += reaped
    roles["machine"] = _machine_busy()
    return roles


def callers_cpu(callers: list[int]) -> dict[str, float]:
    """CPU seconds so far of the processes that call sandbox.run (`callers`,
    the pool's) and of every process under them, by role as service_cpu
    counts them: the callers, their cell makers, the cells' inits and
    programs (an ended cell's in its maker's or caller's reaped figure), and
    `machine`, every CPU's busy time."""
    roles = dict.fromkeys(("callers", "makers", "inits", "programs", "ended cells"), 0.0)
    for pid, own, reaped, command in _processes(callers):
        if command.startswith("cellblock-init"):
            roles["inits"] += own
            roles["programs"] += reaped
        else:
            roles["callers" if pid in callers else "makers"] += own
            roles["ended cells"] += reaped
    roles["machine"] = _machine_busy()
    return roles


def interpreter_start(runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _split_cells(spent: dict[str, float], programs: float) -> None:
    """Split the cells' CPU per run into `inits` and `programs` (`programs`:
    theirs, measured by each run's cgroup) exactly. /proc has an init that
    ended, and its programs, only in one reaped figure (its maker's: `ended
    cells`); sampling the inits while they live misses what a short-lived cell
    did after the last sample. The inits' is the rest."""
    cells = spent.pop("inits") + spent.pop("programs") + spent.pop("ended cells")
    spent["inits"], spent["programs"] = cells - programs, programs


def _with_rest(spent: dict[str, float], ours: float) -> dict[str, float]:
    """`spent` with the machine's busy time not in it (kernel threads mostly)
    as `other`; `ours`, this process's own (the clients, the dispatch), apart."""
    spent["other"] = spent.pop("machine") - sum(spent.values()) - ours
    return spent


def _per_run(before: dict[str, float], after: dict[str, float], runs: int) -> dict[str, float]:
    return {k: (after[k] - before[k]) / runs for k in after}


SERVICE_DOORS = ("serve wait", "serve poll", "serve pinned", "fastapi+rq")


def _cpu_key(door: str) -> str:
    return "cpu_per_submission_s" if door in SERVICE_DOORS else "cpu_per_run_s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="programs at a time (bare, cli)")
    parser.add_argument("--clients", type=int, default=32, help="HTTP clients at a time")
    parser.add_argument(
        "--doors",
        default="bare,sandbox.run,recycled,cli,cli served,cli native,serve wait,serve poll,"
        "serve pinned,bubblewrap,fastapi+rq",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    wanted = [d.strip() for d in args.doors.split(",")]
    sentinel = "cellblock-" + secrets.token_hex(8)
    sources = programs(sentinel)
    service = Service(args.jobs) if {"serve wait", "serve poll"} & set(wanted) else None
    pinned = Service(args.jobs, pin_cpus=True) if "serve pinned" in wanted else None
    plain = PlainService(args.jobs) if "fastapi+rq" in wanted else None
    run_server = RunServer() if {"cli served", "cli native"} & set(wanted) else None
    pool = ProcessPoolExecutor(args.jobs) if "sandbox.run" in wanted else None
    recycling = (
        ProcessPoolExecutor(args.jobs, initializer=_recycle) if "recycled" in wanted else None
    )
    rates: dict[str, list[float]] = {door: [] for door in wanted}
    ratios: dict[str, list[float]] = {door: [] for door in wanted}
    stages: dict[str, dict[str, float]] = {}
    cpu: dict[str, dict[str, float]] = {}  # a door's CPU per program, by role
    failures: dict[str, int] = {}
    try:
        for warming in (pool, recycling):  # each process warms up (imports, its cell maker)
            if warming is not None:
                list(warming.map(_in_cell, sources[: 4 * args.jobs]))
        for round_index in range(args.rounds):
            order = wanted[round_index % len(wanted) :] + wanted[: round_index % len(wanted)]
            seconds: dict[str, float] = {}
            for door in order:
                start = time.perf_counter()
                if door == "bare":
                    oks = door_bare(sources, args.jobs, sentinel)
                elif door == "bubblewrap":
                    oks = door_bare(sources, args.jobs, sentinel, bwrap_argv)
                elif door == "fastapi+rq":
                    assert plain is not None
                    before, cpu_before = os.times(), plain_cpu(plain)
                    oks = door_plain(sources, plain, args.clients, sentinel)
                    after, cpu_after = os.times(), plain_cpu(plain)
                    clients = after.user + after.system - before.user - before.system
                    spent = _per_run(cpu_before, cpu_after, len(sources))
                    cpu[door] = _with_rest(spent, clients / len(sources))
                elif door in ("sandbox.run", "recycled"):
                    executor = pool if door == "sandbox.run" else recycling
                    assert executor is not None
                    callers = list(executor._processes)  # the pool's, started by warming
                    before, cpu_before = os.times(), callers_cpu(callers)
                    oks, in_programs = door_sandbox(sources, executor, sentinel)
                    after, cpu_after = os.times(), callers_cpu(callers)
                    spent = _per_run(cpu_before, cpu_after, len(sources))
                    _split_cells(spent, in_programs / len(sources))
                    ours = after.user + after.system - before.user - before.system
                    cpu[door] = _with_rest(spent, ours / len(sources))
                elif door == "cli":
                    oks = door_cli(sources, args.jobs, sentinel)
                elif door == "cli served":
                    assert run_server is not None
                    oks = door_cli(sources, args.jobs, sentinel, run_server.env)
                elif door == "cli native":
                    assert run_server is not None
                    oks = door_cli(
                        sources, args.jobs, sentinel, run_server.env, run_server.launcher
                    )
                elif door in ("serve wait", "serve poll", "serve pinned"):
                    serving = pinned if door == "serve pinned" else service
                    assert serving is not None
                    before, cpu_before = os.times(), service_cpu(serving.process.pid)
                    oks, records = door_serve(
                        sources, serving, args.clients, sentinel, poll=door == "serve poll"
                    )
                    after, cpu_after = os.times(), service_cpu(serving.process.pid)
                    stages[door] = service_stages(records)
                    clients = after.user + after.system - before.user - before.system
                    stages[door]["clients' own CPU_s"] = clients / len(sources)
                    spent = _per_run(cpu_before, cpu_after, len(sources))
                    in_programs = sum(cell_seconds(r.get("result") or {}, "time") for r in records)
                    _split_cells(spent, in_programs / len(sources))
                    cpu[door] = _with_rest(spent, clients / len(sources))
                else:
                    parser.error(f"unknown door {door!r}")
                seconds[door] = time.perf_counter() - start
                failures[door] = failures.get(door, 0) + oks.count(False)
                rates[door].append(len(sources) / seconds[door])
            if "bare" in seconds:
                for door in wanted:
                    ratios[door].append(seconds["bare"] / seconds[door])
    finally:
        for executor in (pool, recycling):
            if executor is not None:
                executor.shutdown()
        for serving in (service, pinned):
            if serving is not None:
                serving.stop()
        if run_server is not None:
            run_server.stop()
        if plain is not None:
            plain.stop()
    start_up = interpreter_start() if "cli" in wanted else None
    report = {
        "programs": len(sources),
        "rounds": args.rounds,
        "jobs": args.jobs,
        "clients": args.clients,
        "doors": {
            door: {
                "samples_per_s": round(statistics.median(rates[door]), 2),
                "ratio_to_bare": round(statistics.median(ratios[door]), 3)
                if ratios[door]
                else None,
                "failures": failures.get(door, 0),
                **({"stages": stages[door]} if door in stages else {}),
                **({_cpu_key(door): cpu[door]} if door in cpu else {}),
            }
            for door in wanted
        },
        "cli_interpreter_start_s": start_up,
        "cgroup_moves_wait": moves_wait(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"HumanEval, {len(sources)} canonical programs, {args.rounds} round(s), "
            f"{args.jobs} at a time ({args.clients} HTTP clients)"
        )
        print(cgroup_moves_line(report["cgroup_moves_wait"]))
        print(f"  {'door':<13} {'samples/s':>10} {'x bare':>8}  where the time goes")
        for door, row in report["doors"].items():
            ratio = "" if row["ratio_to_bare"] is None else f"{row['ratio_to_bare']:.2f}"
            where = ""
            if "stages" in row:
                where = ", ".join(f"{k[:-2]} {v * 1000:.1f} ms" for k, v in row["stages"].items())
            if door == "cli" and start_up is not None:
                where = f"interpreter start {start_up * 1000:.1f} ms per run"
            bad = f"  {row['failures']} FAILED" if row["failures"] else ""
            print(f"  {door:<13} {row['samples_per_s']:>10.1f} {ratio:>8}  {where}{bad}")
            if _cpu_key(door) in row:
                spent = row[_cpu_key(door)]
                unit = "submission" if door in SERVICE_DOORS else "run"
                print(
                    f"  {'':<32}CPU per {unit} {sum(spent.values()) * 1000:.1f} ms: "
                    + ", ".join(f"{k} {v * 1000:.1f}" for k, v in spent.items())
                )
    return 1 if any(failures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
