"""What about the machine moves every figure of a benchmark, said beside them."""

from __future__ import annotations

from sandbox.cgroups import dynmods


def cgroup_moves_wait() -> bool:
    """Whether each run's move of its program into its cgroup may wait for an
    RCU grace period (sandbox/cgroups/dynmods.py): a v1 host without favordynmods."""
    return dynmods.moves_wait()


def cgroup_moves_line() -> str:
    if cgroup_moves_wait():
        return (
            "cgroup moves WAIT for RCU grace periods here (cgroup v1 without favordynmods; "
            "`cellblock setup --user USER` sets it): the service's figures are ~10 % lower"
        )
    return "cgroup moves: no wait (favordynmods is set, or cgroup v2)"
