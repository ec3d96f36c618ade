"""What the program's start is made of (ProgramStart): decided here and in the
mechanism modules (rlimits, userns, caps, seccomp, landlock), applied by the
cell's init in C (sandbox/spawn.c, called by sandbox/init.c).

The steps from clone to execve run in a clone(CLONE_VM) child of the init:
no page of the init is copied, faulted or torn down on the program's account,
so the run's cgroup sees the program and nothing else (figures that tell the
truth). Two phases: the child is made first and joins the run's cgroup (a
slow task migration) while the init copies files in; when the cell is ready
it drops everything and execs (spawn.c says in which order).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import landlock


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
    # the init knows whether the run made one (init.c, renew).
    sockets_noted: bool = False
    # The filter to load where no listener can be made (EBUSY: the caller's own
    # filter has one): sockets allowed, not sent (seccomp.compile_profile).
    bpf_unsupervised: bytes = b""
    cwd: str = "/box"  # the working directory, in the cell's root (an image's WorkingDir)
