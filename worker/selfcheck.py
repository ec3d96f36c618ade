"""A short escape self-check that every worker runs, shown by GET /v1/health.

It runs a real cell, like any submission's, whose program tries known ways
out and reports what worked:

- read a secret the worker just wrote on the host, by its path and through
  /proc/1/root and /proc/self/root (a shared mount namespace or a leaked root);
- write into the host's /usr (the read-only binds);
- see any network interface besides lo (a shared network namespace);
- leave /box/leak as a symlink to the host secret for copy-out to follow
  (Judge0's CVE-2024-28185: the host read a file the program named).

`contained` is true only when the cell ran and none of these worked. The
worker's main process runs it (single-threaded, between jobs), so the API never
launches a cell itself.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field

_PROGRAM = r"""
import os, sys
secret, path = sys.argv[1], sys.argv[2]
found = []
for where in (path, "/proc/1/root" + path, "/proc/self/root" + path):
    try:
        with open(where) as f:
            if secret in f.read():
                found.append("read the host secret at " + where)
    except OSError:
        pass
try:
    with open("/usr/.cellblock-escape", "w") as f:
        f.write("x")
    found.append("wrote into the host's /usr")
except OSError:
    pass
with open("/proc/net/dev") as f:  # this cell's network namespace
    names = [line.split(":")[0].strip() for line in f.read().splitlines()[2:]]
if names != ["lo"]:
    found.append("network interfaces besides lo: " + ",".join(names))
os.symlink(path, "/box/leak")
print("\n".join(found))
"""


@dataclass
class SelfCheck:
    contained: bool
    checked_at: float
    seconds: float
    findings: list[str] = field(default_factory=list)
    status: str = ""
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def run_selfcheck() -> SelfCheck:
    import sandbox

    started = time.monotonic()
    secret = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="cellblock-selfcheck-") as scratch:
        os.chmod(scratch, 0o755)  # readable by anyone: only the cell's walls may hide it
        path = os.path.join(scratch, "secret")
        with open(path, "w") as out:
            out.write(secret)
        os.chmod(path, 0o644)
        try:
            result = sandbox.run(
                ["python3", "-c", _PROGRAM, secret, path],
                time=5.0,
                wall_time=10.0,
                memory="128M",
                copy_out=["leak"],
            )
        except Exception as error:  # noqa: BLE001 - a broken cell is a failed check
            return SelfCheck(
                False,
                time.time(),
                time.monotonic() - started,
                status="IE",
                message=f"the cell could not start: {error}",
            )
    findings = [line for line in result.stdout.splitlines() if line.strip()]
    leaked = result.files.get("leak")
    if leaked is not None and secret.encode() in leaked:
        findings.append("copy-out followed /box/leak to the host secret")
    ran = str(result.status) == "OK"
    message = (
        "a known escape attempt stayed inside the cell"
        if ran and not findings
        else (result.message if not ran else "the cell let something out")
    )
    return SelfCheck(
        ran and not findings,
        time.time(),
        round(time.monotonic() - started, 3),
        findings,
        str(result.status),
        message,
    )
