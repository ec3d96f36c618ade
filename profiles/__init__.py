"""Data shipped with cellblock: seccomp profiles and language definitions."""

from pathlib import Path

PROFILES_DIR = Path(__file__).resolve().parent
SECCOMP_DIR = PROFILES_DIR / "seccomp"
LANGUAGES_DIR = PROFILES_DIR / "languages"
