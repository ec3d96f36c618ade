# A broken checker: an uncaught exception (exit code 1, which testlib reads as WA!).
import sys
from pathlib import Path

data = Path(sys.argv[2]).read_text()
raise RuntimeError(f"checker bug while reading {len(data)} bytes")
