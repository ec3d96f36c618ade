"""What `cellblock run` leaves behind: files under --out-dir, then what it prints.

Both ways of running (in-process, cellblock/runcmd.py; handed to a run server,
cellblock/client.py) end here with the same text and files, so they print the
same bytes in the same order. Imports nothing a bare interpreter lacks: the
client's hand-off path goes through it.
"""

from __future__ import annotations

import os
import sys


def deliver(out_dir: str, files: dict[str, bytes], stdout: str, stderr: str) -> None:
    """Write the copied-out files, then the program's output and the summary:
    stdout first, flushed, then stderr."""
    for path, data in files.items():
        write_out(out_dir, path, data)
    if stdout:
        sys.stdout.write(stdout)
        sys.stdout.flush()
    if stderr:
        sys.stderr.write(stderr)


def write_out(out_dir: str, relative: str, data: bytes) -> None:
    """Write a copied-out file under out_dir without following symlinks in its path."""
    parts = relative.split("/")
    current = os.open(out_dir, os.O_PATH | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                os.mkdir(part, 0o755, dir_fd=current)
            except FileExistsError:
                pass
            child = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=current)
            os.close(current)
            current = child
        fd = os.open(
            parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=current
        )
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    finally:
        os.close(current)
