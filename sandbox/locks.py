"""Byte-range locks: the kernel memory no memory cgroup counts, capped per cell.

A POSIX or OFD byte-range lock (fcntl F_SETLK, F_SETLKW, F_OFD_SETLK,
F_OFD_SETLKW) is a record in the kernel's file_lock_cache, which the memory
cgroup does not charge (Linux 6.1 and 6.18 alike: a program limited to 32 MiB
held 64 MiB of them). One open file may hold any number, on disjoint ranges,
so neither the memory limit nor the open-files limit bounds them; only the CPU
time to make them does (about 75 MiB of them per CPU second here).

So the default seccomp profile sends those four fcntl commands to the cell's
init (SCMP_ACT_NOTIFY: a seccomp user notification, whose listener the
program's process hands to the init before its execve, spawn.c). At the first
request a thread of the init starts (sandbox/locks.c; the numbers come from
here, in the cell's Birth): it lets each request go on (the
kernel then does exactly what it would have done) while the cell holds fewer
than LOCK_CAP locks, and answers ENOLCK beyond. It cannot know what a request
will change (an unlock may split one lock into two), so it counts every request
as up to two new locks and, when that estimate reaches the cap, counts the real
ones: the lines of the cell's /proc/locks (its own processes' locks and, as the
kernel shows them to every PID namespace, every OFD lock of the machine: a
conservative count). At the cap it refuses DENY_RUN requests before it counts
again, so a program that hammers the cap costs the init (outside the cell's CPU
limit) less than it costs the program.

A legitimate program holds a handful of locks (SQLite: a few per database) and
never meets the cap; each request costs it a round trip to the init (tens of
microseconds). Locks taken with flock(2) are not supervised: there is at most
one per open file, which RLIMIT_NOFILE and the pids limit bound.

The default profile sends socket and socketpair to the same listener: the
thread lets each go on at once and counts it (`sockets`). A recycled cell
keeps the network namespace of a run that made none (init.c, renew).
"""

from __future__ import annotations

LOCK_CAP = 4096  # byte-range locks a cell may hold: about 1 MiB of kernel memory
DENY_RUN = 64  # requests refused at the cap before the locks are counted again
