"""Only the compiled part of the build; everything else is in pyproject.toml.

sandbox/spawn.c is a plain C shared library (no Python API), loaded with
ctypes by sandbox/spawn.py: see that module for why the program's last steps
before execve are in C.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sandbox._spawn", ["sandbox/spawn.c", "sandbox/locks.c"], extra_compile_args=["-Wall"]
        )
    ]
)
