"""Only the compiled part of the build; everything else is in pyproject.toml.

The cell's init is C, an executable of its own (sandbox/init.c says why):
sandbox/cellblock-init, linked from init.c, mounts.c, boxfiles.c, wire.c,
spawn.c and locks.c, installed beside the package's Python files. No Python
extension: the package's Python talks to it over a socket, not through the
C API, so the wheel is tied to the platform, not to a Python version.
"""

from distutils.ccompiler import new_compiler
from distutils.sysconfig import customize_compiler
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

INIT_SOURCES = [
    f"sandbox/{name}.c" for name in ("init", "mounts", "boxfiles", "wire", "spawn", "locks")
]


class BuildWithInit(build_py):
    """build_py, and the init executable beside the package's modules."""

    def run(self) -> None:
        super().run()
        compiler = new_compiler()
        customize_compiler(compiler)
        build_temp = Path(self.build_lib).parent / "temp-cellblock-init"
        objects = compiler.compile(
            INIT_SOURCES, output_dir=str(build_temp), extra_postargs=["-O2", "-Wall"]
        )
        # Static: a cell's start execs it, and without the dynamic loader's
        # work that is ~0.2 ms less of a cold cell (bench/README.md).
        compiler.link_executable(
            objects,
            "cellblock-init",
            output_dir=str(Path(self.build_lib) / "sandbox"),
            libraries=["pthread"],
            extra_postargs=["-static"],
        )


class WithExecutable(Distribution):
    """A wheel for this platform (it holds an executable), not a pure one."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildWithInit}, distclass=WithExecutable)
