"""Start the program: a child that copies nothing of the init, in two phases.

The steps from clone to execve run in C (`spawn.c`, built next to this file
as `_spawn*.so` by `scripts/install` or by pip) in a clone(CLONE_VM) child: no
page of the interpreter is copied, faulted or torn down on the program's
account, so the run's cgroup sees the program and nothing else (figures
that tell the truth), and the start costs a fraction of a Python fork.

    pending = prepare_program(start, [stdin, stdout, stderr], cgroup_procs_fds)
    ...   # the child joins the run's cgroup meanwhile (a slow task migration)
    started = pending.go()   # the cell is ready: the child drops everything, execs

Everything the child applies is decided here and in the mechanism modules
(rlimits, userns, caps, seccomp, cgroups); spawn.c only applies it, in order.
"""

from __future__ import annotations

import ctypes
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from . import caps, landlock

# enum cb_stage in spawn.c, by value.
_STAGES = (
    "",
    "signals",
    "setsid",
    "file descriptors",
    "bounding set",
    "joining the cgroup",
    "checking the root",
    "rlimits",
    "cgroup namespace",
    "ids",
    "capabilities",
    "no_new_privs",
    "seccomp",
    "execve",
    "landlock",
)
_STAGE_EXEC = 13


class _Rlimit(ctypes.Structure):
    _fields_ = [("resource", ctypes.c_int), ("soft", ctypes.c_uint64), ("hard", ctypes.c_uint64)]


class _LandlockRule(ctypes.Structure):
    _fields_ = [("path", ctypes.c_char_p), ("access", ctypes.c_uint64)]


class _Spawn(ctypes.Structure):
    _fields_ = [
        ("file", ctypes.c_char_p),
        ("argv", ctypes.POINTER(ctypes.c_char_p)),
        ("envp", ctypes.POINTER(ctypes.c_char_p)),
        ("path", ctypes.c_char_p),
        ("cwd", ctypes.c_char_p),
        ("fds", ctypes.POINTER(ctypes.c_int)),
        ("nfds", ctypes.c_int),
        ("join_fds", ctypes.POINTER(ctypes.c_int)),
        ("njoin", ctypes.c_int),
        ("cgroup_dirfd", ctypes.c_int),
        ("last_cap", ctypes.c_int),
        ("securebits", ctypes.c_uint),
        ("rlimits", ctypes.POINTER(_Rlimit)),
        ("nrlimits", ctypes.c_int),
        ("uid", ctypes.c_uint),
        ("gid", ctypes.c_uint),
        ("clear_groups", ctypes.c_int),
        ("bpf_len", ctypes.c_ushort),
        ("bpf", ctypes.c_void_p),
        ("unsupervised_len", ctypes.c_ushort),
        ("unsupervised", ctypes.c_void_p),
        ("landlock_attr", ctypes.c_void_p),
        ("landlock_attr_size", ctypes.c_uint),
        ("landlock_rules", ctypes.POINTER(_LandlockRule)),
        ("nlandlock_rules", ctypes.c_int),
        ("notify", ctypes.c_int),
        ("listener_sock", ctypes.c_int),
        ("root_dev", ctypes.c_uint64),
        ("root_ino", ctypes.c_uint64),
        ("born_in_cgroup", ctypes.c_int),
        ("go", ctypes.c_int),
        ("status_r", ctypes.c_int),
        ("status_w", ctypes.c_int),
        ("stack", ctypes.c_void_p),
        ("err_stage", ctypes.c_int),
        ("err_errno", ctypes.c_int),
        ("listener_error", ctypes.c_int),
    ]


class LockState(ctypes.Structure):
    """struct cb_locks of locks.c (the init's lock supervisor, locks.py): the
    library is one, so load() checks both halves' structs at once."""

    _fields_ = [
        ("listener", ctypes.c_int),
        ("cap", ctypes.c_int),
        ("deny_run", ctypes.c_int),
        ("proc_locks", ctypes.c_char_p),
        ("allowed", ctypes.c_long),
        ("refused", ctypes.c_long),
        ("counts", ctypes.c_long),
        ("sockets", ctypes.c_long),
        ("stop_r", ctypes.c_int),
        ("stop_w", ctypes.c_int),
        ("known", ctypes.c_long),
        ("since", ctypes.c_long),
        ("denying", ctypes.c_long),
        ("thread", ctypes.c_ulong),
    ]


class SpawnUnavailable(RuntimeError):
    """The compiled half of this module is missing (a source tree never built)."""


def _library_path() -> Path:
    here = Path(__file__).resolve().parent
    # pip names it _spawn.cpython-311-x86_64-linux-gnu.so; scripts/install, _spawn.so.
    found = sorted(here.glob("_spawn*.so"))
    if not found:
        raise SpawnUnavailable(
            f"{here}/_spawn*.so is missing: build it with scripts/install (or "
            f"`gcc -O2 -shared -fPIC -o {here}/_spawn.so {here}/spawn.c {here}/locks.c`)"
        )
    return found[0]


_lib: ctypes.CDLL | None = None


def load() -> ctypes.CDLL:
    """Load the compiled half; the supervisor does it before fork, while the
    library's path is still visible (the init runs after pivot_root)."""
    global _lib
    if _lib is None:
        path = _library_path()
        lib = ctypes.CDLL(str(path))
        for name in ("cb_start", "cb_go"):
            getattr(lib, name).argtypes = [ctypes.POINTER(_Spawn)]
            getattr(lib, name).restype = ctypes.c_int
        for name in ("cb_struct_size", "cb_struct_offset_of_go", "cb_locks_struct_size"):
            getattr(lib, name).restype = ctypes.c_long
        lib.cb_locks_start.restype = ctypes.c_int  # locks.c: the init's lock supervisor
        lib.cb_locks_stop.restype = None
        # A stale build of spawn.c would read garbage: refuse it.
        if (lib.cb_struct_size(), lib.cb_struct_offset_of_go(), lib.cb_locks_struct_size()) != (
            ctypes.sizeof(_Spawn),
            _Spawn.go.offset,
            ctypes.sizeof(LockState),
        ):
            raise SpawnUnavailable(f"{path} does not match spawn.py: rebuild it (scripts/install)")
        _lib = lib
    return _lib


def available() -> str | None:
    """None when the spawner loads; otherwise why not (for doctor and callers)."""
    try:
        load()
    except (SpawnUnavailable, OSError) as error:
        return str(error)
    return None


@dataclass(frozen=True)
class ProgramStart:
    """What the init needs to start the program (prepared by the supervisor)."""

    argv: tuple[str, ...]
    env: dict[str, str]
    rlimit_table: list[tuple[int, int, int]]
    run_uid: int
    run_gid: int
    clear_groups: bool
    bpf: bytes
    landlock: landlock.Ruleset | None = None
    notify: bool = False  # the filter sends calls to the init (locks.py): load it with a listener
    # ... among them every call that makes a socket (seccomp.supervises_sockets):
    # the init knows whether the run made one (init.renew).
    sockets_noted: bool = False
    # The filter to load where no listener can be made (EBUSY: the caller's own
    # filter has one): sockets allowed, not sent (seccomp.compile_profile).
    bpf_unsupervised: bytes = b""
    cwd: str = "/box"  # the working directory, in the cell's root (an image's WorkingDir)


@dataclass
class Started:
    pid: int
    exec_error: str | None = None  # the program could not be executed: its RE message
    internal_error: str | None = None  # our set-up failed: an IE
    listener: int | None = None  # the filter's notifications arrive here (ours to close)
    listener_error: str | None = None  # why there is none, though the filter notifies


class PendingProgram:
    """A child made by `prepare_program`, waiting in its cgroup for `go`."""

    def __init__(
        self,
        lib: ctypes.CDLL,
        start: ProgramStart,
        args: _Spawn,
        keep: list[object],
        listener_sock: socket.socket | None,
    ) -> None:
        self._lib = lib
        self._start = start
        self._args = args
        self._keep = keep  # the child reads these buffers until it has exec'd
        self._listener_sock = listener_sock  # the child sends its seccomp listener here
        self.pid: int = 0

    def go(self) -> Started:
        """The cell is ready (root built, files in): the child execs. Returns once
        it has called execve or given up; one that gave up has exited with 127
        (reap it as usual)."""
        root = os.stat("/")
        self._args.root_dev, self._args.root_ino = root.st_dev, root.st_ino
        error = self._lib.cb_go(ctypes.byref(self._args))
        if error < 0:
            raise OSError(-error, f"waiting for the program to start: {os.strerror(-error)}")
        stage, errno = self._args.err_stage, self._args.err_errno
        self._keep.clear()
        listener, listener_error = self._take_listener()
        if stage == 0:
            return Started(self.pid, listener=listener, listener_error=listener_error)
        if listener is not None:
            os.close(listener)
        reason = os.strerror(errno)
        if stage == _STAGE_EXEC:
            return Started(self.pid, exec_error=f"cannot execute {self._start.argv[0]!r}: {reason}")
        name = _STAGES[stage] if stage < len(_STAGES) else str(stage)
        return Started(self.pid, internal_error=f"program set-up: {name}: {reason}")

    def _take_listener(self) -> tuple[int | None, str | None]:
        """The seccomp listener the child sent before its execve, or why there is none."""
        sock, self._listener_sock = self._listener_sock, None
        if sock is None:
            return None, None
        with sock:
            if self._args.listener_error:
                return (
                    None,
                    f"the program's process could not hand it over: "
                    f"{os.strerror(self._args.listener_error)}",
                )
            try:
                _, fds, _, _ = socket.recv_fds(
                    sock, 1, 1, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return None, None  # it gave up before its filter (err_stage says where)
        return (fds[0], None) if fds else (None, "it was not handed over")


def rehearse(start: ProgramStart) -> None:
    """Build the arguments for `start` and throw them away (cell._rehearse_launch)."""
    _arguments(start, [0, 1, 2], [], None, "/box")


def prepare_program(
    start: ProgramStart,
    fds: list[int],
    join_fds: list[int],
    cgroup_dir: int | None = None,
) -> PendingProgram:
    """Make the program's process: it puts `fds` at 0..n-1, is born in `cgroup_dir`
    (v2, when the kernel lets us) or else writes itself into each of `join_fds`
    (cgroup.procs), empties its bounding set and waits. It holds copies of the fds:
    the caller may close its own at once. After `go` it runs with cwd `start.cwd`
    (checked to be in the root the caller has then, SECURITY.md rule 5)."""
    lib = _lib
    if lib is None:
        raise SpawnUnavailable("spawn.load() was not called before the cell was made")
    args, keep = _arguments(start, fds, join_fds, cgroup_dir, start.cwd)
    ours = None
    if start.notify:  # the child sends its seccomp listener on the other end
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        args.listener_sock = theirs.fileno()
    pending = PendingProgram(lib, start, args, keep, ours)
    try:
        pid = lib.cb_start(ctypes.byref(args))
    finally:
        if ours is not None:
            theirs.close()  # the child has its own copy
    if pid < 0:
        if ours is not None:
            ours.close()
        raise OSError(-pid, f"clone: {os.strerror(-pid)}")
    pending.pid = pid
    return pending


def _arguments(
    start: ProgramStart, fds: list[int], join_fds: list[int], cgroup_dir: int | None, cwd: str
) -> tuple[_Spawn, list[object]]:
    """The struct spawn.c reads, and every buffer it points into (to keep alive)."""
    argv_bytes = [os.fsencode(arg) for arg in start.argv]
    env_bytes = [os.fsencode(f"{k}={v}") for k, v in start.env.items()]
    argv = (ctypes.c_char_p * (len(argv_bytes) + 1))(*argv_bytes, None)
    envp = (ctypes.c_char_p * (len(env_bytes) + 1))(*env_bytes, None)
    fd_array = (ctypes.c_int * max(len(fds), 1))(*fds)
    join_array = (ctypes.c_int * max(len(join_fds), 1))(*join_fds)
    table = (_Rlimit * max(len(start.rlimit_table), 1))(
        *(_Rlimit(which, soft, hard) for which, soft, hard in start.rlimit_table)
    )
    for program in (start.bpf, start.bpf_unsupervised):
        if len(program) % 8 or len(program) // 8 > 0xFFFF:
            raise ValueError("a seccomp program is an array of at most 65535 8-byte instructions")
    bpf = ctypes.create_string_buffer(start.bpf, max(len(start.bpf), 1))
    unsupervised = ctypes.create_string_buffer(
        start.bpf_unsupervised, max(len(start.bpf_unsupervised), 1)
    )
    ruleset = start.landlock
    rules_in = ruleset.rules if ruleset else ()
    rule_paths = [os.fsencode(path) for path, _ in rules_in]
    rules = (_LandlockRule * max(len(rules_in), 1))(
        *map(_LandlockRule, rule_paths, (access for _, access in rules_in))
    )
    attr = ctypes.create_string_buffer(ruleset.attr, len(ruleset.attr)) if ruleset else None
    path = start.env.get("PATH")
    file, path_bytes, cwd_bytes = (
        argv_bytes[0],
        (os.fsencode(path) if path is not None else None),
        os.fsencode(cwd),
    )
    args = _Spawn(
        file=file,
        argv=argv,
        envp=envp,
        path=path_bytes,
        cwd=cwd_bytes,
        fds=fd_array,
        nfds=len(fds),
        join_fds=join_array,
        njoin=len(join_fds),
        cgroup_dirfd=-1 if cgroup_dir is None else cgroup_dir,
        last_cap=caps.LAST_CAP,
        securebits=caps.SECUREBITS,
        rlimits=table,
        nrlimits=len(start.rlimit_table),
        uid=start.run_uid,
        gid=start.run_gid,
        clear_groups=int(start.clear_groups),
        bpf_len=len(start.bpf) // 8,
        bpf=ctypes.addressof(bpf),
        unsupervised_len=len(start.bpf_unsupervised) // 8,
        unsupervised=ctypes.addressof(unsupervised),
        landlock_attr=ctypes.addressof(attr) if attr is not None else None,
        landlock_attr_size=len(ruleset.attr) if ruleset else 0,
        landlock_rules=rules,
        nlandlock_rules=len(rules_in),
        notify=int(start.notify),
        listener_sock=-1,
    )
    # Every buffer the child reads stays alive (and in place) until go() is done.
    keep: list[object] = [
        argv_bytes,
        env_bytes,
        argv,
        envp,
        fd_array,
        join_array,
        table,
        bpf,
        unsupervised,
        file,
        path_bytes,
        cwd_bytes,
        rule_paths,
        rules,
        attr,
    ]
    return args, keep
