"""cellblock's C programs are static, linked against musl where it is installed
(cellblock/toolchain.py), and the glibc build they fall back to still runs cells."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import python_in, tree_without_init

from cellblock import native, toolchain
from sandbox import making

pytestmark = pytest.mark.userland  # builds and files: the same on any kernel

REPO = Path(__file__).resolve().parent.parent
PT_INTERP = 3


def interpreter(path: str | Path) -> bytes | None:
    """The ELF program interpreter (the dynamic loader) `path` asks for; None: static."""
    data = Path(path).read_bytes()
    assert data[:5] == b"\x7fELF\x02", f"{path}: not a 64-bit ELF file"
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    entry_size, count = struct.unpack_from("<HH", data, 0x36)
    for index in range(count):
        header = phoff + index * entry_size
        kind, _, offset, _, _, size = struct.unpack_from("<IIQQQQ", data, header)
        if kind == PT_INTERP:
            return data[offset : offset + size].rstrip(b"\0")
    return None


def linked_with_glibc(path: str | Path) -> bool:
    return b"glibc" in Path(path).read_bytes()  # glibc's own messages; musl has none


def test_control_a_dynamic_program_names_its_loader(tmp_path):
    """The check below can fail: gcc's default build asks for ld.so."""
    source = tmp_path / "nop.c"
    source.write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-o", tmp_path / "nop", source], check=True)
    assert interpreter(tmp_path / "nop") is not None


def test_the_init_and_the_native_client_are_static(tmp_path):
    launcher = native.build(tmp_path / "cellblock", "/nonexistent/cellblock")
    for program in (making.init_path(), launcher):
        assert interpreter(program) is None, program


@pytest.mark.skipif(shutil.which("musl-gcc") is None, reason="musl-tools is not installed")
def test_with_musl_installed_both_are_linked_against_it(tmp_path):
    """scripts/install installs musl-tools (CI runs it): there, neither program carries glibc."""
    assert toolchain.compiler() == "musl-gcc"
    launcher = native.build(tmp_path / "cellblock", "/nonexistent/cellblock")
    for program in (making.init_path(), launcher):
        assert not linked_with_glibc(program), program


def test_the_glibc_build_runs_cells(tmp_path):
    """Without musl-gcc the init is linked statically against glibc: a cold
    cell and recycled ones run with it."""
    tree = tree_without_init(tmp_path)
    init = tree / "sandbox" / "cellblock-init"
    subprocess.run(
        [sys.executable, "-I", REPO / "cellblock" / "toolchain.py", init],
        env={**os.environ, "CELLBLOCK_CC": "gcc"},
        check=True,
    )
    assert interpreter(init) is None and linked_with_glibc(init)
    code = textwrap.dedent("""
        import sandbox
        from sandbox import making
        print(making.init_path())
        sandbox.keep_warm(False)
        print(sandbox.run(["sh", "-c", "echo cold"]).stdout.strip())
        sandbox.recycle_cells()
        print(*(sandbox.run(["sh", "-c", f"echo {i}"]).stdout.strip() for i in range(3)))
        sandbox.keep_warm(False)
    """)
    done = python_in(tree, code)
    assert done.stdout.splitlines() == [str(init), "cold", "0 1 2"], done.stderr
