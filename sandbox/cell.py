"""The orchestrator: one run in a fresh cell, step by step.

Four processes take part:

    supervisor (the caller: the worker, the CLI, a harness): makes the run's cgroup
      └─ cellblock-init, outer (sandbox/init.c, posix_spawn'ed: nothing of the
         supervisor's memory is copied into it): unshares the namespaces, waits for
         its id maps (written by the supervisor), forks the init, waits for it
           └─ init (PID 1 of the new PID namespace): builds the root and lo, then
              waits for the run (a Launch and its fds over the socket; a warm cell
              waits here ahead of time), makes the program's process, copy-in
              (read-only binds), lets the program go, answers its byte-range lock
              requests (locks.c), reaps, ends every process, copy-out, reports
                └─ program: a clone(CLONE_VM) child (spawn.c) that enters the run's
                   cgroup, waits, drops everything it may not keep and execs the
                   command

With warm cells on (sandbox.warm), cells are made ahead of time by the cell
maker (maker.py), a small process of the supervisor's: it spawns the inits
instead of the supervisor, and an init made so is the maker's grandchild.

The supervisor never enters a namespace and never touches a path inside the
cell. Every step below calls one mechanism module (userns, mounts, caps,
rlimits, seccomp, landlock, files, spawn, warm, maker, watchdog, verdict) and
reads top to bottom; how the init comes to be is making.py, its life init.c.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
import typing

from . import (
    cgroups,
    files,
    imageuser,
    landlock,
    locks,
    maker,
    making,
    mounts,
    rlimits,
    seccomp,
    spawn,
    userns,
    warm,
    wire,
)
from .channel import CellError, ChannelClosed
from .images import PRIVATE_SCAN, private_entries, resolve_image
from .init import Birth, Launch
from .making import MadeCell
from .spec import BASE_ENV, Limits, RunResult, RunSpec, SpecError, Status
from .verdict import Facts, decide
from .watchdog import Observed, watch


def _at_exit() -> None:
    warm.release()
    making.reap_exiting(block=True)


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
    making.reap_exiting(block=False)
    # 1. Everything that can fail for the caller's reasons fails here, before fork.
    image = resolve_image(spec.image)
    argv = image.command(spec.argv)
    if not argv:
        raise SpecError("command: nothing to run (give a command after --)")
    bpf = seccomp.compile_profile(spec.seccomp)
    notify = seccomp.notifies(bpf)
    bpf_unsupervised = (
        seccomp.compile_profile(spec.seccomp, sockets_to_init=False)
        if notify and seccomp.caller_filtered()
        else b""
    )
    try:
        making.init_path()
    except making.InitUnavailable as error:
        return RunResult(Status.IE, message=f"sandbox failure: {error}")
    idmap = userns.choose_idmap()
    if image.config is not None and image.config.user:  # the image's User, where it can be
        idmap = imageuser.run_as(image.config.user, image.layers, idmap, image.name)
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
    cgroup_fds: list[int] = []
    cgroup_dir: list[int] = []
    # 2. A cell: a warm one made ahead of time (sandbox.warm), or one started
    #    now, whose init starts (its execve, its namespaces) while we prepare
    #    the run; it is finished (its ids mapped) when the run is ready. A
    #    recycled cell's init renews it while we prepare, then takes the launch.
    made = typing.cast(MadeCell | None, warm.take(birth))
    starting = _start_cell(birth) if made is None else None
    launched = False
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
        if spec.stderr_to_stdout:  # the stderr pipe's reader sees EOF at once
            fds.close(stderr_w)
            stderr_w = stdout_w
        controllers = group.controllers if group is not None else ()
        launch = Launch(
            program=spawn.ProgramStart(
                argv=argv,
                env=image.environment(BASE_ENV, spec.env),
                rlimit_table=rlimits.rlimit_table(limits, controllers),
                run_uid=idmap.run_uid,
                run_gid=idmap.run_gid,
                clear_groups=not idmap.deny_setgroups,
                bpf=bpf,
                landlock=landlock.cell_ruleset(),
                notify=notify,
                sockets_noted=seccomp.supervises_sockets(bpf),
                bpf_unsupervised=bpf_unsupervised,
                cwd=image.working_dir,
            ),
            copy_in=[(entry.path, entry.mode) for entry in copy_in],
            readonly=tuple(spec.readonly),
            copy_out=tuple(spec.copy_out),
            file_size=limits.file_size,
            cgroup_fds=len(cgroup_fds),
            cgroup_dir=bool(cgroup_dir),
            recycle=warm.recycling(),
        )
        sent = [
            stdin_fd,
            stdout_w,
            stderr_w,
            *cgroup_fds,
            *cgroup_dir,
            *(entry.fd for entry in copy_in),
        ]

        record = wire.launch_record(launch, len(sent))

        # 3. The run goes to its init; our copies of the cell's ends go now, or
        #    the pipes would never see EOF.
        try:
            if made is not None:
                try:
                    made.host.send_launch(record, sent)
                    # A recycled cell's init reads the launch once it is renewed;
                    # a renewal that failed ends it, and the launch goes to a
                    # new cell (our copies of its descriptors are still open).
                    made.ready()
                except (OSError, CellError, ChannelClosed, ValueError):
                    made.discard()  # its init died a moment ago: make a new one
                    made = None
            if made is None:
                pending, starting = starting, None  # finished or cleaned up by _finish_cell
                made = _finish_cell(pending, birth)
                made.host.send_launch(record, sent)
            launched = True
            if made.first_launch is None:
                made.first_launch = time.monotonic()
        except (CellError, ChannelClosed, OSError, ValueError, TimeoutError) as error:
            if made is not None:
                made.discard()
                made = None
            return RunResult(Status.IE, message=f"sandbox failure: {error}")
        for fd in sent:
            fds.close(fd)
        # While this cell's init starts the program, the next run's cell gets
        # made (sandbox.warm; nothing happens unless warm cells are on); a
        # recycled cell comes back instead, unless its run goes wrong.
        if not launch.recycle:
            warm.refill(birth, _make_warm_cell)
        result, kept = _supervise(
            made, birth, launch.recycle, limits, stdout_r, stderr_r, group, no_cgroup_reason
        )
        if launch.recycle and not kept:
            warm.refill(birth, _make_warm_cell)
        if kept:
            made = None  # the pool's now: its channel stays open
        return result
    finally:
        # The run failed before it needed its cell (the caller's error, a cgroup's):
        # a cell started for it, or taken from the pool, ends.
        if starting is not None:
            _abandon(starting)
        if made is not None and not launched:
            made.discard()
        elif made is not None:
            made.host.close()
        fds.close_all()
        if group is not None:
            # Every process of the cell is gone (or going: remove() waits and kills).
            with contextlib.suppress(cgroups.CgroupError):
                group.remove()


def _start_cell(birth: Birth) -> MadeCell | making.SpawnedInit | None:
    """A cell for a run now, started: asked of the cell maker if it is up (warm
    cells on), else spawned by us (None if that failed: _finish_cell tries
    again, and its error is the run's)."""
    made = making.ask_maker(birth, _maker())
    if made is not None:
        return made
    try:
        return making.start_spawn(birth)
    except (CellError, OSError, ValueError):
        return None


def _finish_cell(starting: MadeCell | making.SpawnedInit | None, birth: Birth) -> MadeCell:
    """The cell `starting` ready for its launch: the maker's answer read, or
    our own init's ids mapped; one the maker failed to make is spawned by us."""
    if isinstance(starting, making.SpawnedInit):
        return starting.finish()
    if starting is not None:
        try:
            starting.confirm()
            return starting
        except (CellError, OSError, ValueError, EOFError):
            starting.discard()
    return making.spawn_cell(birth)


def _abandon(starting: MadeCell | making.SpawnedInit) -> None:
    if isinstance(starting, making.SpawnedInit):
        starting.abandon()
    else:
        starting.discard()


def _make_warm_cell(birth: Birth) -> MadeCell:
    """A cell made ahead of time (warm.refill): asked of the cell maker (its
    answer is read when the cell is taken), or spawned by us while it is not up."""
    return making.ask_maker(birth, _maker()) or making.spawn_cell(birth)


def _maker() -> maker.Maker | None:
    """The cell maker to ask, if warm cells are on and it is up."""
    return maker.current() if warm.enabled() else None


def _supervise(
    made: MadeCell,
    birth: Birth,
    recycle: bool,
    limits: Limits,
    stdout_r: int,
    stderr_r: int,
    group: cgroups.CellCgroup | None,
    no_cgroup_reason: str,
) -> tuple[RunResult, bool]:
    """Watch the run to its end; its result, and whether its cell was kept
    (recycled: given back to the warm pool while its init renews it)."""
    host = made.host
    finished = False
    try:
        # 4. The init starts the program; then we watch it.
        made.confirm()
        host.sock.settimeout(making.SETUP_TIMEOUT)
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
            cell_pid=made.pid,
        )
        result = _result(limits, seen, group, no_cgroup_reason, made.ids.shared)
        # Every process of the cell is dead now. A recycled cell's init renews
        # it for the next run; any other init is exiting (namespace teardown
        # takes a millisecond or two): reaped without waiting when it is
        # done, else at the next run or at exit.
        if recycle:
            made.renewing = True
            # An IE is a cell that failed, but for a starved run's (a loaded
            # machine's, sandbox/cpuwait.py): that cell is as good as any.
            starved = seen.cpu_wait is not None and not (seen.report or {}).get("internal_error")
            sound = result.status != Status.IE or starved
            kept = sound and warm.give_back(birth, made)
            if not kept:
                made.discard()  # its init renews the cell for a launch that never comes
            finished = True
            return result, kept
        made.finished()
        if not made.by_maker:
            making.exiting(made.pid)
        finished = True
        making.reap_exiting(block=False)
        return result, False
    except (CellError, ChannelClosed, OSError, ValueError, TimeoutError) as error:
        return RunResult(Status.IE, message=f"sandbox failure: {error}"), False
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
        cpu_wait=seen.cpu_wait,
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
