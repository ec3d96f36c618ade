"""Which kernel objects does the memory cgroup charge? (README, "Kernel memory")

For each kind (byte-range locks, System V messages and semaphores, epoll
watches, POSIX timers, queued signals, inotify watches, unix socket buffers,
pipe buffers), bench/programs/kernel_objects.c makes as many as it is asked
for in a memory cgroup of its own and a new IPC namespace (System V objects
outlive their makers: they go with the namespace), and this prints what the
cgroup was charged beside how much the kernel's slab memory grew. A kind
whose slab growth the cgroup does not see is kernel memory no memory limit
bounds. As root, on cgroup v1 or v2; nothing is left behind.

    sudo python3 bench/kernel_memory.py
    sudo scripts/vm-test --run python3 bench/kernel_memory.py     # Debian's 6.1, cgroup v2
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PROGRAM = Path(__file__).resolve().parent / "programs" / "kernel_objects.c"
KINDS = [
    ("locks", 300000),
    ("msg", 100000),
    ("sem", 100000),
    ("epoll", 60000),
    ("timers", 60000),
    ("signals", 60000),
    ("inotify", 60000),
    ("unix", 500),
    ("pipes", 2000),
]


def slab_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1]) << 10
    raise RuntimeError("no Slab: in /proc/meminfo")


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench/kernel_memory.py: run as root (it makes cgroups)")
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    base = "/sys/fs/cgroup/cellblock-kmem" if v2 else "/sys/fs/cgroup/memory/cellblock-kmem"
    usage = "memory.current" if v2 else "memory.usage_in_bytes"
    work = Path(tempfile.mkdtemp(prefix="cellblock-kmem-"))
    try:
        binary = work / "kernel_objects"
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(PROGRAM), "-lrt"], check=True)
        if v2:
            Path("/sys/fs/cgroup/cgroup.subtree_control").write_text("+memory")
        os.makedirs(base, exist_ok=True)
        if v2:
            Path(base, "cgroup.subtree_control").write_text("+memory")
        print(f"Linux {os.uname().release}, cgroup {'v2' if v2 else 'v1'}")
        for kind, count in KINDS:
            group = f"{base}/{kind}"
            os.mkdir(group)
            scratch = work / kind
            scratch.mkdir()
            try:
                before_charge = int(Path(group, usage).read_text())
                before_slab = slab_bytes()
                maker = subprocess.Popen(
                    [
                        "unshare",
                        "--ipc",
                        "sh",
                        "-c",
                        f'echo $$ > {group}/cgroup.procs && exec "$0" "$@"',
                        str(binary),
                        kind,
                        str(count),
                    ],
                    cwd=scratch,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                made = maker.stdout.readline().strip() if maker.stdout else ""
                time.sleep(0.5)
                charged = int(Path(group, usage).read_text()) - before_charge
                grown = slab_bytes() - before_slab
                maker.wait()
                print(
                    f"{kind:8} {made:26} charged {charged >> 20:5} MiB   "
                    f"slab grew {grown >> 20:5} MiB"
                )
            finally:
                time.sleep(0.3)  # the cgroup empties a moment after its last process
                os.rmdir(group)
    finally:
        with_base = Path(base)
        if with_base.is_dir():
            os.rmdir(with_base)
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
