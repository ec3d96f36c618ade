"""How cellblock's C programs are built: static executables, linked against musl.

    python3 cellblock/toolchain.py OUTPUT      # the cell's init, from this tree

Two programs: the cell's init (sandbox/*.c: setup.py puts it in the wheel,
scripts/install in the source tree, with the command above) and the native
client (cellblock/launcher.c, built per installation by cellblock/native.py).
Each is started once per cell or per command, so its start is on every cold
run's path. Linked statically against musl (Debian's musl-tools), a program
that does nothing takes a quarter of the time to start and end that it takes
linked statically against glibc (0.15 against 0.55 ms here): glibc's start-up
asks the CPU for its features and caches one CPUID instruction at a time,
each of which a virtual machine traps, and a dynamically linked one also runs
the loader. bench/README.md has the figures.

CELLBLOCK_CC names the compiler; by default musl-gcc when it is on the PATH,
else gcc (glibc, still static). musl ships no Linux UAPI headers
(<linux/seccomp.h> and the like): they are the kernel's, the same for every
libc, so musl-gcc is pointed at the copy glibc's headers come with
(linux-libc-dev), and at nothing else of glibc's.

Only the standard library here: setup.py loads this file by its path, in a
build environment that has nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INIT_SOURCES = tuple(
    ROOT / "sandbox" / f"{name}.c"
    for name in ("init", "mounts", "boxfiles", "wire", "spawn", "locks")
)
FLAGS = ("-O2", "-Wall", "-Werror", "-static")
MUSL = "musl-gcc"


def compiler() -> str:
    """The compiler a build uses (CELLBLOCK_CC, else musl-gcc if installed, else gcc)."""
    return os.environ.get("CELLBLOCK_CC") or (MUSL if shutil.which(MUSL) else "gcc")


def build(
    sources: Sequence[str | Path],
    output: str | Path,
    flags: Sequence[str] = (),
    libraries: Sequence[str] = (),
) -> Path:
    """Compile and link `sources` into the static executable `output`."""
    cc = compiler()
    with tempfile.TemporaryDirectory(prefix="cellblock-uapi-") as headers:
        command = [cc]
        if Path(cc).name == MUSL:
            command += ["-idirafter", _kernel_headers(Path(headers))]
        command += [*FLAGS, *flags, "-o", str(output), *map(str, sources)]
        command += [f"-l{name}" for name in libraries]
        subprocess.run(command, check=True)
    return Path(output)


def build_init(output: str | Path) -> Path:
    """The cell's init, from this tree's sources."""
    return build(INIT_SOURCES, output, libraries=["pthread"])


def _kernel_headers(into: Path) -> str:
    """`into`, holding links to the kernel's UAPI headers (linux/, asm/,
    asm-generic/) and nothing else of /usr/include."""
    include = Path("/usr/include")
    multiarch = subprocess.run(
        ["gcc", "-print-multiarch"], capture_output=True, text=True, check=False
    ).stdout.strip()
    wanted = {
        "linux": [include / "linux"],
        "asm": [include / multiarch / "asm", include / "asm"] if multiarch else [include / "asm"],
        "asm-generic": [include / "asm-generic"],
    }
    for name, candidates in wanted.items():
        found = next((path for path in candidates if path.is_dir()), None)
        if found is None:
            raise RuntimeError(
                f"the kernel's {name}/ headers are not in {include} (Debian: linux-libc-dev)"
            )
        (into / name).symlink_to(found)
    return str(into)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 cellblock/toolchain.py OUTPUT   (builds the cell's init)")
    build_init(sys.argv[1])
