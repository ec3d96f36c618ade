"""Only the compiled part of the build; everything else is in pyproject.toml.

The cell's init is C, an executable of its own (sandbox/init.c says why):
sandbox/cellblock-init, linked from init.c, mounts.c, boxfiles.c, wire.c,
spawn.c and locks.c (cellblock/toolchain.py), installed beside the package's
Python files. No Python extension: the package's Python talks to it over a
socket, not through the C API, so the wheel is tied to the platform, not to
a Python version.
"""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution


def _toolchain():
    """cellblock/toolchain.py, by its path: the package itself is not importable here."""
    spec = importlib.util.spec_from_file_location(
        "cellblock_toolchain", Path(__file__).resolve().parent / "cellblock" / "toolchain.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithInit(build_py):
    """build_py, and the init executable beside the package's modules."""

    def run(self) -> None:
        super().run()
        # Static, against musl where it is installed: a cell's start execs it
        # (cellblock/toolchain.py says what that saves).
        _toolchain().build_init(Path(self.build_lib) / "sandbox" / "cellblock-init")


class WithExecutable(Distribution):
    """A wheel for this platform (it holds an executable), not a pure one."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildWithInit}, distclass=WithExecutable)
