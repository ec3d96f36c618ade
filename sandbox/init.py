"""The cell's PID 1: what a cell is made of (Birth), what it receives for its run
(Launch), and the init's life (run_init): build the cell, wait for the run,
start the program, reap every process, notice the program's end, end the rest.

The init is our code, cloned from the supervisor (or from the cell maker,
maker.py, which makes warm cells), and it outlives the program
only long enough to kill what the program left behind (daemons, orphans),
collect accounting and copy files out. Its own pages stay charged to the
supervisor's cgroup: it never joins the cell's cgroup.

It cannot be killed from inside: a PID namespace's init ignores signals from
its own namespace for which it has no handler, and the only handler it keeps
(SIGCHLD, to wake up) does nothing but wake it. It is not dumpable, so the
program cannot read its memory (a copy of the supervisor's or the maker's)
through /proc/1/mem either, and the cell's /proc (hidepid) does not show it.
"""

from __future__ import annotations

import _signal
import contextlib
import ctypes
import os
import pickle
import resource
import select
import selectors
import signal
import time
import typing
from dataclasses import dataclass

from . import files, libc, locks, mounts, net, spawn, userns
from .channel import Channel, ChannelClosed
from .locks import LockSupervisor
from .spec import cell_path


def reset_signals(keep_sigchld_wakeup: bool = False) -> None:
    """Default dispositions and an empty mask: nothing of the supervisor's (Python
    ignores SIGPIPE, a worker may trap SIGTERM) may carry into the cell.

    Through `_signal`, the C core of `signal`: the same calls without an enum
    made for every signal and handler (0.3-0.5 ms of the init's start)."""
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    for sig in _signal.valid_signals():
        # Python knows every disposition (it reads them all at start-up), so
        # only the ones that differ from the default cost a system call.
        if _signal.getsignal(sig) in (_signal.SIG_DFL, None):
            continue
        try:
            _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # signals reserved by the C library
    if keep_sigchld_wakeup:
        signal.signal(signal.SIGCHLD, lambda *_: None)


_argv_area: tuple[int, int, int] | None = None  # (pid, start, end) of our argv


def note_command_line() -> None:
    """Find where our argv is in memory, before cloning an init: the init, a
    copy of us, then only overwrites it (hide_command_line)."""
    global _argv_area
    if _argv_area is not None and _argv_area[0] == os.getpid():
        return
    fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        stat = os.read(fd, 4096)
    finally:
        os.close(fd)
    fields = stat.rsplit(b")", 1)[1].split()
    # Fields 48 and 49 of proc(5), counted after the ")" that ends the command name.
    _argv_area = (os.getpid(), int(fields[45]), int(fields[46]))


def hide_command_line(title: bytes = b"cellblock-init") -> None:
    """Overwrite our argv in memory: /proc/1/cmdline is readable by every process
    of the cell where hidepid does not hide us, and ours is a copy of the
    supervisor's (which may name secrets).
    Where it is was noted by our parent (note_command_line) before the clone."""
    assert _argv_area is not None, "note_command_line() was not called before the clone"
    _, arg_start, arg_end = _argv_area
    size = arg_end - arg_start
    if size > 0:
        ctypes.memset(arg_start, 0, size)
        ctypes.memmove(arg_start, title[: size - 1], min(len(title), size - 1))


@dataclass
class ProgramExit:
    wait_status: int
    start: float  # CLOCK_MONOTONIC, shared with the host
    end: float  # when the last process of the cell was gone
    cpu_time: float  # user + system of every process the init reaped
    max_rss: int  # bytes, the largest single process (a fallback figure)
    killed_on_request: bool
    locks_refused: int  # byte-range lock requests answered ENOLCK (locks.py)
    sockets: int  # socket and socketpair calls the filter sent to us (locks.c)


def supervise(
    channel: Channel, program_pid: int, start: float, listener: int | None = None
) -> ProgramExit:
    """Wait for the program, reaping orphans meanwhile, and answer its seccomp
    notifications (`listener`: byte-range locks, locks.py); then end every process."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    pidfd = os.pidfd_open(program_pid)
    selector = selectors.DefaultSelector()
    selector.register(channel.sock, selectors.EVENT_READ, "channel")
    selector.register(pidfd, selectors.EVENT_READ, "program")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    # The lock supervisor's thread starts at the program's first lock request:
    # most programs never make one.
    locks: LockSupervisor | None = None
    if listener is not None:
        selector.register(listener, selectors.EVENT_READ, "locks")
    wait_status: int | None = None
    killed = False
    usage = _Usage()
    while wait_status is None:
        for key, _ in selector.select():
            if key.data == "channel":
                try:
                    request = channel.receive()
                except ChannelClosed:
                    request = {"kind": "kill"}  # the host is gone: end the cell
                if isinstance(request, dict) and request.get("kind") == "kill" and not killed:
                    kill_all()
                    killed = True
            elif key.data == "wake":
                _drain(wake_r)
            elif key.data == "locks":
                selector.unregister(key.fd)
                if _pending(key.fd):  # not only the hang-up of a filter nobody uses any more
                    locks = LockSupervisor(key.fd)
        wait_status = _reap(program_pid, usage)
    kill_all()
    _reap_all(usage)
    end = time.monotonic()
    if locks is not None:
        locks.stop()
    selector.close()
    signal.set_wakeup_fd(-1)
    for fd in (pidfd, wake_r, wake_w):
        os.close(fd)
    return ProgramExit(
        wait_status=wait_status,
        start=start,
        end=end,
        cpu_time=usage.cpu_time,
        max_rss=usage.max_rss,
        killed_on_request=killed,
        locks_refused=locks.refused if locks is not None else 0,
        sockets=locks.sockets if locks is not None else 0,
    )


def _pending(fd: int) -> bool:
    """Whether a request waits on the seccomp listener `fd` (epoll also reports
    its hang-up, when the last process that could ask is gone, as readable)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(events & select.POLLIN for _, events in poller.poll(0))


def kill_all() -> None:
    """SIGKILL every process of the PID namespace but the init itself."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


class _Usage:
    """What this run's reaped processes used (wait4's figures, each with its
    own reaped children): the fallback figures when there is no cgroup. Per
    run, not RUSAGE_CHILDREN, which a recycled cell's init sums over all runs."""

    def __init__(self) -> None:
        self.cpu_time = 0.0
        self.max_rss = 0

    def add(self, usage: resource.struct_rusage) -> None:
        self.cpu_time += usage.ru_utime + usage.ru_stime
        self.max_rss = max(self.max_rss, usage.ru_maxrss * 1024)


def _reap(program_pid: int, usage: _Usage) -> int | None:
    """Reap whatever has exited; the program's wait status once it has."""
    status = None
    while True:
        try:
            pid, wait_status, rusage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        usage.add(rusage)
        if pid == program_pid:
            status = wait_status


def _reap_all(usage: _Usage) -> None:
    while True:
        try:
            _, _, rusage = os.wait4(-1, 0)
        except ChildProcessError:
            return
        usage.add(rusage)


HOSTNAME = "cellblock"


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
    recycle: bool = False  # after the run, renew the cell and wait for another (warm.py)


def run_init(birth: Birth, cell: Channel, alive_r: int | None, layers: tuple[int, ...]) -> None:
    """The init's life, from the moment its ids are mapped: build the cell, wait
    for the run, start the program, supervise it, copy out, report; then exit,
    or, when the launch asks for it (a recycled cell, warm.py), renew every
    namespace but the user and PID ones and wait for the next run.
    `alive_r` (forked by an outer process): EOF once the outer process died.
    `layers`: the image's layer directories (mounts.open_layers)."""
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

        # The cell, before any run is known (a warm cell waits here). Its root
        # is built in a copy of the mount namespace we were born with, which
        # stays as it is: a recycled cell's next root is built from it too.
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        last_pid = mounts.hold(birth.plan, layers)
        pristine = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        libc.unshare(libc.CLONE_NEWNS)
        bound = mounts.build_root(birth.plan, last_pid)
        libc.sethostname(HOSTNAME)
        net.loopback_up()
        if not select.select([cell], [], [], 0)[0]:  # no launch waiting yet: a warm cell
            _rehearse_launch()
        while True:
            try:
                launch, fds = cell.receive_launch()
            except ChannelClosed:  # a warm cell nobody used: the supervisor has gone
                code = 0
                return
            launch = typing.cast(Launch, launch)
            report, network_untouched = _run(birth, cell, launch, fds, bound)
            cell.send("exited", **report)
            if not launch.recycle:
                code = 0
                return
            # The run's mount namespace is let go only once the next run may
            # come: its teardown waits for an RCU grace period (0.2 ms on
            # average here, bench/README.md) that the next run need not wait for.
            left = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            bound = renew(birth, pristine, last_pid, new_network=not network_untouched)
            cell.send("ready")
            os.close(left)
    except BaseException as error:  # noqa: BLE001 - report anything, then die
        report_error(cell, f"init: {error}")
    finally:
        os._exit(code)


def _run(
    birth: Birth, cell: Channel, launch: Launch, fds: list[int], bound: list[str]
) -> tuple[dict[str, object], bool]:
    """One run in the cell as it is: the program, its supervision, copy-out.
    Returns the report, and whether the run left the network namespace as it
    found it: the filter sends us every call that makes a socket (the launch
    says so: seccomp.supervises_sockets), we answered each of them (the
    listener reached us), and there was none. Without a socket a process can
    neither send a packet nor leave anything in the namespace (its /proc/sys is
    read-only, mounts.PROC_COVERED; io_uring is refused by the profile)."""
    # The program's process, made first (a C child that copies nothing of
    # ours, spawn.py): it gets into the run's cgroup while we copy files in.
    # Our copies of its fds go at once.
    stdio, fds = fds[:3], fds[3:]
    cgroup_fds, fds = fds[: launch.cgroup_fds], fds[launch.cgroup_fds :]
    cgroup_dir, copy_in_fds = (fds[0], fds[1:]) if launch.cgroup_dir else (None, fds)
    pending = spawn.prepare_program(launch.program, stdio, cgroup_fds, cgroup_dir)
    for fd in [*stdio, *cgroup_fds, *([cgroup_dir] if cgroup_dir is not None else [])]:
        os.close(fd)

    if launch.program.cwd != "/box":
        # An image's WorkingDir need not exist in it: container engines make it.
        os.makedirs(launch.program.cwd, 0o755, exist_ok=True)
    box = files.open_box()
    try:
        copy_in = [
            files.CopyIn(path, fd, mode)
            for (path, mode), fd in zip(launch.copy_in, copy_in_fds, strict=True)
        ]
        files.copy_into_box(box, copy_in, birth.idmap.run_uid, birth.idmap.run_gid)
        for fd in copy_in_fds:
            os.close(fd)
        for path in launch.readonly:  # the init made these files a moment ago
            mounts.bind_read_only(box, cell_path(path))

        started = pending.go()
        # The program's clock starts at its execve (go() returns then), not
        # before: on cgroup v1 the child may still be waiting to be moved into
        # the run's cgroup (sandbox/cgroups/dynmods.py), which is not its time.
        start = time.monotonic()
        program_pid = started.pid
        cell.send("started", start=start, pid=program_pid)

        try:
            done: ProgramExit = supervise(cell, program_pid, start, started.listener)
        finally:
            locks.close(started.listener)
        files.send_box_files(box, cell, launch.copy_out, launch.file_size)
    finally:
        os.close(box)
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
    network_untouched = (
        launch.program.sockets_noted and started.listener is not None and done.sockets == 0
    )
    return report, network_untouched


def renew(birth: Birth, pristine: int, last_pid: int, new_network: bool = True) -> list[str]:
    """After a run, for the next one (a recycled cell): every process of the
    run is gone (supervise ended them all); the mount, IPC and UTS namespaces
    are made anew and the root is built again (fresh tmpfs, fresh /box, /tmp
    and /dev/shm: nothing the run wrote is left), and the PID counter starts
    again at 1. The network namespace is made anew too, unless the run made
    no socket (`new_network` False, _run says when): then nothing in it
    changed, and keeping it saves its making and its teardown (about 1.5 ms
    of the machine's time a run: bench/README.md). What the next run shares
    with this one is the user namespace (its ids; its per-user counts are back
    to zero with the processes gone), the PID namespace (empty, its counter
    reset) and its procfs, the root's read-only parts (mounts.hold), and at
    most a network namespace no program touched: nothing a program could
    write to. Returns the host directories bound (build_root)."""
    libc.setns(pristine, libc.CLONE_NEWNS)
    network = libc.CLONE_NEWNET if new_network else 0
    libc.unshare(libc.CLONE_NEWNS | network | libc.CLONE_NEWIPC | libc.CLONE_NEWUTS)
    bound = mounts.build_root(birth.plan, last_pid)
    libc.sethostname(HOSTNAME)
    if new_network:
        net.loopback_up()
    return bound


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


def report_error(channel: Channel, message: str) -> None:
    with contextlib.suppress(OSError):
        channel.send("error", message=message)
