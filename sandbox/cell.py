"""The orchestrator: one run in a fresh cell, step by step.

Three processes take part (four when the caller is multi-threaded):

    supervisor (the caller: the worker, the CLI, a harness): makes the run's cgroup
      ├─ [threaded caller only] outer: unshares the namespaces, waits for its id maps,
      │   forks the init
      └─ init (PID 1; cloned straight into the new namespaces by a single-threaded
         caller, which then writes its id maps): builds the root and lo, then waits
         for the run (a Launch and its fds over the socket; a warm cell waits here
         ahead of time), makes the program's process, copy-in (read-only binds),
         lets the program go, answers its byte-range lock requests (locks.py),
         reaps, ends every process, copy-out, reports
           └─ program: a clone(CLONE_VM) child in C (spawn.c) that enters the run's
              cgroup, waits, drops everything it may not keep and execs the command

With warm cells on (sandbox.warm), cells are made ahead of time by the cell
maker (maker.py), a small process of the supervisor's: it clones the inits
instead of the supervisor, and an init made so is the maker's child.

The supervisor never enters a namespace and never touches a path inside the
cell. Every step below calls one mechanism module (userns, mounts, net, caps,
rlimits, seccomp, landlock, files, spawn, warm, maker, init, watchdog, verdict)
and reads top to bottom.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import pickle
import select
import signal
import threading
import time
import typing
from dataclasses import dataclass, field

from . import (
    cgroups,
    files,
    landlock,
    libc,
    locks,
    maker,
    mounts,
    net,
    rlimits,
    seccomp,
    spawn,
    userns,
    warm,
)
from .channel import CellError, Channel, ChannelClosed
from .images import PRIVATE_SCAN, private_entries, resolve_image
from .init import ProgramExit, hide_command_line, note_command_line, reset_signals, supervise
from .spec import Limits, RunResult, RunSpec, Status, cell_path
from .verdict import Facts, decide
from .watchdog import Observed, watch

NAMESPACES = (
    libc.CLONE_NEWUSER
    | libc.CLONE_NEWNS
    | libc.CLONE_NEWPID
    | libc.CLONE_NEWNET
    | libc.CLONE_NEWIPC
    | libc.CLONE_NEWUTS
)
HOSTNAME = "cellblock"
SETUP_TIMEOUT = 20.0  # seconds for the namespaces and mounts; they take milliseconds


@dataclass(frozen=True)
class Birth:
    """What a cell needs from its first instant: known before any run is (a warm
    cell is made from it ahead of time), and the key of the warm pool. The id
    map is a template: each cell gets a slot of its own (userns.hold_ids)."""

    plan: mounts.RootPlan
    idmap: userns.IdMap


@dataclass
class Launch:
    """One run, sent to a made cell's init (channel.send_launch) with its fds in
    this order: stdin, stdout, stderr, cgroup.procs fds, the cgroup dir, copy-ins."""

    program: spawn.ProgramStart
    copy_in: list[tuple[str, int]]  # (path under /box, mode), one fd each
    readonly: tuple[str, ...]
    copy_out: tuple[str, ...]
    file_size: int
    cgroup_fds: int  # how many cgroup.procs fds
    cgroup_dir: bool  # whether a cgroup dir fd follows them


@dataclass
class MadeCell:
    """A cell whose init is running (building its root, or waiting for a launch).

    Made by this process (the init is our child) or by the cell maker (maker.py:
    the init is the maker's child, which the maker reaps; we kill it, if we
    must, by a pidfd that comes as the first message on the channel, read by
    `confirm`)."""

    pid: int  # 0 for a maker's cell until confirmed
    host: Channel
    ids: userns.HeldIds  # its id map, and the lock on its host ids
    owner: int = field(default_factory=os.getpid)  # the process that may use it
    by_maker: bool = False
    pidfd: int | None = None

    def confirm(self) -> None:
        """Read the maker's answer (CellError if it failed); a no-op for our own."""
        if self.by_maker and self.pid == 0:
            self.host.sock.settimeout(SETUP_TIMEOUT)
            self.pid, self.pidfd = self.host.receive_made()

    def discard(self) -> None:
        """Kill it (the init takes the whole PID namespace along) and reap it.
        A maker's cell not confirmed yet ends itself: its init reads EOF where
        it waits for a launch."""
        if not self.by_maker:
            _kill_quietly(self.pid)
        elif self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        self.host.close()
        self.finished()
        if not self.by_maker:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)

    def finished(self) -> None:
        """The run is over (every process of the cell is dead), the init is
        exiting: its host ids may serve another cell. The maker reaps its own
        inits (ours are reaped by _reap_exiting)."""
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.ids.release()


_EXITING: list[int] = []  # first processes (init or outer) of finished cells, not reaped yet
_EXITING_LOCK = threading.Lock()  # callers may run cells from several threads


def _reap_exiting(block: bool) -> None:
    with _EXITING_LOCK:
        for pid in list(_EXITING):
            try:
                done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:  # someone else's waitpid(-1) took it
                done = pid
            if done:
                _EXITING.remove(pid)


def reap_finished() -> None:
    """Wait for the inits of finished runs (they exit a moment after reporting)."""
    _reap_exiting(block=True)


def _at_exit() -> None:
    warm.release()
    _reap_exiting(block=True)


atexit.register(_at_exit)


def run_cell(spec: RunSpec) -> RunResult:
    """Run spec.argv in a fresh cell and report what happened."""
    try:
        return _run_cell(spec)
    finally:
        for fd in (spec.stdin_fd, spec.stdout_fd):  # handed over by the caller: ours to close
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _run_cell(spec: RunSpec) -> RunResult:
    _reap_exiting(block=False)
    # 1. Everything that can fail for the caller's reasons fails here, before fork.
    image = resolve_image(spec.image)
    bpf = seccomp.compile_profile(spec.seccomp)
    try:
        spawn.load()
    except (spawn.SpawnUnavailable, OSError) as error:
        return RunResult(Status.IE, message=f"sandbox failure: {error}")
    idmap = userns.choose_idmap()
    limits = spec.limits
    hidden = (
        tuple((d, private_entries(d)) for d in image.host_dirs if d in PRIVATE_SCAN)
        if idmap.program_is_caller
        else ()
    )
    plan = mounts.RootPlan(
        image,
        limits.effective_tmpfs_size,
        limits.tmpfs_inodes,
        idmap.run_uid,
        idmap.run_gid,
        hidden,
    )
    birth = Birth(plan, idmap)
    hierarchy, no_cgroup_reason = cgroups.find()
    fds = _OpenFds()
    group: cgroups.CellCgroup | None = None
    made: MadeCell | None = None
    cgroup_fds: list[int] = []
    cgroup_dir: list[int] = []
    try:
        # The run's own cgroup: limits, the CPU meter, the kill switch, the figures.
        if hierarchy is not None:
            try:
                group = hierarchy.create(limits)
                cgroup_fds = [fds.add(fd) for fd in group.open_procs()]
                # Being born in the cgroup (no task migration) needs write access
                # with the init's own ids: true when cell root is us (rootless),
                # not when root maps it to an unprivileged uid.
                if idmap.cell_root_is_caller:
                    directory = group.open_dir()
                    cgroup_dir = [fds.add(directory)] if directory is not None else []
            except (cgroups.CgroupError, OSError) as error:
                return RunResult(Status.IE, message=f"sandbox failure: cgroup: {error}")
        stdin_fd = (
            spec.stdin_fd if spec.stdin_fd is not None else fds.add(files.stdin_fd(spec.stdin))
        )
        copy_in = files.open_copy_in(spec.copy_in)
        for entry in copy_in:
            fds.add(entry.fd)
        stdout_r, stdout_w = (fds.add(fd) for fd in os.pipe2(os.O_CLOEXEC))
        if spec.stdout_fd is not None:  # not captured: the watchdog reads EOF at once
            fds.close(stdout_w)
            stdout_w = spec.stdout_fd
        stderr_r, stderr_w = (fds.add(fd) for fd in os.pipe2(os.O_CLOEXEC))
        controllers = group.controllers if group is not None else ()
        launch = Launch(
            program=spawn.ProgramStart(
                argv=tuple(spec.argv),
                env=spec.environment(),
                rlimit_table=rlimits.rlimit_table(limits, controllers),
                run_uid=idmap.run_uid,
                run_gid=idmap.run_gid,
                clear_groups=not idmap.deny_setgroups,
                bpf=bpf,
                landlock=landlock.cell_ruleset(),
                notify=seccomp.notifies(bpf),
            ),
            copy_in=[(entry.path, entry.mode) for entry in copy_in],
            readonly=tuple(spec.readonly),
            copy_out=tuple(spec.copy_out),
            file_size=limits.file_size,
            cgroup_fds=len(cgroup_fds),
            cgroup_dir=bool(cgroup_dir),
        )
        sent = [
            stdin_fd,
            stdout_w,
            stderr_w,
            *cgroup_fds,
            *cgroup_dir,
            *(entry.fd for entry in copy_in),
        ]

        # 2. A cell: a warm one made ahead of time (sandbox.warm), or a new one.
        # 3. The run goes to its init; our copies of the cell's ends go now, or
        #    the pipes would never see EOF.
        try:
            made = typing.cast(MadeCell | None, warm.take(birth))
            if made is not None:
                try:
                    made.host.send_launch(launch, sent)
                except OSError:  # its init died a moment ago: make a new one
                    made.discard()
                    made = None
            if made is None:
                made = _make_cell(birth)
                made.host.send_launch(launch, sent)
        except (CellError, OSError, ValueError, TimeoutError) as error:
            if made is not None:
                made.discard()
            return RunResult(Status.IE, message=f"sandbox failure: {error}")
        for fd in sent:
            fds.close(fd)
        # While this cell's init starts the program, the next run's cell gets
        # made (sandbox.warm; nothing happens unless warm cells are on).
        warm.refill(birth, _make_warm_cell)
        return _supervise(made, birth, limits, stdout_r, stderr_r, group, no_cgroup_reason)
    finally:
        if made is not None:
            made.host.close()
        fds.close_all()
        if group is not None:
            # Every process of the cell is gone (or going: remove() waits and kills).
            with contextlib.suppress(cgroups.CgroupError):
                group.remove()


_clone_refused = False  # set once clone() into namespaces was refused here


def _make_cell(birth: Birth) -> MadeCell:
    """A cell for a run now: from the cell maker if it is up (warm cells on),
    else (or if it fails) cloned by us."""
    made = _ask_maker(birth)
    if made is not None:
        try:
            made.confirm()
            return made
        except (CellError, OSError, ValueError, EOFError):
            made.discard()
    return _clone_cell(birth)


def _make_warm_cell(birth: Birth) -> MadeCell:
    """A cell made ahead of time (warm.refill): asked of the cell maker (its
    answer is read when the cell is taken), or cloned by us while it is not up."""
    return _ask_maker(birth) or _clone_cell(birth)


def _ask_maker(birth: Birth) -> MadeCell | None:
    made_by = maker.current() if warm.enabled() else None
    if made_by is None:
        return None
    ids = userns.hold_ids(birth.idmap)
    host, cell = Channel.pair()
    try:
        made_by.request((birth, ids.idmap), cell.fileno(), host.fileno())
    except OSError:
        host.close()
        ids.release()
        return None
    finally:
        cell.close()
    return MadeCell(0, host, ids, by_maker=True)


def _clone_cell(birth: Birth) -> MadeCell:
    """Start a cell's init in new namespaces and map its ids; it builds its root
    and then waits for a launch."""
    note_command_line()
    ids = userns.hold_ids(birth.idmap)
    host, cell = Channel.pair()
    try:
        # Single-threaded, we clone the init straight into new namespaces; a
        # threaded caller cannot clone safely (glibc's locks, see
        # libc.clone_process), so an outer process forks, unshares every
        # namespace and forks the init.
        global _clone_refused
        cloned = not _clone_refused and libc.single_threaded()
        if cloned:
            try:
                pid = libc.clone_process(NAMESPACES)
            except PermissionError:
                # A seccomp profile that allows unshare but not clone with
                # namespace flags (cellblock's own Docker worker profile, by
                # design): the outer process's way, from now on.
                _clone_refused = cloned = False
            else:
                if pid == 0:
                    _cloned_init(birth, cell, host)  # never returns
        if not cloned:
            supervisor = os.getpid()
            pid = os.fork()
            if pid == 0:
                _outer(birth, cell, host, supervisor)  # never returns
    except BaseException:
        ids.release()
        raise
    finally:
        cell.close()
    made = MadeCell(pid, host, ids)
    try:
        # Map ids of the new user namespace from outside, as only we may (a
        # cloned init's namespace exists already; an outer process says when
        # it has unshared).
        host.sock.settimeout(SETUP_TIMEOUT)
        if not cloned:
            host.expect("unshared")
        userns.write_idmap(pid, ids.idmap)
        host.send("mapped")
    except BaseException:
        made.discard()
        raise
    return made


def can_clone_cells() -> bool:
    """Whether this process may clone into new namespaces (the cell maker asks
    before it says it is up: Docker's worker profile refuses it)."""
    try:
        pid = libc.clone_process(NAMESPACES)
    except PermissionError:
        return False
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return True


def make_init(
    birth: Birth, idmap: userns.IdMap, cell: Channel, host: Channel, own_pidfd: int
) -> int:
    """In the cell maker (single-threaded): clone an init for the caller that
    sent both ends of its channel, map its ids (`idmap`: the range the caller
    holds for it), tell the caller the init's pid and a pidfd. Returns the
    init's pid, for the maker to reap."""
    note_command_line()
    pid = libc.clone_process(NAMESPACES)
    if pid == 0:
        _cloned_init(birth, cell, host, own_pidfd)  # never returns
    try:
        userns.write_idmap(pid, idmap)
        host.send("mapped")
        # The caller's launch must come after "mapped", so the caller hears of
        # the cell only now; before this, the init can only have said "error".
        pidfd = os.pidfd_open(pid)
        try:
            cell.send_made(pid, pidfd)
        finally:
            os.close(pidfd)
    except BaseException:
        _kill_quietly(pid)
        os.waitpid(pid, 0)
        raise
    return pid


def _supervise(
    made: MadeCell,
    birth: Birth,
    limits: Limits,
    stdout_r: int,
    stderr_r: int,
    group: cgroups.CellCgroup | None,
    no_cgroup_reason: str,
) -> RunResult:
    host = made.host
    finished = False
    try:
        # 4. The init starts the program; then we watch it.
        made.confirm()
        host.sock.settimeout(SETUP_TIMEOUT)
        started = host.expect("started")
        host.sock.settimeout(None)
        seen = watch(
            host,
            stdout_r,
            stderr_r,
            started["start"],
            limits.effective_wall_time,
            limits.time,
            limits.output_limit,
            meter=group,
        )
        # Every process of the cell is dead now; the init is exiting (namespace
        # teardown takes a millisecond or two). Reap it without waiting when it
        # is done, else at the next run or at exit.
        made.finished()
        if not made.by_maker:
            with _EXITING_LOCK:
                _EXITING.append(made.pid)
        finished = True
        _reap_exiting(block=False)
        return _result(limits, seen, group, no_cgroup_reason, made.ids.shared)
    except (CellError, OSError, ValueError, TimeoutError) as error:
        return RunResult(Status.IE, message=f"sandbox failure: {error}")
    finally:
        if not finished:
            # The init dies, and with it every process of its PID namespace.
            if group is not None:
                group.kill()
            made.discard()


def _result(
    limits: Limits,
    seen: Observed,
    group: cgroups.CellCgroup | None,
    no_cgroup_reason: str,
    shared_ids: str | None,
) -> RunResult:
    report = seen.report
    assert report is not None and seen.stdout is not None and seen.stderr is not None
    # The init reported after its last child was reaped: the cgroup is empty
    # and its counters final. Without one, the init's rusage is the best figure.
    cpu_time, memory, oom_kills = report["cpu_time"], report["max_rss"], 0
    degraded: list[str] = []  # the figures' shortcomings (and, below, the isolation's)
    if group is not None:
        usage = group.usage()
        cpu_time, oom_kills = usage.cpu_time, usage.oom_kills
        if usage.memory_peak is not None:
            memory = usage.memory_peak
        else:
            degraded.append(
                "no memory.peak (Linux < 5.19): memory is the largest process's peak RSS"
            )
        missing = [c for c in ("memory", "pids") if c not in group.controllers]
        if missing:
            degraded.append(f"no {' or '.join(missing)} controller: limited by rlimits only")
    else:
        degraded.append(
            f"no cgroup ({no_cgroup_reason}): time is the sum over reaped "
            "processes, memory the largest process's peak RSS, and memory/pids "
            "are limited by rlimits only"
        )
    facts = Facts(
        wait_status=report["wait_status"],
        cpu_time=cpu_time,
        wall_time=report["end"] - report["start"],
        oom_killed=oom_kills > 0,
        output_truncated=seen.stdout.truncated or seen.stderr.truncated,
        kill_reason=seen.kill_reason,
        exec_error=report.get("exec_error"),
    )
    if report.get("internal_error"):
        return RunResult(Status.IE, message=f"sandbox failure: {report['internal_error']}")
    status, exit_code, sig, message = decide(facts, limits)
    if report.get("locks_refused"):
        message += (
            f" ({report['locks_refused']} byte-range lock requests refused: a cell "
            f"holds at most {locks.LOCK_CAP})"
        )
    if degraded:
        message += f" (figures degraded: {'; '.join(degraded)})"
    # Not about this run's figures: in `degraded` only.
    if report.get("locks_unsupervised"):
        degraded.insert(
            0,
            "byte-range locks are refused (ENOSYS): nothing answers the seccomp "
            f"filter's lock requests ({report['locks_unsupervised']})",
        )
    if report.get("bound_host_dirs"):
        degraded.insert(
            0,
            f"host {', '.join(report['bound_host_dirs'])} shown by bind mounts "
            "(mounts beneath them): the program holds the host's own inodes there",
        )
    if shared_ids:
        degraded.insert(0, shared_ids)
    return RunResult(
        status=status,
        exit_code=exit_code,
        signal=sig,
        oom_killed=facts.oom_killed,
        time=round(facts.cpu_time, 6),
        wall_time=round(facts.wall_time, 6),
        memory=memory,
        stdout=seen.stdout.text(),
        stderr=seen.stderr.text(),
        stdout_truncated=seen.stdout.truncated,
        stderr_truncated=seen.stderr.truncated,
        message=message,
        files=seen.files,
        degraded=degraded,
    )


# --- the outer process (threaded callers only) -------------------------------


def _outer(birth: Birth, cell: Channel, host: Channel, supervisor: int) -> None:
    """Unshare the namespaces, wait for the id maps, fork the init, wait for it."""
    code = 1
    gc.disable()  # no finalizer of the supervisor's garbage may run here
    try:
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != supervisor:
            return  # the supervisor died before PDEATHSIG was armed
        host.close()
        _keep_only_fds([cell.fileno()])
        libc.unshare(NAMESPACES)
        cell.send("unshared")
        cell.expect("mapped")
        userns.become_cell_root(birth.idmap)
        # The init must not outlive us; this pipe tells it whether we are still here.
        alive_r, alive_w = os.pipe2(os.O_CLOEXEC)
        init_pid = os.fork()
        if init_pid == 0:
            os.close(alive_w)
            _init(birth, cell, alive_r)  # never returns
        os.close(alive_r)
        cell.close()
        _, status = os.waitpid(init_pid, 0)
        code = os.waitstatus_to_exitcode(status) & 0xFF
    except BaseException as error:  # noqa: BLE001 - report anything, then die
        _report_error(cell, f"outer: {error}")
    finally:
        os._exit(code)


# --- the init: PID 1 of the cell -------------------------------------------


def _cloned_init(
    birth: Birth, cell: Channel, host: Channel, parent_pidfd: int | None = None
) -> None:
    """Born PID 1 of the new namespaces (clone_process): wait for the id maps.
    `parent_pidfd` (the cell maker's own) says whether our parent is still there."""
    gc.disable()  # no finalizer of the supervisor's garbage may run here
    try:
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if parent_pidfd is not None and select.select([parent_pidfd], [], [], 0)[0]:
            os._exit(1)  # the maker died before PDEATHSIG was armed
        host.close()
        _keep_only_fds([cell.fileno()])
        # EOF here if the supervisor that cloned us died before PDEATHSIG was
        # armed (a maker's cell: see above; the caller holds the host end).
        cell.expect("mapped")
        userns.become_cell_root(birth.idmap)
    except BaseException as error:  # noqa: BLE001 - report anything, then die
        _report_error(cell, f"init: {error}")
        os._exit(1)
    _init(birth, cell, alive_r=None)


def _init(birth: Birth, cell: Channel, alive_r: int | None) -> None:
    code = 1
    try:
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if alive_r is not None:  # forked by an outer process
            if select.select([alive_r], [], [], 0)[0]:  # EOF: the outer one already died
                return
            os.close(alive_r)
        libc.prctl(libc.PR_SET_DUMPABLE, 0)
        hide_command_line()
        reset_signals(keep_sigchld_wakeup=True)

        # The cell, before any run is known (a warm cell waits here).
        bound = mounts.build_root(birth.plan)
        libc.sethostname(HOSTNAME)
        net.loopback_up()
        if not select.select([cell], [], [], 0)[0]:  # no launch waiting yet: a warm cell
            _rehearse_launch()
        try:
            launch, fds = cell.receive_launch()
        except ChannelClosed:  # a warm cell nobody used: the supervisor has gone
            code = 0
            return
        launch = typing.cast(Launch, launch)

        # The program's process, made first (a C child that copies nothing of
        # ours, spawn.py): it gets into the run's cgroup while we copy files in.
        # Our copies of its fds go at once.
        stdio, fds = fds[:3], fds[3:]
        cgroup_fds, fds = fds[: launch.cgroup_fds], fds[launch.cgroup_fds :]
        cgroup_dir, copy_in_fds = (fds[0], fds[1:]) if launch.cgroup_dir else (None, fds)
        pending = spawn.prepare_program(launch.program, stdio, cgroup_fds, cgroup_dir)
        for fd in [*stdio, *cgroup_fds, *([cgroup_dir] if cgroup_dir is not None else [])]:
            os.close(fd)

        box = files.open_box()
        copy_in = [
            files.CopyIn(path, fd, mode)
            for (path, mode), fd in zip(launch.copy_in, copy_in_fds, strict=True)
        ]
        files.copy_into_box(box, copy_in, birth.idmap.run_uid, birth.idmap.run_gid)
        for fd in copy_in_fds:
            os.close(fd)
        for path in launch.readonly:  # the init made these files a moment ago
            mounts.bind_read_only(box, cell_path(path))

        start = time.monotonic()
        started = pending.go()
        program_pid = started.pid
        cell.send("started", start=start, pid=program_pid)

        try:
            done: ProgramExit = supervise(cell, program_pid, start, started.listener)
        finally:
            locks.close(started.listener)
        files.send_box_files(box, cell, launch.copy_out, launch.file_size)
        report: dict[str, object] = {
            "wait_status": done.wait_status,
            "start": done.start,
            "end": done.end,
            "cpu_time": done.cpu_time,
            "max_rss": done.max_rss,
        }
        if bound:
            report["bound_host_dirs"] = bound
        if done.locks_refused:
            report["locks_refused"] = done.locks_refused
        if started.listener_error:
            report["locks_unsupervised"] = started.listener_error
        if started.internal_error:
            report["internal_error"] = started.internal_error
        elif started.exec_error:
            report["exec_error"] = started.exec_error
        cell.send("exited", **report)
        code = 0
    except BaseException as error:  # noqa: BLE001 - report anything, then die
        _report_error(cell, f"init: {error}")
    finally:
        os._exit(code)


def _rehearse_launch() -> None:
    """Handle a dummy launch while no run waits: this process is a copy-on-write
    clone of the caller, and the first write to each page it shares costs a
    fault. Unpickling a launch and building the program's start arguments
    write pages that nothing wrote yet; doing it while a warm cell waits takes
    those faults off the run's path: 0.5-1.5 ms of a warm run (bench/README)."""
    start = spawn.ProgramStart(("true",), {"PATH": "/"}, [(0, 0, 0)], 0, 0, False, bytes(8))
    dummy = Launch(start, [("a", 0o644)], ("a",), ("a",), 1, 0, False)
    pickle.loads(pickle.dumps((dummy, 3)))
    spawn.rehearse(start)


def _keep_only_fds(keep: list[int]) -> None:
    """Close every descriptor but `keep` (those of the supervisor: sockets, logs)."""
    low = 3
    for fd in sorted(set(keep)):
        if fd >= low:
            if fd > low:
                libc.close_range(low, fd - 1)
            low = fd + 1
    libc.close_range(low)


def _report_error(channel: Channel, message: str) -> None:
    with contextlib.suppress(OSError):
        channel.send("error", message=message)


class _OpenFds:
    """The supervisor's descriptors for one run, each closed exactly once."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def add(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def close(self, fd: int) -> None:
        if fd in self.fds:
            self.fds.remove(fd)
            os.close(fd)

    def close_all(self) -> None:
        while self.fds:
            os.close(self.fds.pop())


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
