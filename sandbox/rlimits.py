"""Per-process resource limits: backstops beneath the cgroup limits.

RLIMIT_CPU is per process and counts only that process, so it is a backstop,
not the CPU limit (the supervisor's watchdog is). RLIMIT_AS is never set: it
breaks the JVM and Go, which reserve far more address space than they use.
"""

from __future__ import annotations

import math
import resource

from .spec import Limits

PENDING_SIGNALS = 256  # queued signals and POSIX timers of a whole cell


def rlimit_table(
    limits: Limits, cgroup_controllers: tuple[str, ...] = ()
) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) to apply in the program's process before exec.

    Where the run's cgroup limits memory, RLIMIT_DATA goes: it would turn the
    cgroup's MLE into a failed malloc (RE). RLIMIT_NPROC stays as a backstop to
    pids.max: since 5.14 it counts per uid *per user namespace*, so per cell.
    """
    cpu = math.ceil(limits.time) + 1
    table = [
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_CPU, cpu, cpu + 1),  # SIGXCPU, then SIGKILL a second later
        (resource.RLIMIT_FSIZE, limits.file_size, limits.file_size),
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (resource.RLIMIT_STACK, limits.effective_stack, limits.effective_stack),
        # Counted per user in the cell's own user namespace: the fallback where
        # no pids cgroup exists (+1 for the init, which shares the uid in a size-1 map).
        (resource.RLIMIT_NPROC, limits.pids + 1, limits.pids + 1),
        # Without a memory cgroup, the data segment limit is what stops a
        # memory bomb from taking the host down.
        (resource.RLIMIT_DATA, limits.memory, limits.memory),
        # Per-user quotas, counted in the cell's user namespace and charged
        # to the user who owns it (the worker) on the host: a cell's share is
        # capped here so that it cannot drain the worker's. Queued signals
        # (sigqueue, and the one every POSIX timer reserves): the host's
        # default is about 96k per user. Locked memory and POSIX message
        # queues: none.
        (resource.RLIMIT_SIGPENDING, PENDING_SIGNALS, PENDING_SIGNALS),
        (resource.RLIMIT_MEMLOCK, 0, 0),
        (resource.RLIMIT_MSGQUEUE, 0, 0),
    ]
    if "memory" in cgroup_controllers:
        table = [entry for entry in table if entry[0] != resource.RLIMIT_DATA]
    return table
