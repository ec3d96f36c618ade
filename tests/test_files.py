"""sandbox/files.py's sealing of the memfds that carry stdin and copy-in files.

F_SEAL_WRITE fails with EBUSY while a page of the file is referenced beyond
the kernel's accounting; in a fresh-Debian run of the suite a copy-in's seal
once failed so, with no mapping of ours. A writable shared mapping is the one
such reference a test can hold and drop at will.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
import time

import pytest

from sandbox import files


def mapped_memfd() -> tuple[int, mmap.mmap]:
    fd = os.memfd_create("seal-test", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, b"x" * 4096)
    return fd, mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)


def test_a_passing_reference_does_not_fail_the_seal() -> None:
    fd, mapping = mapped_memfd()
    try:
        # The control: one try while the page is referenced is refused.
        with pytest.raises(OSError) as refused:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, files._SEALS)
        assert refused.value.errno == errno.EBUSY

        threading.Timer(0.03, mapping.close).start()
        files.add_seals(fd)  # tried again once the reference is gone
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) == files._SEALS
        with pytest.raises(OSError) as denied:
            os.pwrite(fd, b"y", 0)
        assert denied.value.errno == errno.EPERM
    finally:
        mapping.close()
        os.close(fd)


def test_a_reference_that_stays_is_an_error_in_bounded_time() -> None:
    fd, mapping = mapped_memfd()
    try:
        started = time.monotonic()
        with pytest.raises(OSError) as refused:
            files.add_seals(fd)
        assert refused.value.errno == errno.EBUSY
        assert time.monotonic() - started < 5
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) == 0  # nothing half-sealed
    finally:
        mapping.close()
        os.close(fd)


def test_a_sealed_copy_in_is_read_only() -> None:
    fd = files.sealed_memfd("copy-in", b"data")
    try:
        assert os.read(fd, 10) == b"data"
        with pytest.raises(OSError):
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
