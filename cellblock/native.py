"""The native `cellblock` (cellblock/launcher.c), built for one installation.

    python -I -m cellblock.native OUTPUT PYTHON_CLI

scripts/install builds it into the venv and links /usr/local/bin/cellblock to
it; the tests and bench/doors.py build their own. It is compiled where it is
installed because it carries two paths of that installation: the Python
`cellblock` it hands everything but a served run to, and the package whose
run server it may talk to (protocol.package(): a server serves only clients
of its own code).
"""

from __future__ import annotations

import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("launcher.c")


def build(output: str | Path, python_cli: str | Path, package: str | Path | None = None) -> Path:
    """Compile the launcher to `output`; `package` defaults to this one's."""
    from cellblock import protocol, toolchain

    for path in (python_cli, package or ""):
        if '"' in str(path) or "\\" in str(path):  # they become C string literals
            raise ValueError(f"a path the launcher cannot carry: {path!r}")
    # Static, against musl where it is installed: it starts for every command.
    return toolchain.build(
        [SOURCE],
        output,
        flags=[
            "-Wextra",
            f'-DCELLBLOCK_CLI="{python_cli}"',
            f'-DCELLBLOCK_PACKAGE="{package or protocol.package()}"',
        ],
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -I -m cellblock.native OUTPUT PYTHON_CLI")
    build(sys.argv[1], sys.argv[2])
