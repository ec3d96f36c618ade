#!/usr/bin/env python3
"""Writes deploy/k8s/seccomp/worker-ARCH.json: the worker's seccomp profile
(docker/worker-seccomp.json) as a Kubernetes node's container runtime reads it.

    deploy/k8s/seccomp/flatten.py            # amd64 and arm64, from docker/worker-seccomp.json

Why not ship docker/worker-seccomp.json itself: it is in Docker's format, whose
rules may hold only for some capabilities or architectures ("includes",
"excludes", "archMap"), and Docker resolves those when it starts a container.
containerd reads a Localhost profile as a plain OCI seccomp section: it drops
the fields it does not know, so every conditional rule would hold for every
container (the ones meant for CAP_SYS_ADMIN alone, allowing bpf, setns,
namespace flags to clone, among them), and a container would start with more
than Docker ever gives the worker. So this resolves them the way Docker would for
the worker's container on one architecture, holding no capability at all
(`capabilities: drop: [ALL]`), and writes what is left in the shape both containerd
and CRI-O read alike: defaultAction, architectures, syscalls of names, action,
errnoRet and args.

A rule's minimum kernel ("minKernel", ptrace's 4.8) is taken as met: Kubernetes
nodes that have user namespaces for pods run far newer kernels (6.3 and later).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
SOURCE = REPO / "docker" / "worker-seccomp.json"
HERE = Path(__file__).resolve().parent
# Docker names architectures as Go does (runtime.GOARCH), as Debian's dpkg does for
# these two, so `dpkg --print-architecture` on a node names its file.
ARCHES = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64"}
CAPABILITIES: frozenset[str] = frozenset()  # the worker holds none


def _holds(rule: dict[str, Any], arch: str) -> bool:
    """Whether Docker would keep `rule` for a container of `arch` holding CAPABILITIES."""
    includes = rule.get("includes") or {}
    excludes = rule.get("excludes") or {}
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if includes.get("caps") and not set(includes["caps"]) <= CAPABILITIES:
        return False
    if arch in (excludes.get("arches") or ()):
        return False
    return not set(excludes.get("caps") or ()) & CAPABILITIES


def flatten(profile: dict[str, Any], arch: str) -> dict[str, Any]:
    """`profile` (Docker's format) as an OCI seccomp section for `arch`."""
    native = ARCHES[arch]
    architectures = [native]
    for entry in profile.get("archMap") or ():
        if entry["architecture"] == native:
            architectures += entry.get("subArchitectures") or []
    syscalls = []
    for rule in profile["syscalls"]:
        if not _holds(rule, arch):
            continue
        names = rule.get("names") or [rule["name"]]
        flat: dict[str, Any] = {"names": names, "action": rule["action"]}
        if "errnoRet" in rule:
            flat["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            flat["args"] = rule["args"]
        syscalls.append(flat)
    flat_profile: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if "defaultErrnoRet" in profile:
        flat_profile["defaultErrnoRet"] = profile["defaultErrnoRet"]
    flat_profile["architectures"] = architectures
    flat_profile["syscalls"] = syscalls
    return flat_profile


def render(arch: str, source: Path = SOURCE) -> str:
    """The text of worker-ARCH.json, as this script writes it."""
    profile = json.loads(source.read_text())
    return json.dumps(flatten(profile, arch), indent="\t") + "\n"


def main() -> None:
    for arch in sys.argv[1:] or sorted(ARCHES):
        out = HERE / f"worker-{arch}.json"
        out.write_text(render(arch))
        print(f"{out.relative_to(REPO)}: {SOURCE.relative_to(REPO)} for {arch}, no capabilities")


if __name__ == "__main__":
    main()
