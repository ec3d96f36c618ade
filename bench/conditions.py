"""What about the machine moves every figure of a benchmark, said beside them."""

from __future__ import annotations


def cgroup_moves_line(wait: bool) -> str:
    """One line for `sandbox.cgroups.dynmods.moves_wait()`'s answer."""
    if wait:
        return (
            "cgroup moves WAIT for RCU grace periods here (cgroup v1 without favordynmods; "
            "`cellblock setup --user USER` sets it): the service's figures are ~10 % lower"
        )
    return "cgroup moves: no wait (favordynmods is set, or cgroup v2)"
